"""The object store in the simulator: DfsService on six NodeCores, its
bundles carried by real agents over a contact plan (CGR, light time,
seeded loss), against a dict model of every version put.

Rules: put / get / rm / crash / restart / lose a node for good / flip bits
in a share / partition (for a while) / advance (maintenance, the log
commits) / converge. The log and membership are the in-memory fakes of
dcis.dfs.testing, reading the simulator's state (who is up, which partitions are
on); the network is the simulator's.

Promises: a get returns the exact bytes of the version the reader's log
names whenever k of its shares are good on holders the reader can reach;
never two shares of one object on a node; after partitions end, restarts
and quiet, every object with k good shares left has n again on n distinct
nodes.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dcis.consensus.membership.view import Resources
from dcis.dfs.core.codec import crc32c
from dcis.dfs.core.errors import CorruptBlock, DfsError, NotFound
from dcis.dfs.core.manifest import Manifest
from dcis.dfs.core.service import DfsConfig, DfsService, GetOp, OpState
from dcis.dfs.core.store import MemoryShareStore
from dcis.dfs.testing import CommandService, LogHub, MemoryLog, StaticMembership
from dcis.dtn.node import Service
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import Partition, SimConfig, Simulator

NODES = [1, 2, 3, 4, 5, 6]
DURATION_S = 200_000
KN = [(1, 3), (2, 3), (2, 4), (3, 4)]
WAKE_MS = 2_000
CFG = DfsConfig(
    chunk_size=256,
    maintenance_interval_ms=60_000,
    push_grace_ms=120_000,
    gc_grace_ms=900_000,
    fetch_slack_ms=10_000,
    get_timeout_ms=400_000,
)


def mesh_plan() -> ContactPlan:
    contacts = [
        Contact(a, b, 0, DURATION_S, 1e7) for a in NODES for b in NODES if a != b
    ]
    ranges = [Range(a, b, 0, DURATION_S, 0.05) for a in NODES for b in NODES if a != b]
    return ContactPlan(contacts, ranges)


class SimTopology:
    """dcis.dfs.testing.Topology over a running simulator."""

    def __init__(self) -> None:
        self.nodes = list(NODES)
        self.lost: set[int] = set()
        self.resources: dict[int, Resources] = {}
        self.partitions: list[Partition] = []
        self.sim: Simulator | None = None

    @property
    def up(self) -> set[int]:  # type: ignore[override]
        assert self.sim is not None
        return {n for n in self.nodes if self.sim.core(n) is not None}

    def active(self) -> list[Partition]:
        assert self.sim is not None
        t = self.sim.now_s
        return [p for p in self.partitions if p.start_s <= t < p.end_s]

    @property
    def groups(self) -> list[set[int]] | None:  # type: ignore[override]
        act = self.active()
        if not act:
            return None
        p = act[0]
        groups = [set(g) for g in p.groups]
        rest = set(self.nodes) - set().union(*groups)
        return [*groups, rest] if rest else groups

    def connected(self, a: int, b: int) -> bool:
        return not any(p.separates(a, b) for p in self.active())

    def majority_group(self) -> set[int] | None:
        for g in self.groups or [set(self.nodes)]:
            if 2 * len(g) > len(self.nodes):
                return g
        return None


class DfsSimMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.topo = SimTopology()
        self.hub = LogHub(self.topo)
        self.stores = {n: MemoryShareStore() for n in NODES}
        self.drivers: dict[int, CommandService] = {}

        def factory(node: int, incarnation: int) -> Sequence[Service]:
            dfs = DfsService(
                membership=StaticMembership(self.topo, node),
                log=MemoryLog(self.hub, node),
                store=self.stores[node],
                config=CFG,
                entropy=random.Random(f"{node}:{incarnation}").randbytes,
            )
            self.drivers[node] = CommandService(
                dfs, wake_ms=WAKE_MS, on_wake=self.hub.spread
            )
            return [dfs, self.drivers[node]]

        self.sim = Simulator(
            mesh_plan(),
            SimConfig(seed=3, duration_s=DURATION_S, loss=0.02),
            services=factory,
        )
        self.topo.sim = self.sim
        self.sim.run_until(1)
        self.versions: dict[bytes, bytes] = {}
        self.names: dict[str, bytes] = {}
        self.removed: set[bytes] = set()

    def teardown(self) -> None:
        self.sim.close()

    # -- helpers -------------------------------------------------------------

    def run(self, seconds: float) -> None:
        self.sim.run_until(self.sim.now_s + seconds)

    def command(self, node: int, cmd: Callable[[DfsService, int], None]) -> None:
        self.drivers[node].queue.append(cmd)
        self.run(WAKE_MS / 1000 + 1)

    def dfs(self, node: int) -> DfsService:
        return self.drivers[node].dfs

    def good_share(self, m: Manifest, share: int, node: int) -> bool:
        for j in range(m.chunks):
            try:
                b = self.stores[node].get_block(m.object_id, share, j)
            except CorruptBlock:
                return False
            if b is None or crc32c(b) != m.block_crcs[j][share]:
                return False
        return True

    # -- rules -----------------------------------------------------------------

    @rule(
        name=st.sampled_from(["a", "b", "c"]),
        data=st.binary(max_size=1200),
        node=st.sampled_from(NODES),
        kn=st.sampled_from(KN),
    )
    def put(self, name: str, data: bytes, node: int, kn: tuple[int, int]) -> None:
        if node not in self.topo.up:
            return
        done: list[Manifest] = []

        def cmd(dfs: DfsService, now: int) -> None:
            with contextlib.suppress(DfsError):
                done.append(dfs.put(name, data, now, k=kn[0], n=kn[1]).manifest)

        self.command(node, cmd)
        self.run(5)
        if done:
            self.versions[done[0].object_id] = data
            self.names[name] = done[0].object_id

    @precondition(lambda self: self.names)
    @rule(data=st.data(), reader=st.sampled_from(NODES))
    def get(self, data: st.DataObject, reader: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.names)))
        if reader not in self.topo.up:
            return
        try:
            m = self.dfs(reader).manifest(name)
        except NotFound:
            return
        holders = self.dfs(reader).placement(m).holders
        good = sum(
            1
            for i, h in enumerate(holders)
            if h in self.topo.up
            and self.topo.connected(reader, h)
            and self.good_share(m, i, h)
        )
        ops: list[GetOp] = []
        self.command(reader, lambda dfs, now: ops.append(dfs.get(name, now)))
        for _ in range(40):
            if not ops or ops[0].state != OpState.RUNNING or reader not in self.topo.up:
                break
            self.run(10)
        if not ops or reader not in self.topo.up:
            return
        op = ops[0]
        if op.state == OpState.DONE:
            assert op.result() == self.versions[m.object_id]
        else:
            assert good < m.k, (
                f"get failed with {good} good shares reachable: {op.error}"
            )

    @precondition(lambda self: self.names and not self.topo.active())
    @rule(data=st.data(), node=st.sampled_from(NODES))
    def rm(self, data: st.DataObject, node: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.names)))
        if node not in self.topo.up:
            return
        gone: list[bytes] = []

        def cmd(dfs: DfsService, now: int) -> None:
            with contextlib.suppress(NotFound):
                gone.append(dfs.rm(name, now).object_id)

        self.command(node, cmd)
        if gone:
            self.removed.add(gone[0])
            del self.names[name]

    @rule(node=st.sampled_from(NODES))
    def crash(self, node: int) -> None:
        self.sim.crash(node)

    @rule(node=st.sampled_from(NODES))
    def restart(self, node: int) -> None:
        if node not in self.topo.lost:
            self.sim.restart(node)

    @precondition(lambda self: len(self.topo.lost) < 2)
    @rule(node=st.sampled_from(NODES))
    def lose(self, node: int) -> None:
        if node not in self.topo.lost:
            self.sim.crash(node)
            self.topo.lost.add(node)
            self.stores[node].__init__()  # type: ignore[misc]

    @rule(
        node=st.sampled_from(NODES), chunk=st.integers(0, 4), bit=st.integers(0, 3000)
    )
    def flip(self, node: int, chunk: int, bit: int) -> None:
        for oid, share, _ in list(self.stores[node].shares()):
            self.stores[node].flip_bit(oid, share, chunk, bit)
            return

    @precondition(lambda self: not self.topo.active())
    @rule(
        cut=st.sets(st.sampled_from(NODES), min_size=1, max_size=5),
        seconds=st.integers(60, 400),
    )
    def partition(self, cut: set[int], seconds: int) -> None:
        now = self.sim.now_s
        p = Partition(start_s=now, end_s=now + seconds, groups=(frozenset(cut),))
        self.topo.partitions.append(p)
        self.sim.add_partition(p)
        self.run(0.001)

    @rule(rounds=st.integers(1, 3))
    def advance(self, rounds: int) -> None:
        for _ in range(rounds):
            self.run(60)
            self.hub.spread()
            self.hub.commit()

    @rule()
    def converge(self) -> None:
        end = max((p.end_s for p in self.topo.partitions), default=0.0)
        if end > self.sim.now_s:
            self.run(end - self.sim.now_s + 1)
        for n in NODES:
            if n not in self.topo.lost:
                self.sim.restart(n)
        self.hub.spread()
        self.hub.commit()
        reader = min(self.topo.up)
        recoverable: dict[str, bool] = {}
        for name in self.names:
            m = self.dfs(reader).manifest(name)
            good = sum(
                1 for i in range(m.n) for h in self.topo.up if self.good_share(m, i, h)
            )
            recoverable[name] = good >= m.k
        for _ in range(10):
            self.run(60)
            self.hub.spread()
            self.hub.commit()
        live = len(NODES) - len(self.topo.lost)
        for name, ok in recoverable.items():
            m = self.dfs(reader).manifest(name)
            if not ok or live < m.n:
                continue
            holders = self.dfs(reader).placement(m).holders
            bad = [i for i, h in enumerate(holders) if not self.good_share(m, i, h)]
            assert not bad, f"{name}: shares {bad} on {holders} not repaired"
        for oid in self.removed:
            for n in self.topo.up:
                assert not any(o == oid for o, _, _ in self.stores[n].shares())

    @invariant()
    def never_two_shares_of_one_object_on_a_node(self) -> None:
        for node, store in self.stores.items():
            seen: set[bytes] = set()
            for oid, _, _ in store.shares():
                assert oid not in seen, f"node {node} holds two shares of {oid.hex()}"
                seen.add(oid)


TestDfsSim = pytest.mark.slow(DfsSimMachine.TestCase)
TestDfsSim.settings = settings(stateful_step_count=12)
