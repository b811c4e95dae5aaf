"""CGR properties on random small plans (issue 3, "Done when").

- The best route's arrival equals a brute-force search of the time-expanded
  graph: every (node, time) state reachable by waiting or transmitting, with
  no FIFO or Dijkstra reasoning (it may revisit nodes).
- Every returned route is feasible, checked here from first principles.
- A k-list is distinct, sorted in SABR order, and its arrivals are the k
  smallest over every loopless contact path (exhaustive enumeration).
- The route cache never changes an answer (warm == cold, after consume and
  after plan edits).

Times are integers and rates powers of two, so every transmission time is an
exact float and equality is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.routing.cgr import Route, Router
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan

NODES = (1, 2, 3, 4, 5)


@dataclass
class Case:
    plan: ContactPlan
    owlt: dict[tuple[int, int], float]
    used: dict[Contact, float]
    src: int
    dst: int
    t0: float
    size: float


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(2, 5))
    nodes = NODES[:n]
    # half the plans have no light time and carry empty bundles: ties everywhere
    instant = draw(st.booleans())
    owlt = {
        (a, b): 0.0 if instant else float(draw(st.integers(0, 3)))
        for a in nodes
        for b in nodes
        if a != b
    }
    contacts: dict[Contact, None] = {}
    for _ in range(draw(st.integers(0, 12))):
        a, b = draw(st.permutations(nodes))[:2]
        start = draw(st.integers(0, 30))
        dur = draw(st.integers(0, 15))
        rate = draw(st.sampled_from([1.0, 2.0, 4.0, 8.0]))
        contacts[Contact(a, b, float(start), float(start + dur), rate)] = None
    ranges = [Range(a, b, 0.0, 100.0, o) for (a, b), o in owlt.items()]
    plan = ContactPlan(contacts, ranges)
    used: dict[Contact, float] = {}
    for c in contacts:
        if draw(st.booleans()) and draw(st.booleans()):
            used[c] = float(draw(st.integers(1, 40)))
    src, dst = draw(st.permutations(nodes))[:2]
    return Case(
        plan,
        owlt,
        used,
        src,
        dst,
        float(draw(st.integers(0, 30))),
        0.0 if instant else float(draw(st.sampled_from([0, 1, 2, 4, 8, 16]))),
    )


def router_for(case: Case) -> Router:
    r = Router(case.plan)
    for c, u in case.used.items():
        r.consume(c, u)
    return r


def residual(case: Case, c: Contact) -> float:
    return c.volume_bytes - case.used.get(c, 0.0)


def brute_force_arrival(
    case: Case,
    deadline: float = float("inf"),
    banned_first: frozenset[int] = frozenset(),
) -> float | None:
    """Earliest arrival by exhaustive exploration of (node, time) states."""
    starts = sorted({c.start_s for c in case.plan.contacts})
    seen: set[tuple[int, float]] = set()
    todo = [(case.src, case.t0)]
    best: float | None = None
    while todo:
        u, t = todo.pop()
        if (u, t) in seen:
            continue
        seen.add((u, t))
        if u == case.dst:
            best = t if best is None else min(best, t)
            continue
        # wait until a later contact start
        todo.extend((u, s) for s in starts if s > t)
        for c in case.plan.contacts:
            if c.frm != u or c.start_s > t or (u == case.src and c.to in banned_first):
                continue
            tx = case.size / c.rate_bytes_s if case.size > 0 else 0.0
            # the end is exclusive (ION): transmission starts before it
            if t >= c.end_s or t + tx > c.end_s or residual(case, c) < case.size:
                continue
            a = t + tx + case.owlt[(c.frm, c.to)]
            if a <= deadline:
                todo.append((c.to, a))
    return best


def check_feasible(case: Case, route: Route) -> None:
    """A route's contacts chain from src to dst in time order, each inside its window with room."""
    assert route.hops[0] == case.src
    assert route.hops[-1] == case.dst
    assert len(set(route.hops)) == len(route.hops), "a node repeats"
    t = case.t0
    for i, c in enumerate(route.contacts):
        assert c in case.plan
        assert (c.frm, c.to) == (route.hops[i], route.hops[i + 1])
        s = max(t, c.start_s)
        tx = case.size / c.rate_bytes_s if case.size > 0 else 0.0
        assert s < c.end_s, "transmission starts at or after the contact's end"
        assert s + tx <= c.end_s, "transmission does not fit the contact window"
        assert residual(case, c) >= case.size, "contact has no room left"
        t = s + tx + case.owlt[(c.frm, c.to)]
    assert route.arrival_s == t


def all_loopless_keys(case: Case) -> list[tuple[float, int, object]]:
    """The full SABR key (Route.sort_key) of every feasible loopless contact path, sorted."""
    out: list[tuple[float, int, object]] = []

    def walk(u: int, t: float, path: tuple[Contact, ...]) -> None:
        visited = {case.src, *(c.to for c in path)}
        for c in case.plan.contacts:
            if c.frm != u or c.to in visited or residual(case, c) < case.size:
                continue
            s = max(t, c.start_s)
            tx = case.size / c.rate_bytes_s if case.size > 0 else 0.0
            if s >= c.end_s or s + tx > c.end_s:
                continue
            a = s + tx + case.owlt[(c.frm, c.to)]
            if c.to == case.dst:
                hops = (case.src, *(x.to for x in path), c.to)
                out.append(Route(arrival_s=a, hops=hops, contacts=(*path, c)).sort_key)
            else:
                walk(c.to, a, (*path, c))

    walk(case.src, case.t0, ())
    return sorted(out)


