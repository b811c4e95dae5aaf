"""The ledger's ``deleted`` outcome: bundles an agent deleted on purpose.

A bundle that an agent deliberately deleted (hop limit, security policy,
unprocessable block, no age) and that no store holds any more is counted as
``deleted``, with its reason, not as ``pending``/``lost``. A copy still held
somewhere keeps it pending; a delivery of any copy wins. The trace is not
changed by this bookkeeping.
"""

from __future__ import annotations

import io
import json
from typing import Any

from dcis.dtn.agent.actions import Action, Event
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import (
    DELETION_REASONS,
    SimConfig,
    SimSummary,
    Simulator,
    TrafficItem,
    deletion_reason,
)
from dcis.tools.cmd_sim import _readable

RATE = 100_000.0


def chain() -> ContactPlan:
    """1 -> 2 during [10, 20] s, 2 -> 3 during [30, 40] s."""
    contacts = [Contact(1, 2, 10, 20, RATE), Contact(2, 3, 30, 40, RATE)]
    return ContactPlan(contacts, [Range(c.frm, c.to, 0, 1000, 0.5) for c in contacts])


def hop_limited(
    *, node: int, store: Any, plan: Any, plan_epoch: Any, rng: Any
) -> Agent:
    # Hop limit 1: the first hop (1 -> 2) is allowed, node 2 must delete.
    return Agent(
        node=node,
        store=store,
        plan=plan,
        plan_epoch=plan_epoch,
        rng=rng,
        config=AgentConfig(hop_limit=1),
    )


def balanced(s: SimSummary) -> None:
    assert s.sent == s.delivered + s.expired + s.deleted + s.pending
    assert sum(s.deleted_reasons.values()) == s.deleted


def test_hop_limit_deletions_are_deleted_not_lost() -> None:
    records: list[tuple[int, str, int, tuple[object, ...]]] = []
    sim = Simulator(
        chain(),
        SimConfig(duration_s=100.0, seed=1),
        traffic=[TrafficItem(at_s=1, src=1, dst=3, size_bytes=100, count=3)],
        agent_factory=hop_limited,
        trace_listener=lambda t, k, n, f: records.append((t, k, n, f)),
    )
    s = sim.run()
    assert (s.sent, s.delivered, s.expired, s.pending, s.lost) == (3, 0, 0, 0, 0)
    assert s.deleted == 3
    assert dict(s.deleted_reasons) == {"hop_limit": 3}
    balanced(s)
    for rec in sim.ledger.values():
        assert rec.deletions == 1
        assert rec.deleted_reason is not None
        assert "hop limit" in rec.deleted_reason
    # Node 2 deleted them; the trace line carries the agent's reason.
    deleted = [(n, f) for _, k, n, f in records if k == "deleted"]
    assert len(deleted) == 3
    assert all(n == 2 and "hop limit" in json.loads(str(f[1])) for n, f in deleted)
    # The JSON form has the new keys next to the old ones.
    d = s.to_dict()
    assert (d["deleted"], d["deleted_reasons"], d["lost"], d["pending"]) == (
        3,
        {"hop_limit": 3},
        0,
        0,
    )
    json.dumps(d)
    # And the readable summary says so at the end of its outcome line.
    out = io.StringIO()
    _readable(s, out)
    assert "lost 0, deleted 3 (hop_limit 3)" in out.getvalue()


class DeletesAtRelay:
    """Wraps node 2's agent: for every bundle it receives it also reports
    ``Event("deleted")``, yet keeps and forwards the bundle (as if another
    copy had been deleted)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def on_receive(self, **kw: Any) -> list[Action]:
        actions = self.agent.on_receive(**kw)
        keys = [a.bundle_key for a in actions if isinstance(a, Event)]
        return actions + [Event("deleted", k, "test copy deleted") for k in keys[:1]]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)


def spurious(*, node: int, store: Any, plan: Any, plan_epoch: Any, rng: Any) -> Any:
    agent = Agent(node=node, store=store, plan=plan, plan_epoch=plan_epoch, rng=rng)
    return DeletesAtRelay(agent) if node == 2 else agent


def test_a_copy_still_stored_is_pending_and_a_delivery_wins() -> None:
    sim = Simulator(
        chain(),
        SimConfig(duration_s=100.0, seed=2),
        traffic=[TrafficItem(at_s=1, src=1, dst=3, size_bytes=100, count=2)],
        agent_factory=spurious,
    )
    sim.run_until(25)  # node 2 holds both; each had a deletion reported
    assert all(rec.deletions == 1 for rec in sim.ledger.values())
    s = sim.summary()
    assert (s.sent, s.pending, s.deleted, s.lost) == (2, 2, 0, 0)
    assert dict(s.deleted_reasons) == {}
    s = sim.run()
    assert (s.delivered, s.pending, s.deleted, s.lost) == (2, 0, 0, 0)
    balanced(s)


def test_deletion_reason_categories() -> None:
    # The agent's own wording for each kind of deliberate deletion.
    cases = {
        "hop limit exceeded (3 > 2)": "hop_limit",
        "hop limit 2 reached": "hop_limit",
        "refused by the security policy (authentication_failed)": "security",
        "refused by the security policy (hop_limit_exceeded)": "security",
        "unprocessable block(s) [200] ask for deletion": "unprocessable_block",
        "no creation time and no bundle age block": "no_age",
        "something new": "other",
        "": "other",
    }
    for detail, why in cases.items():
        assert deletion_reason(detail) == why, detail
        assert why in DELETION_REASONS
