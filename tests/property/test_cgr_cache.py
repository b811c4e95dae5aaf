"""The route cache and the shared contact graph never change an answer.

A warm router (cache on, queries in time order with mixed sizes, deadlines,
excluded neighbours and k, volume consumed and given back in between) must
answer exactly what a direct search on an uncached router with the same
consumption answers. A third router over the same plan consumes volume of
its own throughout: routers share the plan's graph, never their volume.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.routing.cgr import Route, Router
from dcis.dtn.routing.contact import Contact
from tests.property.test_cgr_properties import NODES, Case, cases, router_for

Query = tuple[int, int, float, float, int, float | None, tuple[int, ...]]


def direct(router: Router, q: Query) -> list[tuple[float, tuple[Contact, ...]]]:
    """The uncached answer: Yen's search with the query's own exclusions."""
    s, d, t, z, k, dl, ex = q
    if s == d:
        return []
    found = router._yen(
        s, d, t, z, float("inf") if dl is None else dl, frozenset(ex), k
    )
    return [(r.arrival_s, r.contacts) for _, r in found]


def shown(routes: list[Route]) -> list[tuple[float, tuple[Contact, ...]]]:
    return [(r.arrival_s, r.contacts) for r in routes]


queries = st.lists(
    st.tuples(
        st.sampled_from(NODES),
        st.sampled_from(NODES),
        st.integers(0, 30),
        st.sampled_from([0, 1, 4]),
        st.integers(1, 3),
        st.one_of(st.none(), st.integers(0, 50)),
        st.lists(st.sampled_from(NODES), max_size=2).map(tuple),
        st.integers(-1, 11),  # a contact to consume (>= 0) or release (< 0) after
    ),
    max_size=10,
)


@given(cases(), queries)
def test_warm_answers_equal_direct_search(
    case: Case,
    raw: list[tuple[int, int, int, int, int, int | None, tuple[int, ...], int]],
) -> None:
    warm = router_for(case)
    other = Router(case.plan)  # same plan, its own volume
    contacts = list(case.plan.contacts)
    booked: list[Contact] = []
    for s, d, t, z, k, dl, ex, act in sorted(raw, key=lambda x: x[2]) * 2:
        q: Query = (s, d, float(t), float(z), k, None if dl is None else float(dl), ex)
        got = warm.routes(s, d, float(t), float(z), k, deadline_s=q[5], excluded=ex)
        ref = router_for(case)
        assert shown(got) == direct(ref, q)
        if contacts:
            c = contacts[abs(act) % len(contacts)]
            other.consume(c, 5.0)
            if act >= 0:
                warm.consume(c, 3.0)
                case.used[c] = case.used.get(c, 0.0) + 3.0
                booked.append(c)
            elif booked:
                back = booked.pop()
                warm.release(back, 3.0)
                case.used[back] -= 3.0


def test_routers_share_one_graph_per_plan_version() -> None:
    from dcis.dtn.routing.plan import ContactPlan

    plan = ContactPlan([Contact(1, 2, 0, 10, 1.0), Contact(2, 3, 5, 20, 1.0)])
    a, b = Router(plan), Router(plan)
    assert a._g is b._g
    assert a.stats["graphs_built"] + b.stats["graphs_built"] == 1
    a.consume(plan.contacts[0], 10.0)
    assert b.residual_bytes(plan.contacts[0]) == 10.0
    assert a.best_route(1, 3, 0, 1) is None
    assert b.best_route(1, 3, 0, 1) is not None
    plan.add_contact(Contact(1, 3, 30, 40, 1.0))
    assert a.best_route(1, 3, 0, 1) is not None  # rebuilt: the new direct contact
    assert b.best_route(1, 3, 0, 1) is not None
    assert a._g is b._g  # one graph for the new version too
    assert a.residual_bytes(plan.contacts[0]) == 0.0  # consumption survives the rebuild


@given(
    cases(),
    st.lists(
        st.tuples(
            st.sampled_from(NODES),
            st.sampled_from(NODES),
            st.integers(0, 30),
            st.integers(1, 3),
        ),
        max_size=4,
    ),
)
def test_larger_bundles_reuse_only_exact_answers(
    case: Case, raw: list[tuple[int, int, int, int]]
) -> None:
    # Each query is asked for growing sizes, then 1 s later: the cache serves
    # a bigger bundle from a smaller one's answer only when provably the same.
    warm = router_for(case)
    for s, d, t, k in sorted(raw, key=lambda x: x[2]):
        for dt, z in [(0, 0), (0, 1), (0, 2), (1, 2), (1, 4), (3, 8), (3, 16)]:
            q: Query = (s, d, float(t + dt), float(z), k, None, ())
            got = warm.routes(s, d, float(t + dt), float(z), k)
            assert shown(got) == direct(router_for(case), q)
