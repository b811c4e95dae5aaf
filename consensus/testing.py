"""A public harness for property-testing services through partitions and
their healing: hypothesis strategies for fault schedules and a
deterministic :class:`Cluster` that runs any
:class:`~dcis.dtn.node.service.Service` s under such a schedule.

Theory of operation
-------------------
A :class:`Schedule` is a list of timed faults (:class:`Partition`,
:class:`Heal`, :class:`Crash`, :class:`Restart`, :class:`Loss`,
:class:`Duplicate`) over a set of nodes and, optionally, a contact plan
(two nodes can talk when the plan has a contact between them at that time,
or always when there is no plan, and the current partition puts them on the
same side). :func:`schedules` draws them; hypothesis shrinks a failing one
to a short list.

:class:`Cluster` is a discrete-event network over the sans-I/O service
interface: one heap of ``(time, seq, event)``, one seeded ``random.Random``;
a bundle a service returns is delivered to ``ipn:<node>.<service>`` after a
drawn delay, unless lost or cut by the partition at send or arrival time
(or duplicated). Each node's ``ctx.state`` survives a crash, its service
objects do not: a restart builds new ones with ``factory(node,
incarnation)``. Each node's :class:`History` lists what happened to it.
The same seed and schedule give the same run, event for event.

Usage::

    cluster = Cluster([1, 2, 3], lambda node, inc: [MyService()], seed=7)
    histories = cluster.run(schedule, until_ms=60_000)
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

from dcis.dtn.node.service import Inbound, NodeCredentials, Send, Service
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan

# -- schedules ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Partition:
    """From ``at_ms`` on, only nodes in the same group can talk (a node in
    no group is alone)."""

    at_ms: int
    groups: tuple[frozenset[int], ...]


@dataclass(frozen=True, slots=True)
class Heal:
    """From ``at_ms`` on, no partition."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class Crash:
    """``node`` stops at ``at_ms``, losing its memory (not its state)."""

    at_ms: int
    node: int


@dataclass(frozen=True, slots=True)
class Restart:
    """``node`` starts again at ``at_ms`` (no effect if it is running)."""

    at_ms: int
    node: int


@dataclass(frozen=True, slots=True)
class Loss:
    """From ``at_ms`` on, each bundle is lost with probability ``rate``."""

    at_ms: int
    rate: float


@dataclass(frozen=True, slots=True)
class Duplicate:
    """From ``at_ms`` on, each bundle is delivered twice with probability ``rate``."""

    at_ms: int
    rate: float


Fault = Partition | Heal | Crash | Restart | Loss | Duplicate


@dataclass(frozen=True, slots=True)
class Schedule:
    """Faults over ``nodes``, in time order; ``heal_ms``: when every fault
    ends (all healed, restarted, no loss), so a run can check convergence."""

    nodes: tuple[int, ...]
    faults: tuple[Fault, ...]
    heal_ms: int


def partitions(nodes: Sequence[int]) -> st.SearchStrategy[tuple[frozenset[int], ...]]:
    """Splits of ``nodes`` into 2 or 3 non-empty groups."""
    ns = list(nodes)

    def split(labels: list[int]) -> tuple[frozenset[int], ...]:
        groups: dict[int, set[int]] = {}
        for n, g in zip(ns, labels, strict=True):
            groups.setdefault(g, set()).add(n)
        return tuple(frozenset(g) for _, g in sorted(groups.items()))

    return st.lists(st.integers(0, 2), min_size=len(ns), max_size=len(ns)).map(split)


def faults(nodes: Sequence[int], *, horizon_ms: int) -> st.SearchStrategy[Fault]:
    """One fault at a time in ``[0, horizon_ms)``."""
    at = st.integers(0, max(0, horizon_ms - 1))
    node = st.sampled_from(list(nodes))
    rate = st.sampled_from([0.0, 0.05, 0.2, 0.5])
    return st.one_of(
        st.builds(Partition, at, partitions(nodes)),
        st.builds(Heal, at),
        st.builds(Crash, at, node),
        st.builds(Restart, at, node),
        st.builds(Loss, at, rate),
        st.builds(Duplicate, at, rate),
    )


def schedules(
    nodes: Sequence[int] = (1, 2, 3, 4, 5),
    *,
    horizon_ms: int = 30_000,
    max_faults: int = 8,
) -> st.SearchStrategy[Schedule]:
    """Schedules of up to ``max_faults`` faults before ``horizon_ms``, after
    which everything heals."""
    return st.lists(faults(nodes, horizon_ms=horizon_ms), max_size=max_faults).map(
        lambda fs: Schedule(
            tuple(nodes), tuple(sorted(fs, key=lambda f: f.at_ms)), horizon_ms
        )
    )


