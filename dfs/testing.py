"""In-memory stand-ins for the object store's neighbours, for tests and
benches: a key-value log with a commit step the caller controls, a
membership view the caller sets, a service context, and :class:`Cluster`, a
set of :class:`DfsService` nodes joined by a lossless store-and-forward
network with partitions, crashes and permanent losses.

These are fakes with the documented semantics of
:mod:`dcis.consensus.log.api` and :mod:`dcis.consensus.membership.view`, not the real
log or membership services: a tentative entry is known to the nodes of
its origin's partition and spreads to every node it meets as partitions
change, and :meth:`LogHub.commit` commits the pending entries of
the partition that holds a majority (all of them once healed), deciding
each compare-and-set against committed state, in submission order; a put
or delete loses to a later-stamped write of its key (last writer wins, the
stamp standing in for the log's hybrid logical clock).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dcis.consensus.log.api import (
    CompareAndSet,
    Delete,
    EntryId,
    Level,
    Op,
    Outcome,
    Put,
)
from dcis.consensus.membership.view import MemberInfo, MemberState, Resources
from dcis.dfs.core.service import DfsConfig, DfsService, service_eid
from dcis.dfs.core.store import MemoryShareStore
from dcis.dtn.client.common import ReceivedBundle
from dcis.dtn.node.service import IdleService, Inbound, NodeCredentials, Send
from dcis.dtn.routing.plan import ContactPlan


class Topology(Protocol):
    """Who is up, lost, and connected: what the fake log and membership
    read (a :class:`Cluster`, or a test's view of a simulator)."""

    nodes: list[int]
    up: set[int]
    lost: set[int]
    groups: list[set[int]] | None
    resources: dict[int, Resources]

    def connected(self, a: int, b: int) -> bool: ...

    def majority_group(self) -> set[int] | None: ...


@dataclass
class _Entry:
    id: EntryId
    op: Op
    stamp: int
    known: set[int]


class LogHub:
    """The shared state behind every node's :class:`MemoryLog`."""

    def __init__(self, cluster: Topology) -> None:
        self.cluster = cluster
        self.committed: dict[str, bytes] = {}
        self.stamps: dict[str, int] = {}
        self.clock = 0
        self.pending: list[_Entry] = []
        self.outcomes: dict[EntryId, Outcome] = {}
        self.seq: dict[int, int] = {}

    def spread(self) -> None:
        """Share every pending entry within each partition (gossip), as
        the log does while nodes are connected."""
        groups = self.cluster.groups or [set(self.cluster.nodes)]
        for e in self.pending:
            for g in groups:
                if e.known & g:
                    e.known |= g

    def commit(self) -> int:
        """Commit the pending entries whose origin is in the majority
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
                value = op.value
            elif e.stamp < self.stamps.get(op.key, -1):
                # Last writer wins: a later write of the key committed first.
                self.outcomes[e.id] = Outcome.COMMITTED
                continue
            else:
                value = op.value if isinstance(op, Put) else None
            self.stamps[op.key] = max(e.stamp, self.stamps.get(op.key, -1))
            if value is None:
                self.committed.pop(op.key, None)
            else:
                self.committed[op.key] = value
            self.outcomes[e.id] = Outcome.COMMITTED
        self.pending = keep
        return done


class MemoryLog:
    """One node's :class:`~dcis.consensus.log.api.KeyValueLog` over a :class:`LogHub`."""

    def __init__(self, hub: LogHub, node: int) -> None:
        self.hub = hub
        self.node = node

    def submit(self, op: Op, now_ms: int) -> EntryId:
        """Append ``op`` as this node's next tentative entry."""
        seq = self.hub.seq.get(self.node, 0) + 1
        self.hub.seq[self.node] = seq
        eid = EntryId(self.node, seq)
        self.hub.clock += 1
        known = {
            n
            for n in self.hub.cluster.nodes
            if self.hub.cluster.connected(self.node, n)
        }
        self.hub.pending.append(_Entry(eid, op, self.hub.clock, known))
        return eid

    def _state(self, level: Level) -> dict[str, bytes]:
        state = dict(self.hub.committed)
        if level == Level.TENTATIVE:
            for e in self.hub.pending:
                op = e.op
                if self.node not in e.known or isinstance(op, CompareAndSet):
                    continue
                if e.stamp < self.hub.stamps.get(op.key, -1):
                    continue
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

    def __init__(self, cluster: Topology, node: int) -> None:
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
    """A :class:`~dcis.dtn.node.service.ServiceContext` whose earliest arrival is
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
        self.app_inbox: dict[str, list[bytes]] = {}
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
        """The partition holding a majority of all nodes (a crashed node's
        entries were shared with its partition before it crashed)."""
        groups = self.groups or [set(self.nodes)]
        for g in groups:
            if 2 * len(g) > len(self.nodes):
                return g
        return None

    def partition(self, groups: list[set[int]]) -> None:
        """Split the network into ``groups`` (every node in one group)."""
        self.groups = [set(g) for g in groups]
        self.hub.spread()

    def heal(self) -> None:
        """Join every partition."""
        self.groups = None
        self.hub.spread()

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
            if not s.destination.endswith(".18"):
                # To a local application's endpoint: delivered at once.
                self.app_inbox.setdefault(s.destination, []).append(s.payload)
                continue
            self._seq += 1
            self.in_flight.append(_InFlight(src, s, self._seq))

    def app_send(self, node: int, source: str, payload: bytes) -> None:
        """A local application on ``node`` sends ``payload`` from endpoint
        ``source`` to the node's object store."""
        svc = self.services[node]
        self._seq += 1
        inbound = Inbound(
            service_eid(node),
            source,
            payload,
            self.now_ms,
            self._seq,
            f"app:{self._seq}",
        )
        self._emit(node, svc.on_bundle(inbound, self.now_ms))

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
                due = svc.next_deadline()
                # A node's driver ticks a service until its deadline moves
                # past now (NodeCore gives up after 64 rounds).
                assert due is None or due > self.now_ms, (
                    f"node {n}: deadline {due} still due"
                )
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


class AppTransport:
    """A local application's app API connection to ``node`` of a
    :class:`Cluster` (what :class:`dcis.dfs.api.Dfs` needs of a
    ``dcis.dtn.client.Client``). ``receive`` runs the cluster (``step_ms`` per
    tick, at most ``max_ticks``) until an answer arrives."""

    def __init__(
        self, cluster: Cluster, node: int, *, step_ms: int = 20_000, max_ticks: int = 50
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.step_ms = step_ms
        self.max_ticks = max_ticks
        self.endpoint = ""

    def register(self, endpoint: str) -> str:
        self.endpoint = endpoint
        return endpoint

    def send(
        self,
        destination: str,
        payload: bytes,
        *,
        source: str | None = None,
        lifetime_ms: int | None = None,
    ) -> str:
        self.cluster.app_send(self.node, source or self.endpoint, payload)
        self.cluster.deliver()
        return f"app:{self.cluster._seq}"

    def receive(self, timeout_s: float | None = None) -> ReceivedBundle | None:
        inbox = self.cluster.app_inbox.setdefault(self.endpoint, [])
        # timeout 0: only what has arrived (time does not move).
        for _ in range(self.max_ticks if timeout_s != 0 else 0):
            if inbox:
                break
            self.cluster.tick(self.step_ms)
        if not inbox:
            return None
        payload = inbox.pop(0)
        return ReceivedBundle(self.endpoint, service_eid(self.node), payload, 0, 0, "k")

    def status(self) -> dict[str, object]:
        return {"node": self.node}

    def close(self) -> None:
        """Nothing to close (the cluster lives on)."""


class CommandService(IdleService):
    """Service 99 for simulations: runs queued commands against its node's
    :class:`DfsService` from inside the node (``NodeCore`` then ticks the
    object store in the same step, so its sends leave at once). It wakes
    every ``wake_ms`` to look at its queue; ``on_wake`` (e.g. a fake log's
    gossip) runs at each wake."""

    service = 99

    def __init__(
        self,
        dfs: DfsService,
        *,
        wake_ms: int = 2_000,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        self.dfs = dfs
        self.wake_ms = wake_ms
        self.on_wake = on_wake
        self.queue: list[Callable[[DfsService, int], None]] = []
        self._now = 0

    def start(self, ctx: object, now_ms: int) -> list[Send]:
        self._now = now_ms
        return []

    def on_tick(self, now_ms: int) -> list[Send]:
        self._now = now_ms
        if self.on_wake is not None:
            self.on_wake()
        queue, self.queue = self.queue, []
        for cmd in queue:
            cmd(self.dfs, now_ms)
        return []

    def next_deadline(self) -> int | None:
        return self._now + self.wake_ms
