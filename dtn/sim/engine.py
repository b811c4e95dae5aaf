"""The deterministic constellation simulator: N agents on one virtual clock.

Theory of operation
-------------------
One ``heapq`` of ``(at_us, prio, seq, fn, arg)`` entries drives everything.
``at_us`` is virtual time in integer microseconds of plan time (plan time 0 is
``SimConfig.plan_epoch`` in DTN time); ``prio`` orders events at the same
instant (links going down, then links coming up, then everything else);
``seq`` is a counter, so ties never depend on object identity. Randomness comes
from one ``random.Random(seed)`` drawn in event order, and each agent gets its
own ``random.Random`` seeded from ``(seed, node, incarnation)``. Nothing reads
a clock. Same inputs and seed => the same events in the same order => the same
``trace_sha256``. Security policies are built by the agent factory, not here;
give each one ``random_bytes=sim_random_bytes(seed, node)`` and a secure run
replays exactly too (its nonces are then predictable: simulation only).

Links. A directed link ``frm -> to`` is *up* while a plan contact for it is
active, neither node is crashed, and no imposed partition separates the two.
When it comes up the simulator calls ``on_contact_start(contact)`` on the
sender's agent; when it goes down, ``on_contact_end`` (the convergence layer
notices loss of signal, whatever the cause).

The convergence layer is the runtime's UDP CL, not a model of it: each node
sends through one :class:`~dcis.dtn.cl.udp.UdpLink` per neighbour (the
class the trio runtime drives; tokens from a generator seeded by ``(seed,
node, incarnation)``) and receives with the same decoder and ACK batcher,
so hop-by-hop acknowledgement and retransmission are that one
implementation's (``SimConfig.ack_timeout_s``, ``max_tries``, ``ack_mode``;
MACs with ``link_mac``). The simulator carries its datagrams -- real DCiS
DATA and ACK segments -- and adds only what the network does. Datagrams on
a link are serialized: each takes ``ceil(len * 1e6 / rate)`` µs after the
previous one ends, and its ACK timer starts when it has left
(``UdpLink.hold``/``on_sent``, as the runtime's pacer does). One that cannot
finish before the contact's planned end is not started; one cut short by a
partition or crash is lost; when the link goes down the sender's link fails
whatever it still waits an ACK for (``UdpLink.close``, as the runtime does
at a contact's end) and the agent keeps those bundles. A finished datagram
arrives after the one-way light time ``plan.owlt_s(frm, to, t)``.

Hop-by-hop acknowledgement. The agent's transmission is reported ``ok=True``
only when the receiving agent emits ``Ack`` for it (it holds the bundle
durably, or it was a duplicate) and that ACK segment has travelled back
(light time ``to -> frm``). Otherwise -- lost on the way, receiver crashed,
receiver refused it (store full) -- the link sends it again after its
retransmission timeout (round-trip light time + maximum reorder delay +
``ack_timeout_s``, doubling per try) and reports ``ok=False`` after
``max_tries`` sends. ACKs travel back whether or not a reverse contact is
open (the return channel is not modelled) but are lost with the same
probability as data.

Faults: seeded loss (data and acks), duplication (a second copy arrives up to
``reorder_max_s`` later), reordering (a random extra delay of up to
``reorder_max_s``), partitions (``Partition``) and crashes (``Crash``). A crash
drops the agent; a node with a durable store (``NodeSpec(durable=True)``:
SQLite in ``SimConfig.store_dir``) restarts with a new agent on the same file
and ``recover()``; one with a memory store restarts empty.

Nodes. Each node is a :class:`~dcis.dtn.node.NodeCore`: its agent plus the
services ``Simulator(..., services=factory)`` builds with
``factory(node, incarnation)`` (incarnation 1 at the first start, +1 at each
restart). Services get timers (their ``next_deadline`` joins the agent's),
``on_contact`` when a link from their node comes up or goes down, a
``ctx.rng`` seeded from ``(seed, node, incarnation)``, CGR's
``ctx.earliest_arrival`` over the plan, and ``ctx.credentials`` from
``Simulator(..., credentials={node: NodeCredentials})`` (else None). A crash
drops the services with the agent; their ``ctx.state`` survives it (in the
SQLite store of a durable node, in a map the simulator keeps otherwise). A
bundle handed to a service is traced and counted like an app delivery.

The trace (``Trace``) records every send, refusal, transmit, receive, loss,
ack, delivery and expiry; it is hashed as it goes and never kept whole.

The ledger (``BundleRecord`` per bundle sent) follows each bundle to one
outcome: delivered, expired, deleted (an agent deliberately deleted it -- hop
limit, security policy, unprocessable block, no age -- and no store holds it
any more), or pending (``lost`` if no store holds it either). See
:meth:`Simulator.summary`.
"""

from __future__ import annotations

import functools
import gc
import heapq
import importlib
import json
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO, cast

from dcis.dtn.agent.actions import (
    DELETION_CAUSES,
    Ack,
    Action,
    Deletion,
    Deliver,
    Event,
    Schedule,
    Transmit,
)
from dcis.dtn.cl.ltp.link import LtpCl, LtpConfig, LtpNeighbour, LtpResult
from dcis.dtn.cl.udp import (
    AckBatcher,
    AckMode,
    AckSegment,
    BareBundle,
    DataSegment,
    LinkOutput,
    PeerSwitched,
    Reachability,
    SendDatagram,
    TxDone,
    UdpLink,
    ack_mac,
    data_mac,
    decode_datagram_untrusted,
    mac_ok,
)
from dcis.dtn.errors import DecodeError, DtnError, InvalidArgument
from dcis.dtn.node.core import NodeCore
from dcis.dtn.node.service import Inbound, NodeCredentials, Service
from dcis.dtn.node.state import MemoryStateBackend
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim.trace import Trace, TraceListener
from dcis.dtn.sim.traffic import TrafficItem
from dcis.dtn.time import DtnTime

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DELETION_REASONS",
    "SIM_EPOCH",
    "AgentFactory",
    "BundleRecord",
    "Crash",
    "NodeSpec",
    "Partition",
    "PlanLike",
    "ServiceFactory",
    "SimAgent",
    "SimConfig",
    "SimSummary",
    "Simulator",
    "StoreFactory",
    "deletion_reason",
    "sim_random_bytes",
]

SIM_EPOCH = DtnTime(820_540_800_000)
"""Plan time 0 in the simulator: 2026-01-01T00:00:00Z as DTN time (ms).

Not 0: RFC 9171 section 4.2.7 gives creation time 0 the meaning "this node
has no accurate clock", which would change how agents age bundles."""


def sim_random_bytes(
    seed: int, node: int, incarnation: int = 0
) -> Callable[[int], bytes]:
    """A deterministic byte source for ``node``'s security policy in a run
    seeded ``seed``: pass it as ``SecurityPolicy(..., random_bytes=...)`` (and
    to ``dcis.dtn.bpsec``'s ``add_bcb_*`` functions) so BCB nonces and IVs -- and
    with them every transmitted byte and ``trace_sha256`` -- replay exactly.

    ``random.Random(f"bpsec:{seed}:{node}:{incarnation}").randbytes``: a
    stream of its own, so drawing from it perturbs no other random choice of
    the run; give a policy rebuilt after a crash the node's next
    ``incarnation``, or it repeats its predecessor's nonces.

    NOT SECURE: anyone who knows the seed knows every nonce. For simulation
    only; real nodes keep the default, ``os.urandom`` (spec/security.md 8.1).
    """
    return random.Random(f"bpsec:{seed}:{node}:{incarnation}").randbytes


_US = 1_000_000
# Event priorities at one instant: links go down before others come up, and
# both happen before transmissions, arrivals, timers and sends.
_PRIO_DOWN = 0
_PRIO_UP = 1
_PRIO_NORMAL = 2

_SENDING = 0
_SENT = 1
_CUT = 2

_LINK_MTU_BYTES = 2**31
"""The simulated links carry a bundle of any size in one datagram (the
agent does not fragment for them), as before they were datagrams."""