# -- the cluster -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a node's history."""

    at_ms: int
    kind: str
    """``start``, ``crash``, ``send``, ``deliver``, ``lost``, ``cut`` or ``note``."""
    detail: str = ""


@dataclass(slots=True)
class History:
    """What happened to one node during a run."""

    node: int
    events: list[Event] = field(default_factory=list)

    def of(self, kind: str) -> list[Event]:
        """The events of one kind."""
        return [e for e in self.events if e.kind == kind]


class MemoryState:
    """A node service's durable map, kept across crashes (the in-memory
    stand-in for the node's store)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        """The value at ``key``."""
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        """Set ``key``."""
        self.data[key] = bytes(value)

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""
        self.data.pop(key, None)

    def keys(self, prefix: str = "") -> Sequence[str]:
        """Keys starting with ``prefix``, sorted."""
        return sorted(k for k in self.data if k.startswith(prefix))


@dataclass(frozen=True, slots=True)
class _Tick:
    node: int
    number: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class _Delivery:
    src: int
    src_svc: int
    node: int
    number: int
    payload: bytes
    created_ms: int
    seq: int


class _Ctx:
    def __init__(
        self,
        cluster: Cluster,
        node: int,
        incarnation: int,
        state: MemoryState,
        rng: random.Random,
    ) -> None:
        self._cluster = cluster
        self._node = node
        self._incarnation = incarnation
        self._state = state
        self._rng = rng

    @property
    def node(self) -> int:
        return self._node

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def rng(self) -> random.Random:
        return self._rng

    @property
    def plan(self) -> ContactPlan:
        return self._cluster.plan

    @property
    def state(self) -> MemoryState:
        return self._state

    @property
    def credentials(self) -> NodeCredentials | None:
        return self._cluster.credentials.get(self._node)

    def earliest_arrival(self, node: int, *, at_ms: int, size: int = 0) -> int | None:
        return self._cluster.earliest_arrival(self._node, node, at_ms)


Factory = Callable[[int, int], Sequence[Service]]
"""``factory(node, incarnation)``: the services a node runs."""


class Cluster:
    """Nodes running services over a simulated network with faults.

    ``delay_ms``: (min, max) one-way delay of a bundle; ``plan``: when given,
    two nodes talk only during a contact of theirs (direct contacts only).
    """

    def __init__(
        self,
        nodes: Sequence[int],
        factory: Factory,
        *,
        seed: int = 0,
        delay_ms: tuple[int, int] = (10, 100),
        plan: ContactPlan | None = None,
        credentials: dict[int, NodeCredentials] | None = None,
    ) -> None:
        self.nodes = tuple(nodes)
        self.factory = factory
        self.rng = random.Random(seed)
        self.delay_ms = delay_ms
        self.plan = plan if plan is not None else ContactPlan()
        self._use_plan = plan is not None
        self.credentials = credentials or {}
        self.now_ms = 0
        self.loss = 0.0
        self.dup = 0.0
        self.side: dict[int, int] = {}
        self.states = {n: MemoryState() for n in self.nodes}
        self.incarnation = dict.fromkeys(self.nodes, 0)
        self.services: dict[int, list[Service]] = {}
        self.history = {n: History(n) for n in self.nodes}
        self._heap: list[tuple[int, int, str, object]] = []
        self._seq = 0
        self._tick_at: dict[tuple[int, int], int] = {}
        self.sent = 0
        for n in self.nodes:
            self.restart(n)

    # -- topology ------------------------------------------------------------

    def connected(self, a: int, b: int, at_ms: int | None = None) -> bool:
        """Whether ``a`` and ``b`` can talk now (partition and plan)."""
        if self.side.get(a, -a) != self.side.get(b, -b) and self.side:
            return False
        if not self._use_plan:
            return True
        t = (self.now_ms if at_ms is None else at_ms) / 1000
        return any(
            c.start_s <= t < c.end_s
            for c in self.plan.contacts
            if {c.frm, c.to} == {a, b}
        )

    def earliest_arrival(self, a: int, b: int, at_ms: int) -> int | None:
        """What a node's ``ctx.earliest_arrival`` answers: the mean delay from
        now when connected, else the start of the next planned contact."""
        mean = sum(self.delay_ms) // 2
        if self.connected(a, b, at_ms):
            return at_ms + mean
        if not self._use_plan:
            return None
        t = at_ms / 1000
        starts = [
            c.start_s
            for c in self.plan.contacts
            if {c.frm, c.to} == {a, b} and c.start_s > t
        ]
        return int(min(starts) * 1000) + mean if starts else None

    def partition(self, groups: Sequence[frozenset[int]]) -> None:
        """Cut the network into ``groups`` (a node in none is alone)."""
        self.side = {}
        for i, g in enumerate(groups):
            for n in g:
                self.side[n] = i
        for n in self.nodes:
            self.side.setdefault(n, -n - 1000)

    def heal(self) -> None:
        """Remove any partition."""
        self.side = {}

    def alive(self, node: int) -> bool:
        """Whether ``node`` is running."""
        return node in self.services

    def durable(self, node: int, number: int) -> Mapping[str, bytes]:
        """The durable map of ``node``'s services (one map per node here)."""
        return self.states[node].data

    # -- node lifecycle ------------------------------------------------------

    def crash(self, node: int) -> None:
        """Stop ``node`` abruptly (no ``stop()``), keeping its state."""
        if self.services.pop(node, None) is not None:
            self.history[node].events.append(Event(self.now_ms, "crash"))

    def restart(self, node: int) -> None:
        """Start ``node`` (again) with new service objects."""
        if node in self.services:
            return
        self.incarnation[node] += 1
        inc = self.incarnation[node]
        services = list(self.factory(node, inc))
        self.services[node] = services
        self.history[node].events.append(Event(self.now_ms, "start", str(inc)))
        for svc in services:
            rng = random.Random(self.rng.getrandbits(64))
            ctx = _Ctx(self, node, inc, self.states[node], rng)
            self._emit(node, svc, svc.start(ctx, self.now_ms))

    def service(self, node: int, number: int) -> Service | None:
        """The running service ``number`` of ``node``, if any."""
        for svc in self.services.get(node, []):
            if svc.service == number:
                return svc
        return None

    def call(self, node: int, fn: Callable[[Service], object], number: int) -> object:
        """Run ``fn`` on a running service at the current time (e.g. a
        client call), then re-arm its timer. Returns fn's result."""
        svc = self.service(node, number)
        if svc is None:
            raise LookupError(f"node {node} runs no service {number}")
        result = fn(svc)
        self._arm(node, svc)
        return result

    # -- events --------------------------------------------------------------

    def _push(self, at_ms: int, kind: str, data: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_ms, self._seq, kind, data))

    def _arm(self, node: int, svc: Service) -> None:
        deadline = svc.next_deadline()
        if deadline is None:
            return
        at = max(deadline, self.now_ms)
        key = (node, svc.service)
        if (
            self._tick_at.get(key, 1 << 62) <= at
            and self._tick_at.get(key, -1) >= self.now_ms
        ):
            return
        self._tick_at[key] = at
        self._push(at, "tick", _Tick(node, svc.service, self.incarnation[node]))

    def _emit(self, node: int, svc: Service, sends: list[Send]) -> None:
        for s in sends:
            self.sent += 1
            self._transmit(node, svc.service, s)
        self._arm(node, svc)

    def _transmit(self, node: int, number: int, send: Send) -> None:
        try:
            dest_node_s, dest_svc_s = send.destination[4:].split(".", 1)
            dest = (int(dest_node_s), int(dest_svc_s))
        except ValueError:
            return
        if dest[0] == node:
            copies = 1
        elif not self.connected(node, dest[0]):
            self.history[node].events.append(
                Event(self.now_ms, "cut", send.destination)
            )
            return
        elif self.rng.random() < self.loss:
            self.history[node].events.append(
                Event(self.now_ms, "lost", send.destination)
            )
            return
        else:
            copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            delay = self.rng.randint(*self.delay_ms)
            self._push(
                self.now_ms + delay,
                "deliver",
                _Delivery(
                    node, number, dest[0], dest[1], send.payload, self.now_ms, self._seq
                ),
            )

    def _deliver(self, d: _Delivery) -> None:
        src, node, number = d.src, d.node, d.number
        if node not in self.services or (src != node and not self.connected(src, node)):
            return
        svc = self.service(node, number)
        if svc is None:
            return
        inbound = Inbound(
            endpoint=f"ipn:{node}.{number}",
            source=f"ipn:{src}.{d.src_svc}",
            payload=d.payload,
            creation_ms=d.created_ms,
            sequence=d.seq,
            bundle_key=f"{src}-{d.created_ms}-{d.seq}",
        )
        self._emit(node, svc, svc.on_bundle(inbound, self.now_ms))

    def apply(self, fault: Fault) -> None:
        """Apply one fault now."""
        if isinstance(fault, Partition):
            self.partition(fault.groups)
        elif isinstance(fault, Heal):
            self.heal()
        elif isinstance(fault, Crash):
            self.crash(fault.node)
        elif isinstance(fault, Restart):
            self.restart(fault.node)
        elif isinstance(fault, Loss):
            self.loss = fault.rate
        else:
            self.dup = fault.rate

    def heal_all(self) -> None:
        """End every fault: heal, no loss or duplication, restart the crashed."""
        self.heal()
        self.loss = self.dup = 0.0
        for n in self.nodes:
            self.restart(n)

    def advance(self, until_ms: int) -> None:
        """Run events up to and including ``until_ms``."""
        while self._heap and self._heap[0][0] <= until_ms:
            at, _, _kind, data = heapq.heappop(self._heap)
            self.now_ms = max(self.now_ms, at)
            if isinstance(data, _Delivery):
                self._deliver(data)
            elif isinstance(data, _Tick):
                node, number, inc = data.node, data.number, data.incarnation
                if self.incarnation.get(node) != inc or node not in self.services:
                    continue
                if self._tick_at.get((node, number)) != at:
                    continue
                self._tick_at.pop((node, number), None)
                svc = self.service(node, number)
                if svc is not None:
                    self._emit(node, svc, svc.on_tick(self.now_ms))
            elif isinstance(
                data, Partition | Heal | Crash | Restart | Loss | Duplicate
            ):
                self.apply(data)
        self.now_ms = max(self.now_ms, until_ms)

    def run(self, schedule: Schedule, until_ms: int) -> dict[int, History]:
        """Apply ``schedule``, heal everything at its ``heal_ms``, run to
        ``until_ms`` and return every node's history."""
        for f in schedule.faults:
            self._push(f.at_ms, "fault", f)
        self.advance(schedule.heal_ms)
        self.heal_all()
        self.advance(until_ms)
        return self.history

    def running(self) -> Iterator[tuple[int, list[Service]]]:
        """(node, services) of every running node."""
        yield from sorted(self.services.items())


