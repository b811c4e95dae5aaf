"""A source tree's one-contact steps over *plain* groups are the full scans'.

``Router._grow_tree`` relaxes a neighbour over a plain group (see
``_Graph.tree_neighbours_ix``: fixed light times, each contact opening
after the one before has ended and its bundle arrived) by taking the first
contact that ends after the ready time, without scanning the later ones;
the backward searches (``Router._beaten``, ``Router._walk_back``) take the
last contact opening by the deadline when the bundle fits there. For every
group the graph calls plain, at every ready time and deadline, that must be
what the general scans pick (forwards the earliest arrival, the earlier
contact on a tie; backwards the latest departure). The plans have parallel,
overlapping and nested contacts and light times that change inside
contacts, so groups of both kinds occur.

The step test copies the shortcut; the router's own code is checked by
running it against the same router with every group called not plain
(``test_plain_groups_answer_as_the_scans``): same source trees, backward
checks, walks and routes, on plans whose plain groups change light time
and rate from contact to contact, with bookings (over-booking included).
"""

from __future__ import annotations

from bisect import bisect_right

from hypothesis import example, given
from hypothesis import strategies as st

from dcis.dtn.routing.cgr import Router
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan

NODES = (1, 2, 3, 4)
INF = float("inf")


@st.composite
def plans(draw: st.DrawFn) -> ContactPlan:
    """Few node pairs, several contacts each, some back to back (integer
    times: exact floats); a pair's light time may change, often exactly
    where one of its contacts ends (then the next contact has another light
    time without any contact seeing it change inside)."""
    contacts: dict[Contact, None] = {}
    ends: dict[tuple[int, int], list[int]] = {}
    for _ in range(draw(st.integers(1, 24))):
        a, b = draw(st.permutations(NODES))[:2]
        start = draw(st.integers(0, 40))
        for _ in range(draw(st.integers(1, 3))):
            dur = draw(st.integers(0, 12))
            contacts[Contact(a, b, float(start), float(start + dur), 1.0)] = None
            ends.setdefault((a, b), []).append(start + dur)
            start += dur + draw(st.integers(0, 4))  # the next one, a gap later
    ranges = []
    for a in NODES:
        for b in NODES:
            if a != b:
                owlt = float(draw(st.integers(0, 3)))
                if draw(st.integers(0, 2)) == 0:
                    at = ends.get((a, b), [])
                    cut = float(
                        draw(st.sampled_from(at))
                        if at and draw(st.booleans())
                        else draw(st.integers(0, 50))
                    )
                    ranges.append(Range(a, b, 0.0, cut, owlt))
                    # longer or shorter after the cut
                    later = float(draw(st.integers(0, 3)))
                    ranges.append(Range(a, b, cut, 100.0, later))
                else:
                    ranges.append(Range(a, b, 0.0, 100.0, owlt))
    return ContactPlan(contacts, ranges)


def scan(
    router: Router, starts: list[float], maxend: list[float], ids: list[int], a: float
) -> tuple[float, int]:
    """The general relaxation of ``_grow_tree`` (an empty bundle ready at ``a``)."""
    g = router._g
    j = bisect_right(maxend, a)
    best, bci = INF, -1
    while j < len(ids):
        st_ = starts[j]
        if st_ >= best:
            break
        ci = ids[j]
        j += 1
        sent = a if a > st_ else st_
        if sent >= g.end[ci]:
            continue
        arr = sent + g.owlt_at(ci, sent)
        if arr < best:
            best, bci = arr, ci
    return best, bci


