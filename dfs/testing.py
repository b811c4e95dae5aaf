"""In-memory stand-ins for the object store's neighbours, for tests and
benches: a key-value log with a commit step the caller controls, a
membership view the caller sets, a service context, and :class:`Cluster`, a
set of :class:`DfsService` nodes joined by a lossless store-and-forward
network with partitions, crashes and permanent losses.

These are fakes with the documented semantics of
:mod:`consensus.log.api` and :mod:`consensus.membership.view`, not the real
log or membership services: tentative entries are visible inside their
origin's partition, and :meth:`LogHub.commit` commits the pending entries of
the partition that holds a majority (all of them once healed), deciding
each compare-and-set against committed state, in submission order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from consensus.log.api import (
    CompareAndSet,
    Delete,
    EntryId,
    Level,
    Op,
    Outcome,
    Put,
)
from consensus.membership.view import MemberInfo, MemberState, Resources
from dfs.core.service import DfsConfig, DfsService, service_eid
from dfs.core.store import MemoryShareStore
from dtn.node.service import Inbound, NodeCredentials, Send
from dtn.routing.plan import ContactPlan


@dataclass
class _Entry:
    id: EntryId
    op: Op


class LogHub:
    """The shared state behind every node's :class:`MemoryLog`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.committed: dict[str, bytes] = {}
        self.pending: list[_Entry] = []
        self.outcomes: dict[EntryId, Outcome] = {}
        self.seq: dict[int, int] = {}

    def commit(self) -> int:
        """Commit the pending entries whose origin is up in the majority
        partition, in submission order; returns how many."""
        group = self.cluster.majority_group()
        if group is None:
            return 0
        done = 0
        keep: list[_Entry] = []
        for e in self.pending:
            if e.id.origin not in group:
                keep.append(e)
                continue
            done += 1
            op = e.op
            if isinstance(op, CompareAndSet):
                if self.committed.get(op.key) != op.expected:
                    self.outcomes[e.id] = Outcome.REJECTED
                    continue
                if op.value is None:
                    self.committed.pop(op.key, None)
                else:
                    self.committed[op.key] = op.value
            elif isinstance(op, Put):
                self.committed[op.key] = op.value
            else:
                self.committed.pop(op.key, None)
            self.outcomes[e.id] = Outcome.COMMITTED
        self.pending = keep
        return done


class MemoryLog:
    """One node's :class:`~consensus.log.api.KeyValueLog` over a :class:`LogHub`."""

    def __init__(self, hub: LogHub, node: int) -> None:
        self.hub = hub
        self.node = node

    def submit(self, op: Op, now_ms: int) -> EntryId:
        """Append ``op`` as this node's next tentative entry."""
        seq = self.hub.seq.get(self.node, 0) + 1
        self.hub.seq[self.node] = seq
        eid = EntryId(self.node, seq)
        self.hub.pending.append(_Entry(eid, op))
        return eid

    def _state(self, level: Level) -> dict[str, bytes]:
        state = dict(self.hub.committed)
        if level == Level.TENTATIVE:
            for e in self.hub.pending:
                if not self.hub.cluster.connected(self.node, e.id.origin):
                    continue
                op = e.op
                if isinstance(op, Put):
                    state[op.key] = op.value
                elif isinstance(op, Delete):
                    state.pop(op.key, None)
        return state

    def get(self, key: str, level: Level = Level.COMMITTED) -> bytes | None:
        """The value of ``key`` at ``level``."""
        return self._state(level).get(key)

    def scan(
        self, prefix: str, level: Level = Level.COMMITTED
    ) -> Iterator[tuple[str, bytes]]:
        """(key, value) pairs under ``prefix`` in key order."""
        state = self._state(level)
        for key in sorted(state):
            if key.startswith(prefix):
                yield key, state[key]

    def outcome(self, entry: EntryId) -> Outcome | None:
        """COMMITTED/REJECTED once decided."""
        return self.hub.outcomes.get(entry)


class StaticMembership:
    """One node's membership view, computed from the cluster's state."""

    def __init__(self, cluster: Cluster, node: int) -> None:
        self.cluster = cluster
        self.node = node

    def members(self) -> Mapping[int, MemberInfo]:
        """Every member: alive when up and connected; suspect when crashed;
        unreachable across a partition; dead once lost for good."""
        out: dict[int, MemberInfo] = {}
        for n in self.cluster.nodes:
            if n in self.cluster.lost:
                state = MemberState.DEAD
            elif n not in self.cluster.up:
                state = MemberState.SUSPECT
            elif not self.cluster.connected(self.node, n):
                state = MemberState.UNREACHABLE
            else:
                state = MemberState.ALIVE
            out[n] = MemberInfo(
                node=n,
                state=state,
                incarnation=1,
                resources=self.cluster.resources.get(n, Resources()),
            )
        return out

    def live(self) -> frozenset[int]:
        """Members that may still answer."""
        return frozenset(
            n
            for n, m in self.members().items()
            if m.state
            in (MemberState.ALIVE, MemberState.SUSPECT, MemberState.UNREACHABLE)
        )


class _State:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self, prefix: str = "") -> Sequence[str]:
        return sorted(k for k in self.data if k.startswith(prefix))


