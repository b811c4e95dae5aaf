"""dtn: destinations (issue 17): static routes to ipn node numbers, refusal at
send without one, and a ``no_route`` event whenever a bundle waits without a route."""

from __future__ import annotations

import pytest

from dcis.dtn.agent.agent import Agent, NoRoute
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.bpv7.eid import parse_eid
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import (
    ContactPlan,
    apply_ionrc,
    format_hdtn_json,
    format_ionrc,
    parse_hdtn_json,
    parse_ionrc,
)
from tests.unit.agent.helpers import Net, Transmit, events, link, of

S = 1000


def three(routes: dict[str, int] | None = None, plan: ContactPlan | None = None) -> Net:
    ag = {}
    for i in (1, 2, 3):
        ag[i] = Agent(node=i, store=MemoryStore(), plan=plan, dtn_routes=routes)
    ag[3].register("dtn://ground/inbox")
    ag[1].register("ipn:1.1")
    return Net(ag)


def test_dtn_destination_crosses_two_hops_by_a_static_route() -> None:
    plan = ContactPlan([Contact(1, 2, 0, 100, 1e6), Contact(2, 3, 0, 100, 1e6)])
    net = three({"dtn://ground/": 3}, plan)
    net.at(S).start(Contact(1, 2, 0, 100, 1e6))
    net.start(Contact(2, 3, 0, 100, 1e6))
    _, acts = net.agents[1].send(
        source="ipn:1.1",
        destination="dtn://ground/inbox",
        payload=b"x",
        lifetime_ms=3_600_000,
        now=S,
    )
    net.pump(1, acts)
    assert [(n, d.endpoint) for n, d in net.delivered] == [(3, "dtn://ground/inbox")]
    assert net.agents[1].stored == 0


def test_send_without_a_route_is_refused_with_a_clear_error() -> None:
    a = Agent(node=1, store=MemoryStore())
    a.register("ipn:1.1")
    with pytest.raises(NoRoute, match=r"no route to dtn://elsewhere/x.*static route"):
        a.send(
            source="ipn:1.1",
            destination="dtn://elsewhere/x",
            payload=b"x",
            lifetime_ms=1000,
            now=0,
        )
    assert a.stored == 0
    assert isinstance(NoRoute("x"), InvalidArgument)
    # a local dtn: endpoint needs no route
    a.register("dtn://me/app")
    key, _ = a.send(
        source="ipn:1.1",
        destination="dtn://me/other",
        payload=b"y",
        lifetime_ms=1000,
        now=0,
    )
    assert a.holds(key)


def test_no_route_event_names_the_reason() -> None:
    a = Agent(node=1, store=MemoryStore(), dtn_routes={"dtn://far/": 9})
    a.register("ipn:1.1")
    _, acts = a.send(
        source="ipn:1.1", destination="ipn:5.1", payload=b"x", lifetime_ms=10_000, now=0
    )
    (ev,) = events(acts, "no_route")
    assert "no contact plan and no open contact to node 5" in ev.detail
    _, acts = a.send(
        source="ipn:1.1",
        destination="dtn://far/x",
        payload=b"x",
        lifetime_ms=10_000,
        now=0,
    )
    (ev,) = events(acts, "no_route")
    assert "node 9" in ev.detail
    # with a plan that cannot reach the node in time
    plan = ContactPlan([Contact(1, 2, 100, 200, 1000)])
    b = Agent(node=1, store=MemoryStore(), plan=plan)
    b.register("ipn:1.1")
    _, acts = b.send(
        source="ipn:1.1", destination="ipn:2.1", payload=b"x", lifetime_ms=10_000, now=0
    )
    (ev,) = events(acts, "no_route")
    assert "contact plan" in ev.detail
    assert "before expiry" in ev.detail
    # a forwarded dtn: bundle with no route: held and said so
    bundle = make_bundle(
        source="ipn:7.1",
        destination="dtn://nowhere/x",
        payload=b"z",
        creation_ms=0,
        sequence=0,
        lifetime_ms=10_000,
    )
    acts = b.on_receive(cla="test", neighbor=7, data=encode_bundle(bundle), now=0)
    (ev,) = events(acts, "no_route")
    assert "dtn://nowhere/" in ev.detail
    # a bundle with a route raises no event
    b.on_contact_start(link(1, 3), 0)
    _, acts = b.send(
        source="ipn:1.1", destination="ipn:3.1", payload=b"x", lifetime_ms=10_000, now=0
    )
    assert events(acts, "no_route") == []
    assert len(of(acts, Transmit)) == 1


def test_plan_routes_read_written_and_applied() -> None:
    text = "# dcis dtn-route dtn://ground/ 3\na contact +0 +100 1 2 1000\n"
    plan = parse_ionrc(text)
    assert plan.dtn_routes == {"dtn://ground/": 3}
    assert parse_ionrc(format_ionrc(plan)) == plan
    assert parse_hdtn_json(format_hdtn_json(plan)).dtn_routes == {"dtn://ground/": 3}
    v = plan.version
    apply_ionrc(plan, "# dcis dtn-route dtn://moon/ 4\n")
    assert plan.dtn_routes == {"dtn://ground/": 3, "dtn://moon/": 4}
    assert plan.version > v
    for bad in ("dtn://x/y 3", "ipn:3.0 3", "dtn://x/ 0", "dtn://x/"):
        with pytest.raises(ValueError, match="1:"):
            parse_ionrc(f"# dcis dtn-route {bad}\n")
    with pytest.raises(ValueError, match="dtnRoutes"):
        parse_hdtn_json('{"contacts": [], "dtnRoutes": {"dtn://x/": "3"}}')


def test_a_plan_route_that_arrives_later_releases_held_bundles() -> None:
    plan = ContactPlan([Contact(1, 2, 0, 100, 1e6)])
    a = Agent(node=1, store=MemoryStore(), plan=plan)
    a.register("dtn://me/app")
    bundle = make_bundle(
        source="ipn:7.1",
        destination="dtn://two/x",
        payload=b"z",
        creation_ms=0,
        sequence=0,
        lifetime_ms=100_000,
    )
    acts = a.on_receive(cla="test", neighbor=7, data=encode_bundle(bundle), now=0)
    assert events(acts, "no_route")
    a.on_contact_start(Contact(1, 2, 0, 100, 1e6), S)
    apply_ionrc(plan, "# dcis dtn-route dtn://two/ 2\n")
    acts = a.on_tick(2 * S)
    assert [t.neighbor for t in of(acts, Transmit)] == [2]
    assert str(parse_eid("dtn://two/x")) == "dtn://two/x"


def test_node_toml_routes_win_over_the_plans() -> None:
    plan = ContactPlan()
    plan.dtn_routes = {"dtn://g/": 4}
    a = Agent(node=1, store=MemoryStore(), plan=plan, dtn_routes={"dtn://g/": 5})
    assert a._dest_of(parse_eid("dtn://g/x")) == 5
    with pytest.raises(InvalidArgument, match="node ID"):
        Agent(node=1, store=MemoryStore(), dtn_routes={"dtn://g/x": 5})