class PlanLike(Protocol):
    """What the simulator needs of a contact plan (``dcis.dtn.routing.plan.ContactPlan``)."""

    @property
    def contacts(self) -> Iterable[Contact]: ...

    def owlt_s(self, frm: int, to: int, at_s: float) -> float: ...


class SimAgent(Protocol):
    """The agent contract (``dcis.dtn.agent.Agent``) as the simulator uses it."""

    def register(self, endpoint: str, *, now: int | None = None) -> Any: ...

    def send(
        self,
        *,
        source: str,
        destination: str,
        payload: bytes,
        lifetime_ms: int,
        now: DtnTime,
    ) -> tuple[str, list[Action]]: ...

    def on_receive(
        self,
        *,
        cla: str,
        neighbor: int | None,
        data: bytes,
        now: DtnTime,
        cl_token: int | None = None,
    ) -> list[Action]: ...

    def on_contact_start(self, contact: Contact, now: DtnTime) -> list[Action]: ...

    def on_contact_end(self, contact: Contact, now: DtnTime) -> list[Action]: ...

    def on_transmit_done(self, tx_id: int, ok: bool, now: DtnTime) -> list[Action]: ...

    def on_delivered(self, bundle_key: str, now: DtnTime) -> list[Action]: ...

    def on_tick(self, now: DtnTime) -> list[Action]: ...

    def next_deadline(self) -> DtnTime | None: ...

    def recover(self, now: DtnTime) -> list[Action]: ...


class AgentFactory(Protocol):
    """Builds one node's agent (the default builds ``dcis.dtn.agent.Agent``)."""

    def __call__(
        self,
        *,
        node: int,
        store: Any,
        plan: PlanLike,
        plan_epoch: DtnTime,
        rng: random.Random,
    ) -> SimAgent: ...


ServiceFactory = Callable[[int, int], Sequence[Service]]
"""``factory(node, incarnation)`` builds the services of one node's
incarnation (1 at the first start, +1 at every restart): fresh objects each
time, since a crash drops a service's memory (``ctx.state`` survives)."""

