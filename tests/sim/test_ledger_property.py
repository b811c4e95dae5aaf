"""Property: over random small plans, traffic and faults, the ledger balances.

For every run: each bundle sent is delivered exactly once, or expired, or
still pending in some node's store; nothing is delivered after its lifetime
or to the wrong node; and the same seed gives the same ``trace_sha256``.

The fast tests (memory stores, loss/duplication/reordering, partitions;
crashes of nodes whose "disk" is a MemoryStore kept across the crash) run in
the default suite; the crash/restart variant on real SQLite files is marked
slow. Each example simulates a few hundred seconds of a 2-5 node network.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcis.dtn.agent.actions import Action, Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import (
    Crash,
    NodeSpec,
    Partition,
    SimConfig,
    SimSummary,
    Simulator,
    TrafficItem,
)

# Strategies are built once, here: hypothesis validates each new strategy
# object at its first draw, which cost more than a small run simulates.
_NODE_COUNT = st.integers(2, 5)
_CONTACT_COUNT = st.integers(1, 12)
_START = st.integers(0, 250)
_DURATION = st.integers(1, 60)
_RATE = st.sampled_from([500.0, 2_000.0, 20_000.0])
_OWLT = st.sampled_from([0.0, 0.05, 1.5])
_PAIR = {
    n: st.permutations(range(1, n + 1)).map(lambda p: (p[0], p[1])) for n in range(2, 6)
}  # an ordered pair of distinct nodes of 1..n
_ITEM_COUNT = st.integers(1, 6)
_AT = st.integers(0, 200)
_SIZE = st.sampled_from([1, 300, 1_500, 6_000])
_COPIES = st.integers(1, 3)


@st.composite
def plans(draw: st.DrawFn) -> ContactPlan:
    n = draw(_NODE_COUNT)
    nodes = list(range(1, n + 1))
    contacts = []
    for _ in range(draw(_CONTACT_COUNT)):
        frm, to = draw(_PAIR[n])
        start = draw(_START)
        dur = draw(_DURATION)
        rate = draw(_RATE)
        contacts.append(Contact(frm, to, float(start), float(start + dur), rate))
    ranges = []
    for a in nodes:
        for b in nodes:
            if a < b:
                ranges.append(Range(a, b, 0.0, 1_000.0, draw(_OWLT)))
    return ContactPlan(
        dict.fromkeys(contacts), ranges
    )  # the plan refuses exact duplicates


@st.composite
def traffic_for(draw: st.DrawFn, plan: ContactPlan) -> list[TrafficItem]:
    n = len(plan.nodes)
    items = []
    for _ in range(draw(_ITEM_COUNT)):
        src, dst = draw(_PAIR[n])
        items.append(
            TrafficItem(
                at_s=float(draw(_AT)),
                src=src,
                dst=dst,
                size_bytes=draw(_SIZE),
                count=draw(_COPIES),
            )
        )
    return items


_SOME = {
    n: st.sets(st.sampled_from(range(1, n + 1)), min_size=1, max_size=n - 1)
    for n in range(2, 6)
}  # a proper, non-empty subset of the nodes 1..n
_CRASHED = {
    n: st.sets(st.sampled_from(range(1, n + 1)), min_size=1, max_size=2)
    for n in range(2, 6)
}
_CUT_AT = st.integers(0, 200)
_CUT_FOR = st.integers(1, 100)
_SEED = st.integers(0, 2**16)
_LOSS = st.sampled_from([0.0, 0.1, 0.3])
_DUPLICATE = st.sampled_from([0.0, 0.2])
_REORDER = st.sampled_from([0.0, 0.3])
_LIFETIME = st.sampled_from([30, 120, 400])
_CRASH_AT = st.integers(0, 300)
_DOWN_FOR = st.integers(0, 60)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    plan = draw(plans())
    partitions = []
    if draw(st.booleans()):
        start = draw(_CUT_AT)
        cut = frozenset(draw(_SOME[len(plan.nodes)]))
        partitions.append(
            Partition(
                start_s=float(start),
                end_s=float(start + draw(_CUT_FOR)),
                groups=(cut,),
            )
        )
    return {
        "plan": plan,
        "traffic": draw(traffic_for(plan)),
        "partitions": partitions,
        "seed": draw(_SEED),
        "loss": draw(_LOSS),
        "duplicate": draw(_DUPLICATE),
        "reorder": draw(_REORDER),
        "lifetime_s": float(draw(_LIFETIME)),
    }


def run_once(
    sc: dict[str, object], *, check_every_s: float | None = None, **extra: object
) -> tuple[Simulator, SimSummary]:
    cfg = SimConfig(
        seed=sc["seed"],  # type: ignore[arg-type]
        duration_s=400.0,
        loss=sc["loss"],  # type: ignore[arg-type]
        duplicate=sc["duplicate"],  # type: ignore[arg-type]
        reorder=sc["reorder"],  # type: ignore[arg-type]
        lifetime_s=sc["lifetime_s"],  # type: ignore[arg-type]
        store_dir=extra.pop("store_dir", None),  # type: ignore[arg-type]
    )
    sim = Simulator(
        sc["plan"],  # type: ignore[arg-type]
        cfg,
        traffic=sc["traffic"],  # type: ignore[arg-type]
        partitions=sc["partitions"],  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )
    if check_every_s is not None:
        # Custody never lapses: at every step, each bundle not yet delivered
        # nor expired is in some store (the sender keeps it until acked).
        t = 0.0
        while t < cfg.duration_s:
            t += check_every_s
            sim.run_until(t)
            check_ledger(sim, sim.summary())
    s = sim.run()
    return sim, s


def check_ledger(sim: Simulator, s: SimSummary) -> None:
    stored = sim.stored_keys()
    for rec in sim.ledger.values():
        assert rec.deliveries <= 1, f"{rec.key} delivered {rec.deliveries} times"
        if rec.deliveries:
            assert rec.first_delivery_us is not None
            assert rec.first_delivery_us < rec.expires_us, (
                f"{rec.key} delivered after its lifetime"
            )
        elif not rec.expired:
            assert rec.key in stored, (
                f"{rec.key} was lost: not delivered, not expired, in no store"
            )
    assert s.sent == s.delivered + s.expired + s.deleted + s.pending
    assert s.lost == 0
    assert s.duplicates_delivered == 0
    assert s.misdelivered == 0
    assert s.delivered_after_lifetime == 0


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_ledger_balances_and_runs_replay(sc: dict[str, object]) -> None:
    sim, s = run_once(sc, check_every_s=25.0)
    check_ledger(sim, s)
    _, again = run_once(sc)
    assert again.trace_sha256 == s.trace_sha256
    assert again == s


def crash_case(
    sc: dict[str, object], data: st.DataObject
) -> tuple[list[Crash], dict[int, NodeSpec]]:
    plan: ContactPlan = sc["plan"]  # type: ignore[assignment]
    nodes = sorted(plan.nodes)
    crashes = []
    for node in data.draw(_CRASHED[len(nodes)]):
        at = data.draw(_CRASH_AT)
        crashes.append(
            Crash(
                node=node,
                at_s=float(at),
                restart_at_s=float(at + data.draw(_DOWN_FOR)),
            )
        )
    return crashes, {n: NodeSpec(durable=True) for n in nodes}


def kept_memory_stores() -> Any:
    """A store factory whose "disk" is a MemoryStore kept across crashes (fast)."""
    disks: dict[Path, MemoryStore] = {}

    def factory(node: int, spec: NodeSpec, path: Path | None) -> MemoryStore:
        if path is None:
            return MemoryStore()
        return disks.setdefault(path, MemoryStore())

    return factory


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(), data=st.data())
def test_ledger_balances_across_crashes_of_durable_nodes(
    sc: dict[str, object], data: st.DataObject
) -> None:
    crashes, specs = crash_case(sc, data)
    digests = []
    for _ in range(2):
        sim, s = run_once(
            sc,
            store_dir=Path("/nonexistent"),
            crashes=crashes,
            node_specs=specs,
            store_factory=kept_memory_stores(),
        )
        check_ledger(sim, s)
        digests.append(s.trace_sha256)
    assert digests[0] == digests[1]


_RAM = "/dev/shm" if os.path.isdir("/dev/shm") else None
"""Where the SQLite-backed runs keep their files: a crash here is the
simulator's (the file stays as written), so tmpfs loses nothing the test
looks at, and spares each example the disk's fsyncs (most of its time)."""


