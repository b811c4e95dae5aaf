"""The object store against a dict model (STYLE.md §7), over the in-memory
cluster of dcis.dfs.testing: put / get / rm / crash and restart a holder / lose a
holder for good / flip bits in a share / partition / heal / commit / repair.

Promises checked:
- a get returns the object's exact bytes whenever at least k of its shares
  are good on holders reachable from the reader, and never wrong bytes;
- no node ever holds two shares of one object;
- after heal, restarts and quiet, every object that still had k good shares
  anywhere has n good shares again, on n distinct nodes (repair converges),
  and removed objects' shares are gone.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from dcis.dfs.core.codec import crc32c
from dcis.dfs.core.errors import CorruptBlock, NotFound, PlacementError
from dcis.dfs.core.manifest import Manifest
from dcis.dfs.core.service import DfsConfig, OpState
from dcis.dfs.testing import Cluster

NODES = list(range(1, 8))
NAMES = ["a", "b", "c", "d/e"]
KN = [(1, 3), (2, 3), (2, 4), (3, 5)]
CFG = DfsConfig(
    chunk_size=64,
    maintenance_interval_ms=60_000,
    push_grace_ms=120_000,
    gc_grace_ms=900_000,
    fetch_slack_ms=10_000,
)


class DfsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = Cluster(nodes=list(NODES), config=CFG, seed=7)
        # name -> (bytes, the nodes whose log knows this version)
        self.model: dict[str, tuple[bytes, set[int]]] = {}
        self.removed: set[bytes] = set()

    # -- helpers -----------------------------------------------------------

    def visible(self, name: str, reader: int) -> bool:
        return reader in self.model[name][1]

    def spread(self) -> None:
        groups = self.c.groups or [set(NODES)]
        for _, known in self.model.values():
            for g in groups:
                if known & g:
                    known |= g

    def manifest_at(self, name: str, reader: int) -> Manifest:
        return self.c.services[reader].manifest(name)

    def good_share(self, m: Manifest, share: int, node: int) -> bool:
        store = self.c.stores[node]
        for j in range(m.chunks):
            try:
                b = store.get_block(m.object_id, share, j)
            except CorruptBlock:
                return False
            if b is None or crc32c(b) != m.block_crcs[j][share]:
                return False
        return True

    def reachable_good(self, m: Manifest, reader: int) -> int:
        holders = self.c.services[reader].placement(m).holders
        return sum(
            1
            for i, h in enumerate(holders)
            if h in self.c.up
            and self.c.connected(reader, h)
            and self.good_share(m, i, h)
        )

    def partitioned(self) -> bool:
        return self.c.groups is not None

    # -- rules -------------------------------------------------------------

    @rule(
        name=st.sampled_from(NAMES),
        data=st.binary(max_size=300),
        node=st.sampled_from(NODES),
        kn=st.sampled_from(KN),
    )
    def put(self, name: str, data: bytes, node: int, kn: tuple[int, int]) -> None:
        if node not in self.c.up:
            return
        if self.partitioned() and name in self.model:
            return  # concurrent writes of one name across a partition: not modelled
        try:
            self.c.services[node].put(name, data, self.c.now_ms, k=kn[0], n=kn[1])
        except PlacementError:
            return
        self.c.flush(node)
        self.model[name] = (data, {n for n in NODES if self.c.connected(node, n)})

    @precondition(lambda self: self.model)
    @rule(data=st.data(), reader=st.sampled_from(NODES))
    def get(self, data: st.DataObject, reader: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        if reader not in self.c.up or not self.visible(name, reader):
            return
        svc = self.c.services[reader]
        m = self.manifest_at(name, reader)
        enough = self.reachable_good(m, reader) >= m.k
        op = svc.get(name, self.c.now_ms)
        self.c.flush(reader)
        for _ in range(2 * m.n + 2):
            if op.state != OpState.RUNNING:
                break
            self.c.tick(15_000)
        if op.state == OpState.DONE:
            assert op.result() == self.model[name][0]
        else:
            assert not enough, (
                f"get failed with {m.k} good shares reachable: {op.error}"
            )

    @precondition(lambda self: self.model and not self.partitioned())
    @rule(data=st.data(), node=st.sampled_from(NODES))
    def rm(self, data: st.DataObject, node: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        if node not in self.c.up:
            return
        m = self.c.services[node].rm(name, self.c.now_ms)
        self.removed.add(m.object_id)
        del self.model[name]
        try:
            self.c.services[node].get(name, self.c.now_ms)
        except NotFound:
            pass
        else:
            raise AssertionError("a removed object still reads")

    @rule(node=st.sampled_from(NODES))
    def crash(self, node: int) -> None:
        if node in self.c.up:
            self.c.crash(node)

    @rule(node=st.sampled_from(NODES))
    def restart(self, node: int) -> None:
        if node not in self.c.up and node not in self.c.lost:
            self.c.start(node)
            self.c.deliver()

    @precondition(lambda self: len(self.c.lost) < 3)
    @rule(node=st.sampled_from(NODES))
    def lose(self, node: int) -> None:
        if node not in self.c.lost:
            self.c.lose(node)

    @rule(
        node=st.sampled_from(NODES),
        share=st.integers(0, 4),
        chunk=st.integers(0, 4),
        bit=st.integers(0, 4000),
    )
    def flip(self, node: int, share: int, chunk: int, bit: int) -> None:
        for oid, s, _ in list(self.c.stores[node].shares()):
            if s == share:
                self.c.stores[node].flip_bit(oid, s, chunk, bit)
                return

    @rule(cut=st.sets(st.sampled_from(NODES), min_size=1, max_size=len(NODES) - 1))
    def partition(self, cut: set[int]) -> None:
        self.c.partition([cut, set(NODES) - cut])
        self.spread()

    @rule()
    def heal(self) -> None:
        self.c.heal()
        self.spread()
        self.c.deliver()

    @rule()
    def commit(self) -> None:
        self.c.hub.commit()

    @rule(rounds=st.integers(1, 3))
    def advance(self, rounds: int) -> None:
        for _ in range(rounds):
            self.c.tick(60_000)
            self.c.hub.commit()

    @rule()
    def converge(self) -> None:
        """Heal, restart everyone, let repair run: n good shares again."""
        c = self.c
        c.heal()
        self.spread()
        for node in NODES:
            if node not in c.up and node not in c.lost:
                c.start(node)
        c.deliver()
        c.hub.commit()
        reader = min(c.up)
        recoverable = {}
        for name in self.model:
            m = self.manifest_at(name, reader)
            good = sum(1 for i in range(m.n) for h in c.up if self.good_share(m, i, h))
            recoverable[name] = good >= m.k
        for _ in range(12):
            c.tick(60_000)
            c.hub.commit()
        live_nodes = len(NODES) - len(c.lost)
        for name, (data, _) in self.model.items():
            m = self.manifest_at(name, reader)
            if not recoverable[name] or live_nodes < m.n:
                continue
            holders = c.services[reader].placement(m).holders
            bad = [i for i, h in enumerate(holders) if not self.good_share(m, i, h)]
            assert not bad, f"{name}: shares {bad} not repaired"
            for node in (min(c.up), max(c.up)):
                op = c.services[node].get(name, c.now_ms)
                c.flush(node)
                assert op.state == OpState.DONE
                assert op.result() == data
        for oid in self.removed:
            for node in c.up:
                assert not any(o == oid for o, _, _ in c.stores[node].shares())

    # -- invariants ----------------------------------------------------------

    @invariant()
    def never_two_shares_of_one_object_on_a_node(self) -> None:
        for node, store in self.c.stores.items():
            seen: dict[bytes, int] = {}
            for oid, share, _ in store.shares():
                assert oid not in seen, (
                    f"node {node} holds shares {seen[oid]} and {share}"
                )
                seen[oid] = share


TestDfsMachine = pytest.mark.slow(DfsMachine.TestCase)
TestDfsMachine.settings = settings(stateful_step_count=25)
