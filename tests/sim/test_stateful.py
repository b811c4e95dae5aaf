"""A RuleBasedStateMachine over the simulator with real agents.

Rules interleave sends, the passage of time, crashes and restarts of nodes
(durable stores), and partitions, on a 5-node ring whose links open and close
periodically, with seeded loss, duplication and reordering. After every step
the ledger must balance (custody never lapses: an undelivered, unexpired
bundle is in some node's store, crashed nodes' disks included). At the end
every node is restarted, partitions run out, and the clock runs past every
lifetime: then nothing may be pending -- each bundle was delivered exactly
once or expired.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import NodeSpec, Partition, SimConfig, Simulator
from dcis.dtn.sim.engine import whole_key

NODES = (1, 2, 3, 4, 5)
PERIOD_S = 60.0
PLAN_END_S = 3_000.0
LIFETIME_S = 600.0


def ring_plan() -> ContactPlan:
    """Each ring neighbour pair is in contact for 25 s of every 60 s, phase by pair."""
    contacts = []
    ranges = []
    for i, a in enumerate(NODES):
        b = NODES[(i + 1) % len(NODES)]
        ranges += [Range(a, b, 0, PLAN_END_S, 0.1), Range(b, a, 0, PLAN_END_S, 0.1)]
        t = 7.0 * i
        while t < PLAN_END_S:
            contacts += [
                Contact(a, b, t, t + 25, 20_000.0),
                Contact(b, a, t, t + 25, 20_000.0),
            ]
            t += PERIOD_S
    return ContactPlan(contacts, ranges)


PLAN = ring_plan()


class SimMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.disks: dict[Path, MemoryStore] = {}

        def store_factory(node: int, spec: NodeSpec, path: Path | None) -> MemoryStore:
            assert path is not None
            return self.disks.setdefault(path, MemoryStore())

        self.sim = Simulator(
            PLAN,
            SimConfig(
                seed=3,
                duration_s=PLAN_END_S,
                loss=0.1,
                duplicate=0.1,
                reorder=0.2,
                lifetime_s=LIFETIME_S,
                store_dir=Path("/sim-disks"),
            ),
            node_specs={n: NodeSpec(durable=True) for n in NODES},
            store_factory=store_factory,
        )

    def up(self) -> list[int]:
        return [n for n in NODES if self.sim.agent(n) is not None]

    @rule(
        data=st.data(),
        size=st.sampled_from([10, 900, 5_000]),
        lifetime_s=st.sampled_from([LIFETIME_S, 40.0]),
        count=st.integers(1, 4),
    )
    def send(
        self, data: st.DataObject, size: int, lifetime_s: float, count: int
    ) -> None:
        src = data.draw(st.sampled_from(NODES))
        dst = data.draw(st.sampled_from([n for n in NODES if n != src]))
        for _ in range(count):
            self.sim.send(src, dst, size, lifetime_s=lifetime_s)

    @precondition(lambda self: self.sim.now_s < PLAN_END_S - 2 * LIFETIME_S)
    @rule(dt=st.sampled_from([1.0, 10.0, 45.0, 120.0]))
    def advance(self, dt: float) -> None:
        self.sim.run_until(self.sim.now_s + dt)

    @precondition(lambda self: len(self.up()) > 1)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        self.sim.crash(data.draw(st.sampled_from(self.up())))

    @precondition(lambda self: len(self.up()) < len(NODES))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        self.sim.restart(
            data.draw(st.sampled_from([n for n in NODES if n not in self.up()]))
        )

    @rule(
        cut=st.sets(st.sampled_from(NODES), min_size=1, max_size=4),
        dur=st.sampled_from([5.0, 60.0, 200.0]),
    )
    def partition(self, cut: set[int], dur: float) -> None:
        now = self.sim.now_s
        self.sim.add_partition(
            Partition(start_s=now, end_s=now + dur, groups=(frozenset(cut),))
        )

    @invariant()
    def ledger_balances(self) -> None:
        held = {
            whole_key(rec.key) for disk in self.disks.values() for rec in disk.records()
        }
        for rec in self.sim.ledger.values():
            assert rec.deliveries <= 1, rec
            if rec.deliveries:
                assert rec.first_delivery_us is not None
                assert rec.first_delivery_us < rec.expires_us
            elif not rec.expired:
                assert rec.key in held, (
                    f"{rec.key}: not delivered, not expired, held nowhere"
                )

    def teardown(self) -> None:
        for n in NODES:
            self.sim.restart(n)
        # Past every lifetime (and every partition, at most 200 s): each
        # bundle delivered or expired by then. The plan's remaining hours
        # would add only contacts to run through.
        self.sim.run_until(self.sim.now_s + LIFETIME_S + PERIOD_S)
        s = self.sim.summary()
        assert s.pending == 0, s
        print(
            "STATS",
            s.sent,
            s.delivered,
            s.expired,
            s.lost_in_flight,
            s.transmit_failures,
        )
        assert s.sent == s.delivered + s.expired
        assert (
            s.duplicates_delivered,
            s.misdelivered,
            s.delivered_after_lifetime,
            s.lost,
        ) == (0, 0, 0, 0)


# max_examples from the profile (dev 100, ci 500).
SimMachine.TestCase.settings = settings(
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSimMachine = pytest.mark.slow(SimMachine.TestCase)
