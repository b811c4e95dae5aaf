"""Shared route suffixes (``Router.forwarding_route``) never give a worse route.

One router per node over one plan, as in the simulator. Bundles are walked
hop by hop the way the agent forwards them: at each node the router is asked
with the previous node excluded, the first contact is booked, and the bundle
is ready at the next node when the route says, or a little earlier or later
(a smaller bundle than the route was planned for, a queue). Every answer
must be feasible for that router (first principles: windows, its residual
volume, the exclusions) and have exactly the arrival and hop count of a
direct, uncached search by the same router (SABR's first two criteria), or,
for a bundle that arrived early by at most one transmission time of its
size, lie between the best now and the best that much later; no answer must
be missed. Volume is also given back at random, and other
routers book contacts of their own in between.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
)

from dcis.dtn.routing.cgr import Route, Router, replay
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan

NODES = (1, 2, 3, 4, 5)

INF = float("inf")
RATES = (1.0, 2.0, 4.0)
SLOWEST = min(RATES)

# A bundle: source, destination, ready time, size class, per-hop lateness.
Walk = tuple[int, int, int, int, tuple[int, ...]]


@st.composite
def plans(draw: st.DrawFn) -> ContactPlan:
    """Plans dense enough for routes of several hops (integer times, rates
    powers of two: every time is an exact float)."""
    owlt = {
        (a, b): float(draw(st.integers(0, 2))) for a in NODES for b in NODES if a != b
    }
    contacts: dict[Contact, None] = {}
    for _ in range(draw(st.integers(4, 30))):
        a, b = draw(st.permutations(NODES))[:2]
        start = draw(st.integers(0, 40))
        dur = draw(st.integers(0, 12))
        rate = draw(st.sampled_from(RATES))
        contacts[Contact(a, b, float(start), float(start + dur), rate)] = None
    return ContactPlan(
        contacts, [Range(a, b, 0.0, 100.0, o) for (a, b), o in owlt.items()]
    )


walks = st.lists(
    st.tuples(
        st.sampled_from(NODES),
        st.sampled_from(NODES),
        st.integers(0, 30),
        st.sampled_from([0, 1, 4]),
        # how much later (or earlier) than planned the bundle is at each hop
        st.lists(st.sampled_from([-2, -1, 0, 0, 0, 1, 3]), min_size=4, max_size=4).map(
            tuple
        ),
        st.integers(-1, 11),  # a contact some router books (>= 0) or gives back
    ),
    max_size=8,
)


def check(
    router: Router, node: int, dst: int, t: float, size: float, prev: int | None
) -> Route | None:
    excl = () if prev is None or prev == dst else (prev,)
    got = router.forwarding_route(node, dst, t, size, excluded=excl)
    ref = router._yen(node, dst, t, size, INF, frozenset(excl), 1)
    if not ref:
        assert got is None
        return None
    assert got is not None
    # A bundle that arrives early by at most one transmission of its size
    # (size / slowest rate here) may get the best route for its planned
    # ready time: between the best now and the best that much later.
    best = ref[0][1]
    late = router._yen(node, dst, t + size / SLOWEST, size, INF, frozenset(excl), 1)
    assert (best.arrival_s, best.hop_count) <= (got.arrival_s, got.hop_count)
    if late:
        assert (got.arrival_s, got.hop_count) <= (
            late[0][1].arrival_s,
            late[0][1].hop_count,
        )
    if size == 0:
        assert (got.arrival_s, got.hop_count) == (best.arrival_s, best.hop_count)
    # feasible for this router, from first principles
    assert got.hops[0] == node
    assert got.hops[-1] == dst
    assert got.next_hop not in excl
    assert len(set(got.hops)) == len(got.hops)
    for c, (a, b) in zip(
        got.contacts, zip(got.hops, got.hops[1:], strict=False), strict=True
    ):
        assert (c.frm, c.to) == (a, b)
    again = replay(
        got.contacts,
        t,
        size,
        [router.owlt_of(c) for c in got.contacts],
        [router.residual_bytes(c) for c in got.contacts],
        lambda i, at: router.owlt_at(got.contacts[i], at),
    )
    assert again == got.arrival_s
    return got


@given(plans(), walks)
def test_forwarding_routes_match_a_direct_search_hop_by_hop(
    plan: ContactPlan, raw: list[tuple[int, int, int, int, tuple[int, ...], int]]
) -> None:
    routers = {n: Router(plan) for n in NODES}
    contacts = list(plan.contacts)
    booked: list[tuple[Router, Contact, float]] = []
    for src, dst, t0, size, late, act in sorted(raw, key=lambda x: x[2]):
        node, t, prev = src, float(t0), None
        for step in late:
            if node == dst:
                break
            router = routers[node]
            got = check(router, node, dst, t, float(size), prev)
            if got is None:
                break
            first = got.contacts[0]
            router.consume(first, float(size))
            booked.append((router, first, float(size)))
            lag = router.owlt_at(first, max(t, first.start_s))
            sent = max(t, first.start_s)
            ready = sent + (size / first.rate_bytes_s if size else 0.0) + lag
            node, prev, t = got.next_hop, node, max(0.0, ready + step)
        if contacts:
            c = contacts[abs(act) % len(contacts)]
            if act >= 0:
                routers[c.frm].consume(c, 2.0)
            elif booked:
                r, back, z = booked.pop(0)
                r.release(back, z)


class SharedRoutes(RuleBasedStateMachine):
    """The shared suffixes and unreachable marks as state: bundles move one
    hop per step in any interleaving, routers book and give back volume in
    between, and every answer is checked as above."""

    def __init__(self) -> None:
        super().__init__()
        self.routers: dict[int, Router] = {}
        # in transit: [node, destination, ready time, size, previous node]
        self.bundles: list[tuple[int, int, float, int, int | None]] = []
        self.booked: list[tuple[Router, Contact, float]] = []

    @initialize(plan=plans())
    def setup(self, plan: ContactPlan) -> None:
        self.plan = plan
        self.routers = {n: Router(plan) for n in NODES}

    @rule(
        src=st.sampled_from(NODES),
        dst=st.sampled_from(NODES),
        t=st.integers(0, 40),
        size=st.sampled_from([0, 1, 4]),
    )
    def send(self, src: int, dst: int, t: int, size: int) -> None:
        if src != dst:
            self.bundles.append((src, dst, float(t), size, None))

    @precondition(lambda self: bool(self.bundles))
    @rule(pick=st.integers(0, 7), step=st.sampled_from([-2, -1, 0, 0, 1, 3]))
    def hop(self, pick: int, step: int) -> None:
        node, dst, t, size, prev = self.bundles.pop(pick % len(self.bundles))
        router = self.routers[node]
        got = check(router, node, dst, t, float(size), prev)
        if got is None:
            return
        first = got.contacts[0]
        router.consume(first, float(size))
        self.booked.append((router, first, float(size)))
        sent = max(t, first.start_s)
        ready = sent + (size / first.rate_bytes_s if size else 0.0)
        ready += router.owlt_at(first, sent)
        if got.next_hop != dst:
            self.bundles.append((got.next_hop, dst, max(0.0, ready + step), size, node))

    @rule(pick=st.integers(0, 63), give_back=st.booleans())
    def book(self, pick: int, give_back: bool) -> None:
        contacts = list(self.plan.contacts)
        if give_back and self.booked:
            r, c, z = self.booked.pop(pick % len(self.booked))
            r.release(c, z)
        elif contacts:
            c = contacts[pick % len(contacts)]
            self.routers[c.frm].consume(c, 2.0)


SharedRoutes.TestCase.settings = settings(stateful_step_count=20, deadline=None)
test_shared_routes_state_machine = SharedRoutes.TestCase