class FakeContext:
    """A :class:`~dtn.node.service.ServiceContext` whose earliest arrival is
    ``at_ms + link_delay_ms`` inside the node's partition, None across it."""

    def __init__(self, cluster: Cluster, node: int, seed: int) -> None:
        self.cluster = cluster
        self._node = node
        self._rng = random.Random(seed)
        self._state = _State()
        self._plan = ContactPlan()

    @property
    def node(self) -> int:
        return self._node

    @property
    def incarnation(self) -> int:
        return self.cluster.incarnations[self._node]

    @property
    def rng(self) -> random.Random:
        return self._rng

    @property
    def plan(self) -> ContactPlan:
        return self._plan

    @property
    def state(self) -> _State:
        return self._state

    @property
    def credentials(self) -> NodeCredentials | None:
        return None

    def earliest_arrival(self, node: int, *, at_ms: int, size: int = 0) -> int | None:
        if not self.cluster.connected(self._node, node):
            return None
        return at_ms + self.cluster.link_delay_ms


@dataclass
class _InFlight:
    src: int
    send: Send
    seq: int


@dataclass
class Cluster:
    """``nodes`` object store services joined by a lossless network.

    A bundle to a node that is down or across a partition waits (DTN
    custody) until it can be delivered. :meth:`crash` drops the service
    object (its memory) but keeps its share store; :meth:`lose` drops both
    for good and membership reports the node dead.
    """

    nodes: list[int]
    config: DfsConfig = field(default_factory=DfsConfig)
    seed: int = 0
    link_delay_ms: int = 100
    now_ms: int = 1_000_000
    up: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    groups: list[set[int]] | None = None
    resources: dict[int, Resources] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hub = LogHub(self)
        self.stores = {n: MemoryShareStore() for n in self.nodes}
        self.services: dict[int, DfsService] = {}
        self.incarnations = dict.fromkeys(self.nodes, 0)
        self.in_flight: list[_InFlight] = []
        self._seq = 0
        self._rng = random.Random(self.seed)
        for n in self.nodes:
            self.start(n)

    # -- topology --------------------------------------------------------

    def connected(self, a: int, b: int) -> bool:
        """True when a and b are in the same partition (crashes aside)."""
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    def majority_group(self) -> set[int] | None:
        """The up nodes of the partition holding a majority of all nodes."""
        groups = self.groups or [set(self.nodes)]
        for g in groups:
            if 2 * len(g) > len(self.nodes):
                return {n for n in g if n in self.up}
        return None

    def partition(self, groups: list[set[int]]) -> None:
        """Split the network into ``groups`` (every node in one group)."""
        self.groups = [set(g) for g in groups]

    def heal(self) -> None:
        """Join every partition."""
        self.groups = None

    # -- node lifecycle --------------------------------------------------

    def start(self, node: int) -> None:
        """(Re)start ``node``'s service over its surviving share store."""
        self.incarnations[node] += 1
        svc = DfsService(
            membership=StaticMembership(self, node),
            log=MemoryLog(self.hub, node),
            store=self.stores[node],
            config=self.config,
            entropy=self._rng.randbytes,
        )
        self.services[node] = svc
        self.up.add(node)
        ctx = FakeContext(
            self, node, self.seed * 1000 + node * 7 + self.incarnations[node]
        )
        self._emit(node, svc.start(ctx, self.now_ms))

    def crash(self, node: int) -> None:
        """Stop ``node`` without warning; its store survives."""
        self.up.discard(node)
        self.services.pop(node, None)

    def lose(self, node: int) -> None:
        """Lose ``node`` for good: store gone, membership says dead."""
        self.crash(node)
        self.lost.add(node)
        self.stores[node] = MemoryShareStore()
        self.in_flight = [f for f in self.in_flight if _dest(f.send) != node]

    # -- running ---------------------------------------------------------

    def _emit(self, src: int, sends: list[Send]) -> None:
        for s in sends:
            self._seq += 1
            self.in_flight.append(_InFlight(src, s, self._seq))

    def deliver(self, max_rounds: int = 10_000) -> int:
        """Deliver every deliverable bundle (and what answers to it cause)
        until none is left; returns how many were delivered."""
        count = 0
        for _ in range(max_rounds):
            ready = [
                f
                for f in self.in_flight
                if _dest(f.send) in self.up and self.connected(f.src, _dest(f.send))
            ]
            if not ready:
                break
            ids = {id(f) for f in ready}
            self.in_flight = [f for f in self.in_flight if id(f) not in ids]
            for f in ready:
                dst = _dest(f.send)
                svc = self.services.get(dst)
                if svc is None:
                    self.in_flight.append(f)
                    continue
                inbound = Inbound(
                    endpoint=f.send.destination,
                    source=service_eid(f.src),
                    payload=f.send.payload,
                    creation_ms=self.now_ms,
                    sequence=f.seq,
                    bundle_key=f"{f.src}:{f.seq}",
                )
                self._emit(dst, svc.on_bundle(inbound, self.now_ms))
                count += 1
        return count

    def tick(self, advance_ms: int = 0) -> None:
        """Advance the clock, then run every due timer and deliver."""
        self.now_ms += advance_ms
        for n, svc in list(self.services.items()):
            if n in self.up:
                self._emit(n, svc.on_tick(self.now_ms))
        self.deliver()

    def maintain(self) -> None:
        """Run a maintenance round on every up node, then deliver."""
        for n, svc in list(self.services.items()):
            svc.maintain(self.now_ms)
            self._emit(n, svc.on_tick(self.now_ms))
        self.deliver()

    def flush(self, node: int) -> None:
        """Send what ``node`` queued outside a call (after put/get)."""
        svc = self.services[node]
        self._emit(node, svc.on_tick(self.now_ms))
        self.deliver()


def _dest(send: Send) -> int:
    return int(send.destination[4:].split(".")[0])