def scan_back(
    router: Router,
    starts: list[float],
    maxend: list[float],
    ids: list[int],
    d: float,
    size: float,
) -> tuple[float, int]:
    """The general backward step of ``_walk_back``: the latest departure
    that reaches the receiver by ``d`` with ``size`` bytes."""
    g = router._g
    j = bisect_right(starts, d) - 1
    best, bci = -INF, -1
    while j >= 0:
        if maxend[j] <= best:
            break
        ci = ids[j]
        ce = g.end[ci]
        st_ = starts[j]
        tx = size * g.inv_rate[ci] if size > 0 else 0.0
        j -= 1
        late = d - tx - (g.owlt[ci] if ci not in g.var_owlt else 0.0)
        if late > ce - tx:
            late = ce - tx
        if late >= st_ and late > best:
            best, bci = late, ci
    return best, bci


def fast_back(
    g: object,
    starts: list[float],
    maxend: list[float],
    ids: list[int],
    offs: list[float],
    d: float,
    size: float,
) -> tuple[float, int] | None:
    """The plain step of ``_walk_back``; None: it falls back to the scan."""
    j = bisect_right(starts, d) - 1
    if j < 0:
        return None
    tx = size * g.inv_rate[ids[j]] if size > 0 else 0.0  # type: ignore[attr-defined]
    late = d - tx - offs[j]
    if late > maxend[j] - tx:
        late = maxend[j] - tx
    return (late, ids[j]) if late >= starts[j] else None


@given(plans(), st.lists(st.integers(-2, 60), min_size=1, max_size=8))
@example(
    # back to back, the light time 3 s up to 5 and 0 after: ready at 4, the
    # second contact (arrival 5) beats the first (7), so the group is not plain
    ContactPlan(
        [Contact(1, 2, 0.0, 5.0, 1.0), Contact(1, 2, 5.0, 8.0, 1.0)],
        [Range(1, 2, 0.0, 5.0, 3.0), Range(1, 2, 5.0, 100.0, 0.0)],
    ),
    [4],
)
def test_plain_groups_take_the_scans_contacts(
    plan: ContactPlan, readies: list[int]
) -> None:
    router = Router(plan)
    g = router._g
    plain = 0
    for row in g.tree_neighbours_ix():
        for _v, starts, maxend, ids, offs in row:
            if offs is None:
                continue
            plain += 1
            for r in readies:
                for a in (float(r), r + 0.5):
                    j = bisect_right(maxend, a)
                    fast = (
                        ((a if a > starts[j] else starts[j]) + offs[j], ids[j])
                        if j < len(ids)
                        else (INF, -1)
                    )
                    assert fast == scan(router, starts, maxend, ids, a)
                    for size in (0.0, 0.5, 3.0):
                        back = fast_back(g, starts, maxend, ids, offs, a, size)
                        if back is not None:
                            assert back == scan_back(
                                router, starts, maxend, ids, a, size
                            )
    # every single-contact group with a fixed light time is plain
    for row in g.tree_neighbours_ix():
        for _v, starts, _m, ids, offs in row:
            if len(ids) == 1 and ids[0] not in g.var_owlt:
                assert (offs is not None) == (starts[0] < g.end[ids[0]])


RATES = (0.0, 0.5, 1.0, 2.0, 8.0)


@st.composite
def spaced_plans(draw: st.DrawFn) -> ContactPlan:
    """Chains of contacts per pair spaced about their light time apart
    (each contact its own range, so the light time changes between
    contacts; a gap a bit shorter, exactly as long or longer), rates that
    differ from contact to contact (0: empty bundles only), sometimes a
    range cut inside a contact: plain and not plain groups side by side,
    the shortcut's contact often not the fastest of its group."""
    contacts: dict[Contact, None] = {}
    ranges: dict[Range, None] = {}
    for _ in range(draw(st.integers(2, 10))):
        a, b = draw(st.permutations(NODES))[:2]
        start = float(draw(st.integers(0, 30)))
        for _ in range(draw(st.integers(1, 4))):
            dur = float(draw(st.integers(1, 8)))
            owlt = draw(st.integers(0, 6)) / 2
            c = Contact(a, b, start, start + dur, draw(st.sampled_from(RATES)))
            if c in contacts:
                break
            contacts[c] = None
            if draw(st.integers(0, 5)) == 0:
                cut = start + float(draw(st.integers(0, int(dur))))
                ranges[Range(a, b, start, cut, owlt)] = None
                ranges[Range(a, b, cut, start + dur, owlt + 1.0)] = None
            else:
                ranges[Range(a, b, start, start + dur, owlt)] = None
            start += dur + owlt + draw(st.sampled_from([-1.0, 0.0, 0.0, 0.5, 3.0]))
    return ContactPlan(contacts, ranges)


