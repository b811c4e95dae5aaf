"""Source trees (``Router.forwarding_route``) answer exactly.

A router keeps the search it ran for a bundle originated at its node (an
empty bundle's, grown on demand towards further destinations) and answers
later bundles from that node -- any destination, any size, later ready
times -- from it when a backward search proves the tree's route still
best. Every answer must have exactly the arrival and hop count of a
direct, uncached exact search by the same router at that moment (with its
residual volume and the exclusions), be feasible from first principles,
and no route may be missed. Volume is booked and given back in between,
and the plan changes, so trees are found stale, grown, replaced and
dropped.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dcis.dtn.routing.cgr import Router, replay
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan

NODES = (1, 2, 3, 4, 5, 6)
SRC = 1
INF = float("inf")
RATES = (1.0, 2.0, 4.0)


@st.composite
def plans(draw: st.DrawFn) -> ContactPlan:
    """Plans with multi-hop routes, parallel contacts, two rates into a node
    and ranges that change inside contacts (integer times, rates powers of
    two: every time is an exact float)."""
    contacts: dict[Contact, None] = {}
    for _ in range(draw(st.integers(3, 28))):
        a, b = draw(st.permutations(NODES))[:2]
        if draw(st.integers(0, 3)) == 0:
            a = SRC  # the source has several first hops
        if a == b:
            continue
        start = draw(st.integers(0, 40))
        dur = draw(st.integers(0, 14))
        rate = draw(st.sampled_from(RATES))
        contacts[Contact(a, b, float(start), float(start + dur), rate)] = None
    ranges = []
    for a in NODES:
        for b in NODES:
            if a != b:
                owlt = float(draw(st.integers(0, 2)))
                cut = draw(st.integers(0, 60))
                if draw(st.booleans()):
                    # the light time changes at `cut`: some contacts are not FIFO-constant
                    ranges.append(Range(a, b, 0.0, float(cut), owlt))
                    ranges.append(Range(a, b, float(cut), 100.0, owlt + 1.0))
                else:
                    ranges.append(Range(a, b, 0.0, 100.0, owlt))
    return ContactPlan(contacts, ranges)


@st.composite
def reconverging_plans(draw: st.DrawFn) -> ContactPlan:
    """Plans where the source's contacts are short and early, the relays'
    long, and the last hops late, so a tree's first contact often ends
    while another way in still reaches the same relay in time (the stale
    tree's answer is then found backwards, Router._walk_back); ranges as
    in :func:`plans`."""
    contacts: dict[Contact, None] = {}
    for _ in range(draw(st.integers(2, 6))):
        b = draw(st.sampled_from(NODES[1:4]))
        start = float(draw(st.integers(0, 20)))
        dur = float(draw(st.integers(2, 8)))
        contacts[Contact(SRC, b, start, start + dur, 4.0)] = None
    for _ in range(draw(st.integers(2, 10))):
        a, b = draw(st.permutations(NODES[1:4]))[:2]
        start = float(draw(st.integers(0, 20)))
        dur = float(draw(st.integers(20, 60)))
        contacts[Contact(a, b, start, start + dur, 4.0)] = None
    for _ in range(draw(st.integers(1, 8))):
        a = draw(st.sampled_from(NODES[1:4]))
        b = draw(st.sampled_from(NODES[4:]))
        start = float(draw(st.integers(25, 60)))
        dur = float(draw(st.integers(2, 10)))
        rate = draw(st.sampled_from(RATES))
        contacts[Contact(a, b, start, start + dur, rate)] = None
    base = draw(plans())
    return ContactPlan(contacts, base.ranges)


def check(
    router: Router, dst: int, t: float, size: float, excl: tuple[int, ...]
) -> None:
    """The router's answer from SRC equals a direct exact search now in
    (arrival, hops), and is feasible for it."""
    got = router.forwarding_route(SRC, dst, t, size, excluded=excl)
    ref = router._yen(SRC, dst, t, size, INF, frozenset(excl), 1)
    if not ref:
        assert got is None
        return
    assert got is not None
    best = ref[0][1]
    assert (got.arrival_s, got.hop_count) == (best.arrival_s, best.hop_count)
    assert got.hops[0] == SRC
    assert got.hops[-1] == dst
    assert got.next_hop not in excl
    assert len(set(got.hops)) == len(got.hops)
    again = replay(
        got.contacts,
        t,
        size,
        [router.owlt_of(c) for c in got.contacts],
        [router.residual_bytes(c) for c in got.contacts],
        lambda i, at: router.owlt_at(got.contacts[i], at),
    )
    assert again == got.arrival_s


queries = st.lists(
    st.tuples(
        st.sampled_from(NODES[1:]),  # destination
        st.integers(0, 6),  # ready later than the query before by
        st.sampled_from([0, 1, 2, 3, 8]),  # size
        st.sampled_from([(), (), (), (2,), (3, 4)]),  # excluded first hops
        st.integers(-2, 40),  # a contact booked (>= 0), or volume given back
    ),
    max_size=12,
)


@given(plans(), queries)
def test_source_tree_answers_match_a_direct_search(
    plan: ContactPlan,
    raw: list[tuple[int, int, int, tuple[int, ...], int]],
) -> None:
    router = Router(plan)
    contacts = list(plan.contacts)
    booked: list[tuple[Contact, float]] = []
    t = 0.0
    for dst, dt, size, excl, act in raw:
        t += dt
        check(router, dst, t, float(size), excl)
        if contacts and act >= 0:
            c = contacts[act % len(contacts)]
            amount = float(1 + act % 5)
            router.consume(c, amount)
            booked.append((c, amount))
        elif booked and act == -1:
            router.release(*booked.pop(0))


stale_queries = st.lists(
    st.tuples(
        st.sampled_from((*NODES[1:], *NODES[4:])),  # mostly beyond the relays
        st.integers(1, 10),  # ready later: the tree goes stale
        st.sampled_from([0, 1, 2, 4]),
        st.sampled_from([(), (), (), (2,)]),
        st.integers(-2, 40),
    ),
    max_size=16,
)


@given(reconverging_plans(), stale_queries)
def test_stale_tree_answers_found_backwards_match_a_direct_search(
    plan: ContactPlan,
    raw: list[tuple[int, int, int, tuple[int, ...], int]],
) -> None:
    test_source_tree_answers_match_a_direct_search.hypothesis.inner_test(plan, raw)  # type: ignore[attr-defined]


class SourceTrees(RuleBasedStateMachine):
    """A source tree's life: built by a first query, grown towards further
    destinations, found stale and replaced (or answered for by another
    way in, found backwards: half the plans are built for it) as time
    passes, dropped when
    over-booked volume comes back or the plan changes; every answer checked
    as above at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0.0
        self.booked: list[tuple[Contact, float]] = []

    @initialize(plan=st.one_of(plans(), reconverging_plans()))
    def setup(self, plan: ContactPlan) -> None:
        self.plan = plan
        self.router = Router(plan)

    @rule(
        dst=st.sampled_from((*NODES[1:], *NODES[4:])),
        size=st.sampled_from([0, 1, 2, 8]),
        excl=st.sampled_from([(), (), (2,)]),
    )
    def query(self, dst: int, size: int, excl: tuple[int, ...]) -> None:
        check(self.router, dst, self.t, float(size), excl)

    @rule(dt=st.integers(1, 8))
    def wait(self, dt: int) -> None:
        self.t += dt

    @rule(pick=st.integers(0, 63), amount=st.sampled_from([1.0, 4.0, 1e6]))
    def book(self, pick: int, amount: float) -> None:
        contacts = list(self.plan.contacts)
        if contacts:
            c = contacts[pick % len(contacts)]
            self.router.consume(c, amount)  # 1e6: over-booked, even an empty bundle
            self.booked.append((c, amount))

    @precondition(lambda self: bool(self.booked))
    @rule(pick=st.integers(0, 63))
    def give_back(self, pick: int) -> None:
        c, amount = self.booked.pop(pick % len(self.booked))
        self.router.release(c, amount)

    @rule(
        a=st.sampled_from(NODES),
        b=st.sampled_from(NODES),
        start=st.integers(0, 40),
        dur=st.integers(1, 10),
    )
    def new_contact(self, a: int, b: int, start: int, dur: int) -> None:
        c = Contact(a, b, float(start), float(start + dur), 2.0)
        if a != b and c not in self.plan.contacts:
            self.plan.add_contact(c)

    @invariant()
    def tree_is_for_this_plan(self) -> None:
        tree = self.router._tree
        if tree is not None and self.router._built == self.plan.version:
            assert tree.src == SRC
            assert tree.t0 <= self.t


SourceTrees.TestCase.settings = settings(stateful_step_count=25, deadline=None)
test_source_trees_state_machine = SourceTrees.TestCase
