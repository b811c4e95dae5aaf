"""A log cluster under test: :class:`dcis.consensus.testing.Cluster` running
:class:`LogService` s, a recorder of client operations and committed
records, and one check per promise of spec/consensus.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dcis.consensus.log.api import (
    CompareAndSet,
    Delete,
    EntryId,
    Increment,
    Level,
    Op,
    Outcome,
    Put,
)
from dcis.consensus.log.kv import counter_value
from dcis.consensus.log.service import SERVICE_NUMBER, LogParams, LogService
from dcis.consensus.log.wire import RecordKind
from dcis.consensus.membership.view import MemberInfo, MemberState
from dcis.consensus.testing import Cluster, RegisterOp, SimCluster, linearizable
from dcis.dtn.bpv7.cbor import read_head


class StaticView:
    """A hand-built membership view: these nodes, all alive."""

    def __init__(self, nodes: Sequence[int]) -> None:
        self._members = {
            n: MemberInfo(node=n, state=MemberState.ALIVE, incarnation=1) for n in nodes
        }

    def members(self) -> Mapping[int, MemberInfo]:
        return self._members

    def live(self) -> frozenset[int]:
        return frozenset(self._members)


def _first_uint(raw: bytes) -> int:
    """The first item of a durable CBOR array: a snapshot's index, a
    record's term (read without decoding the rest: the state and the entry
    can be large, and this runs every step)."""
    major, _, pos = read_head(raw, 0, len(raw), "durable")
    assert major == 4, raw[:8]
    major, value, _ = read_head(raw, pos, len(raw), "durable")
    assert major == 0, raw[:8]
    return value


@dataclass
class Submitted:
    """One client operation as the test made it."""

    eid: EntryId
    op: Op
    call_ms: int
    return_ms: int | None = None
    outcome: Outcome | None = None


@dataclass
class LogRun:
    """A cluster of log services plus what the test observed."""

    nodes: tuple[int, ...]
    seed: int
    params: LogParams = field(default_factory=LogParams)
    on_simulator: bool = False
    """Run on dcis.dtn.sim.Simulator (bundles, agents, CGR) instead of Cluster's network."""
    cluster: Cluster | SimCluster = field(init=False)
    submitted: dict[EntryId, Submitted] = field(default_factory=dict)
    committed: dict[int, tuple[int, int, EntryId | None]] = field(default_factory=dict)
    """index -> (term, kind, entry id) of every committed record seen on any node."""
    _majority_seen: set[tuple[int, int | None]] = field(default_factory=set)
    _seen: dict[int, tuple[LogService, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        view = StaticView(self.nodes)

        def factory(node: int, incarnation: int) -> list[LogService]:
            return [LogService(view, self.params)]

        if self.on_simulator:
            self.cluster = SimCluster(self.nodes, factory, seed=self.seed)
        else:
            self.cluster = Cluster(
                self.nodes, factory, seed=self.seed, delay_ms=(5, 80)
            )

    def log(self, node: int) -> LogService | None:
        svc = self.cluster.service(node, SERVICE_NUMBER)
        assert svc is None or isinstance(svc, LogService)
        return svc

    def submit(self, node: int, op: Op) -> EntryId | None:
        svc = self.log(node)
        if svc is None:
            return None
        now = self.cluster.now_ms
        eid = svc.submit(op, now)
        self.cluster.call(node, lambda s: None, SERVICE_NUMBER)
        self.submitted[eid] = Submitted(eid, op, now)
        # Promise 3: a node reads its own write at once.
        if isinstance(op, Put):
            assert svc.get(op.key, Level.TENTATIVE) == op.value
        elif isinstance(op, Delete):
            assert svc.get(op.key, Level.TENTATIVE) is None
        return eid

    def observe(self, *, full: bool = False) -> None:
        """Record new commits and check the per-step promises (1, 5): each
        step checks the records committed since the last one (and a
        restarted node's whole log), ``full`` every committed record held."""
        now = self.cluster.now_ms
        for node, _ in self.cluster.running():
            svc = self.log(node)
            assert svc is not None
            start = svc.snap_index + 1
            if not full and self._seen.get(node, (None, 0))[0] is svc:
                start = max(start, self._seen[node][1] + 1)
            self._seen[node] = (svc, svc.commit_index)
            for i in range(start, svc.commit_index + 1):
                rec = svc.record_at(i)
                assert rec is not None
                seen = (rec.term, int(rec.kind), rec.entry.id if rec.entry else None)
                # Promise 1: the committed prefix is the same everywhere, never rewritten.
                assert self.committed.setdefault(i, seen) == seen, (
                    f"node {node} index {i}"
                )
            # Promise 5: a committed index is held by a majority (durably).
            if svc.commit_index > svc.snap_index:
                self._check_majority(
                    svc.commit_index, svc.term_at(svc.commit_index), svc.voters()
                )
        for sub in self.submitted.values():
            if sub.outcome is None:
                origin = self.log(sub.eid.origin)
                if origin is not None and origin.outcome(sub.eid) is not None:
                    sub.outcome = origin.outcome(sub.eid)
                    sub.return_ms = now

    def _check_majority(
        self, index: int, term: int | None, voters: tuple[int, ...]
    ) -> None:
        if (index, term) in self._majority_seen:
            return
        holders = 0
        for n in voters:
            data = self.cluster.durable(n, SERVICE_NUMBER)
            snap = data.get("snap")
            if snap is not None and _first_uint(snap) >= index:
                holders += 1
                continue
            raw = data.get(f"log/{index:012d}")
            if raw is not None and _first_uint(raw) == term:
                holders += 1
        assert holders >= len(voters) // 2 + 1, (
            f"index {index} held by {holders} of {voters}"
        )

    def advance(self, ms: int) -> None:
        step = 500
        target = self.cluster.now_ms + ms
        while self.cluster.now_ms < target:
            self.cluster.advance(min(target, self.cluster.now_ms + step))
            self.observe()

    def settle(self, limit_ms: int = 90_000) -> None:
        """Heal everything and run until quiet: every node at the same commit
        index and state, nothing tentative, every submitted entry decided
        (checked every 2 s, at most ``limit_ms``), then 2 s more."""
        self.cluster.heal_all()
        end = self.cluster.now_ms + limit_ms
        while self.cluster.now_ms < end and not self._quiet():
            self.advance(2_000)
        self.advance(2_000)

    def _quiet(self) -> bool:
        logs = [self.log(n) for n in self.nodes]
        if any(s is None for s in logs):
            return False
        states = {
            (
                s.term,
                s.leader,
                s.commit_index,
                s.last_index,
                s.state_hash(),
                len(s.tentative),
            )
            for s in logs
            if s is not None
        }
        if len(states) != 1:
            return False
        _, leader, *_, tentative = next(iter(states))
        if leader is None or tentative != 0:
            return False
        first = logs[0]
        assert first is not None
        return all(first.outcome(eid) is not None for eid in self.submitted)

    def check_converged(self) -> None:
        """Promises 2, 3, 4 and 5's linearizability, after heal and quiet."""
        self.observe(full=True)
        services = [self.log(n) for n in self.nodes]
        assert all(s is not None for s in services)
        logs = [s for s in services if s is not None]
        # Promise 4: same commit index, tentative order and state hash.
        assert len({s.commit_index for s in logs}) == 1, [s.status() for s in logs]
        assert len({s.state_hash() for s in logs}) == 1
        assert len({tuple(s.tentative_order()) for s in logs}) == 1
        # Promise 2: every accepted entry decided exactly once, the same everywhere.
        positions: dict[EntryId, list[int]] = {}
        for i in sorted(self.committed):
            _, kind, eid = self.committed[i]
            if kind == RecordKind.ENTRY and eid is not None:
                positions.setdefault(eid, []).append(i)
        for eid, sub in self.submitted.items():
            outcomes = {s.outcome(eid) for s in logs}
            assert len(outcomes) == 1, (eid, outcomes)
            assert None not in outcomes, (eid, outcomes)
            if sub.outcome is None:
                sub.outcome = logs[0].outcome(eid)
                sub.return_ms = self.cluster.now_ms
            if sub.outcome == Outcome.REJECTED:
                # Only a failed precondition may reject.
                assert isinstance(sub.op, CompareAndSet), (eid, logs[0].rejection(eid))
        # Promise 2, "exactly once", on the state: a counter that only ever
        # got increments holds the sum of the committed ones (a doubled or
        # lost entry would show).
        final = logs[0]
        for key in {sub.op.key for sub in self.submitted.values()}:
            subs = [s for s in self.submitted.values() if s.op.key == key]
            if all(isinstance(s.op, Increment) for s in subs):
                total = sum(
                    s.op.delta
                    for s in subs
                    if isinstance(s.op, Increment) and s.outcome == Outcome.COMMITTED
                )
                assert counter_value(final.get(key)) == total, (key, total)
        # Promise 3: an origin's entries commit in its order; parents first.
        first = {eid: ps[0] for eid, ps in positions.items()}
        by_origin: dict[int, list[tuple[int, int]]] = {}
        for eid, pos in first.items():
            by_origin.setdefault(eid.origin, []).append((pos, eid.seq))
        for pairs in by_origin.values():
            seqs = [s for _, s in sorted(pairs)]
            assert seqs == sorted(seqs)
        for i, (_, _kind, eid) in self.committed.items():
            if eid is not None and first.get(eid) == i:
                svc = logs[0]
                rec = svc.record_at(i)
                if rec is not None and rec.entry is not None:
                    for parent in rec.entry.parents:
                        assert parent not in first or first[parent] < i
        # Promise 5: the committed history is linearizable.
        history = []
        for sub in self.submitted.values():
            assert sub.return_ms is not None
            op = sub.op
            if isinstance(op, Put):
                history.append(
                    RegisterOp(sub.call_ms, sub.return_ms, op.key, "put", op.value)
                )
            elif isinstance(op, Delete):
                history.append(RegisterOp(sub.call_ms, sub.return_ms, op.key, "delete"))
            elif isinstance(op, CompareAndSet):
                history.append(
                    RegisterOp(
                        sub.call_ms,
                        sub.return_ms,
                        op.key,
                        "cas",
                        (op.expected, op.value),
                        sub.outcome == Outcome.COMMITTED,
                    )
                )
        for key in {h.key for h in history}:
            history.append(
                RegisterOp(
                    self.cluster.now_ms,
                    self.cluster.now_ms,
                    key,
                    "read",
                    None,
                    final.get(key),
                )
            )
        assert linearizable(history), history
