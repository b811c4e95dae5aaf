"""Router behaviour a forwarding agent relies on: volume, exclusions, deadlines, cache, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcis.dtn.errors import InvalidArgument
from dcis.dtn.routing.cgr import Router
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.storage.plan_files import load_plan

PLANS = Path(__file__).resolve().parents[2] / "vectors" / "plans"


def tutorial() -> Router:
    return Router(load_plan(PLANS / "hdtn_cgrTutorial.json"))


def test_consumed_volume_moves_traffic_to_the_next_route() -> None:
    plan = ContactPlan([Contact(1, 2, 0, 10, 100.0), Contact(1, 2, 20, 30, 100.0)])
    router = Router(plan)
    first = router.best_route(1, 2, 0, 600)
    assert first is not None
    assert first.contacts[0].start_s == 0
    assert first.arrival_s == 6.0
    assert router.consume(first.contacts[0], 600) == 400  # residual left
    second = router.best_route(1, 2, 0, 600)
    assert second is not None
    assert second.contacts[0].start_s == 20  # 400 bytes left cannot carry 600
    assert router.best_route(1, 2, 0, 400) == first.__class__(
        arrival_s=4.0, hops=(1, 2), contacts=first.contacts
    )
    router.release(first.contacts[0], 600)
    assert router.residual_bytes(first.contacts[0]) == 1000


def test_bundle_too_big_for_any_contact_window() -> None:
    router = Router(ContactPlan([Contact(1, 2, 0, 10, 100.0)]))
    assert router.best_route(1, 2, 0, 1001) is None
    assert (
        router.best_route(1, 2, 5, 600) is None
    )  # only 500 bytes of window left at t=5
    assert router.best_route(1, 2, 5, 500) is not None


def test_excluded_neighbour_and_deadline() -> None:
    router = tutorial()
    r = router.best_route(1, 5, 0, 0, excluded=[3])
    assert r is not None
    assert r.hops == (
        1,
        2,
        3,
        4,
        5,
    )  # may still pass through 3, just not hand it to 3 first
    assert router.best_route(1, 5, 0, 0, deadline_s=2.5) is None
    r = router.best_route(1, 5, 0, 0, deadline_s=3)
    assert r is not None
    assert r.arrival_s == 3


def test_cache_hits_and_plan_change_invalidates() -> None:
    plan = load_plan(PLANS / "ion_bench-cgr_global.ionrc")
    router = Router(plan)
    a = router.best_route(1, 4, 0, 1000)
    b = router.best_route(
        1, 4, 10, 1000
    )  # still waits for the 20 s contact: same route, from the cache
    assert a is not None
    assert a == b
    assert a.arrival_s == pytest.approx(25.001)
    assert router.stats["cache_hits"] == 1
    plan.add_contact(Contact(1, 4, 11, 12, 1e6))
    c = router.best_route(1, 4, 10, 1000)
    assert c is not None
    assert c.hops == (1, 4)
    assert c.arrival_s == pytest.approx(11.001)
    assert router.stats["builds"] == 2


def test_used_up_contact_invalidates_cached_routes() -> None:
    router = tutorial()
    a = router.best_route(1, 5, 0, 1000)
    assert a is not None
    router.consume(a.contacts[-1], a.contacts[-1].volume_bytes)
    b = router.best_route(1, 5, 0, 1000)
    assert b is not None
    assert a.contacts[-1] not in b.contacts


def test_bad_arguments() -> None:
    router = tutorial()
    with pytest.raises(InvalidArgument):
        router.best_route(1, 5, 0, -1)
    with pytest.raises(InvalidArgument):
        router.routes(1, 5, 0, 0, 0)
    with pytest.raises(InvalidArgument):
        router.consume(Contact(7, 8, 0, 1, 1), 1)
    assert router.best_route(1, 1, 0, 0) is None
    assert router.best_route(1, 42, 0, 0) is None


def test_fewest_hops_wins_a_tie_even_if_an_intermediate_node_is_reached_later() -> None:
    # Node 3 is reached at 0 via 1->2->3 (2 hops) or at 2 via 1->3 (1 hop); both then
    # wait for 3->4 opening at 5. SABR: same arrival, so the 2-hop route wins.
    plan = ContactPlan(
        [
            Contact(1, 2, 0, 10, 1e6),
            Contact(2, 3, 0, 10, 1e6),
            Contact(1, 3, 2, 10, 1e6),
            Contact(3, 4, 5, 10, 1e6),
        ]
    )
    route = Router(plan).best_route(1, 4, 0, 0)
    assert route is not None
    assert route.arrival_s == 5
    assert route.hops == (1, 3, 4)


def test_released_volume_is_seen_by_cached_queries() -> None:
    plan = ContactPlan([Contact(1, 2, 0, 10, 100.0), Contact(1, 2, 20, 30, 100.0)])
    router = Router(plan)
    early = plan.contacts[0]
    router.consume(early, 1000)
    late = router.best_route(1, 2, 0, 500)
    assert late is not None
    assert late.contacts[0].start_s == 20
    router.release(early, 1000)
    again = router.best_route(1, 2, 0, 500)
    assert again is not None
    assert again.contacts == (early,)


def test_latest_termination_wins_even_if_an_intermediate_node_is_reached_earlier() -> (
    None
):
    # 1->2 over [3, 8] reaches 2 at 3, over [5, 10] at 5; both wait for 2->3 at 7
    # and arrive at 7 in 2 hops. SABR: latest termination, so [5, 10] (10 > 8),
    # whatever the ready time, and a warm router (route cache) answers the same.
    plan = ContactPlan(
        [Contact(1, 2, 3, 8, 1.0), Contact(1, 2, 5, 10, 1.0), Contact(2, 3, 7, 20, 1.0)]
    )
    warm = Router(plan)
    for t in (0.0, 6.0):
        for router in (Router(plan), warm):
            route = router.best_route(1, 3, t, 0)
            assert route is not None
            assert route.arrival_s == 7
            assert route.contacts[0] == Contact(1, 2, 5, 10, 1.0)
    assert warm.stats["cache_hits"] == 1


def test_full_ties_are_ordered_the_same_warm_and_cold() -> None:
    # Two routes 2->4->3->1 differing only in the 4->3 contact: at size 1 from
    # t=20 both arrive at 23 with 3 hops and termination 23. The tie-break after
    # termination is fixed (prefix terminations: 24 for the [21, 24] contact
    # beats 23), so the order does not depend on what was cached at size 0,
    # when [8, 23] arrived first.
    late, early = Contact(4, 3, 21, 24, 1.0), Contact(4, 3, 8, 23, 1.0)
    plan = ContactPlan(
        [Contact(2, 4, 9, 24, 1.0), late, early, Contact(3, 1, 8, 23, 1.0)]
    )
    warm = Router(plan)
    first = warm.routes(2, 1, 20, 0, 3)
    assert [r.contacts[1] for r in first] == [early, late]
    for router in (warm, Router(plan)):
        got = router.routes(2, 1, 20, 1, 3)
        assert [r.arrival_s for r in got] == [23, 23]
        assert [r.contacts[1] for r in got] == [late, early]


def chain_plan() -> ContactPlan:
    """1 -> 2 -> 3 -> 4, each contact opening later than the one before."""
    return ContactPlan(
        [
            Contact(1, 2, 10.0, 20.0, 100.0),
            Contact(2, 3, 30.0, 40.0, 100.0),
            Contact(3, 4, 50.0, 60.0, 100.0),
            Contact(2, 1, 10.0, 20.0, 100.0),
        ]
    )


def test_forwarding_route_shares_suffixes_only_with_nodes_that_forward() -> None:
    plan = chain_plan()
    one = Router(plan)
    r = one.forwarding_route(1, 4, 0.0, 100.0)
    assert r is not None
    assert r.hops == (1, 2, 3, 4)
    # a single forwarding node (a daemon) leaves nothing for others
    assert not plan._cgr_graph.hints  # type: ignore[attr-defined]
    two = Router(plan)
    assert two.forwarding_route(2, 1, 0.0, 100.0) is not None  # node 2 forwards too
    one.forwarding_route(1, 4, 1.0, 100.0)  # a cache hit, shared this time
    searches = two.stats["searches"]
    # node 2 gets the bundle at 11 s (10 s start + 1 s to send): no search
    got = two.forwarding_route(2, 4, 11.0, 100.0, excluded=(1,))
    assert got is not None
    assert got.hops == (2, 3, 4)
    assert got.arrival_s == r.arrival_s
    assert two.stats["shared_hits"] == 1
    assert two.stats["searches"] == searches
    # earlier than planned, with the contact back to 1 open but excluded: same
    assert two.forwarding_route(2, 4, 10.5, 100.0, excluded=(1,)) == got.__class__(
        got.arrival_s, got.hops, got.contacts
    )
    assert two.stats["shared_hits"] == 2


def test_forwarding_route_remembers_unreachable_destinations() -> None:
    plan = chain_plan()
    plan = ContactPlan([*plan.contacts, Contact(9, 4, 0.0, 60.0, 100.0)])
    one, two = Router(plan), Router(plan)
    assert two.forwarding_route(2, 3, 0.0, 100.0) is not None  # node 2 forwards
    # no contact into 9: the search from 1 at 0 s (for an empty bundle, the
    # source tree's) reaches 2 at 10 s and fails
    assert one.forwarding_route(1, 9, 0.0, 100.0) is None
    searches = two.stats["searches"]
    assert two.forwarding_route(2, 9, 12.0, 100.0) is None
    assert two.stats["searches"] == searches  # known: node 2 was reached by then
    assert two.stats["shared_hits"] == 1
    assert two.forwarding_route(2, 9, 9.5, 100.0) is None  # before: searched
    assert two.stats["searches"] == searches + 1


def test_stale_source_tree_answers_by_another_way_in_without_a_new_tree() -> None:
    # 1 -> 2 closes at 10; 1 -> 4 -> 2 stays open; 2 -> 3 opens at 50. The
    # tree built at 0 goes 1 -> 2 -> 3 (arrival 51); at 20 its first contact
    # has ended, yet the bundle still arrives at 51, over 1 -> 4 -> 2 -> 3:
    # found backwards from 51 and proven best, with no second tree.
    plan = ContactPlan(
        [
            Contact(1, 2, 0.0, 10.0, 100.0),
            Contact(1, 4, 0.0, 100.0, 100.0),
            Contact(4, 2, 0.0, 100.0, 100.0),
            Contact(2, 3, 50.0, 60.0, 100.0),
        ]
    )
    r = Router(plan)
    first = r.forwarding_route(1, 3, 0.0, 100)
    assert first is not None
    assert (first.arrival_s, first.hops) == (51.0, (1, 2, 3))
    later = r.forwarding_route(1, 3, 20.0, 100)
    assert later is not None
    assert (later.arrival_s, later.hops) == (51.0, (1, 4, 2, 3))
    assert (r.stats["trees"], r.stats["tree_walks"]) == (1, 1)
    best = Router(plan).best_route(1, 3, 20.0, 100)
    assert best is not None
    assert (best.arrival_s, best.hop_count) == (later.arrival_s, later.hop_count)
    # the other way in starts towards an excluded neighbour: a new tree
    # (and then a search) find that none is left
    assert r.forwarding_route(1, 3, 20.0, 100, excluded=[4]) is None
    assert (r.stats["trees"], r.stats["tree_walks"]) == (2, 1)
    # too late for 2 -> 3 by any way
    assert r.forwarding_route(1, 3, 59.5, 100) is None