@pytest.mark.slow
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(), data=st.data())
def test_ledger_balances_across_crashes_of_sqlite_backed_nodes(
    sc: dict[str, object], data: st.DataObject
) -> None:
    crashes, specs = crash_case(sc, data)
    digests = []
    for _ in range(2):
        with tempfile.TemporaryDirectory(dir=_RAM) as d:
            sim, s = run_once(sc, store_dir=Path(d), crashes=crashes, node_specs=specs)
            check_ledger(sim, s)
            sim.close()
            digests.append(s.trace_sha256)
    assert digests[0] == digests[1]


class _LifetimeCheckingAgent(Agent):
    """An Agent that fails the test if it emits a Transmit of a bundle whose
    lifetime is over at that instant (RFC 9171 5.4: an expired bundle is
    deleted, never forwarded)."""

    def _finish(self, actions: list[Action]) -> None:
        super()._finish(actions)
        now = self._last_now
        for act in actions:
            if isinstance(act, Transmit):
                p = decode_bundle_untrusted(act.data).primary
                assert p.creation.time_ms != 0
                assert now < p.creation.time_ms + p.lifetime_ms, (
                    f"{p} transmitted at {now}, after its lifetime"
                )

    _last_now = 0

    def on_contact_start(self, contact: Contact, now: int) -> list[Action]:
        self._last_now = now
        return super().on_contact_start(contact, now)

    def on_transmit_done(self, tx_id: int, ok: bool, now: int) -> list[Action]:
        self._last_now = now
        return super().on_transmit_done(tx_id, ok, now)

    def on_tick(self, now: int) -> list[Action]:
        self._last_now = now
        return super().on_tick(now)

    def on_receive(self, **kw: Any) -> list[Action]:
        self._last_now = kw["now"]
        return super().on_receive(**kw)

    def send(self, **kw: Any) -> tuple[str, list[Action]]:
        self._last_now = kw["now"]
        return super().send(**kw)

    def recover(self, now: int) -> list[Action]:
        self._last_now = now
        return super().recover(now)


def _checking_agent(**kw: Any) -> Agent:
    return _LifetimeCheckingAgent(**kw)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_nothing_is_transmitted_after_its_lifetime(sc: dict[str, object]) -> None:
    sim, s = run_once(sc, agent_factory=_checking_agent)
    check_ledger(sim, s)