def all_loopless_routes(case: Case) -> list[tuple[float, int]]:
    """(arrival, hops) of every feasible loopless contact path, sorted (the keys' first two fields)."""
    return [(arrival, hops) for arrival, hops, _ in all_loopless_keys(case)]


@given(cases())
def test_best_arrival_equals_time_expanded_brute_force(case: Case) -> None:
    route = router_for(case).best_route(case.src, case.dst, case.t0, case.size)
    expected = brute_force_arrival(case)
    if expected is None:
        assert route is None
    else:
        assert route is not None
        assert route.arrival_s == expected
        check_feasible(case, route)


@given(cases())
def test_best_route_has_fewest_hops_among_earliest(case: Case) -> None:
    """SABR tie-break: among the routes that arrive earliest, one with the fewest hops."""
    route = router_for(case).best_route(case.src, case.dst, case.t0, case.size)
    every = all_loopless_routes(case)
    assert (None if route is None else (route.arrival_s, route.hop_count)) == (
        every[0] if every else None
    )
    # and the whole SABR key (termination, then the fixed tie-break) is the least
    keys = all_loopless_keys(case)
    assert (None if route is None else route.sort_key) == (keys[0] if keys else None)


@given(cases(), st.integers(0, 40), st.sampled_from(NODES))
def test_deadline_and_excluded_neighbour(
    case: Case, deadline: int, banned: int
) -> None:
    banned_set = frozenset({banned}) - {case.dst}
    route = router_for(case).best_route(
        case.src,
        case.dst,
        case.t0,
        case.size,
        deadline_s=float(deadline),
        excluded=banned_set,
    )
    expected = brute_force_arrival(case, float(deadline), banned_set)
    assert (None if route is None else route.arrival_s) == expected
    if route is not None:
        assert route.arrival_s <= deadline
        assert route.next_hop not in banned_set


@given(cases(), st.integers(1, 6))
def test_k_routes_feasible_distinct_sorted_and_shortest(case: Case, k: int) -> None:
    routes = router_for(case).routes(case.src, case.dst, case.t0, case.size, k)
    assert len(routes) <= k
    for r in routes:
        check_feasible(case, r)
    assert len({r.contacts for r in routes}) == len(routes), "routes repeat"
    keys = [r.sort_key for r in routes]
    assert keys == sorted(keys), "not in SABR order"
    every = [a for a, _ in all_loopless_routes(case)]
    assert [r.arrival_s for r in routes] == every[:k]
    # exact in the whole order, tie-breaks included: the k smallest keys
    assert keys == all_loopless_keys(case)[:k]


def answers(
    router: Router, queries: Sequence[tuple[int, int, float, float, int]]
) -> list[list[tuple[float, tuple[Contact, ...]]]]:
    return [
        [(r.arrival_s, r.contacts) for r in router.routes(s, d, t, z, k)]
        for s, d, t, z, k in queries
    ]


def cold_answers(
    case: Case, queries: Sequence[tuple[int, int, float, float, int]]
) -> list[list[tuple[float, tuple[Contact, ...]]]]:
    """Each query answered by a fresh router (no cache) over the case as it is now."""
    return [answers(router_for(case), [q])[0] for q in queries]


@given(
    cases(),
    st.lists(
        st.tuples(
            st.sampled_from(NODES),
            st.sampled_from(NODES),
            st.integers(0, 30),
            st.sampled_from([0, 1, 4]),
            st.integers(1, 3),
        ),
        max_size=6,
    ),
)
def test_cache_never_changes_an_answer(
    case: Case, raw: list[tuple[int, int, int, int, int]]
) -> None:
    queries = [(s, d, float(t), float(z), k) for s, d, t, z, k in raw if s != d]
    queries = (
        sorted(queries, key=lambda q: q[2]) * 2
    )  # repeats hit the cache; time moves forward
    warm = router_for(case)
    got = answers(warm, queries)
    assert got == cold_answers(case, queries)
    # consuming and releasing volume and editing the plan invalidate what they must
    for c in list(case.plan.contacts)[:2]:
        warm.consume(c, 3.0)
        case.used[c] = case.used.get(c, 0.0) + 3.0
        assert answers(warm, queries) == cold_answers(case, queries)
    for c in list(case.plan.contacts)[:1]:
        warm.release(c, 3.0)
        case.used[c] -= 3.0
        assert answers(warm, queries) == cold_answers(case, queries)
    if case.plan.contacts:
        gone = case.plan.contacts[-1]
        case.plan.remove_contact(gone)
        case.used.pop(gone, None)
        assert answers(warm, queries) == cold_answers(case, queries)
    case.plan.add_contact(Contact(case.src, case.dst, 31.0, 40.0, 8.0))
    assert answers(warm, queries) == cold_answers(case, queries)
