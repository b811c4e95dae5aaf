"""CGR reproduces the routes and delivery times published by HDTN's own tests.

Plans: tests/vectors/plans/ (copied unmodified from shared/cgr-plans, sources in
its README). Expectations: HDTN common/cgr/test/TestYen.cpp (7 routes 1->5 on the
tutorial plan with delivery times 3, 4, 11, 31, 31, 51, 51; next hops 3, 2, 5) and
TestDijkstra.cpp (tutorial best route = contacts [4], [6], [10]; RoutingTest 1->4 =
contacts [1], [2]; 4->1 unreachable; 10nodes 20->40 next hop 3686).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcis.dtn.routing.cgr import Router
from dcis.dtn.routing.contact import Contact
from dcis.dtn.storage.plan_files import load_plan

PLANS = Path(__file__).resolve().parents[2] / "vectors" / "plans"


def hdtn_contact(path: Path, index: int) -> Contact:
    """The contact at ``index`` in an HDTN JSON file, built independently of our parser."""
    c = json.loads(path.read_text())["contacts"][index]
    return Contact(
        c["source"],
        c["dest"],
        float(c["startTime"]),
        float(c["endTime"]),
        c["rateBitsPerSec"] / 8,
    )


def test_tutorial_best_route_is_hdtns_dijkstra_route() -> None:
    path = PLANS / "hdtn_cgrTutorial.json"
    route = Router(load_plan(path)).best_route(1, 5, 0.0, 0)
    assert route is not None
    assert route.contacts == tuple(hdtn_contact(path, i) for i in (4, 6, 10))
    assert route.hops == (1, 3, 4, 5)
    assert route.next_hop == 3
    # 1->3 at 0 (+1 s light time), 3->4 at 1 (+1), 4->5 at 2 (+1)
    assert route.arrival_s == 3.0


@pytest.mark.parametrize(
    ("name", "seventh"),
    [("hdtn_cgrTutorial.json", "confidence"), ("pycgr_cgr_tutorial.txt", "owlt")],
)
def test_tutorial_yen_routes_match_hdtn(name: str, seventh: str) -> None:
    plan = load_plan(PLANS / name, seventh_field=seventh)  # type: ignore[arg-type]
    routes = Router(plan).routes(1, 5, 0.0, 0, 10)
    assert [r.arrival_s for r in routes] == [3, 4, 11, 31, 31, 51, 51]
    assert [r.next_hop for r in routes[:3]] == [3, 2, 5]
    assert [r.hops for r in routes] == [
        (1, 3, 4, 5),
        (1, 2, 3, 4, 5),
        (1, 5),
        (1, 3, 4, 5),
        (1, 2, 3, 4, 5),
        (1, 3, 4, 5),
        (1, 2, 3, 4, 5),
    ]
    assert len({r.contacts for r in routes}) == 7


def test_routing_test_plan() -> None:
    path = PLANS / "hdtn_contactPlan_RoutingTest.json"
    router = Router(load_plan(path))
    route = router.best_route(1, 4, 0.0, 0)
    assert route is not None
    assert route.contacts == (hdtn_contact(path, 1), hdtn_contact(path, 2))
    assert route.next_hop == 2
    assert route.arrival_s == 12.0  # 1->2 at 0 (+1), wait for 2->4 at 11 (+1)
    assert router.best_route(4, 1, 0.0, 0) is None
    assert router.routes(4, 1, 0.0, 0, 3) == []


def test_ten_nodes_next_hop() -> None:
    plan = load_plan(PLANS / "hdtn_10nodes.json")
    # HDTN reads 368 entries; six have endTime < startTime and can never be used.
    assert len(plan) == 362
    assert len(plan.warnings) == 6
    route = Router(plan).best_route(20, 40, 0.0, 0)
    assert route is not None
    assert route.next_hop == 3686
    assert route.hops[0] == 20
    assert route.hops[-1] == 40


def test_size_adds_transmission_time() -> None:
    # bench-cgr plan: 1 MB/s contacts, zero light time; a 1000-byte bundle takes 1 ms per hop.
    router = Router(load_plan(PLANS / "ion_bench-cgr_global.ionrc"))
    route = router.best_route(1, 4, 0.0, 1000)
    assert route is not None
    assert route.hops == (1, 2, 4)
    assert route.arrival_s == pytest.approx(25.001)