StoreFactory = Callable[[int, "NodeSpec", "Path | None"], Any]
"""``store_factory(node, spec, path)`` builds a node's store; ``path`` is the
SQLite file for a durable node (None otherwise)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """Per-node options: ``durable`` puts the node's store in SQLite under
    ``SimConfig.store_dir`` (it survives a crash); ``store_limit_bytes``
    bounds it (None: the store's default)."""

    durable: bool = False
    store_limit_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """Between ``start_s`` and ``end_s`` (plan time) links between different
    ``groups`` are down, whatever the plan says. Nodes in no group form one
    more group together."""

    start_s: float
    end_s: float
    groups: tuple[frozenset[int], ...]

    def __post_init__(self) -> None:
        if (
            not (math.isfinite(self.start_s) and math.isfinite(self.end_s))
            or self.end_s < self.start_s
            or self.start_s < 0
        ):
            raise InvalidArgument(
                f"partition window must satisfy 0 <= start <= end, got [{self.start_s}, {self.end_s}]"
            )
        seen: set[int] = set()
        for g in self.groups:
            if seen & g:
                raise InvalidArgument(
                    f"partition groups overlap on nodes {sorted(seen & g)}"
                )
            seen |= g

    def separates(self, a: int, b: int) -> bool:
        """True if nodes ``a`` and ``b`` are in different groups."""
        ga = gb = -1
        for i, g in enumerate(self.groups):
            if a in g:
                ga = i
            if b in g:
                gb = i
        return ga != gb


@dataclass(frozen=True, slots=True, kw_only=True)
class Crash:
    """Node ``node`` crashes at ``at_s`` and, unless ``restart_at_s`` is None,
    restarts then (plan time, seconds)."""

    node: int
    at_s: float
    restart_at_s: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.at_s) or self.at_s < 0:
            raise InvalidArgument(f"crash time must be >= 0, got {self.at_s}")
        if self.restart_at_s is not None and not self.restart_at_s >= self.at_s:
            raise InvalidArgument(
                f"restart ({self.restart_at_s}) must not come before the crash ({self.at_s})"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Run parameters. Probabilities are in [0, 1]; times in seconds."""

    seed: int = 0
    duration_s: float
    loss: float = 0.0
    """Probability that a transmission (or its ack) is lost."""
    duplicate: float = 0.0
    """Probability that a transmission arrives twice."""
    reorder: float = 0.0
    """Probability that an arrival is delayed by up to ``reorder_max_s``."""
    reorder_max_s: float = 1.0
    ack_timeout_s: float = 2.0
    """The UDP CL's ``ack_timeout_s``: the margin beyond the round-trip
    light time (plus ``reorder_max_s`` when reordering or duplication is on)
    before a DATA segment is sent again or, after ``max_tries`` sends,
    reported ``ok=False``."""
    max_tries: int = 4
    """Sends of a DATA segment before the link gives up (the UDP CL's
    ``max_tries``; the runtime's default is 4 too)."""
    ack_mode: AckMode = AckMode.ON
    """The UDP CL's ack mode on every link: ``on`` (DATA segments,
    acknowledged) or ``none``/``off`` (bare bundles, best effort)."""
    link_mac: bool = False
    """MAC every DATA and ACK segment with the link key of its two nodes,
    derived from ``Simulator(..., credentials=...)`` as the runtime derives
    it from certificates (links to a node without credentials go unMACed).
    Off by default: a run that is not about security skips the HMACs."""
    lifetime_s: float = 86_400.0
    """Lifetime of every bundle sent from traffic (default 24 h)."""
    plan_epoch: DtnTime = SIM_EPOCH
    store_dir: Path | None = None
    """Directory for durable nodes' SQLite files (required if any)."""
    ltp: bool = False
    """Carry bundles over LTP -- the runtime's code (:mod:`dcis.dtn.cl.ltp.link`)
    -- instead of the abstract hop-ACK link: segments of ``ltp_mtu_bytes``
    are lost, duplicated and reordered as above; the engines pace to the
    contact's rate, and a contact's end suspends their timers."""
    ltp_mtu_bytes: int = 1400

    def __post_init__(self) -> None:
        if not math.isfinite(self.duration_s) or self.duration_s < 0:
            raise InvalidArgument(
                f"duration must be a finite number >= 0, got {self.duration_s}"
            )
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise InvalidArgument(
                    f"{name} must be a probability in [0, 1], got {p}"
                )
        for name in ("reorder_max_s", "ack_timeout_s"):
            if not getattr(self, name) >= 0:
                raise InvalidArgument(f"{name} must be >= 0")
        if self.max_tries < 1:
            raise InvalidArgument(f"max_tries must be >= 1, got {self.max_tries}")
        if self.ack_mode is AckMode.AUTO:
            raise InvalidArgument(
                "ack_mode auto is for peers of unknown kind; every simulated node speaks DCiS"
            )
        if not self.lifetime_s > 0:
            raise InvalidArgument(f"lifetime must be > 0 s, got {self.lifetime_s}")


@dataclass(slots=True)
class BundleRecord:
    """The simulator's ledger entry for one bundle sent from traffic."""

    key: str
    src: int
    dst: int
    sent_us: int
    expires_us: int
    deliveries: int = 0
    first_delivery_us: int | None = None
    expired: bool = False
    """At least one node reported it expired."""
    deletions: int = 0
    """``Event("deleted")`` reports for it (or one of its fragments), any node."""
    deleted_reason: str | None = None
    """The agent's reason for the first deletion, as it gave it."""
    deleted_category: str | None = None
    """That deletion's category (see :data:`DELETION_REASONS`)."""
    dst_endpoint: str = ""
    """The destination EID (``ipn:<dst>.1`` unless sent to another service)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSummary:
    """What a run produced. Latencies are seconds (None with no deliveries).

    ``refused`` counts sends the source refused (store full, node down);
    ``relay_refused`` bundles a receiving agent refused (its store full: the
    sender keeps them and retries). ``delivered`` counts distinct bundles delivered; ``expired`` those never
    delivered that some node expired; ``deleted`` those neither delivered
    nor expired that some agent deliberately deleted and no store holds any
    more (``deleted_reasons``: how many per reason category, see
    :data:`DELETION_REASONS`); ``pending`` the rest of ``sent``, so
    ``sent == delivered + expired + deleted + pending``.
    ``lost`` counts pending bundles held by no store and deleted by no agent
    (a memory store lost in a crash; otherwise a bug). ``stored`` is the number of bundles in all
    stores at the end. ``misdelivered`` counts deliveries at a node or
    endpoint other than the bundle's destination (a bug if not 0).
    """

    seed: int
    sim_time_s: float
    nodes: int
    sent: int
    refused: int
    relay_refused: int
    delivered: int
    duplicates_delivered: int
    delivered_after_lifetime: int
    misdelivered: int
    expired: int
    deleted: int
    deleted_reasons: Mapping[str, int]
    pending: int
    lost: int
    stored: int
    transmissions: int
    transmit_failures: int
    lost_in_flight: int
    duplicated: int
    bytes_transmitted: int
    events: int
    latency_p50_s: float | None
    latency_p99_s: float | None
    latency_max_s: float | None
    trace_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (field names as keys)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["deleted_reasons"] = dict(sorted(self.deleted_reasons.items()))
        return out


class _Node:
    __slots__ = (
        "acks",
        "agent",
        "core",
        "gen",
        "last_tick_us",
        "link_ticks",
        "links",
        "ltp",
        "ltp_ticks",
        "num",
        "service_state",
        "spec",
        "store",
        "ticks",
        "udp",
        "udp_rng",
        "up",
    )

    def __init__(self, num: int, spec: NodeSpec) -> None:
        self.num = num
        self.spec = spec
        self.agent: SimAgent | None = None
        self.core: NodeCore | None = None
        # Services' durable state of a node whose store is in memory: kept
        # across crashes like a disk (the bundles are not).
        self.service_state = MemoryStateBackend()
        self.store: Any = None
        self.up = False
        self.gen = 0
        self.ticks: set[int] = set()
        self.last_tick_us = -1
        self.links: list[_Link] = []
        self.ltp: LtpCl | None = None
        self.ltp_ticks: set[int] = set()
        # The node's UDP CL: one UdpLink per neighbour it sends to, made at
        # the first transmission, and the receiving side's ACK batcher.
        self.udp: dict[int, UdpLink] = {}
        self.udp_rng: random.Random | None = None  # made with the first link
        self.acks = AckBatcher(local_node=num)
        # neighbour -> the instant (µs) of the link timer event queued for it.
        self.link_ticks: dict[int, int] = {}


class _Dgram:
    """One datagram on a link: a DATA segment (``token`` set) or a bare
    bundle, with what the trace says about it."""

    __slots__ = ("data", "end_us", "frm", "gen", "state", "to", "token", "tx_id")

    def __init__(
        self, frm: int, to: int, gen: int, data: bytes, token: int | None, tx_id: int
    ) -> None:
        self.frm = frm
        self.to = to
        self.gen = gen
        self.data = data
        self.token = token
        self.tx_id = tx_id
        self.end_us = 0
        self.state = _SENDING


class _Link:
    __slots__ = ("active", "busy_until_us", "current", "frm", "sending", "to")

    def __init__(self, frm: int, to: int) -> None:
        self.frm = frm
        self.to = to
        self.active: list[Contact] = []
        self.current: Contact | None = None
        self.busy_until_us = 0
        self.sending: deque[_Dgram] = deque()


def _us(seconds: float) -> int:
    return round(seconds * _US)


def _nearest_rank(sorted_values: list[int], q: float) -> float | None:
    if not sorted_values:
        return None
    idx = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[idx] / _US


SIM_GC_THRESHOLDS = (50_000, 20, 20)
"""The garbage collector's generation thresholds while :meth:`Simulator.run_until`
runs events (each at least Python's own; restored after). A simulated
day allocates millions of short-lived objects that reference counting
frees: at Python's default (700, 10, 10) the collector ran ~7,400 times in
the first two simulated hours of the 1,000-node day and took ~12% of the
CPU, mostly full collections of the ~400k live objects, triggered by
objects that had only lived long enough to be promoted. Cycles are still
collected, just in fewer, larger batches (spec/performance.md, "Fifth
round: simulator")."""

SIM_KEEP_DECODED = 64
"""``AgentConfig.keep_decoded`` of the agents :func:`default_agent_factory`
builds: each keeps up to this many of the bundles it just stored decoded,
so forwarding one reads it there instead of decoding the stored copy a
second time (one decode per hop instead of two; spec/performance.md,
"Fourth round: per hop"). The copies are of stored bundles only, dropped
when the bundle leaves, so the memory they take follows the bundles
stored (at most this many per node, and ``entries.HOT_MAX_BYTES`` of
them), not simulated time."""


def default_agent_factory(
    *, node: int, store: Any, plan: PlanLike, plan_epoch: DtnTime, rng: random.Random
) -> SimAgent:
    """Build a real ``dcis.dtn.agent.Agent`` (keeping :data:`SIM_KEEP_DECODED`
    just-stored bundles decoded)."""
    # Imported by name at call time: the engine and its fake-agent tests do
    # not need the agent package.
    mod = importlib.import_module("dcis.dtn.agent.agent")
    agent: SimAgent = mod.Agent(
        node=node,
        store=store,
        plan=plan,
        plan_epoch=plan_epoch,
        rng=rng,
        config=mod.AgentConfig(keep_decoded=SIM_KEEP_DECODED),
    )
    return agent


def default_store_factory(node: int, spec: NodeSpec, path: Path | None) -> Any:
    """MemoryStore, or SqliteStore(path) for a durable node (synchronous=NORMAL:
    a simulated crash does not lose the OS's pages, so fsync buys nothing)."""
    from dcis.dtn.agent.store import MemoryStore
    from dcis.dtn.storage.sqlite_store import SqliteStore

    limit = 1 << 30 if spec.store_limit_bytes is None else spec.store_limit_bytes
    if path is not None:
        return SqliteStore(path, limit, synchronous="NORMAL")
    return MemoryStore(limit)


DELETION_REASONS = (*DELETION_CAUSES, "other")
"""The categories ``deleted_reasons`` counts by: the agent's
``Deletion.cause`` values, and ``other``."""


def deletion_reason(detail: str) -> str:
    """The category of an ``Event("deleted", key, detail)`` from its wording
    alone: one of :data:`DELETION_REASONS` (``other`` for a detail not
    recognised). For a plain ``Event`` rather than the agent's ``Deletion``
    (say, from a wrapper around it), and for the testbed, whose daemon logs
    carry only the detail text."""
    d = detail.lower()
    if "security" in d:
        return "security"
    if "hop limit" in d:
        return "hop_limit"
    if "unprocessable" in d:
        return "unprocessable_block"
    if "creation time" in d:
        return "no_age"
    return "other"


def whole_key(key: str) -> str:
    """The key of the whole bundle a (fragment's) bundle key belongs to:
    ``source|creation|sequence`` without a fragment's offset and length."""
    return "|".join(key.split("|", 3)[:3])


def _store_keys(store: Any) -> Iterator[str]:
    """Keys a store holds, a fragment counted as its whole bundle's key."""
    for rec in store.records():
        yield whole_key(rec.key)


class Simulator:
    """Run agents over a contact plan on a virtual clock. See the module docstring.

    Build it, then ``run()`` (to ``config.duration_s``) or ``run_until(t_s)``
    in steps; ``send()`` injects a bundle at the current time. Raises
    :class:`InvalidArgument` for inconsistent inputs (durable nodes without a
    ``store_dir``, negative times).
    """

    def __init__(
        self,
        plan: PlanLike,
        config: SimConfig,
        *,
        traffic: Iterable[TrafficItem] = (),
        partitions: Iterable[Partition] = (),
        crashes: Iterable[Crash] = (),
        node_specs: Mapping[int, NodeSpec] | None = None,
        nodes: Iterable[int] = (),
        agent_factory: AgentFactory | None = None,
        store_factory: StoreFactory | None = None,
        trace_sink: TextIO | None = None,
        trace_listener: TraceListener | None = None,
        deliver_listener: Callable[[int, Deliver], None] | None = None,
        services: ServiceFactory | None = None,
        credentials: Mapping[int, NodeCredentials] | None = None,
    ) -> None:
        self.plan = plan
        self._services = services
        self._credentials: Mapping[int, NodeCredentials] = dict(credentials or {})
        self.config = config
        self.trace = Trace(trace_sink, trace_listener)
        self._deliver_listener = deliver_listener
        self._agent_factory: AgentFactory = agent_factory or default_agent_factory
        self._store_factory: StoreFactory = store_factory or default_store_factory
        self._rng = random.Random(config.seed)
        self._heap: list[tuple[int, int, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self._now_us = 0
        self._end_us = _us(config.duration_s)
        self._epoch_ms = int(config.plan_epoch)
        self._link_keys: dict[tuple[int, int], bytes | None] = {}
        self._max_jitter_us = (
            _us(config.reorder_max_s) if (config.reorder or config.duplicate) else 0
        )
        self._partitions: list[Partition] = []
        self.ledger: dict[str, BundleRecord] = {}
        """Every bundle sent, by bundle key."""
        self._latencies: list[int] = []
        self._counts = {
            "refused": 0,
            "duplicates": 0,
            "late": 0,
            "misdelivered": 0,
            "tx": 0,
            "tx_fail": 0,
            "lost": 0,
            "dup": 0,
            "bytes": 0,
            "events": 0,
        }

        traffic = list(traffic)
        partitions = list(partitions)
        crashes = list(crashes)
        contacts = sorted(
            plan.contacts, key=lambda c: (c.start_s, c.end_s, c.frm, c.to)
        )
        specs = dict(node_specs or {})
        numbers: set[int] = set(nodes) | set(specs)
        for c in contacts:
            numbers.update((c.frm, c.to))
        for t in traffic:
            numbers.update((t.src, t.dst))
        numbers.update(cr.node for cr in crashes)
        self.nodes: dict[int, _Node] = {
            n: _Node(n, specs.get(n, NodeSpec())) for n in sorted(numbers)
        }
        if config.store_dir is None and any(
            nd.spec.durable for nd in self.nodes.values()
        ):
            raise InvalidArgument("durable nodes need SimConfig.store_dir")

        self._links: dict[tuple[int, int], _Link] = {}
        for c in contacts:
            if c.frm != c.to:
                self._link(c.frm, c.to)
        # Contacts and traffic are fed into the queue one ahead (each start
        # queues the next), so the queue holds what is active or imminent,
        # not the whole plan: memory follows the network's state, not the
        # length of the plan or of the run.
        self._contacts = [c for c in contacts if c.frm != c.to]
        self._traffic_items = sorted(traffic, key=lambda t: t.at_s)
        self._feed_contact(0)
        self._feed_traffic(0)
        for p in partitions:
            self._push(_us(p.start_s), _PRIO_DOWN, self._partition_start, p)
            self._push(_us(p.end_s), _PRIO_UP, self._partition_end, p)
        for cr in crashes:
            self._push(_us(cr.at_s), _PRIO_DOWN, self._crash, cr.node)
            if cr.restart_at_s is not None:
                self._push(_us(cr.restart_at_s), _PRIO_UP, self._restart, cr.node)
        for nd in self.nodes.values():
            self._start_node(nd, recover=False)

    # ---- public API -------------------------------------------------------

    @property
    def now_s(self) -> float:
        """Current plan time, seconds."""
        return self._now_us / _US

    @property
    def now(self) -> DtnTime:
        """Current DTN time (ms) as the agents see it."""
        return DtnTime(self.config.plan_epoch + self._now_us // 1000)

    def agent(self, node: int) -> SimAgent | None:
        """The node's current agent (None while it is crashed)."""
        return self.nodes[node].agent

    def store(self, node: int) -> Any:
        """The node's current store (None while it is crashed)."""
        return self.nodes[node].store

    def core(self, node: int) -> NodeCore | None:
        """The node's current :class:`~dcis.dtn.node.NodeCore` (agent plus
        services; None while it is crashed)."""
        return self.nodes[node].core

    def udp_link(self, node: int, neighbor: int) -> UdpLink | None:
        """``node``'s UDP CL link to ``neighbor`` -- the runtime's
        :class:`~dcis.dtn.cl.udp.UdpLink` -- (None while the node is crashed
        or before it first transmitted to ``neighbor``)."""
        return self.nodes[node].udp.get(neighbor)

    def service(self, node: int, service: int) -> Service | None:
        """The running service ``service`` of ``node`` (None while the node
        is crashed or runs no such service)."""
        core = self.nodes[node].core
        return None if core is None else core.services.get(service)

    def run(self) -> SimSummary:
        """Run to ``config.duration_s`` and return the summary."""
        self.run_until(self.config.duration_s)
        return self.summary()

    def run_until(self, t_s: float) -> None:
        """Process every event at or before plan time ``t_s`` (capped at the duration)."""
        limit = min(_us(t_s), self._end_us)
        heap = self._heap
        pop = heapq.heappop
        n = 0
        # The collector's young-generation threshold is raised while events
        # run (SIM_GC_THRESHOLDS) and restored after: nothing here depends
        # on when cycles are collected, only the CPU spent finding them.
        before = gc.get_threshold()
        if before[0]:  # 0: automatic collection switched off; leave it so
            gc.set_threshold(
                *(max(a, b) for a, b in zip(before, SIM_GC_THRESHOLDS, strict=True))
            )
        try:
            while heap and heap[0][0] <= limit:
                at, _, _, fn, arg = pop(heap)
                self._now_us = at
                fn(arg)
                n += 1
        finally:
            gc.set_threshold(*before)
            self._counts["events"] += n
        self._now_us = max(self._now_us, limit)

    def send(
        self,
        src: int,
        dst: int,
        size_bytes: int,
        *,
        lifetime_s: float | None = None,
        payload: bytes | None = None,
        source_service: int = 1,
        dest_service: int = 1,
    ) -> str | None:
        """Send one bundle now from ``ipn:src.<source_service>`` to
        ``ipn:dst.<dest_service>`` (both ``.1`` by default; app traffic may
        use any endpoint, a node service's too); returns its key, or None if
        the node refused it (store full, node down).

        The payload is ``size_bytes`` zero bytes unless ``payload`` is given
        (then ``size_bytes`` is ignored): services above the agent (a
        ``deliver_listener`` on the receiving side, or a node service on
        ``dest_service``) can exchange real data."""
        if payload is not None:
            size_bytes = len(payload)
        nd = self.nodes.get(src)
        if nd is None:
            raise InvalidArgument(f"node {src} is not in the simulation")
        if dst not in self.nodes:
            raise InvalidArgument(f"node {dst} is not in the simulation")
        lifetime_us = _us(self.config.lifetime_s if lifetime_s is None else lifetime_s)
        if nd.core is None:
            self._counts["refused"] += 1
            self.trace.record(self._now_us, "refuse", src, dst, size_bytes, "node-down")
            return None
        if payload is None:
            # Not cached: memory must not grow with the number of distinct sizes.
            payload = bytes(size_bytes)
        try:
            key, actions = nd.core.send(
                source=f"ipn:{src}.{source_service}",
                destination=f"ipn:{dst}.{dest_service}",
                payload=payload,
                lifetime_ms=lifetime_us // 1000,
                now=self.now,
            )
        except DtnError as exc:
            self._counts["refused"] += 1
            self.trace.record(
                self._now_us, "refuse", src, dst, size_bytes, type(exc).__name__
            )
            return None
        self.ledger[key] = BundleRecord(
            key=key,
            src=src,
            dst=dst,
            sent_us=self._now_us,
            # The agent's end of life: creation is stamped in whole ms.
            expires_us=(self._now_us // 1000 + lifetime_us // 1000) * 1000,
            dst_endpoint=f"ipn:{dst}.{dest_service}",
        )
        self.trace.record(self._now_us, "send", src, dst, size_bytes, key)
        self._apply(nd, actions)
        return key

    def crash(self, node: int) -> None:
        """Crash ``node`` now (no-op if it is down). See :class:`Crash`."""
        if node not in self.nodes:
            raise InvalidArgument(f"node {node} is not in the simulation")
        self._crash(node)

    def restart(self, node: int) -> None:
        """Restart ``node`` now (no-op if it is up): a new agent on its store
        (the same file if durable, else empty), then ``recover``."""
        if node not in self.nodes:
            raise InvalidArgument(f"node {node} is not in the simulation")
        self._restart(node)

    def add_partition(self, partition: Partition) -> None:
        """Impose ``partition`` (its window must not start in the past)."""
        if _us(partition.start_s) < self._now_us:
            raise InvalidArgument(
                f"partition starts at {partition.start_s} s, before now ({self.now_s} s)"
            )
        self._push(_us(partition.start_s), _PRIO_DOWN, self._partition_start, partition)
        self._push(_us(partition.end_s), _PRIO_UP, self._partition_end, partition)

    def progress(self) -> dict[str, int]:
        """Cheap running counts (no pass over the stores' keys, unlike
        :meth:`summary`): ``events``, ``sent`` (bundles the ledger holds),
        ``delivered`` (distinct bundles), ``transmissions``, ``stored``
        (bundles in all live stores now)."""
        return {
            "events": self._counts["events"],
            "sent": len(self.ledger),
            "delivered": len(self._latencies),
            "transmissions": self._counts["tx"],
            "stored": sum(
                len(nd.store) for nd in self.nodes.values() if nd.store is not None
            ),
        }

    def stored_keys(self) -> set[str]:
        """Keys of whole bundles (or of the bundle a fragment belongs to) held
        in any live node's store now."""
        keys: set[str] = set()
        for nd in self.nodes.values():
            if nd.store is not None:
                keys.update(_store_keys(nd.store))
        return keys

    def summary(self) -> SimSummary:
        """Counts so far (see :class:`SimSummary`)."""
        stored = self.stored_keys()
        n_stored = sum(
            len(nd.store) for nd in self.nodes.values() if nd.store is not None
        )
        delivered = expired = deleted = pending = lost = 0
        reasons: dict[str, int] = {}
        for rec in self.ledger.values():
            if rec.deliveries:
                delivered += 1
            elif rec.expired:
                expired += 1
            elif rec.key in stored:
                pending += 1
            elif rec.deletions:
                # Every copy is gone and at least one was deleted on purpose:
                # an outcome, not a loss.
                deleted += 1
                why = rec.deleted_category or "other"
                reasons[why] = reasons.get(why, 0) + 1
            else:
                pending += 1
                lost += 1
        lat = sorted(self._latencies)
        c = self._counts
        return SimSummary(
            seed=self.config.seed,
            sim_time_s=self.now_s,
            nodes=len(self.nodes),
            sent=len(self.ledger),
            refused=c["refused"],
            relay_refused=self.trace.counts["refused"],
            delivered=delivered,
            duplicates_delivered=c["duplicates"],
            delivered_after_lifetime=c["late"],
            misdelivered=c["misdelivered"],
            expired=expired,
            deleted=deleted,
            deleted_reasons=dict(sorted(reasons.items())),
            pending=pending,
            lost=lost,
            stored=n_stored,
            transmissions=c["tx"],
            transmit_failures=c["tx_fail"],
            lost_in_flight=c["lost"],
            duplicated=c["dup"],
            bytes_transmitted=c["bytes"],
            events=c["events"],
            latency_p50_s=_nearest_rank(lat, 0.50),
            latency_p99_s=_nearest_rank(lat, 0.99),
            latency_max_s=lat[-1] / _US if lat else None,
            trace_sha256=self.trace.sha256,
        )

    def close(self) -> None:
        """Close every store (SQLite files). The simulator is unusable after."""
        for nd in self.nodes.values():
            self._close_store(nd)

    # ---- plumbing -----------------------------------------------------------

    def _push(self, at_us: int, prio: int, fn: Callable[[Any], None], arg: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_us, prio, self._seq, fn, arg))

    def _link(self, frm: int, to: int) -> _Link:
        link = self._links.get((frm, to))
        if link is None:
            link = self._links[(frm, to)] = _Link(frm, to)
            self.nodes[frm].links.append(link)
            self.nodes[to].links.append(link)
        return link

    def _owlt_us(self, frm: int, to: int) -> int:
        return _us(self.plan.owlt_s(frm, to, self._now_us / _US))

    def _start_node(self, nd: _Node, *, recover: bool) -> None:
        path = None
        if nd.spec.durable:
            assert self.config.store_dir is not None
            path = self.config.store_dir / f"node-{nd.num}.sqlite"
        nd.store = self._store_factory(nd.num, nd.spec, path)
        rng = random.Random(f"{self.config.seed}:{nd.num}:{nd.gen}")
        agent = self._agent_factory(
            node=nd.num,
            store=nd.store,
            plan=self.plan,
            plan_epoch=self.config.plan_epoch,
            rng=rng,
        )
        incarnation = nd.gen + 1
        services: list[Service] = []
        if self._services is not None:
            try:
                services = list(self._services(nd.num, incarnation))
            except Exception as exc:  # the user's factory: report, typed
                raise InvalidArgument(
                    f"services factory failed for node {nd.num}: {type(exc).__name__}: {exc}"
                ) from exc
        core = NodeCore(
            cast(Any, agent),
            node=nd.num,
            services=services,
            incarnation=incarnation,
            rng=random.Random(f"services:{self.config.seed}:{nd.num}:{nd.gen}"),
            state=nd.store if nd.spec.durable else nd.service_state,
            plan=self.plan if isinstance(self.plan, ContactPlan) else None,
            plan_epoch=self.config.plan_epoch,
            credentials=self._credentials.get(nd.num),
            on_service_delivery=functools.partial(self._service_delivery, nd),
        )
        nd.agent = agent
        nd.core = core
        if self.config.ltp:
            peers = sorted({lk.to if lk.frm == nd.num else lk.frm for lk in nd.links})
            nd.ltp = LtpCl(
                node=nd.num,
                config=LtpConfig(
                    margin_ms=max(1, round(self.config.ack_timeout_s * 1000))
                ),
                neighbours=[
                    LtpNeighbour(
                        node=p,
                        address=("sim", p),
                        ltp_mtu_bytes=self.config.ltp_mtu_bytes,
                    )
                    for p in peers
                ],
                rng=random.Random(f"ltp:{self.config.seed}:{nd.num}:{nd.gen}"),
            )
            nd.ltp_ticks = set()
        nd.udp = {}
        nd.udp_rng = None
        nd.acks = AckBatcher(local_node=nd.num)
        nd.link_ticks = {}
        nd.up = True
        nd.ticks = set()
        nd.last_tick_us = -1
        if not core.is_reserved(f"ipn:{nd.num}.1"):
            self._apply(nd, core.register(f"ipn:{nd.num}.1", now=self.now))
        self._apply(nd, core.start(self.now, recover=recover))

    def _close_store(self, nd: _Node) -> None:
        close = getattr(nd.store, "close", None)
        if close is not None:
            close()
        nd.store = None

    def _apply(self, nd: _Node, actions: Iterable[Action]) -> None:
        acked = False
        # Tested in order of frequency (an Event or two per hop, then one
        # Transmit and one Ack): the action types are disjoint.
        for a in actions:
            if nd.core is None:
                return
            if isinstance(a, Event):
                self._event(nd, a)
            elif isinstance(a, Transmit):
                self._transmit(nd, a)
            elif isinstance(a, Ack):
                if nd.ltp is not None and nd.ltp.has(a.neighbor):
                    self._ltp_result(nd, nd.ltp.on_stored(a.cl_token, self._ltp_ms()))
                else:
                    # The UDP CL's receiving side: ACKed once the agent holds it.
                    nd.acks.add(a.neighbor, a.cl_token)
                    acked = True
            elif isinstance(a, Schedule):
                self._want_tick_ms(nd, a.at)
            elif isinstance(a, Deliver):
                self._deliver(nd, a)
        core = nd.core
        if core is not None:
            if acked:
                self._send_acks(nd)
            at = core.next_deadline()
            if at is not None:
                self._want_tick_ms(nd, at)

    def _want_tick(self, nd: _Node, at: DtnTime | None) -> None:
        # (consensus.testing re-arms a node's timers through this one.)
        if at is not None:
            self._want_tick_ms(nd, at)

    def _want_tick_ms(self, nd: _Node, at: int) -> None:
        at_us = (at - self._epoch_ms) * 1000
        if at_us < self._now_us:
            at_us = self._now_us
        # One tick per node per millisecond at most: a deadline the agent
        # has just been ticked for (and did not clear) must not spin the loop.
        if at_us <= nd.last_tick_us:
            at_us = nd.last_tick_us + 1  # the start of the next millisecond
        if at_us in nd.ticks or at_us > self._end_us:
            return
        nd.ticks.add(at_us)
        self._push(at_us, _PRIO_NORMAL, self._tick, (nd, nd.gen, at_us))

    def _tick(self, arg: tuple[_Node, int, int]) -> None:
        nd, gen, at_us = arg
        if gen != nd.gen or nd.core is None:
            return
        nd.ticks.discard(at_us)
        if at_us <= nd.last_tick_us:
            return
        nd.last_tick_us = (at_us // 1000) * 1000 + 999
        self._apply(nd, nd.core.on_tick(self.now))

    def _record_of(self, key: str) -> BundleRecord | None:
        rec = self.ledger.get(key)
        if rec is None:
            # A fragment ("<source>|<ms>|<seq>|<offset>|<len>"): charge it
            # to its whole bundle, whose key is the first three fields.
            rec = self.ledger.get(whole_key(key))
        return rec

    def _event(self, nd: _Node, ev: Event) -> None:
        if ev.kind == "expired":
            rec = self._record_of(ev.bundle_key)
            if rec is not None:
                rec.expired = True
            self.trace.record(self._now_us, "expire", nd.num, ev.bundle_key)
        else:
            if ev.kind == "deleted":
                # Ledger only: the trace line below is what it always was.
                rec = self._record_of(ev.bundle_key)
                if rec is not None:
                    rec.deletions += 1
                    if rec.deleted_reason is None:
                        rec.deleted_reason = ev.detail
                        # The agent names the rule; only a plain Event (from
                        # some other SimAgent) is classified by its wording.
                        rec.deleted_category = (
                            ev.cause
                            if isinstance(ev, Deletion)
                            else deletion_reason(ev.detail)
                        )
            # The agent's reason (e.g. "store full: ...") goes in as one
            # JSON-quoted field so the line stays one line.
            detail = (json.dumps(ev.detail),) if ev.detail else ()
            self.trace.record(self._now_us, ev.kind, nd.num, ev.bundle_key, *detail)

    def _service_delivery(self, nd: _Node, d: Inbound) -> None:
        # A bundle handed to one of nd's services (NodeCore confirms it).
        self._note_delivery(nd, d.endpoint, d.bundle_key, len(d.payload))

    def _deliver(self, nd: _Node, d: Deliver) -> None:
        self._note_delivery(nd, d.endpoint, d.bundle_key, len(d.payload))
        if self._deliver_listener is not None:
            self._deliver_listener(nd.num, d)
        if nd.core is not None:  # the listener may have crashed the node
            self._apply(nd, nd.core.on_delivered(d.bundle_key, self.now))

    def _note_delivery(self, nd: _Node, endpoint: str, key: str, size: int) -> None:
        rec = self.ledger.get(key)
        self.trace.record(self._now_us, "deliver", nd.num, endpoint, key, size)
        if rec is not None and (rec.dst != nd.num or endpoint != rec.dst_endpoint):
            self._counts["misdelivered"] += 1
        elif rec is not None:
            rec.deliveries += 1
            if rec.deliveries == 1:
                rec.first_delivery_us = self._now_us
                self._latencies.append(self._now_us - rec.sent_us)
            else:
                self._counts["duplicates"] += 1
            if self._now_us >= rec.expires_us:  # expired when now >= expiry
                self._counts["late"] += 1

    # ---- links --------------------------------------------------------------

    def _usable(self, link: _Link) -> Contact | None:
        if not link.active:
            return None
        if not (self.nodes[link.frm].up and self.nodes[link.to].up):
            return None
        for p in self._partitions:
            if p.separates(link.frm, link.to):
                return None
        return link.active[-1]

    def _refresh(self, link: _Link) -> None:
        cur = self._usable(link)
        if link.current is not None and cur is not link.current:
            old = link.current
            link.current = None
            now_us = self._now_us
            # Datagrams still being serialized are cut off (those already
            # sent are on their way and arrive).
            keep: deque[_Dgram] = deque()
            for dg in link.sending:
                if dg.end_us > now_us:
                    dg.state = _CUT
                else:
                    keep.append(dg)
            link.sending = keep
            link.busy_until_us = now_us
            sender = self.nodes[link.frm]
            self.trace.record(now_us, "link_down", link.frm, link.to)
            if sender.core is not None:
                self._apply(sender, sender.core.on_contact_end(old, self.now))
            if sender.ltp is not None and sender.ltp.has(link.to):
                self._ltp_result(
                    sender, sender.ltp.contact(link.to, False, self._ltp_ms())
                )
            ul = sender.udp.get(link.to)
            if ul is not None and sender.core is not None:
                # As the runtime does at a contact's end: whatever the link
                # still waits an ACK for has failed (the agent keeps it).
                self._link_outputs(sender, ul, ul.close())
        if cur is not None and link.current is None:
            link.current = cur
            self.trace.record(self._now_us, "link_up", link.frm, link.to)
            sender = self.nodes[link.frm]
            assert sender.core is not None
            if sender.ltp is not None and sender.ltp.has(link.to):
                self._ltp_result(
                    sender,
                    sender.ltp.contact(
                        link.to,
                        True,
                        self._ltp_ms(),
                        owlt_s=self._owlt_us(link.frm, link.to) / _US,
                        rate_bytes_s=cur.rate_bytes_s if cur.rate_bytes_s > 0 else None,
                    ),
                )
            self._apply(sender, sender.core.on_contact_start(cur, self.now))

    def _feed_contact(self, i: int) -> None:
        if i < len(self._contacts):
            start = _us(max(self._contacts[i].start_s, 0.0))
            self._push(start, _PRIO_UP, self._contact_start, i)

    def _contact_start(self, i: int) -> None:
        self._feed_contact(i + 1)
        c = self._contacts[i]
        link = self._links[(c.frm, c.to)]
        self._push(_us(c.end_s), _PRIO_DOWN, self._contact_end, (link, c))
        link.active.append(c)
        self._refresh(link)

    def _contact_end(self, arg: tuple[_Link, Contact]) -> None:
        link, c = arg
        link.active.remove(c)
        self._refresh(link)

    def _partition_start(self, p: Partition) -> None:
        self._partitions.append(p)
        self.trace.record(self._now_us, "partition", -1, len(p.groups))
        for link in self._links.values():
            if link.current is not None and p.separates(link.frm, link.to):
                self._refresh(link)

    def _partition_end(self, p: Partition) -> None:
        self._partitions.remove(p)
        self.trace.record(self._now_us, "heal", -1, len(p.groups))
        for link in self._links.values():
            if link.current is None and link.active:
                self._refresh(link)

    def _crash(self, node: int) -> None:
        nd = self.nodes[node]
        if not nd.up:
            return
        self.trace.record(self._now_us, "crash", node)
        nd.up = False
        nd.agent = None
        nd.core = None
        nd.ltp = None  # open sessions die with the node; its store keeps bundles
        nd.udp = {}  # so do its UDP CL's transmissions in flight
        nd.acks = AckBatcher(local_node=nd.num)
        nd.link_ticks = {}
        nd.gen += 1
        nd.ticks = set()
        self._close_store(nd)
        for link in nd.links:
            self._refresh(link)

    def _restart(self, node: int) -> None:
        nd = self.nodes[node]
        if nd.up:
            return
        self.trace.record(self._now_us, "restart", node)
        self._start_node(nd, recover=True)
        for link in nd.links:
            self._refresh(link)

    # ---- transmissions ------------------------------------------------------

    def _transmit(self, nd: _Node, t: Transmit) -> None:
        data = t.data  # one buffer (a large bundle's parts joined once)
        size = len(data)
        self._counts["tx"] += 1
        self._counts["bytes"] += size
        self.trace.record(
            self._now_us, "transmit", nd.num, t.neighbor, t.tx_id, size, data=data
        )
        if nd.ltp is not None and nd.ltp.has(t.neighbor):
            self._ltp_result(
                nd, nd.ltp.transmit(t.neighbor, t.tx_id, data, self._ltp_ms())
            )
            return
        ul = nd.udp.get(t.neighbor)
        if ul is None:
            ul = nd.udp[t.neighbor] = self._new_udp_link(nd, t.neighbor)
        # (ul.owlt_s is set when a datagram leaves, see _tx_end: the timer
        # of one sent on a link that is up starts then.)
        self._link_outputs(
            nd, ul, ul.transmit(t.tx_id, data, self._now_us / _US), t.tx_id
        )

    def _new_udp_link(self, nd: _Node, neighbor: int) -> UdpLink:
        cfg = self.config
        if nd.udp_rng is None:
            # The node's token generator, for all its links (made on first
            # use: most of a large constellation's nodes idle for a while).
            nd.udp_rng = random.Random(f"udpcl:{cfg.seed}:{nd.num}:{nd.gen}")
        return UdpLink(
            local_node=nd.num,
            neighbor=neighbor,
            ack_mode=cfg.ack_mode,
            mtu_bytes=_LINK_MTU_BYTES,
            # The margin covers the reordering delay too: a late copy is not lost.
            ack_timeout_s=cfg.ack_timeout_s + self._max_jitter_us / _US,
            max_tries=cfg.max_tries,
            rng=nd.udp_rng,
            mac_key=self._link_key(nd.num, neighbor),
        )

    def _link_key(self, a: int, b: int) -> bytes | None:
        """The UDP CL link key of nodes ``a`` and ``b`` (SimConfig.link_mac),
        derived as the runtime derives it (spec/udpcl.md "Threat model")."""
        if not self.config.link_mac:
            return None
        lo, hi = sorted((a, b))
        if (lo, hi) not in self._link_keys:
            ca, cb = self._credentials.get(lo), self._credentials.get(hi)
            self._link_keys[(lo, hi)] = (
                None
                if ca is None or cb is None
                else ca.identity.agree(
                    cb.certificate.kx_public, label=b"dcis-udpcl-link|%d|%d" % (lo, hi)
                )
            )
        return self._link_keys[(lo, hi)]

    def _rtt_us(self, a: int, b: int) -> int:
        return self._owlt_us(a, b) + self._owlt_us(b, a)

    def _link_outputs(
        self, nd: _Node, ul: UdpLink, outs: list[LinkOutput], tx_id: int = -1
    ) -> None:
        """Carry out what node ``nd``'s link to ``ul.neighbor`` asks:
        datagrams onto the simulated link, finished transmissions to the
        core. (A link's deadline can only come nearer when a segment leaves
        -- ``on_sent`` -- or its timer fires: those places queue its timer
        event, see :meth:`_want_link_tick`.)"""
        done: list[tuple[int, bool]] = []
        for o in outs:
            if isinstance(o, SendDatagram):
                self._send_datagram(nd, ul, o, tx_id)
            elif isinstance(o, TxDone):
                if not o.ok:
                    self._counts["tx_fail"] += 1
                self.trace.record(
                    self._now_us, "tx_done", nd.num, ul.neighbor, o.tx_id, int(o.ok)
                )
                done.append((o.tx_id, o.ok))
            elif isinstance(o, Reachability):
                self.trace.record(
                    self._now_us, "reachable", nd.num, ul.neighbor, int(o.reachable)
                )
            elif isinstance(o, PeerSwitched):  # pragma: no cover - no auto mode here
                self.trace.record(
                    self._now_us, "peer", nd.num, ul.neighbor, o.kind.value
                )
        for done_id, ok in done:
            core = nd.core
            if core is None:  # a listener crashed the node
                return
            self._apply(nd, core.on_transmit_done(done_id, ok, self.now))

    def _send_datagram(
        self, nd: _Node, ul: UdpLink, o: SendDatagram, tx_id: int
    ) -> None:
        """Serialize one datagram onto the link ``nd -> ul.neighbor`` at the
        contact's rate. A DATA segment's ACK timer runs from the moment it
        has left (:meth:`UdpLink.hold`, then :meth:`UdpLink.on_sent`)."""
        to = ul.neighbor
        token = o.token
        if tx_id < 0 and token is not None:
            known = ul.tx_id_of(token)
            tx_id = -1 if known is None else known
            self.trace.record(self._now_us, "retransmit", nd.num, to, tx_id)
        link = self._links.get((nd.num, to))
        c = link.current if link is not None else None
        if link is None or c is None:
            # Into the void: the link's timer retries, then gives up.
            self.trace.record(self._now_us, "no_link", nd.num, to, tx_id)
            if token is not None:
                ul.owlt_s = self._rtt_us(nd.num, to) / (2 * _US)
                ul.hold(token)  # it "left" now: its timer restarts with this owlt
                ul.on_sent(token, self._now_us / _US)
                self._want_link_tick(nd, ul)
            return
        # The simulator hands its links whole bundles: one buffer.
        data = o.data if isinstance(o.data, bytes) else b"".join(o.data)
        start = max(self._now_us, link.busy_until_us)
        rate = c.rate_bytes_s
        end = start + math.ceil(len(data) * _US / rate) if rate > 0 else math.inf
        if token is not None:
            ul.hold(token)
        if end > _us(c.end_s):
            # Cannot finish inside this contact: never started; the link
            # reports it failed when the contact ends (never at once, which
            # would let the agent retry on the same contact forever).
            return
        assert isinstance(end, int)
        dg = _Dgram(nd.num, to, nd.gen, data, token, tx_id)
        link.busy_until_us = end
        dg.end_us = end
        link.sending.append(dg)
        self._push(end, _PRIO_NORMAL, self._tx_end, (link, dg))

    def _tx_end(self, arg: tuple[_Link, _Dgram]) -> None:
        link, dg = arg
        if dg.state != _SENDING:
            return
        if link.sending and link.sending[0] is dg:
            link.sending.popleft()
        else:
            link.sending.remove(dg)
        dg.state = _SENT
        sender = self.nodes[dg.frm]
        owlt = self._owlt_us(dg.frm, dg.to)
        if dg.token is not None and sender.gen == dg.gen:
            ul = sender.udp.get(dg.to)
            if ul is not None:
                ul.owlt_s = (owlt + self._owlt_us(dg.to, dg.frm)) / (2 * _US)
                ul.on_sent(dg.token, self._now_us / _US)
                self._want_link_tick(sender, ul)
        cfg = self.config
        rng = self._rng
        if cfg.loss and rng.random() < cfg.loss:
            self._counts["lost"] += 1
            self.trace.record(self._now_us, "lost", dg.frm, dg.to, dg.tx_id)
            return
        max_jitter = self._max_jitter_us
        arrive = self._now_us + owlt
        if cfg.reorder and rng.random() < cfg.reorder:
            arrive += rng.randrange(max_jitter + 1)
        self._push(arrive, _PRIO_NORMAL, self._arrive, dg)
        if cfg.duplicate and rng.random() < cfg.duplicate:
            self._counts["dup"] += 1
            self._push(
                arrive + 1 + rng.randrange(max_jitter + 1),
                _PRIO_NORMAL,
                self._arrive,
                dg,
            )

    def _arrive(self, dg: _Dgram) -> None:
        """A datagram reaches node ``dg.to``: its UDP CL classifies it (the
        runtime's decoder), checks the MAC, and hands the bundle over."""
        rx = self.nodes[dg.to]
        core = rx.core
        if core is None:
            self._counts["lost"] += 1
            self.trace.record(
                self._now_us, "lost", dg.frm, dg.to, dg.tx_id, "receiver-down"
            )
            return
        try:
            seg = decode_datagram_untrusted(dg.data)
        except DecodeError as exc:  # pragma: no cover - the sim only sends good ones
            self.trace.record(self._now_us, "junk", dg.to, dg.frm, json.dumps(str(exc)))
            return
        if isinstance(seg, DataSegment):
            key = self._link_key(seg.sender, rx.num) if self.config.link_mac else None
            if key is not None and not mac_ok(
                data_mac(
                    key,
                    sender=seg.sender,
                    receiver=rx.num,
                    token=seg.token,
                    bundle=seg.bundle,
                ),
                seg.mac,
            ):
                self.trace.record(self._now_us, "mac_fail", dg.to, dg.frm, dg.tx_id)
                return
            self.trace.record(
                self._now_us,
                "receive",
                dg.to,
                dg.frm,
                dg.tx_id,
                seg.token,
                len(dg.data),
            )
            self._apply(
                rx,
                core.on_receive(
                    cla="sim",
                    neighbor=seg.sender,
                    # (a large bundle is a view of the datagram: copied
                    # here, where the decoder sliced it before)
                    data=bytes(seg.bundle),
                    now=self.now,
                    cl_token=seg.token,
                ),
            )
        elif isinstance(seg, BareBundle):
            self.trace.record(
                self._now_us, "receive", dg.to, dg.frm, dg.tx_id, 0, len(dg.data)
            )
            self._apply(
                rx,
                core.on_receive(
                    cla="sim", neighbor=dg.frm, data=seg.bundle, now=self.now
                ),
            )

    def _send_acks(self, nd: _Node) -> None:
        """Send node ``nd``'s queued ACKs: each ACK datagram goes straight
        back after the light time (the return channel is not modelled: it
        needs no contact) and is lost with the configured probability."""
        keys = (
            functools.partial(self._link_key, nd.num) if self.config.link_mac else None
        )
        for to, data in nd.acks.flush(keys):
            if self.config.loss and self._rng.random() < self.config.loss:
                self.trace.record(self._now_us, "ack_lost", nd.num, to)
                continue
            self.trace.record(self._now_us, "ack", nd.num, to, data=data)
            self._push(
                self._now_us + self._owlt_us(nd.num, to),
                _PRIO_NORMAL,
                self._ack_arrive,
                (to, data),
            )

    def _ack_arrive(self, arg: tuple[int, bytes]) -> None:
        to, data = arg
        nd = self.nodes[to]
        if nd.core is None:
            return
        try:
            seg = decode_datagram_untrusted(data)
        except DecodeError:  # pragma: no cover - the sim only sends good ones
            return
        if not isinstance(seg, AckSegment):  # pragma: no cover
            return
        ul = nd.udp.get(seg.sender)
        if ul is None:
            return  # to a restarted node: it forgot what it sent
        key = ul.mac_key
        if key is not None and not mac_ok(
            ack_mac(key, sender=seg.sender, receiver=to, tokens=seg.tokens), seg.mac
        ):
            ul.counters.mac_failures += 1
            self.trace.record(self._now_us, "mac_fail", to, seg.sender, -1)
            return
        self._link_outputs(nd, ul, ul.on_ack(seg.tokens, self._now_us / _US))

    def _want_link_tick(self, nd: _Node, ul: UdpLink) -> None:
        """Queue a timer event for ``ul``'s next retransmission deadline,
        unless one at or before it is queued already."""
        d = ul.next_deadline()
        if d is None:
            return
        at_us = math.ceil(d * _US)
        if at_us / _US < d:  # float rounding: never wake before the deadline
            at_us += 1
        at_us = max(at_us, self._now_us)
        queued = nd.link_ticks.get(ul.neighbor)
        if (queued is not None and queued <= at_us) or at_us > self._end_us:
            return
        nd.link_ticks[ul.neighbor] = at_us
        self._push(
            at_us, _PRIO_NORMAL, self._link_tick, (nd, nd.gen, ul.neighbor, at_us)
        )

    def _link_tick(self, arg: tuple[_Node, int, int, int]) -> None:
        nd, gen, neighbor, at_us = arg
        if gen != nd.gen or nd.link_ticks.get(neighbor) != at_us:
            return  # a crash since, or a later event replaced it
        del nd.link_ticks[neighbor]
        ul = nd.udp.get(neighbor)
        if ul is None or nd.core is None:
            return
        self._link_outputs(nd, ul, ul.on_timer(self._now_us / _US))
        if nd.gen == gen and nd.udp.get(neighbor) is ul:
            self._want_link_tick(nd, ul)

    # ---- LTP (SimConfig.ltp) ---------------------------------------------------

    def _ltp_ms(self) -> int:
        return self._now_us // 1000

    def _ltp_result(self, nd: _Node, res: LtpResult) -> None:
        """Carry out what a node's LTP CL asks: segments onto the links,
        finished transmissions and received bundles to its core, and a wake-up
        at its next deadline."""
        for addr, data in res.sends:
            self._ltp_segment(nd.num, addr[1], data)
        core = nd.core
        if core is None:
            return
        if res.done:
            self._counts["tx_fail"] += sum(1 for _, ok in res.done if not ok)
            for tx_id, ok in res.done:
                self.trace.record(self._now_us, "tx_done", nd.num, -1, tx_id, int(ok))
            self._apply(nd, core.on_transmit_done_many(res.done, self.now))
        for frm, bundle, token in res.received:
            self.trace.record(self._now_us, "receive", nd.num, frm, -1, token or 0)
            self._apply(
                nd,
                core.on_receive(
                    cla="ltp", neighbor=frm, data=bundle, now=self.now, cl_token=token
                ),
            )
        ltp = nd.ltp
        d = ltp.next_deadline() if ltp is not None else None
        if d is not None:
            at_us = max(math.ceil(d) * 1000, self._now_us)
            if at_us not in nd.ltp_ticks and at_us <= self._end_us:
                nd.ltp_ticks.add(at_us)
                self._push(at_us, _PRIO_NORMAL, self._ltp_tick, (nd, nd.gen, at_us))

    def _ltp_tick(self, arg: tuple[_Node, int, int]) -> None:
        nd, gen, at_us = arg
        nd.ltp_ticks.discard(at_us)
        if gen != nd.gen or nd.ltp is None:
            return
        self._ltp_result(nd, nd.ltp.on_tick(self._ltp_ms()))

    def _ltp_segment(self, frm: int, to: int, data: bytes) -> None:
        """One LTP segment onto the link frm->to: lost, delayed by the light
        time (and reordering), duplicated, as the config says."""
        cfg = self.config
        rng = self._rng
        link = self._links.get((frm, to))
        self._counts["bytes"] += len(data)
        if (
            link is None
            or link.current is None
            or (cfg.loss and rng.random() < cfg.loss)
        ):
            self._counts["lost"] += 1
            return
        arrive = self._now_us + self._owlt_us(frm, to)
        max_jitter = _us(cfg.reorder_max_s) if (cfg.reorder or cfg.duplicate) else 0
        if cfg.reorder and rng.random() < cfg.reorder:
            arrive += rng.randrange(max_jitter + 1)
        self._push(arrive, _PRIO_NORMAL, self._ltp_arrive, (to, data))
        if cfg.duplicate and rng.random() < cfg.duplicate:
            self._counts["dup"] += 1
            self._push(
                arrive + 1 + rng.randrange(max_jitter + 1),
                _PRIO_NORMAL,
                self._ltp_arrive,
                (to, data),
            )

    def _ltp_arrive(self, arg: tuple[int, bytes]) -> None:
        to, data = arg
        nd = self.nodes[to]
        if nd.ltp is None:
            self._counts["lost"] += 1
            return
        self._ltp_result(nd, nd.ltp.on_datagram(data, self._ltp_ms()))

    def _feed_traffic(self, i: int) -> None:
        if i < len(self._traffic_items):
            self._push(_us(self._traffic_items[i].at_s), _PRIO_NORMAL, self._traffic, i)

    def _traffic(self, i: int) -> None:
        self._feed_traffic(i + 1)
        item = self._traffic_items[i]
        for _ in range(item.count):
            self.send(item.src, item.dst, item.size_bytes)