# -- linearizability ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterOp:
    """One completed client operation on a key, for :func:`linearizable`.

    ``kind`` is ``put`` (``arg``: value), ``delete``, ``cas`` (``arg``:
    (expected, new)), or ``read``; ``result`` is None for put/delete, the
    success flag for cas and the value read for read. ``call_ms`` <=
    ``return_ms`` bound when it took effect."""

    call_ms: int
    return_ms: int
    key: str
    kind: str
    arg: object = None
    result: object = None


def _step(value: bytes | None, op: RegisterOp) -> tuple[bool, bytes | None]:
    if op.kind == "put":
        assert isinstance(op.arg, bytes)
        return True, op.arg
    if op.kind == "delete":
        return True, None
    if op.kind == "cas":
        assert isinstance(op.arg, tuple)
        expected: bytes | None = op.arg[0]
        replacement: bytes | None = op.arg[1]
        ok = value == expected
        return ok == op.result, (replacement if ok else value)
    return value == op.result, value


def linearizable(
    history: Sequence[RegisterOp], initial: dict[str, bytes] | None = None
) -> bool:
    """Whether ``history`` has a linearization that a key-value register
    accepts: a Wing–Gong search with memoization (as Porcupine does), one key
    at a time (linearizability is local)."""
    by_key: dict[str, list[RegisterOp]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    init = initial or {}
    return all(_linearizable_key(ops, init.get(k)) for k, ops in by_key.items())


def _linearizable_key(ops: list[RegisterOp], initial: bytes | None) -> bool:
    ops = sorted(ops, key=lambda o: o.call_ms)
    n = len(ops)
    seen: set[tuple[int, bytes | None]] = set()
    stack: list[tuple[int, bytes | None]] = [(0, initial)]
    full = (1 << n) - 1
    while stack:
        done, value = stack.pop()
        if done == full:
            return True
        if (done, value) in seen:
            continue
        seen.add((done, value))
        pending = [i for i in range(n) if not done & (1 << i)]
        horizon = min(ops[i].return_ms for i in pending)
        for i in pending:
            if ops[i].call_ms > horizon:
                continue
            ok, new = _step(value, ops[i])
            if ok:
                stack.append((done | (1 << i), new))
    return False


# -- the same, on dcis.dtn.sim.Simulator ------------------------------------------


def mesh_plan(
    nodes: Sequence[int],
    *,
    duration_s: float,
    owlt_s: float = 0.05,
    rate_bytes_s: float = 1e6,
) -> ContactPlan:
    """A plan where every pair of ``nodes`` is in contact all the time."""

    contacts = [
        Contact(a, b, 0.0, duration_s, rate_bytes_s)
        for a in nodes
        for b in nodes
        if a != b
    ]
    ranges = [
        Range(a, b, 0.0, duration_s, owlt_s) for a in nodes for b in nodes if a != b
    ]
    return ContactPlan(contacts, ranges)


class SimCluster:
    """:class:`Cluster`'s interface over the real bundle-layer simulator
    (:class:`dcis.dtn.sim.engine.Simulator` with ``services=factory``): bundles,
    agents, stores, CGR over ``plan`` (default: a full mesh), store and
    forward through a partition. Times are DTN ms as the services see them.
    A partition lasts until :meth:`heal` (or the next :meth:`partition`).
    """

    def __init__(
        self,
        nodes: Sequence[int],
        factory: Factory,
        *,
        seed: int = 0,
        plan: ContactPlan | None = None,
        duration_s: float = 3_600.0,
        credentials: dict[int, NodeCredentials] | None = None,
    ) -> None:
        from dcis.dtn.sim.engine import SimConfig, Simulator

        self.nodes = tuple(nodes)
        self.plan = (
            plan if plan is not None else mesh_plan(self.nodes, duration_s=duration_s)
        )
        self.sim = Simulator(
            self.plan,
            SimConfig(seed=seed, duration_s=duration_s),
            nodes=self.nodes,
            services=factory,
            credentials=credentials,
        )
        self.history = {n: History(n) for n in self.nodes}
        self._groups: tuple[frozenset[int], ...] | None = None
        self.sim.run_until(0.0)
        for n in self.nodes:
            self.history[n].events.append(Event(self.now_ms, "start", "1"))

    @property
    def now_ms(self) -> int:
        """Current DTN time (ms)."""
        return int(self.sim.now)

    def _plan_s(self, dtn_ms: int) -> float:
        return (dtn_ms - int(self.sim.config.plan_epoch)) / 1000

    def advance(self, until_ms: int) -> None:
        """Run events up to DTN time ``until_ms`` (under the current partition)."""
        from dcis.dtn.sim.engine import Partition as SimPartition

        end_s = self._plan_s(until_ms)
        if self._groups is not None and end_s > self.sim.now_s:
            # The simulator's partitions are windows: one per step while cut.
            self.sim.add_partition(
                SimPartition(start_s=self.sim.now_s, end_s=end_s, groups=self._groups)
            )
        self.sim.run_until(end_s)

    def service(self, node: int, number: int) -> Service | None:
        """The running service ``number`` of ``node``, if any."""
        return self.sim.service(node, number)

    def running(self) -> Iterator[tuple[int, list[Service]]]:
        """(node, services) of every running node."""
        for n in self.nodes:
            core = self.sim.core(n)
            if core is not None:
                yield n, list(core.services.values())

    def alive(self, node: int) -> bool:
        """Whether ``node`` is running."""
        return self.sim.core(node) is not None

    def call(self, node: int, fn: Callable[[Service], object], number: int) -> object:
        """Run ``fn`` on a running service now; the node's timers are
        re-armed by a zero-length step of the simulator."""
        svc = self.service(node, number)
        if svc is None:
            raise LookupError(f"node {node} runs no service {number}")
        result = fn(svc)
        nd = self.sim.nodes[node]
        self.sim._want_tick(
            nd, nd.core.next_deadline() if nd.core is not None else None
        )
        return result

    def durable(self, node: int, number: int) -> Mapping[str, bytes]:
        """Service ``number``'s committed durable map on ``node``."""
        backend = self.sim.nodes[node].service_state
        return {
            k: v
            for k in backend.service_keys(number)
            if (v := backend.service_get(number, k)) is not None
        }

    def partition(self, groups: Sequence[frozenset[int]]) -> None:
        """Cut the network into ``groups`` from now until :meth:`heal`."""
        self._groups = tuple(groups)

    def heal(self) -> None:
        """End the partition (bundles held back then flow)."""
        self._groups = None

    def crash(self, node: int) -> None:
        """Crash ``node`` now (its service state survives)."""
        if self.alive(node):
            self.sim.crash(node)
            self.history[node].events.append(Event(self.now_ms, "crash"))

    def restart(self, node: int) -> None:
        """Restart ``node`` now."""
        if not self.alive(node):
            self.sim.restart(node)
            self.history[node].events.append(Event(self.now_ms, "start"))

    def heal_all(self) -> None:
        """Heal, and restart every crashed node."""
        self.heal()
        for n in self.nodes:
            self.restart(n)