def _scans_only(router: Router) -> None:
    """Make ``router``'s graph (re)built now call every group not plain."""
    router._check()
    g = router._g
    rows = g.tree_neighbours_ix()
    if any(offs is not None for row in rows for *_, offs in row):
        g._tree_ix = [[(*grp[:4], None) for grp in row] for row in rows]
        g._tree_in_ix = None


def _same_trees(a: Router, b: Router) -> None:
    ta, tb = a._tree, b._tree
    assert (ta is None) == (tb is None)
    if ta is None or tb is None:
        return
    for name in ("la", "lh", "lc", "lp", "lnext", "head", "settled"):
        assert list(getattr(ta, name)) == list(getattr(tb, name)), name
    assert (ta.horizon, ta.clean, ta.t0) == (tb.horizon, tb.clean, tb.t0)


@given(
    spaced_plans(),
    st.lists(
        st.tuples(
            st.sampled_from(NODES[1:]),  # destination
            st.sampled_from([0.0, 0.5, 1.0, 3.0]),  # ready later by
            st.sampled_from([0.0, 0.5, 2.0, 6.0]),  # size
            st.sampled_from([(), (), (2,)]),  # excluded first hops
            st.integers(-1, 40),  # book a contact (1e6 when >= 30), or give back
            st.integers(-3, 3),  # a backward check's deadline, from the answer's
        ),
        max_size=10,
    ),
)
def test_plain_groups_answer_as_the_scans(
    plan: ContactPlan, raw: list[tuple[int, float, float, tuple[int, ...], int, int]]
) -> None:
    """Forwarding from node 1 with plain groups gives the same source
    trees, the same backward checks and walks, and the same routes as with
    every group scanned; and the answers are the exact search's."""
    fast = Router(plan)
    full = Router(ContactPlan(plan.contacts, plan.ranges))
    contacts = list(plan.contacts)
    booked: list[tuple[Contact, float]] = []
    t = 0.0
    for dst, dt, size, excl, act, dd in raw:
        t += dt
        _scans_only(full)
        got = fast.forwarding_route(1, dst, t, size, excluded=excl)
        ref = full.forwarding_route(1, dst, t, size, excluded=excl)
        assert got == ref
        _same_trees(fast, full)
        exact = fast._yen(1, dst, t, size, INF, frozenset(excl), 1)
        if exact:
            assert got is not None
            assert (got.arrival_s, got.hop_count) == (
                exact[0][1].arrival_s,
                exact[0][1].hop_count,
            )
        else:
            assert got is None
        ta, tb = fast._tree, full._tree
        x = fast._g.node_index().get(dst)
        if ta is not None and tb is not None and x is not None and t >= ta.t0:
            d = (got.arrival_s if got is not None else t + 10.0) + dd
            for hops in (1, 2, 1 << 30):
                assert fast._beaten(ta, x, t, size, d, hops) == full._beaten(
                    tb, x, t, size, d, hops
                )
            assert fast._walk_back(ta, x, t, size, d) == full._walk_back(
                tb, x, t, size, d
            )
        if contacts and act >= 0:
            c = contacts[act % len(contacts)]
            amount = 1e6 if act >= 30 else float(1 + act % 4)
            for r in (fast, full):
                r.consume(c, amount)
            booked.append((c, amount))
        elif booked:
            for r in (fast, full):
                r.release(*booked[0])
            booked.pop(0)
