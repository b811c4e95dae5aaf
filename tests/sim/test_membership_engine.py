"""Membership on the full stack in dcis.dtn.sim: agents, bundles, stores and the
node services of dcis.dtn.node, on a connected plan; a crash is detected and the
node rejoins after its restart."""

from __future__ import annotations

from dcis.consensus.membership.node import factory
from dcis.consensus.membership.service import MembershipService
from dcis.consensus.membership.sim import credentials_for
from dcis.consensus.membership.view import MemberState
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import SimConfig, Simulator

NODES = [1, 2, 3, 4]


def _plan(duration_s: float) -> ContactPlan:
    contacts = [
        Contact(a, b, 0.0, duration_s, 100_000.0)
        for a in NODES
        for b in NODES
        if a != b
    ]
    ranges = [
        Range(a, b, 0.0, duration_s, 0.01) for a in NODES for b in NODES if a != b
    ]
    return ContactPlan(contacts, ranges)


def _view(sim: Simulator, node: int) -> MembershipService:
    svc = sim.service(node, 16)
    assert isinstance(svc, MembershipService)
    return svc


def test_crash_detected_and_restart_rejoins_on_the_full_stack() -> None:
    sim = Simulator(
        _plan(400.0),
        SimConfig(seed=3, duration_s=400.0),
        services=factory,
        credentials=credentials_for(NODES, seed=3),
    )
    sim.run_until(20.0)
    for n in NODES:
        assert _view(sim, n).live() == set(NODES)
    sim.crash(4)
    sim.run_until(120.0)
    for n in (1, 2, 3):
        assert _view(sim, n).state_of(4) == MemberState.DEAD
        assert _view(sim, n).state_of(1 if n != 1 else 2) == MemberState.ALIVE
    sim.restart(4)
    sim.run_until(160.0)
    for n in NODES:
        assert _view(sim, n).live() == set(NODES)
    assert _view(sim, 1).members()[4].incarnation > 1
