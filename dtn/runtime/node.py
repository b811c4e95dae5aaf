"""The trio runtime: one bundle node driving the sans-I/O agent core.

Theory of operation
-------------------
A :class:`Node` owns an :class:`~dcis.dtn.agent.Agent` with a
:class:`~dcis.dtn.agent.SqliteStore`, one UDP socket (the UDP convergence layer,
spec/udpcl.md), optionally an MTCP listener and outgoing MTCP connections, and
the local application API socket (spec/appapi.md). Everything runs in one trio
thread; the agent is only ever called from it, so it needs no locks.

- Services: the node is a :class:`~dcis.dtn.node.NodeCore` -- the agent plus its
  services: :class:`~dcis.dtn.node.EchoService` on ``ipn:N.7`` and whatever the
  service factories return (``open_node(config, services=factory)`` and
  ``[services] factories`` in ``node.toml``), each called as
  ``factory(node, incarnation)``; the incarnation is counted in the store.
  Every input goes through the core; app clients can neither register nor
  send from the node's own endpoints (``ipn:N.0``, reserved numbers, running
  services); an app bundle to a local service endpoint reaches the service.
- Clock: one clock. DTN time is trio's clock plus an offset fixed at start
  (the wall clock then, ``time.time()`` unless ``clock`` says otherwise), so
  a whole node runs under ``trio.testing.MockClock``. Plan time 0 is
  ``plan_epoch_unix_s`` (the testbed passes the moment it starts the
  traffic), or the node's start time.
- Timers: the agent's ``Schedule``/``next_deadline`` wakes the timer task;
  each :class:`~dcis.dtn.cl.udp.UdpLink`'s retransmission deadline wakes the link
  timer task.
- Contacts: the plan's contacts from this node open and close links at their
  times; neighbours marked ``always_on`` (the default without a plan) get an
  open-ended contact at start. The plan file is re-read while running
  (:meth:`Node.reload_plan`: on SIGHUP to ``dtn-node``, or when its
  modification time or size changes, polled every second): contacts gone
  from it close at once, new ones open at their times, plan time keeps its
  epoch, and a file that does not parse leaves the running plan alone.
- Receive: the UDP reader drains every datagram queued on the socket, hands
  the bundles to ``agent.on_receive_many`` (one store commit per batch), then
  sends the ACKs the agent released (it releases them only once the batch is
  durable).
- Shutdown: cancelling :meth:`Node.run` closes sockets and the store; bundles
  not yet forwarded stay in the store and ``recover`` resumes them next start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import heapq
import itertools
import logging
import math
import os
import random
import socket
import ssl
import stat
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from dcis.dtn.agent import (
    Ack,
    Action,
    Agent,
    AgentConfig,
    BundleStore,
    Deliver,
    Event,
    MemoryStore,
    Received,
    Schedule,
    Transmit,
)
from dcis.dtn.agent.actions import Deletion
from dcis.dtn.agent.agent import (
    ConfirmationsInterrupted,
    SendRequest,
    SendsInterrupted,
)
from dcis.dtn.agent.entries import HOT_MAX_BUNDLES
from dcis.dtn.agent.store import StoredBundle, StoreError, StoreFull
from dcis.dtn.appapi.wire import (
    encode_bundle_message_parts,
    encode_key_reply,
    encode_message,
)
from dcis.dtn.bpv7.eid import IpnEid, parse_eid
from dcis.dtn.cl.mtcp import MtcpDecoder, bstr_head
from dcis.dtn.cl.udp import (
    DATA_OVERHEAD_BYTES,
    AckBatcher,
    AckMode,
    BareBundle,
    Buffers,
    DataSegment,
    LinkOutput,
    NeedSegment,
    Pacer,
    PartSegment,
    PeerSwitched,
    Reachability,
    SendDatagram,
    UdpLink,
    ack_mac,
    data_mac,
    decode_datagram_untrusted,
    encode_need_segment,
    mac_ok,
    need_mac,
    part_mac,
)
from dcis.dtn.cl.udp_parts import PartAssembler
from dcis.dtn.client.common import ReceivedBundle
from dcis.dtn.client.gather import IOV_MAX, send_buffers
from dcis.dtn.client.push_reader import PushReader
from dcis.dtn.errors import DecodeError, DtnError, InvalidArgument
from dcis.dtn.node import (
    EchoService,
    EndpointReserved,
    EventKind,
    NodeCore,
    Service,
    StateNotDurable,
)
from dcis.dtn.node.resources import AdvertisesResources, check_resource_fields
from dcis.dtn.node.service import MAX_LOCAL_REQUESTS, AnswersLocalRequests
from dcis.dtn.routing.contact import Contact
from dcis.dtn.runtime.ack_hold import HOLD_S, AckHold
from dcis.dtn.runtime.after_sync import (
    APP_REPLY,
    HOP_ACK,
    LTP_ACK,
    OTHER,
    PIECE_ACK,
    TCPCL_ANSWER,
    AfterSync,
    Durable,
    withdraw,
)
from dcis.dtn.runtime.config import ConfigError, NeighbourConfig, NodeConfig
from dcis.dtn.runtime.ltp import LTP_FIRST_BYTES, LtpCl, LtpConfig, LtpResult
from dcis.dtn.runtime.security import NodeSecurity
from dcis.dtn.runtime.services import ServiceFactory, load_factory, next_incarnation
from dcis.dtn.runtime.tcpcl import TcpclCla
from dcis.dtn.runtime.tokens import PooledSystemRandom
from dcis.dtn.runtime.watch import file_stamp
from dcis.dtn.storage import SqliteStore
from dcis.dtn.time import DtnTime, dtn_time_from_unix

ECHO_SERVICE = 7
"""Service number of every node's echo endpoint (``ipn:N.7``): a bundle sent
there comes back to its source with the same payload (``dcis ping``); the
:class:`~dcis.dtn.node.EchoService` every node runs."""

DAEMON_WINDOW = 256
"""Transmissions in flight per neighbour in a daemon (AgentConfig.window)."""
DAEMON_WINDOW_BYTES = 4 << 20
"""Bytes in flight per neighbour in a daemon (AgentConfig.window_bytes):
the size asked for the UDP socket buffers."""
DAEMON_HOLD_FRAGMENTS_MS = 200
"""The longest the daemon holds a received UDP fragment for a local endpoint
unacknowledged while the rest of its bundle arrives (``AgentConfig.
hold_fragments_ms``; at most a quarter of ``udp.ack_timeout_s``): the whole
bundle is then stored once instead of every fragment and then the whole
(spec/performance.md, "Seventh round")."""

_LOGGED_EVENTS = frozenset(
    {
        EventKind.EXPIRED,
        EventKind.REFUSED,
        EventKind.DROPPED,
        EventKind.DELETED,
        EventKind.SERVICE_FAILED,
        EventKind.SERVICE_SEND_FAILED,
    }
)
"""Events logged at info (expired) or warning level; the rest at debug."""
_DEBUG_EVENTS = (
    frozenset(EventKind)
    - _LOGGED_EVENTS
    - {EventKind.STORE_CORRUPT, EventKind.NO_ROUTE}
)
"""Events :meth:`Node._apply` logs at debug level only (the rest: above)."""

_TICK_RETRY_MIN_S = 0.1
_TICK_RETRY_MAX_S = 30.0
"""The timer task's wait after a tick that raised, doubling from the first
to the second while ticks keep failing (the deadline that failed is in the
past: without a wait the task would spin on it)."""

_RECV_BUFFER = 65_535
_MAX_BATCH = 512
# A receive batch (one store commit) also ends at this many bytes, so that
# large datagrams do not hold a batch's worth of memory and ACK latency.
_MAX_BATCH_BYTES = 4 << 20
# MTCP: bundles queued for a neighbour that go out in one batch of writes.
_MTCP_BATCH = 256
_MTCP_BATCH_BYTES = 4 << 20
_MTCP_SETTLE_S = 0.02
"""The longest a group-commit sync waits for MTCP senders to report the
bundles queued when it was due (:meth:`Node._mtcp_settle`; 5 ms kept about
a third of node 1's late payloads from the disk at 64 KB, 20 ms about half:
spec/performance.md, "Eighth round")."""
sync_in_thread: Callable[[Callable[[], None]], Any] = trio.to_thread.run_sync
"""How a group-commit sync runs the store's fsyncs off the event loop (a
worker thread). Tests under trio's MockClock with autojump replace it with
one that stops virtual time while the real disk works (tests/conftest.py):
otherwise a slow fsync on a loaded machine lets every virtual timeout of the
test pass during it."""
# Bytes per MTCP or app API read, into the node's one read buffer (see
# _read_into; large reads: several 64 KB sends in one read are one store
# transaction, one fsync).
_READ_BYTES = 1 << 20
# Most bytes read at once straight into a new bytes object for the rest of a
# large frame (_read_piece): below glibc's mmap threshold as tools/dtn_node.py
# pins it (1 MiB), so a short read's object shrinks in place on the heap.
_PIECE_BYTES = _READ_BYTES - 4096
# Bytes peeked after a large app API message to find the next payload.
_PEEK_BYTES = 4096
# Send buffer asked for on app API connections.
_APP_SNDBUF = 2 << 20  # the kernel doubles it; 128 connections: <= 512 MiB
# Seconds between checks of the contact plan file's modification time.
_PLAN_POLL_S = 1.0
_MAX_UNKNOWN_SENDERS = 1024
_MAX_NEED_AT = 1024  # transfers whose last NEED time is remembered
# Space the store keeps filled so that a full disk can still delete bundles.
_STORE_BALLAST_BYTES = 1 << 20
# App API replies queued for one connection before its requests are no
# longer read (the client is not reading its replies).
_APP_MAX_OUTBOX = 1024
# App requests that neither write nor read the store: a read's transaction
# rolled back, they keep their own answer (spec/appapi.md, ``send``).
_STORE_FREE = frozenset({"ping", "register", "unregister"})


def _stream_mtus(cfg: NodeConfig) -> dict[int, int | None]:
    """Per-neighbour MTU for the agent: none for TCPCL and LTP (whole
    bundles), MTCP's frame limit for MTCP, ``limits.udp_max_transfer_bytes``
    for UDP neighbours with ``ack = "on"`` (DCiS peers: PART segments carry
    a larger bundle whole); other UDP neighbours are left out and get
    ``mtu_bytes``."""
    out: dict[int, int | None] = {}
    whole_udp = cfg.limits.udp_max_transfer_bytes
    for n in cfg.neighbours:
        if n.cla in ("tcpcl", "ltp"):
            out[n.node] = None
        elif n.cla == "mtcp":
            out[n.node] = cfg.limits.mtcp_max_frame_bytes
        elif n.cla == "udp" and n.ack is AckMode.ON and whole_udp > cfg.mtu_bytes:
            out[n.node] = whole_udp
    return out


def _as_is(frame: bytes | memoryview) -> bytes | memoryview:
    """An MTCP frame as the decoder gives it (``MtcpDecoder.feed_frames``)."""
    return frame


def _pacer(rate_bytes_s: float) -> Pacer:
    """A pacer for a contact: bursts of at most half a second of the rate
    (64 KiB at most), so that the link's own buffer is never overrun."""
    return Pacer(rate_bytes_s, burst_bytes=min(65_536.0, max(rate_bytes_s, 0.0) * 0.5))


class _Subscriber:
    """Where Deliver actions for one endpoint go (an in-process iterator or an
    app API connection). ``unconfirmed`` holds what was pushed but not yet
    confirmed, handed back to the node if the subscriber goes away.
    ``taken`` holds the keys pushed here but handed to a newer registration
    of the endpoint: this application may still confirm them."""

    def __init__(self, endpoint: str, push: Callable[[Deliver], bool]) -> None:
        self.endpoint = endpoint
        self.push = push
        self.unconfirmed: dict[str, Deliver] = {}
        self.taken: set[str] = set()
        # Keys (no payloads) deferred while ``unconfirmed`` is full: a client
        # that does not read stalls itself, not the node's memory. Taken
        # from the front one or a few at a time: an OrderedDict, whose
        # front is found without scanning the slots of keys taken before.
        self.waiting: OrderedDict[str, None] = OrderedDict()


@dataclass(slots=True)
class _UdpPeer:
    config: NeighbourConfig
    link: UdpLink
    pacer: Pacer
    queue: deque[tuple[bytes | Buffers, int | None]] = field(default_factory=deque)
    wake: trio.Event = field(default_factory=trio.Event)
    contact: Contact | None = None


@dataclass(slots=True, eq=False)
class _Conn:
    """An accepted app API or MTCP connection (for the connection limit)."""

    kind: str
    last_active: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    registered: bool = False


@dataclass(slots=True)
class _MtcpPeer:
    config: NeighbourConfig
    # Bundles for the sender task, (tx_id, parts) in order, and the event
    # that wakes it (a trio memory channel cost a send_nowait and a
    # receive_nowait per bundle: ~2 us).
    queue: deque[tuple[int, Buffers]] = field(default_factory=deque)
    ready: trio.Event = field(default_factory=trio.Event)
    contact: Contact | None = None
    # Bundles the sender took from the queue, and those it reported done;
    # ``reported`` when a sync last gave up waiting for it (-1: never).
    taken: int = 0
    reported: int = 0
    stalled_at: int = -1


class Node:
    """A DTN node running in the current trio program.

    Use :func:`open_node` (``async with open_node(config) as node``) or start
    :meth:`run` in a nursery yourself (``await nursery.start(node.run)``).
    Raises :class:`~dcis.dtn.errors.DtnError` subclasses (e.g. ``StoreError``) from
    ``run`` when the store or plan cannot be opened, and ``OSError`` when an
    address cannot be bound.

    ``services``: a factory ``(node, incarnation) -> Sequence[Service]`` run
    besides the configured ones (spec/node.md). ``clock``: the wall clock,
    read once at start to fix DTN time's offset from trio's clock.
    ``udp_socket``: what makes the UDP socket (``socket.socket`` by default;
    tests pass ``tests/fakes/fakenet.FakeNet().socket``).
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
        services: ServiceFactory | None = None,
        udp_socket: Callable[[int, int], Any] | None = None,
    ) -> None:
        self.config = config
        self.log = log or logging.getLogger(f"dcis.dtn.node.{config.node}")
        self._clock = clock
        self._offset_s = 0.0
        self._service_factory = services
        # socket.socket, or a test's fake (tests/fakes/fakenet.py): called as
        # (family, type); a fake also has async wait_readable/wait_writable.
        self._udp_socket: Callable[[int, int], Any] = udp_socket or socket.socket
        self.agent: Agent | None = None
        self.core: NodeCore | None = None
        """The agent and its services; every input goes through it."""
        self.security: NodeSecurity | None = None
        self.plan: Any = None
        self.udp_address: tuple[str, int] | None = None
        self.mtcp_address: tuple[str, int] | None = None
        self.tcpcl: TcpclCla | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "datagrams_in",
                "datagrams_out",
                "junk",
                "acks_in",
                "acks_out",
                "mtcp_in",
                "mtcp_out",
                "udp_send_errors",
                "store_syncs",
                "store_sync_us",
                "store_fsync_us",
                "late_writes_failed",
                "checkpoints_failed",
                "acks_refused",
                "mac_failures",
                "needs_in",
                "needs_out",
                "needs_refused",
                "needs_limited",
                "handler_errors",
                "handler_errors_unlogged",
                "app_connections",
                "app_refused",
                "app_evicted",
                "mtcp_connections",
                "mtcp_refused",
                "mtcp_evicted",
                "accept_errors",
                "buffer_refused",
                "buffered_bytes",
                "delivery_deferred",
                "acks_held",
                "acks_at_delivery",
                "service_sends_held",
            ),
            0,
        )
        self._sock: Any = None  # socket.socket or a fake
        # The one buffer every stream read lands in (_read_into): each read
        # is consumed before the reading task's next checkpoint.
        self._read_buf: memoryview | None = None
        self._udp: dict[int, _UdpPeer] = {}
        self._mtcp: dict[int, _MtcpPeer] = {}
        self._mtcp_done = trio.Event()  # set when an MTCP sender reports
        self._by_addr: dict[tuple[str, int], int] = {}
        # Neighbours by IP alone (peers such as ION and HDTN send from
        # ephemeral ports); None when two neighbours share an IP.
        self._by_ip: dict[str, int | None] = {}
        # The configured (and resolved) addresses of each neighbour: the only
        # ones its ACKs are taken from.
        self._addrs: dict[int, set[tuple[str, int]]] = {}
        self._link_keys: dict[int, bytes | None] = {}
        self._acks: AckBatcher = AckBatcher(local_node=config.node)
        self._ack_addr: dict[int, tuple[str, int]] = {}
        # Bundles arriving in PART segments, until whole (bounded by
        # limits.udp_max_partial_bytes; idle ones are dropped after the
        # sender's retransmissions would have ended).
        # Senders that are not configured neighbours get a pool of their own,
        # a quarter of the bound and 16 transfers, so that strangers cannot
        # evict the neighbours' transfers.
        # (Grown to each neighbour's give_up_after_s: _keep_partials_for.)
        idle_s = min(config.ack_timeout_s * 2.0 ** min(config.max_tries, 20), 3600.0)
        self._parts = PartAssembler(
            max_transfer_bytes=max(config.limits.udp_max_transfer_bytes, 1),
            max_partial_bytes=config.limits.udp_max_partial_bytes,
            idle_timeout_s=idle_s,
            probe_after_s=config.ack_timeout_s / 2,
        )
        self._parts_unknown = PartAssembler(
            max_transfer_bytes=max(config.limits.udp_max_transfer_bytes, 1),
            max_partial_bytes=max(config.limits.udp_max_partial_bytes // 4, 1),
            idle_timeout_s=idle_s,
            max_transfers=16,
            probe_after_s=config.ack_timeout_s / 2,
        )
        # Each transfer's last NEED: when, and the ranges it named (_need_due).
        self._need_at: OrderedDict[
            tuple[int, int], tuple[float, tuple[tuple[int, int], ...]]
        ] = OrderedDict()
        self._subs: dict[str, _Subscriber] = {}
        self._held: dict[str, dict[str, Deliver]] = {}
        self._timer_wake = trio.Event()
        self._link_wake = trio.Event()
        # Group commit: with a FULL store, commits do not fsync on the event
        # loop; _sync_task fsyncs on a worker thread, and what promises
        # durability (hop ACKs, replies to app sends) waits here for it.
        self._deferred: SqliteStore | None = None
        self._synced_gen = 0
        # NodeCore.state_commits covered by the last sync: while more were
        # made, the services' transmissions wait for the next one (_apply).
        self._synced_commits = 0
        # What runs once its write generation is durable, saying what it
        # stands for (a sync that refuses bundles reads it: after_sync.py).
        self._after_sync: deque[AfterSync] = deque()
        self._sync_wake = trio.Event()
        # Hop ACKs of bundles pushed to an app, held until it confirms them
        # (then no payload write at all) or a bound ends (spec/udpcl.md).
        # A quarter of the UDP CL's ACK timeout at most, as the fragment
        # hold: a held ACK must not make the previous hop resend.
        self._ack_hold = AckHold(min(HOLD_S, self.config.ack_timeout_s / 4))
        # Keys an app handler's read confirmed, for _release_confirmed
        # once the read's transaction has committed.
        self._confirmed_keys: list[str] = []
        # An app read's first StoreError is logged, the rest only counted
        # (_app_store_error): reset as each read's transaction opens.
        self._app_read_logged = False
        self._open_contacts: set[Contact] = set()
        self._contacts_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._deadline: DtnTime | None = None
        self._cancel: trio.CancelScope | None = None
        self._started_at = 0.0
        self._epoch_unix_s = 0.0
        self._rng = random.Random()
        self.ltp: LtpCl | None = None
        self._ltp_wake = trio.Event()
        self._fd_budget = 1 << 30
        self._conns: set[_Conn] = set()
        # In-process endpoints (Node.endpoint): the application is trusted
        # and reads a channel, so their queue is not bounded.
        self._inproc_push: dict[str, Callable[[Deliver], bool]] = {}
        self._app_socket_ino: tuple[int, int] | None = None

    # ------------------------------------------------------------ clock

    def _unix_s(self) -> float:
        # The one clock: trio's, plus the wall-clock offset fixed at start.
        return trio.current_time() + self._offset_s

    def now_ms(self) -> DtnTime:
        """Current DTN time (ms since 2000-01-01): trio's clock plus the
        offset fixed at start."""
        return dtn_time_from_unix(self._unix_s())

    def _plan_s(self) -> float:
        return self._unix_s() - self._epoch_unix_s

    # ------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled (or :meth:`stop`). Signals ``task_status`` once
        sockets are bound and the store is recovered."""
        cfg = self.config
        self._offset_s = self._clock() - trio.current_time()
        self._started_at = self._unix_s()
        if cfg.plan is not None:
            from dcis.dtn.storage.plan_files import load_plan

            try:
                self.plan = load_plan(cfg.plan)
            except DtnError as exc:
                raise ConfigError(f"plan: {exc}") from exc
        # Plan time 0: the configured epoch (the testbed's), else the plan's
        # own reference time (ION's absolute `@` times), else our start.
        plan_epoch = getattr(self.plan, "epoch_unix_s", None)
        if cfg.plan_epoch_unix_s is not None:
            self._epoch_unix_s = cfg.plan_epoch_unix_s
        elif plan_epoch is not None:
            self._epoch_unix_s = float(plan_epoch)
        else:
            self._epoch_unix_s = self._started_at
        store: BundleStore
        try:
            if cfg.store_path == ":memory:":
                # No store file configured: nothing survives a restart.
                store = MemoryStore(cfg.store_limit_bytes)
            else:
                full = cfg.store_synchronous == "FULL"
                store = SqliteStore(
                    cfg.store_path,
                    cfg.store_limit_bytes,
                    synchronous="FULL" if full else "NORMAL",
                    deferred_sync=full,
                    disk_reserve_bytes=cfg.limits.disk_reserve_bytes,
                    ballast_bytes=_STORE_BALLAST_BYTES,
                )
                self._deferred = store if full else None
        except DtnError as exc:
            raise ConfigError(f"store.path: {exc}") from exc
        if isinstance(store, SqliteStore) and store.corrupt_at_open:
            # Damaged after their commit (acknowledged): never delivered;
            # each is reported (store_corrupt) when the agent reaches it.
            self._log(
                "error",
                "store_corrupt",
                count=len(store.corrupt_at_open),
                bundles=store.corrupt_at_open[:20],
            )
        if isinstance(store, SqliteStore) and store.dropped_at_open:
            # Only a power cut (or a damaged disk) leaves these; none was
            # acknowledged, so the previous hops still hold them.
            self._log(
                "warning",
                "store_dropped_unsynced",
                count=len(store.dropped_at_open),
                bundles=store.dropped_at_open[:20],
            )
        if cfg.security is not None and cfg.security.enabled:
            # Loads the key store; a bad one is a ConfigError naming security.keystore.
            self.security = NodeSecurity(cfg.security, node=cfg.node, log=self._log)
        all_ltp = bool(cfg.neighbours) and all(nb.cla == "ltp" for nb in cfg.neighbours)
        self.agent = Agent(
            node=cfg.node,
            store=store,
            plan=self.plan,
            plan_epoch=dtn_time_from_unix(self._epoch_unix_s),
            # LTP bounds its own sessions: with only ltp neighbours the agent
            # does not hold back more than LTP can pipeline.
            config=AgentConfig(
                max_bundle_bytes=cfg.mtu_bytes,
                # Up to 256 transmissions in flight per neighbour, but no
                # more than 4 MiB of them (the UDP socket buffers' size):
                # over UDP each hop ACK waits for the peer's fsync, and 64
                # small bundles per round trip held 1 KB goodput below the
                # CPU's pace (+30-60% at 1 KB; 64 KB and 1 MB keep the
                # 4 MiB in flight they had). spec/performance.md.
                window=1024 if all_ltp else DAEMON_WINDOW,
                window_bytes=None if all_ltp else DAEMON_WINDOW_BYTES,
                # Stream CLs and LTP carry a bundle whole (TCPCL up to the
                # peer's transfer MRU, LTP in one block); MTCP has no
                # negotiation, so its only bound is the frame limit, assumed
                # the same at both ends (RFC 9171 5.8: fragment only where
                # the link requires it). UDP keeps ``mtu_bytes``.
                mtu_by_neighbour=_stream_mtus(cfg),
                hold_fragments_ms={
                    "udp": min(
                        DAEMON_HOLD_FRAGMENTS_MS, int(cfg.ack_timeout_s * 1000) // 4
                    )
                },
                max_forward_lifetime_ms=cfg.limits.max_forward_lifetime_ms,
                max_tombstone_ms=cfg.limits.max_tombstone_ms,
                max_bundles=cfg.limits.max_bundles,
                # Bundles just stored stay decoded for their delivery or
                # forwarding (issue 18: a store read and a decode saved).
                keep_decoded=HOT_MAX_BUNDLES,
                keep_decoded_bytes=cfg.limits.decoded_cache_bytes,
            ),
            rng=random.Random(),
            security=self.security,
            dtn_routes=cfg.dtn_routes,
        )
        try:
            self.core = self._make_core(self.agent, store)
        except BaseException:
            store.close()  # a bad factory: nothing ran, release the file
            raise
        sock = self._udp_socket(
            socket.AF_INET6 if ":" in cfg.listen[0] else socket.AF_INET,
            socket.SOCK_DGRAM,
        )
        app_listener: trio.SocketListener | None = None
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
            try:
                sock.bind(cfg.listen)
            except OSError as exc:
                raise ConfigError(
                    f"listen: cannot bind {cfg.listen[0]}:{cfg.listen[1]}: {exc.strerror or exc}"
                ) from exc
            sock.setblocking(False)
            self._sock = sock
            self.udp_address = sock.getsockname()[:2]
            self._setup_peers()
            self._fd_budget = _fd_budget(cfg.limits.fd_reserve)
            if cfg.app_socket is not None:
                try:
                    app_listener = await self._open_app_listener(cfg.app_socket)
                except OSError as exc:
                    raise ConfigError(
                        f"app_socket: cannot listen on {cfg.app_socket}: {exc.strerror or exc}"
                    ) from exc
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                self._nursery = nursery
                self._apply(self.core.start(self.now_ms(), recover=True))
                nursery.start_soon(self._udp_reader)
                if self._deferred is not None:
                    nursery.start_soon(self._sync_task, self._deferred)
                nursery.start_soon(self._timer_task)
                nursery.start_soon(self._link_timer_task)
                if self.ltp is not None:
                    nursery.start_soon(self._ltp_task)
                nursery.start_soon(self._contact_task)
                if cfg.plan is not None:
                    nursery.start_soon(self._plan_watch_task, cfg.plan)
                if self.security is not None:
                    nursery.start_soon(self.security.watch)
                for peer in self._udp.values():
                    nursery.start_soon(self._udp_sender, peer)
                for mpeer in self._mtcp.values():
                    nursery.start_soon(self._mtcp_sender, mpeer)
                if self.tcpcl is not None:
                    for tpeer in self.tcpcl.peers.values():
                        nursery.start_soon(self.tcpcl.run_active, tpeer)
                    if cfg.tcpcl_listen is not None:
                        try:
                            tls_listeners = await trio.open_tcp_listeners(
                                cfg.tcpcl_listen[1], host=cfg.tcpcl_listen[0]
                            )
                        except OSError as exc:
                            raise ConfigError(
                                f"tcpcl_listen: cannot listen on {cfg.tcpcl_listen[0]}:{cfg.tcpcl_listen[1]}: {exc.strerror or exc}"
                            ) from exc
                        self.tcpcl.address = tls_listeners[0].socket.getsockname()[:2]
                        nursery.start_soon(self.tcpcl.serve, tls_listeners)
                if cfg.mtcp_listen is not None:
                    try:
                        listeners = await trio.open_tcp_listeners(
                            cfg.mtcp_listen[1], host=cfg.mtcp_listen[0]
                        )
                    except OSError as exc:
                        raise ConfigError(
                            f"mtcp_listen: cannot listen on {cfg.mtcp_listen[0]}:{cfg.mtcp_listen[1]}: {exc.strerror or exc}"
                        ) from exc
                    self.mtcp_address = listeners[0].socket.getsockname()[:2]
                    for lst in listeners:
                        nursery.start_soon(
                            self._serve,
                            lst,
                            self._mtcp_handler,
                            "mtcp",
                            cfg.limits.mtcp_max_connections,
                        )
                if app_listener is not None:
                    nursery.start_soon(
                        self._serve,
                        app_listener,
                        self._app_handler,
                        "app",
                        cfg.limits.app_max_connections,
                    )
                self._log(
                    "info",
                    "node_started",
                    udp=f"{self.udp_address[0]}:{self.udp_address[1]}",
                    stored=self.agent.stored,
                    plan=cfg.plan or "",
                )
                task_status.started()
        finally:
            sock.close()
            if app_listener is not None:
                self._remove_app_socket(cfg.app_socket or "")
            self.core.stop()
            store.close()
            self._log("info", "node_stopped", stored=self.agent.stored)

    def _make_core(self, agent: Agent, store: BundleStore) -> NodeCore:
        """The agent plus the echo service and the configured services."""
        cfg = self.config
        factories: list[tuple[str, ServiceFactory]] = [
            (spec, load_factory(spec)) for spec in cfg.service_factories
        ]
        if self._service_factory is not None:
            factories.append(("services=", self._service_factory))
        assert isinstance(store, MemoryStore | SqliteStore)
        with store.transaction():
            incarnation = next_incarnation(store)
        services: list[Service] = []
        for name, factory in factories:
            try:
                services += list(factory(cfg.node, incarnation))
            except Exception as exc:  # the user's factory: one typed error
                raise ConfigError(
                    f"services: {name} failed: {type(exc).__name__}: {exc}"
                ) from exc
        if all(s.service != ECHO_SERVICE for s in services):
            services.insert(0, EchoService(lifetime_ms=cfg.lifetime_ms))
        security = self.security
        try:
            return NodeCore(
                agent,
                node=cfg.node,
                services=services,
                incarnation=incarnation,
                rng=random.Random(),
                state=store,
                plan=self.plan,
                plan_epoch=agent.plan_epoch,
                credentials=(lambda: security.credentials)
                if security is not None
                else None,
            )
        except InvalidArgument as exc:
            raise ConfigError(f"services: {exc}") from exc

    def _check_app_source(self, source: str) -> None:
        """An app may send from ``ipn:N.0`` (the default) or its own
        endpoints, never from a service's."""
        assert self.core is not None
        if source != self.config.eid and self.core.is_reserved(source):
            raise EndpointReserved(
                f"source {source} belongs to a node service; apps cannot send from it"
            )

    # ------------------------------------------------------------ group commit

    def when_durable(
        self,
        fn: Callable[[], object],
        kind: Durable = OTHER,
        key: str | None = None,
        peer: int = 0,
        *,
        keys: frozenset[str] = frozenset(),
        replies: list[bytes] | None = None,
        refuse: Callable[[], object] | None = None,
    ) -> None:
        """Run ``fn`` once every store commit made so far is on disk: now if
        it is, else after the next sync (in order). ``kind`` and the rest
        say what ``fn`` stands for (:class:`~dcis.dtn.runtime.after_sync.
        Durable`): a sync that refuses bundles (their late writes failed)
        withholds or rewrites it by them (:meth:`_refuse_unwritten`)."""
        store = self._deferred
        if store is None or store.write_generation <= self._synced_gen:
            fn()
            return
        self._after_sync.append(
            AfterSync(
                store.write_generation, fn, kind, key, peer, keys, replies, refuse
            )
        )
        self._sync_wake.set()

    async def _sync_task(self, store: SqliteStore) -> None:
        # One fsync covers every commit before it began: under load each
        # sync takes all that arrived during the previous one (group
        # commit), and the event loop keeps receiving meanwhile.
        hold = self._ack_hold
        while True:
            due = hold.due_at()
            with trio.move_on_at(math.inf if due is None else due):
                await self._sync_wake.wait()
            self._sync_wake = trio.Event()
            while (
                self._after_sync
                or store.segments_waiting
                or hold.is_due(trio.current_time())
            ):
                mark: frozenset[tuple[int, int]] | None = None
                gen = store.write_generation
                commits = self.core.state_commits if self.core is not None else 0
                if store.late_bytes and self._mtcp:
                    # This sync covers the commits made up to now: the
                    # sends that come during the wait are answered after
                    # the next one, so their payloads stay held through
                    # this one (their bundles have the wait of the next
                    # sync to leave in, unwritten).
                    mark = store.late_mark()
                    await self._mtcp_settle()
                # ACKs held for their bundles' confirmation past the bound:
                # this sync writes their payloads; they go after it.
                released = hold.take_due(trio.current_time())
                if released:
                    # They may name bundles stored during the wait (every
                    # held one is due at once after a duplicate): this sync
                    # writes every payload held but those still on hold.
                    mark = None
                began = time.perf_counter()
                try:
                    # Writes the payloads held for a late write first (but
                    # those of bundles whose ACKs are still held: they may
                    # be confirmed before the next sync). A write the disk
                    # refuses drops its bundle (below); any other failure
                    # is a failed sync (logged, below).
                    sync = (
                        store.begin_sync(
                            keep_late=hold.keys() if hold else (),
                            keep_late_since=mark,
                        )
                        if hold or mark is not None
                        else store.begin_sync()
                    )
                except DtnError as exc:
                    self._log("error", "store_sync_failed", detail=str(exc))
                    raise
                unwritten, why = store.take_unwritten()
                if unwritten:
                    released = self._refuse_unwritten(unwritten, why, released)
                # Time spent in the fsyncs themselves, on the worker thread;
                # store_sync_us (below) adds the hand-offs to and from it.
                fsync_s = [0.0]

                def timed(
                    sync: Callable[[], None] = sync, out: list[float] = fsync_s
                ) -> None:
                    t = time.perf_counter()
                    try:
                        sync()
                    finally:
                        out[0] = time.perf_counter() - t

                try:
                    await sync_in_thread(timed)
                    # May checkpoint the WAL (after syncing the segments
                    # written meanwhile): a failure there is one too.
                    store.end_sync()
                except DtnError as exc:
                    # fsync failed: the kernel may have dropped the dirty
                    # pages, so nothing written since the last sync can be
                    # promised. Stop; the previous hops still hold it all.
                    self._log("error", "store_sync_failed", detail=str(exc))
                    raise
                failed, why = store.take_checkpoint_failures()
                if failed:
                    # The disk refused the WAL's copy into the database
                    # (full): the commits are durable in the WAL, nothing
                    # is at risk; tried again when next due.
                    self.counters["checkpoints_failed"] += failed
                    self._log("warning", "store_checkpoint_failed", detail=why)
                self._synced_gen = gen
                self._synced_commits = commits
                self.counters["store_syncs"] += 1
                for _key, ack in released:
                    ack()
                while self._after_sync and self._after_sync[0].gen <= gen:
                    self._after_sync.popleft().fn()
                # From the sync's start to its replies and ACKs released.
                self.counters["store_sync_us"] += round(
                    (time.perf_counter() - began) * 1e6
                )
                self.counters["store_fsync_us"] += round(fsync_s[0] * 1e6)
                if self._acks:
                    self._flush_acks()

    def _refuse_unwritten(
        self,
        keys: list[str],
        why: str,
        released: list[tuple[str, Callable[[], object]]],
    ) -> list[tuple[str, Callable[[], object]]]:
        """The sync just begun dropped ``keys``: their late writes failed
        (``why``: ENOSPC, EDQUOT, EIO the statvfs gate did not foresee),
        and their rows go with that sync. Nobody was told they are stored,
        so nobody is: their hop ACKs (waiting for the sync, or ``released``
        from the hold: returned without them) are never sent -- the
        previous hops send them again -- and the replies to the app sends
        among them become "store full" errors, as for a send the store
        refuses at once. The agent forgets them; the node goes on.
        spec/agent.md, "A late write that fails"."""
        gone = set(keys)
        self.counters["late_writes_failed"] += len(keys)
        self._log(
            "warning",
            "store_late_write_failed",
            bundles=len(keys),
            first=keys[0],
            detail=why,
        )
        assert self.core is not None
        self._ack_hold.drop(keys)
        # Through NodeCore: it forgets them too (a service's bundle waiting
        # for its failing commit, or to be handed over).
        actions, hops = self.core.forget_unstored(keys, why)
        refusal = f"store full: its late write failed at the sync ({why})"
        # The pieces' ACKs of a bundle reassembled from pieces held in
        # memory name no bundle: every such ACK from its previous hop that
        # waits for this sync is withheld. Some stand for bundles stored
        # (duplicates, say): their senders send them again, and get an ACK
        # then -- never one for a bundle not stored.
        ltp = self.ltp
        ltp_hop = ltp is not None and any(ltp.has(n) for n in hops)
        self._after_sync = withdraw(self._after_sync, gone, hops, ltp_hop, refusal)
        self._apply(actions)
        return [(k, ack) for k, ack in released if k not in gone]

    async def _mtcp_settle(self) -> None:
        """Before a sync while the store holds late payloads: wait until the
        MTCP senders reported every bundle queued now as sent, at most
        :data:`_MTCP_SETTLE_S`. MTCP lets a bundle go once the socket took
        it, so the bundles just forwarded leave the store before the sync
        would write their payloads (an app's sends, answered after it).
        A sender that reported nothing since a sync last gave up on it (a
        peer that stopped reading) is not waited for again until it does."""
        targets = [
            (p, p.taken + len(p.queue))
            for p in self._mtcp.values()
            if (p.queue or p.reported < p.taken) and p.stalled_at != p.reported
        ]
        if not targets:
            return
        with trio.move_on_after(_MTCP_SETTLE_S):
            while any(p.reported < t for p, t in targets):
                self._mtcp_done = trio.Event()
                await self._mtcp_done.wait()
            return
        for p, t in targets:
            if p.reported < t:
                p.stalled_at = p.reported

    def stop(self) -> None:
        """Ask :meth:`run` to return (bundles stay in the store)."""
        if self._cancel is not None:
            self._cancel.cancel()

    def _setup_peers(self) -> None:
        cfg = self.config
        for nb in cfg.neighbours:
            addrs = {nb.address}
            with contextlib.suppress(OSError):
                # Resolve names once so that source addresses match.
                addrs.add((socket.gethostbyname(nb.address[0]), nb.address[1]))
            self._addrs[nb.node] = addrs
            for a in addrs:
                self._by_addr[a] = nb.node
                known = self._by_ip.get(a[0], nb.node)
                self._by_ip[a[0]] = nb.node if known == nb.node else None
            if nb.cla == "udp":
                link = UdpLink(
                    local_node=cfg.node,
                    neighbor=nb.node,
                    ack_mode=nb.ack,
                    mtu_bytes=cfg.mtu_bytes + DATA_OVERHEAD_BYTES,
                    ack_timeout_s=cfg.ack_timeout_s,
                    max_tries=cfg.max_tries,
                    # os.urandom, read 4 KiB at a time (one token a bundle)
                    rng=PooledSystemRandom(),
                    mac_key=self._link_key(nb.node),
                    max_transfer_bytes=cfg.limits.udp_max_transfer_bytes,
                )
                self._udp[nb.node] = _UdpPeer(nb, link, _pacer(nb.rate_bytes_s))
                self._keep_partials_for(link)
            elif nb.cla == "tcpcl":
                self._tcpcl_cla().add_peer(nb.node, nb.address)
            elif nb.cla == "ltp":
                continue  # one LtpCl for all of them, below
            else:
                self._mtcp[nb.node] = _MtcpPeer(nb)
        if cfg.tcpcl_listen is not None:
            self._tcpcl_cla()
        ltp_nbs = [nb for nb in cfg.neighbours if nb.cla == "ltp"]
        if ltp_nbs:
            self.ltp = LtpCl(
                node=cfg.node,
                config=cfg.ltp or LtpConfig(),
                neighbours=ltp_nbs,
                rng=random.Random(self._rng.getrandbits(64)),
            )

    # ------------------------------------------------------------ TCPCLv4

    def _tcpcl_cla(self) -> TcpclCla:
        if self.tcpcl is None:
            try:
                self.tcpcl = TcpclCla(
                    node=self.config.node,
                    settings=self.config.tcpcl,
                    receive=self._tcpcl_receive,
                    done=self._tcpcl_done,
                    log=self._log,
                )
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"tcpcl: cannot load the TLS files: {exc}") from exc
        return self.tcpcl

    def _tcpcl_receive(
        self, neighbour: int | None, data: bytes, answer: Callable[[bool], None]
    ) -> None:
        agent = self.agent
        assert agent is not None
        try:
            actions = agent.on_receive_many(
                [Received("tcpcl", neighbour, data, None)], self.now_ms()
            )
            # Store full: refuse (the sender keeps it); else acknowledge once
            # durable.
            refused = any(isinstance(a, Event) and a.kind == "refused" for a in actions)
            self._apply(actions)
        except Exception as exc:
            # A store failure (a transaction SQLite rolled back): log it,
            # rebuild the agent from the store, refuse the transfer (the
            # sender keeps the bundle) -- never end the session or the node.
            self._handler_error("tcpcl", exc)
            answer(False)
            return
        if refused:
            answer(False)
        else:
            if self._ack_hold:
                # It may be a copy of a bundle whose UDP ACK is held (TCPCL
                # input carries no Ack naming it): as for a duplicate's Ack,
                # the next sync writes every held payload first.
                self._ack_hold.expire_all()
                self._sync_wake.set()
            # Accepted once durable -- unless the sync drops the bundle it
            # stands for (a duplicate of one whose late write fails there):
            # refused then (:meth:`_refuse_unwritten`).
            keys = frozenset(
                a.bundle_key
                for a in actions
                if type(a) is Event and a.kind in _TCPCL_ANSWER_KINDS
            )
            self.when_durable(
                functools.partial(answer, True),
                TCPCL_ANSWER,
                keys=keys,
                refuse=functools.partial(answer, False),
            )

    def _tcpcl_done(self, tx_id: int, ok: bool) -> None:
        agent = self.agent
        if agent is not None:
            self._apply(agent.on_transmit_done(tx_id, ok, self.now_ms()))

    def _link_key(self, node: int) -> bytes | None:
        """The UDP CL MAC key shared with ``node`` (None without security or
        without its certificate)."""
        if self.security is None:
            return None
        if node not in self._link_keys:
            if len(self._link_keys) >= _MAX_UNKNOWN_SENDERS:
                self._link_keys.pop(next(iter(self._link_keys)))
            self._link_keys[node] = self.security.link_key(node, self.now_ms())
        return self._link_keys[node]

    def _neighbour_of(self, addr: tuple[str, int]) -> int | None:
        nb = self._by_addr.get(addr)
        return nb if nb is not None else self._by_ip.get(addr[0])

    def _log(self, level: str, event: str, **fields: Any) -> None:
        getattr(self.log, level)(event, extra={"fields": fields})

    # ------------------------------------------------------------ actions

    def _apply(self, actions: list[Action]) -> None:
        """Carry out the agent's actions, and those they lead to, in order."""
        agent = self.agent
        core = self.core
        assert agent is not None
        assert core is not None
        work = deque(actions)
        # Asked once per call, not once per event (most events of a busy
        # node -- received, forwarded, delivered -- are logged at debug only).
        debug: bool | None = None
        while work:
            a = work.popleft()
            if type(a) is Event and a.kind in _DEBUG_EVENTS:
                # The usual event first (one type test, not the chain below).
                if debug is None:
                    debug = self.log.isEnabledFor(logging.DEBUG)
                if debug:
                    self._log("debug", a.kind, bundle=a.bundle_key, detail=a.detail)
            elif isinstance(a, Transmit):
                if (
                    self._deferred is not None
                    and core.state_commits != self._synced_commits
                    and core.sent_by_service(a.tx_id)
                ):
                    # A service's bundle, sent after state commits not yet
                    # durable (it may acknowledge them: a log's append
                    # reply): it leaves after the sync covering them.
                    self.counters["service_sends_held"] += 1
                    self.when_durable(functools.partial(self._transmit_late, a))
                else:
                    work.extend(self._transmit(a))
            elif isinstance(a, Ack):
                self._ack(a)
            elif isinstance(a, Deliver):
                work.extend(self._deliver(a))
            elif isinstance(a, Schedule):
                if self._deadline is None or a.at < self._deadline:
                    self._timer_wake.set()
                self._deadline = a.at
            elif isinstance(a, Event):
                if a.kind == "store_corrupt":
                    self._log("error", a.kind, bundle=a.bundle_key, detail=a.detail)
                elif a.kind in _LOGGED_EVENTS:
                    # A deletion names its rule (``cause``) for log readers
                    # such as the testbed to count by.
                    extra = {"cause": a.cause} if isinstance(a, Deletion) else {}
                    self._log(
                        "warning" if a.kind != "expired" else "info",
                        a.kind,
                        bundle=a.bundle_key,
                        detail=a.detail,
                        **extra,
                    )
                elif a.kind == "no_route":
                    # a bundle waits without a route: say why (issue 17)
                    self._log("info", a.kind, bundle=a.bundle_key, reason=a.detail)
                elif self.log.isEnabledFor(logging.DEBUG):
                    self._log("debug", a.kind, bundle=a.bundle_key, detail=a.detail)
        if self._acks:
            self._flush_acks()
        if self._deferred is not None and self._deferred.segments_waiting:
            # An idle node reclaims emptied segments too.
            self._sync_wake.set()

    def _ack(self, a: Ack) -> None:
        """Group commit: the ACK waits for the fsync (else: now) -- or, for
        a bundle just pushed to an application, for its confirmation
        (:mod:`dcis.dtn.runtime.ack_hold`)."""
        if self.ltp is not None and self.ltp.has(a.neighbor):
            # The block's report waits until all its bundles are on disk.
            ack: Callable[[], object] = functools.partial(self._ltp_ack, a.cl_token)
            kind = LTP_ACK
        else:
            ack = functools.partial(self._acks.add, a.neighbor, a.cl_token)
            kind = PIECE_ACK
        if a.bundle_key is None:
            # Perhaps a copy of a bundle whose ACK is held: their payloads
            # are written by the next sync, and this ACK goes after it.
            if self._ack_hold:
                self._ack_hold.expire_all()
                self._sync_wake.set()
        elif self._hold_ack(a.bundle_key, ack):
            return
        elif a.bundle_key in self._ack_hold:
            # A new copy stored under the key of a bundle whose ACK is still
            # held (that one left unconfirmed: expired, say). The syncs keep
            # payloads by key, so the next one would leave this copy's bytes
            # unwritten too, and this ACK go after it: every held one is
            # written by the next sync instead.
            self._ack_hold.expire_all()
            self._sync_wake.set()
        if a.bundle_key is not None:
            kind = HOP_ACK  # the bundle's own: never sent if it is refused
        self.when_durable(ack, kind, a.bundle_key, a.neighbor)

    def _hold_ack(self, key: str, ack: Callable[[], object]) -> bool:
        """Hold ``ack`` until ``key`` is confirmed, if ``key`` was just
        pushed to an application (then unconfirmed) and is kept in a
        segment file, within the hold's bounds."""
        store = self._deferred
        if store is None:
            return False
        for sub in self._subs.values():
            d = sub.unconfirmed.get(key)
            if d is not None:
                break
        else:
            return False
        size = len(d.payload)
        if size <= store.inline_max_bytes:
            return False  # in its index row: nothing to save
        first = not self._ack_hold
        if not self._ack_hold.hold(key, size, ack, trio.current_time()):
            return False
        self.counters["acks_held"] += 1
        if first:
            self._sync_wake.set()  # the sync task learns when it is due
        return True

    def _release_confirmed(self, keys: list[str]) -> None:
        """``keys`` were confirmed, with a commit that is over: the held
        ACKs of those the agent let go go now (joining the next ACK
        datagram, sent when the actions are applied)."""
        if keys and self._ack_hold and self.agent is not None:
            held = self.agent.holds
            self.counters["acks_at_delivery"] += self._ack_hold.confirmed(
                keys, lambda k: not held(k)
            )

    def _transmit_late(self, t: Transmit) -> None:
        """``t``, held by :meth:`_apply` until the state commits before it
        were durable, goes now -- unless its bundle left the store
        meanwhile (expired, say): then its outcome is a failure, nothing
        is sent. (A late write's refusal never drops a service's bundle:
        NodeCore stores them at once, not ``write_later``.)"""
        core, agent = self.core, self.agent
        assert core is not None
        assert agent is not None
        key = agent.transmission_key(t.tx_id)
        if key is None:
            return  # no longer in flight (the agent was rebuilt: recover)
        if not agent.holds(key):
            self._apply(core.on_transmit_done(t.tx_id, False, self.now_ms()))
            return
        self._apply(self._transmit(t))

    def _transmit(self, t: Transmit) -> list[Action]:
        agent = self.core
        assert agent is not None
        peer = self._udp.get(t.neighbor)
        if peer is not None:
            outs = peer.link.transmit(t.tx_id, t.parts, trio.current_time())
            self._link_wake.set()
            return self._link_outputs(peer, outs)
        mpeer = self._mtcp.get(t.neighbor)
        if mpeer is not None:
            # The bundle's parts as the agent made them: a large payload
            # goes to the socket gathered, never joined (spec/performance.md).
            mpeer.queue.append((t.tx_id, t.parts))
            mpeer.ready.set()
            return []
        if self.ltp is not None and self.ltp.has(t.neighbor):
            return self._ltp_result(
                self.ltp.transmit(t.neighbor, t.tx_id, t.data, self._ltp_now())
            )
        if self.tcpcl is not None and self.tcpcl.transmit(t.neighbor, t.tx_id, t.data):
            return []
        self._log("warning", "no_address", neighbour=t.neighbor)
        return agent.on_transmit_done(t.tx_id, False, self.now_ms())

    def _link_outputs(self, peer: _UdpPeer, outs: list[LinkOutput]) -> list[Action]:
        done: list[tuple[int, bool]] = []
        for o in outs:
            if isinstance(o, SendDatagram):
                self._udp_send(peer, o.data, o.token)
            elif isinstance(o, Reachability):
                self._log(
                    "info" if o.reachable else "warning",
                    "neighbour_reachable" if o.reachable else "neighbour_unreachable",
                    neighbour=peer.config.node,
                    failures=o.failures,
                )
            elif isinstance(o, PeerSwitched):
                self._log(
                    "warning",
                    "peer_switched",
                    neighbour=peer.config.node,
                    kind=o.kind.value,
                    reason=o.reason,
                )
            else:
                done.append((o.tx_id, o.ok))
                if not o.ok:
                    self._log(
                        "info",
                        "transmit_failed",
                        neighbour=peer.config.node,
                        reason=o.reason,
                    )
        if not done:
            return []
        assert self.core is not None
        return self.core.on_transmit_done_many(done, self.now_ms())

    def _deliver(self, d: Deliver) -> list[Action]:
        # Only app endpoints: the core hands service bundles to services.
        sub = self._subs.get(d.endpoint)
        if sub is not None and d.bundle_key in sub.unconfirmed:
            return []  # handed over already (a recover after a store error)
        if (
            sub is not None
            and sub.push is not self._inproc_push.get(d.endpoint)
            and len(sub.unconfirmed) >= self.config.limits.delivery_queue
        ):
            # The client has not confirmed what it holds: keep only the key;
            # the bundle stays in the store and goes out when there is room.
            sub.waiting[d.bundle_key] = None
            self.counters["delivery_deferred"] += 1
            return []
        if sub is not None and sub.push(d):
            sub.unconfirmed[d.bundle_key] = d
        else:
            self._held.setdefault(d.endpoint, {})[d.bundle_key] = d
        return []

    def confirm_delivered(self, endpoint: str, bundle_key: str) -> None:
        """The application has the bundle: the agent forgets it for good."""
        sub = self._subs.get(endpoint)
        if sub is not None:
            sub.unconfirmed.pop(bundle_key, None)
        assert self.core is not None
        actions = self.core.on_delivered(bundle_key, self.now_ms())
        self._release_confirmed([bundle_key])
        self._apply(actions)

    def _refill(self, sub: _Subscriber) -> list[Action]:
        """Room in ``sub``'s queue again: hand over deferred bundles."""
        room = self.config.limits.delivery_queue - len(sub.unconfirmed)
        if room <= 0 or not sub.waiting or self.core is None:
            return []
        keys = list(itertools.islice(sub.waiting, room))
        for k in keys:
            del sub.waiting[k]
        return self.core.redeliver(keys, self.now_ms())

    def _confirm_taken(self, endpoint: str, key: str) -> list[Action]:
        held = self._held.get(endpoint)
        if held is not None:
            held.pop(key, None)
            if not held:
                del self._held[endpoint]
        current = self._subs.get(endpoint)
        if current is not None:
            current.unconfirmed.pop(key, None)
        assert self.core is not None
        actions = self.core.on_delivered(key, self.now_ms())
        self._confirmed_keys.append(key)
        return actions

    def _subscribe(
        self, endpoint: str, push: Callable[[Deliver], bool], *, takeover: bool = False
    ) -> _Subscriber:
        agent = self.core
        if agent is None:
            raise InvalidArgument("the node is not running")
        name = str(parse_eid(endpoint))
        if agent.is_reserved(name):
            # Before anything changes: the node's own endpoints stay its own
            # (taking the echo endpoint would silence `dcis ping`).
            what = (
                "is this node's echo service (dcis ping)"
                if name == f"ipn:{self.config.node}.{ECHO_SERVICE}"
                else "belongs to the node (ipn:N.0, reserved service numbers, node services)"
            )
            raise EndpointReserved(
                f"endpoint {name} {what}: apps cannot register it; use another service number"
            )
        old = self._subs.get(name)
        if old is not None:
            if not takeover:
                raise InvalidArgument(f"endpoint {name} is already registered")
            # The newest app API registration wins: a client that reconnects
            # must not wait for the node to notice its old connection closed.
            del self._subs[name]
            self._held.setdefault(name, {}).update(old.unconfirmed)
            # The old application may have read these already (its node-side
            # connection can lag behind): its confirmations still count.
            old.taken.update(old.unconfirmed)
            old.unconfirmed.clear()
        actions = agent.register(name, now=self.now_ms())
        sub = _Subscriber(name, push)
        if old is not None:
            sub.waiting, old.waiting = old.waiting, OrderedDict()
        self._subs[name] = sub
        held = self._held.pop(name, {})
        self._apply([*held.values(), *actions])
        self._apply(self._refill(sub))
        return sub

    def _unsubscribe(self, sub: _Subscriber) -> None:
        if self._subs.get(sub.endpoint) is not sub:
            return
        del self._subs[sub.endpoint]
        if self.core is not None:
            self.core.unregister(sub.endpoint)
            if sub.waiting:
                # Not registered now: the agent holds them for the next one.
                self._apply(self.core.redeliver(list(sub.waiting), self.now_ms()))
                sub.waiting.clear()
        if sub.unconfirmed:
            self._held.setdefault(sub.endpoint, {}).update(sub.unconfirmed)

    # ------------------------------------------------------------ embedding API

    async def send(
        self,
        destination: str,
        payload: bytes,
        *,
        source: str | None = None,
        lifetime_ms: int | None = None,
    ) -> str:
        """Originate a bundle; returns its key once it is durably stored.

        ``source`` defaults to ``ipn:N.0``; in-process code is trusted to
        use any endpoint of this node (app API clients are not: they cannot
        send from a service's endpoint). Raises :class:`InvalidArgument`
        for bad EIDs/lifetimes and ``StoreFull`` when the store refuses it.
        """
        agent = self.core
        if agent is None:
            raise InvalidArgument("the node is not running")
        key, actions = agent.send(
            source=source or self.config.eid,
            destination=destination,
            payload=bytes(payload),
            lifetime_ms=lifetime_ms
            if lifetime_ms is not None
            else self.config.lifetime_ms,
            now=self.now_ms(),
        )
        self._apply(actions)
        stored = trio.Event()
        self.when_durable(stored.set)  # group commit: wait for the fsync
        await stored.wait()
        return key

    def set_resources(self, **fields: Any) -> dict[str, Any]:
        """Advertise this node's resources through its membership service:
        any of ``store_free_bytes``, ``store_total_bytes``, ``cpu_load``,
        ``battery_pct``, ``sunlit``, ``temperature_c`` (the others keep
        their values; ``None`` means unknown where the field allows it).
        Returns every field as advertised from now on (the signed update
        goes out at most once per ``resources_min_interval_ms``; a later
        change waits for its turn, it is not lost).

        Raises :class:`InvalidArgument` for an unknown field, a value out
        of range (:func:`dcis.dtn.node.resources.check_resource_fields`),
        more store free than total, a node that is not running, or a node
        without a service that advertises resources (membership)."""
        core = self.core
        if core is None:
            raise InvalidArgument("the node is not running")
        checked = check_resource_fields(fields)
        for num, svc in core.services.items():
            if isinstance(svc, AdvertisesResources):
                merged = svc.advertised_resources()
                merged.update(checked)
                free, total = merged["store_free_bytes"], merged["store_total_bytes"]
                if free > total:
                    raise InvalidArgument(
                        f"store_free_bytes ({free}) exceeds store_total_bytes ({total})"
                    )
                self._apply(
                    core.call_service(
                        num, "advertise_resources", checked, now=self.now_ms()
                    )
                )
                return svc.advertised_resources()
        raise InvalidArgument(
            "no service on this node advertises resources (enable membership: "
            '[services] factories = ["dcis.consensus.membership.node:factory"])'
        )

    def _service_request(
        self, service: Any, requests: Any
    ) -> tuple[list[bytes], list[Action]]:
        """The app API's ``service_request``: hand ``requests`` to the local
        service numbered ``service`` in ONE ``NodeCore.call_service`` (one
        transaction; the caller answers after its fsync, as for ``send``);
        its replies, one per request, and the actions to apply. Raises
        :class:`InvalidArgument` for a bad number, a request that is not a
        byte string, more than :data:`MAX_LOCAL_REQUESTS`, a service that
        does not answer local requests, or a service that failed."""
        core = self.core
        if core is None:
            raise InvalidArgument("the node is not running")
        if type(service) is not int or not 0 <= service < 2**64:
            raise InvalidArgument(f"service must be a service number, not {service!r}")
        if type(requests) is not list or not all(type(r) is bytes for r in requests):
            raise InvalidArgument("requests must be a list of byte strings")
        if len(requests) > MAX_LOCAL_REQUESTS:
            raise InvalidArgument(
                f"{len(requests)} requests in one service_request "
                f"(at most {MAX_LOCAL_REQUESTS})"
            )
        svc: object = core.services.get(service)
        if not isinstance(svc, AnswersLocalRequests):
            raise InvalidArgument(
                f"no service {service} on this node answers local requests"
            )
        replies: list[bytes] = []
        actions = core.call_service(
            service, "on_local_requests", list(requests), replies, now=self.now_ms()
        )
        if len(replies) != len(requests):
            # The service raised (reported as SERVICE_FAILED, its writes
            # discarded): nothing was accepted.
            self._apply(actions)
            raise InvalidArgument(f"service {service} failed the request")
        if core.commit_failing(service):
            # It answered, but its state commit failed: the writes are
            # staged in memory only (retried later), so its replies
            # promise nothing durable. The app gets an error and may retry.
            self._apply(actions)
            raise StateNotDurable(
                f"service {service}'s state commit failed: the request may "
                "not be durable (send it again)"
            )
        return replies, actions

    @contextlib.asynccontextmanager
    async def endpoint(self, endpoint: str) -> AsyncIterator[_ConfirmingChannel]:
        """Register ``endpoint`` and yield a channel of its bundles.

        A bundle counts as delivered (and is removed from the store) when the
        channel hands it to the application. Leaving the block unregisters
        the endpoint; later bundles wait in the store.
        """
        send, recv = trio.open_memory_channel[ReceivedBundle](math.inf)
        node = self

        def push(d: Deliver) -> bool:
            send.send_nowait(
                ReceivedBundle(
                    d.endpoint,
                    d.source,
                    d.payload,
                    d.creation_ms,
                    d.sequence,
                    d.bundle_key,
                )
            )
            return True

        self._inproc_push[str(parse_eid(endpoint))] = push
        sub = self._subscribe(endpoint, push)
        try:
            yield _ConfirmingChannel(
                recv, lambda b: node.confirm_delivered(sub.endpoint, b.bundle_key)
            )
        finally:
            self._unsubscribe(sub)
            send.close()

    def stored_bundles(self, limit: int = 1000) -> dict[str, Any]:
        """What the store holds, as ``dcis bundles`` lists it: ``total`` and
        up to ``limit`` (at most 10,000) records, oldest first, each with
        ``key``, ``destination``, ``state``, ``size``, ``received_ms``,
        ``expiry_ms`` (DTN ms) and ``from`` (the previous node, or None)."""
        agent = self.agent
        if agent is None:
            raise InvalidArgument("the node is not running")
        limit = max(0, min(limit, 10_000))
        total = 0

        def counted() -> Iterator[StoredBundle]:
            nonlocal total
            for r in agent.store.records():
                total += 1
                yield r

        records = heapq.nsmallest(
            limit, counted(), key=lambda r: (r.received_ms, r.key)
        )
        return {
            "total": total,
            "bundles": [
                {
                    "key": r.key,
                    "destination": r.destination,
                    "state": str(r.state),
                    "size": r.size_bytes,
                    "received_ms": r.received_ms,
                    "expiry_ms": r.expiry_ms,
                    "from": r.prev_node,
                }
                for r in records[:limit]
            ],
        }

    def status(self) -> dict[str, Any]:
        """Counters and state, as ``dcis status`` shows them."""
        agent = self.agent
        nbs: dict[str, Any] = {}
        for n, p in self._udp.items():
            nbs[str(n)] = {
                "cla": "udp",
                "address": f"{p.config.address[0]}:{p.config.address[1]}",
                "in_contact": p.contact is not None,
                "peer": p.link.peer.value,
                "ack": p.link.ack_mode.value,
                "reachable": p.link.reachable,
                "mac": p.link.mac_key is not None,
                "in_flight": p.link.in_flight,
                "queued_datagrams": len(p.queue),
                **dataclasses.asdict(p.link.counters),
            }
        for n, m in self._mtcp.items():
            nbs[str(n)] = {
                "cla": "mtcp",
                "address": f"{m.config.address[0]}:{m.config.address[1]}",
                "in_contact": m.contact is not None,
            }
        for nb in self.config.neighbours:
            if nb.cla == "ltp" and self.ltp is not None:
                nbs[str(nb.node)] = {
                    "cla": "ltp",
                    "address": f"{nb.address[0]}:{nb.address[1]}",
                    **self.ltp.status(nb.node),
                }
        for n, t in (self.tcpcl.peers if self.tcpcl else {}).items():
            sess = t.session
            nbs[str(n)] = {
                "cla": "tcpcl",
                "address": f"{t.address[0]}:{t.address[1]}",
                "session": None if sess is None else sess.state.name.lower(),
                "tls": bool(sess is not None and sess.tls),
                "in_flight": 0 if sess is None else sess.in_flight,
                "queued": len(t.queue),
            }
        return {
            "node": self.config.node,
            "eid": self.config.eid,
            "uptime_s": round(self._unix_s() - self._started_at, 3),
            "udp": f"{self.udp_address[0]}:{self.udp_address[1]}"
            if self.udp_address
            else None,
            "stored": agent.stored if agent else 0,
            "store_used_bytes": agent.store.used_bytes if agent else 0,
            "store_limit_bytes": self.config.store_limit_bytes,
            "endpoints": sorted(self._subs),
            "services": sorted(self.core.services) if self.core else [],
            # Services the app API's service_request reaches (no bundles).
            "local_request_services": sorted(
                n
                for n, svc in (self.core.services if self.core else {}).items()
                if isinstance(svc, AnswersLocalRequests)
            ),
            "events": {str(k): v for k, v in self.core.event_counts.items()}
            if self.core
            else {},
            "limits": dataclasses.asdict(self.config.limits),
            "delivered_keys": self._delivered_keys(),
            "counters": {
                **(agent.counters if agent else {}),
                **self.counters,
                **(self.security.counters() if self.security else {}),
                **(self.tcpcl.counters if self.tcpcl else {}),
                **{
                    f"udp_parts_{k}": v
                    for k, v in dataclasses.asdict(self._parts.counters).items()
                },
                **{
                    f"udp_parts_unknown_{k}": v
                    for k, v in dataclasses.asdict(self._parts_unknown.counters).items()
                },
                "udp_partial_bytes": self._parts.partial_bytes
                + self._parts_unknown.partial_bytes,
            },
            "security": self.security.status() if self.security else {"enabled": False},
            "neighbours": nbs,
        }

    def _delivered_keys(self) -> int:
        """Delivered-key tombstones held (0 when the store is closed)."""
        if self.agent is None:
            return 0
        try:
            return int(getattr(self.agent.store, "delivered_count", 0))
        except StoreError:
            return 0

    # ------------------------------------------------------------ UDP CL

    def _udp_send(
        self, peer: _UdpPeer, data: bytes | Buffers, token: int | None
    ) -> None:
        if (
            not peer.queue
            and peer.pacer.delay_s(_size(data), trio.current_time()) == 0.0
            and self._try_send(data, peer.config.address)
        ):
            return
        if token is not None:
            peer.link.hold(token)  # its ACK timer starts when it leaves
        peer.queue.append((data, token))
        peer.wake.set()

    def _try_send(self, data: bytes | Buffers, addr: tuple[str, int]) -> bool:
        assert self._sock is not None
        try:
            if isinstance(data, bytes):
                self._sock.sendto(data, addr)
            else:
                # A datagram in buffers (a large payload not joined): one
                # datagram all the same.
                self._sock.sendmsg(data, (), 0, addr)
        except BlockingIOError:
            return False
        except OSError as exc:
            # ECONNREFUSED and friends on loopback: the datagram is lost, as
            # on any radio link; the ACK timeout takes care of it.
            self.counters["udp_send_errors"] += 1
            if exc.errno not in (
                errno.ECONNREFUSED,
                errno.EHOSTUNREACH,
                errno.ENETUNREACH,
                errno.EMSGSIZE,
            ):
                self._log("warning", "udp_send_error", detail=str(exc))
            return True
        self.counters["datagrams_out"] += 1
        return True

    async def _udp_sender(self, peer: _UdpPeer) -> None:
        assert self._sock is not None
        while True:
            await peer.wake.wait()
            peer.wake = trio.Event()
            while peer.queue:
                item = peer.queue[0]
                data, token = item
                delay = peer.pacer.delay_s(_size(data), trio.current_time())
                if delay > 0:
                    await trio.sleep(delay)
                    continue
                while not self._try_send(data, peer.config.address):
                    await _wait_writable(self._sock)
                if peer.queue and peer.queue[0] is item:
                    peer.queue.popleft()
                if token is not None:
                    peer.link.on_sent(token, trio.current_time())
                    self._link_wake.set()

    def _flush_acks(self) -> None:
        for nb, datagram in self._acks.flush(self._link_key):
            peer = self._udp.get(nb)
            addr = peer.config.address if peer is not None else self._ack_addr.get(nb)
            if addr is not None:
                self.counters["acks_out"] += 1
                self._try_send(datagram, addr)

    async def _udp_reader(self) -> None:
        sock = self._sock
        agent = self.core
        assert sock is not None
        assert agent is not None
        while True:
            await _wait_readable(sock)
            # One clock read for the batch: it is handled without yielding.
            now_s = trio.current_time()
            had_partials = bool(
                self._parts.partial_count or self._parts_unknown.partial_count
            )
            batch: list[Received] = []
            done: list[Action] = []
            ltp_sends: list[tuple[tuple[str, int], bytes]] = []
            batch_bytes = 0
            for _ in range(_MAX_BATCH):
                if batch_bytes >= _MAX_BATCH_BYTES:
                    break
                try:
                    data, addr = sock.recvfrom(_RECV_BUFFER)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    # e.g. ECONNREFUSED reported for an earlier send: ignore.
                    continue
                batch_bytes += len(data)
                self.counters["datagrams_in"] += 1
                if data and data[0] in LTP_FIRST_BYTES and self.ltp is not None:
                    try:
                        done += self._ltp_datagram(data, batch, ltp_sends)
                    except Exception as exc:  # one datagram never stops the node
                        self._handler_error("ltp", exc)
                    continue
                try:
                    done += self._on_datagram(data, addr[:2], now_s, batch)
                except Exception as exc:  # one datagram never stops the node
                    self._handler_error("udp", exc)
            if self._parts.partial_count or self._parts_unknown.partial_count:
                self._parts.expire(now_s)
                self._parts_unknown.expire(now_s)
                if not had_partials:
                    self._link_wake.set()  # the timer task learns the deadline
            if batch:
                done += self._receive_batch(batch)
            if ltp_sends:
                # What answers this batch leaves after its commit (the report
                # that acknowledges a whole block is held by the engine until
                # every bundle of it is stored: _ltp_ack).
                self.when_durable(functools.partial(self._ltp_send, ltp_sends))
            try:
                self._apply(done)
            except Exception as exc:
                self._handler_error("udp", exc)

    def _on_datagram(
        self,
        data: bytes,
        addr: tuple[str, int],
        now_s: float,
        batch: list[Received],
    ) -> list[Action]:
        """Classify one datagram: bundles join ``batch``; ACKs complete
        transmissions (returns the agent's actions)."""
        try:
            dg = decode_datagram_untrusted(data)
        except DecodeError:
            self.counters["junk"] += 1
            return []
        if isinstance(dg, BareBundle):
            nb = self._neighbour_of(addr)
            peer = self._udp.get(nb) if nb is not None else None
            batch.append(Received("udp", nb, dg.bundle, None))
            if peer is not None:
                return self._link_outputs(peer, peer.link.on_heard_bare(now_s))
            return []
        if isinstance(dg, PartSegment):
            return self._on_part(dg, addr, now_s, batch)
        if isinstance(dg, NeedSegment):
            return self._on_need(dg, addr, now_s)
        if isinstance(dg, DataSegment):
            if not self._authentic(dg):
                return []  # not from the node it names: never stored, never ACKed
            out = self._heard_segment(dg.sender, addr)
            batch.append(Received("udp", dg.sender, dg.bundle, dg.token))
            return out
        self.counters["acks_in"] += 1
        peer = self._udp.get(dg.sender)
        if peer is None:
            return []
        # An ACK deletes bundles here: it must come from the neighbour's
        # configured address and, with a link key, carry its MAC.
        key = peer.link.mac_key
        if addr not in self._addrs.get(dg.sender, set()):
            self.counters["acks_refused"] += 1
            return []
        if key is not None and not mac_ok(
            ack_mac(key, sender=dg.sender, receiver=self.config.node, tokens=dg.tokens),
            dg.mac,
        ):
            self.counters["mac_failures"] += 1
            peer.link.counters.mac_failures += 1
            return []
        return self._link_outputs(peer, peer.link.on_ack(dg.tokens, now_s))

    def _authentic(self, dg: DataSegment | PartSegment) -> bool:
        """A DATA or PART segment's MAC is right, or its sender shares no
        link key with us (then there is none to check); a wrong one is
        counted (``mac_failures``)."""
        key = self._link_key(dg.sender)
        if key is None:
            return True
        node = self.config.node
        expected = (
            data_mac(
                key, sender=dg.sender, receiver=node, token=dg.token, bundle=dg.bundle
            )
            if isinstance(dg, DataSegment)
            else part_mac(
                key,
                sender=dg.sender,
                receiver=node,
                token=dg.token,
                offset=dg.offset,
                total=dg.total,
                chunk=dg.chunk,
            )
        )
        if mac_ok(expected, dg.mac):
            return True
        self.counters["mac_failures"] += 1
        return False

    def _heard_segment(self, sender: int, addr: tuple[str, int]) -> list[Action]:
        """An authentic DATA or PART segment from ``sender``: a configured
        neighbour speaks our ACKs; an unconfigured one is answered where it
        came from (bounded, so forged sender numbers cannot grow it)."""
        peer = self._udp.get(sender)
        if peer is not None:
            return self._link_outputs(peer, peer.link.on_heard_dcis())
        self._ack_addr.pop(sender, None)
        self._ack_addr[sender] = addr
        if len(self._ack_addr) > _MAX_UNKNOWN_SENDERS:
            del self._ack_addr[next(iter(self._ack_addr))]
        return []

    def _on_part(
        self,
        dg: PartSegment,
        addr: tuple[str, int],
        now_s: float,
        batch: list[Received],
    ) -> list[Action]:
        """One PART segment: into its transfer; a whole bundle joins
        ``batch`` (acknowledged with the transfer's token once stored, as a
        DATA segment's); a last part that leaves gaps is answered with a
        NEED (spec/udpcl.md, "Bundles larger than a datagram")."""
        if not self._authentic(dg):
            return []
        out = self._heard_segment(dg.sender, addr)
        peer = self._udp.get(dg.sender)
        parts = self._parts if peer is not None else self._parts_unknown
        got = parts.on_part(dg, now_s)
        if got.dropped is not None:
            self._log(
                "debug",
                "udp_part_dropped",
                neighbour=dg.sender,
                total=dg.total,
                reason=got.dropped,
            )
        if got.whole is not None:
            batch.append(Received("udp", dg.sender, memoryview(got.whole), dg.token))
        elif got.need and peer is not None and self._need_due(dg, got.need, now_s):
            # Only to a configured neighbour, at its configured address: a
            # NEED is larger than the part that prompts it, so one to the
            # source of an unknown sender's datagram (anyone can forge it)
            # would reflect traffic onto a third party. An unknown sender
            # gets no selective repeat: its timeouts resend, its agent
            # sends again.
            to = peer.config.address
            key = peer.link.mac_key
            mac = (
                None
                if key is None
                else need_mac(
                    key,
                    sender=self.config.node,
                    receiver=dg.sender,
                    token=dg.token,
                    ranges=got.need,
                )
            )
            self.counters["needs_out"] += 1
            self._try_send(
                encode_need_segment(
                    sender=self.config.node, token=dg.token, ranges=got.need, mac=mac
                ),
                to,
            )
        return out

    def _keep_partials_for(self, link: UdpLink) -> None:
        """Keep the neighbours' partial transfers as long as ``link``'s
        neighbour may still probe for one (its retransmissions allow for the
        light time and back off while we seem unreachable): called when the
        link is made and when its light time changes. The timeout only
        grows, so the partials' order of expiry stays theirs."""
        keep_s = link.give_up_after_s()
        if keep_s > self._parts.idle_timeout_s:
            self._parts.idle_timeout_s = keep_s

    def _need_due(
        self, dg: PartSegment, need: tuple[tuple[int, int], ...], now_s: float
    ) -> bool:
        """A NEED for this transfer goes if it names other ranges than the
        last one (the transfer progressed: the next round goes at once), or
        a quarter of ``udp.ack_timeout_s`` after it (the sender probes no
        faster than its ACK timeout): copies of a last part cannot make us
        send a NEED each. Bounded: the oldest entries go."""
        key = (dg.sender, dg.token)
        last = self._need_at.pop(key, None)
        if (
            last is not None
            and last[1] == need
            and now_s - last[0] < self.config.ack_timeout_s / 4
        ):
            self._need_at[key] = last
            self.counters["needs_limited"] += 1
            return False
        self._need_at[key] = (now_s, need)
        if len(self._need_at) > _MAX_NEED_AT:
            del self._need_at[next(iter(self._need_at))]
        return True

    def _on_need(
        self, dg: NeedSegment, addr: tuple[str, int], now_s: float
    ) -> list[Action]:
        """A NEED makes us send parts again: from the neighbour's configured
        address and, with a link key, with its MAC (as an ACK)."""
        self.counters["needs_in"] += 1
        peer = self._udp.get(dg.sender)
        if peer is None or addr not in self._addrs.get(dg.sender, set()):
            self.counters["needs_refused"] += 1
            return []
        key = peer.link.mac_key
        if key is not None and not mac_ok(
            need_mac(
                key,
                sender=dg.sender,
                receiver=self.config.node,
                token=dg.token,
                ranges=dg.ranges,
            ),
            dg.mac,
        ):
            self.counters["mac_failures"] += 1
            peer.link.counters.mac_failures += 1
            return []
        return self._link_outputs(peer, peer.link.on_need(dg.token, dg.ranges, now_s))

    def _receive_batch(self, batch: list[Received]) -> list[Action]:
        """Hand received bundles to the agent; a failure of the batch is
        retried bundle by bundle so that one bad bundle costs only itself
        (none of them was acknowledged, so nothing is lost)."""
        agent = self.core
        assert agent is not None
        try:
            return agent.on_receive_many(batch, self.now_ms())
        except Exception as exc:
            self._handler_error("receive", exc)
        out: list[Action] = []
        for item in batch:
            try:
                out += agent.on_receive_many([item], self.now_ms())
            except Exception as exc:
                self._handler_error("receive", exc)
        return out

    def _handler_error(
        self,
        where: str,
        exc: BaseException,
        *,
        recover: bool = True,
        log: bool = True,
    ) -> None:
        """An unexpected exception while serving one peer or client: log it
        (one JSON line, traceback as a field) and carry on. After a store
        failure the agent's memory may disagree with the store: rebuild it
        from the store (``recover``) -- unless the caller knows they agree
        (``recover=False``). With ``log=False`` (a repeat of an error
        already logged) it is only counted, in ``handler_errors_unlogged``."""
        import traceback

        if log:
            self.counters["handler_errors"] += 1
            self._log(
                "error",
                "handler_error",
                where=where,
                error=type(exc).__name__,
                detail=str(exc)[:500],
                traceback="".join(traceback.format_exception(exc))[-2000:],
            )
        else:
            self.counters["handler_errors_unlogged"] += 1
        store_error = isinstance(exc, StoreError) or (
            # An app connection's handler raises through its nursery.
            isinstance(exc, BaseExceptionGroup) and exc.subgroup(StoreError) is not None
        )
        if recover and store_error and self.core is not None:
            # (Its actions also schedule the retry of a service commit the
            # failed transaction took back: spec/node.md.)
            with contextlib.suppress(Exception):
                self._apply(self.core.recover(self.now_ms()))

    async def _link_timer_task(self) -> None:
        while True:
            deadlines = [
                d
                for p in self._udp.values()
                if (d := p.link.next_deadline()) is not None
            ]
            # Partly received PART transfers gone idle are dropped on time
            # even if no datagram comes (their memory is bounded anyway).
            for pool in (self._parts, self._parts_unknown):
                if (due := pool.next_deadline()) is not None:
                    deadlines.append(due)
            with trio.move_on_at(min(deadlines) if deadlines else math.inf):
                await self._link_wake.wait()
            self._link_wake = trio.Event()
            now = trio.current_time()
            self._parts.expire(now)
            self._parts_unknown.expire(now)
            actions: list[Action] = []
            for p in self._udp.values():
                d = p.link.next_deadline()
                if d is not None and d <= now:
                    actions += self._link_outputs(p, p.link.on_timer(now))
            self._apply(actions)

    # ------------------------------------------------------------ LTP CL

    def _ltp_now(self) -> int:
        # The LTP engine's clock: trio's (monotonic; MockClock in tests), in ms.
        return int(trio.current_time() * 1000)

    def _ltp_result(self, res: LtpResult) -> list[Action]:
        """Send what the LTP CL asks, pass received bundles to the agent and
        report finished transmissions; returns the agent's actions."""
        assert self.agent is not None
        for problem in res.problems:
            self._log("info", "ltp_problem", detail=problem)
        actions: list[Action] = []
        if res.received:
            actions += self.agent.on_receive_many(
                [Received("ltp", n, b, t) for n, b, t in res.received], self.now_ms()
            )
        if res.sends:
            self.when_durable(functools.partial(self._ltp_send, res.sends))
        if res.done:
            actions += self.agent.on_transmit_done_many(res.done, self.now_ms())
        self._ltp_wake.set()
        return actions

    def _ltp_datagram(
        self,
        data: bytes,
        batch: list[Received],
        sends: list[tuple[tuple[str, int], bytes]],
    ) -> list[Action]:
        """One LTP segment from the socket: its bundles join ``batch``, its
        segments to send join ``sends``; returns the agent's actions."""
        assert self.ltp is not None
        res = self.ltp.on_datagram(data, self._ltp_now())
        sends += res.sends
        batch += [Received("ltp", n, b, t) for n, b, t in res.received]
        res.sends, res.received = [], []
        return self._ltp_result(res)

    def _ltp_ack(self, token: int) -> None:
        # A bundle of a received block is stored: once all are, the engine
        # lets the report that acknowledges the block go.
        if self.ltp is not None:
            self._apply(self._ltp_result(self.ltp.on_stored(token, self._ltp_now())))

    def _ltp_send(self, sends: list[tuple[tuple[str, int], bytes]]) -> None:
        for addr, data in sends:
            # A full socket buffer drops the segment: LTP retransmits it.
            if not self._try_send(data, addr):
                self.counters["udp_send_errors"] += 1

    async def _ltp_task(self) -> None:
        ltp = self.ltp
        assert ltp is not None
        while True:
            d = ltp.next_deadline()
            at = math.inf if d is None else d / 1000.0
            with trio.move_on_at(at):
                await self._ltp_wake.wait()
            self._ltp_wake = trio.Event()
            if d is not None and self._ltp_now() >= d:
                self._apply(self._ltp_result(ltp.on_tick(self._ltp_now())))
                # Let the socket drain before the next burst of segments.
                await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------ timers and contacts

    async def _timer_task(self) -> None:
        """Tick the node at its deadlines. A tick that raises (the store
        failing under the agent's timers, say) is logged as a
        ``handler_error`` and tried again after a wait that doubles while
        it keeps failing (:data:`_TICK_RETRY_MIN_S` to
        :data:`_TICK_RETRY_MAX_S`): the node forwards on meanwhile."""
        agent = self.core
        assert agent is not None
        failures = 0
        while True:
            at = agent.next_deadline()
            self._deadline = at
            wait_s = math.inf if at is None else max(0.0, (at - self.now_ms()) / 1000.0)
            if failures:
                wait_s = max(
                    wait_s,
                    min(_TICK_RETRY_MIN_S * 2 ** (failures - 1), _TICK_RETRY_MAX_S),
                )
            with trio.move_on_after(wait_s):
                await self._timer_wake.wait()
            self._timer_wake = trio.Event()
            try:
                self._apply(agent.on_tick(self.now_ms()))
            except Exception as exc:  # a failing tick never stops the node
                failures = min(failures + 1, 32)
                self._handler_error("timer", exc)
            else:
                failures = 0

    def _contact_events(self) -> list[tuple[float, int, Contact]]:
        """(plan time, 0=end/1=start, contact) for every contact from this node."""
        me = self.config.node
        events: list[tuple[float, int, Contact]] = []
        configured = {nb.node for nb in self.config.neighbours}
        if self.plan is not None:
            for c in self.plan.contacts:
                if c.frm == me and c.to != me and c.to in configured:
                    events.append((c.start_s, 1, c))
                    events.append((c.end_s, 0, c))
        for nb in self.config.neighbours:
            if nb.always_on or (nb.always_on is None and self.plan is None):
                events.append(
                    (
                        -math.inf,
                        1,
                        Contact(
                            frm=me,
                            to=nb.node,
                            start_s=0.0,
                            end_s=math.inf,
                            rate_bytes_s=nb.rate_bytes_s,
                        ),
                    )
                )
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    async def _contact_task(self) -> None:
        agent = self.agent
        assert agent is not None
        with trio.CancelScope() as scope:
            # reload_plan cancels this scope and starts a new task.
            self._contacts_scope = scope
            for at_s, kind, c in self._contact_events():
                if kind == 1 and (
                    c.end_s <= self._plan_s() or c in self._open_contacts
                ):
                    continue  # already over, or open since before a reload
                if kind == 0 and math.isinf(at_s):
                    continue
                delay = at_s - self._plan_s()
                if delay > 0:
                    await trio.sleep(delay)
                if kind == 1:
                    self._open_contact(c)
                elif c in self._open_contacts:
                    self._close_contact(c)

    def reload_plan(self) -> bool:
        """Re-read the contact plan file (SIGHUP, or its modification time
        changed) and apply it while running.

        Contacts no longer in the plan close now, new ones open at their
        times (now, if their window is on), and bundles waiting for a route
        are routed again. Plan time keeps its epoch. On a bad or unreadable
        file the running plan stays as it was: logged, returns False.
        """
        path = self.config.plan
        plan = self.plan
        if path is None or plan is None or self.agent is None:
            return False
        from dcis.dtn.storage.plan_files import load_plan

        try:
            new = load_plan(path)
        except (DtnError, OSError) as exc:
            self._log("warning", "plan_reload_failed", plan=path, detail=str(exc))
            return False
        old_c, new_c = set(plan.contacts), set(new.contacts)
        for c in old_c - new_c:
            plan.remove_contact(c)
        for c in new.contacts:
            if c not in old_c:
                plan.add_contact(c)
        old_r, new_r = set(plan.ranges), set(new.ranges)
        for r in old_r - new_r:
            plan.remove_range(r)
        for r in new.ranges:
            if r not in old_r:
                plan.add_range(r)
        keep = {c for _, kind, c in self._contact_events() if kind == 1}
        for c in sorted(self._open_contacts - keep, key=lambda c: c.start_s):
            self._close_contact(c)
        if self._contacts_scope is not None:
            self._contacts_scope.cancel()
        if self._nursery is not None:
            self._nursery.start_soon(self._contact_task)
        self._timer_wake.set()  # the agent re-routes bundles on its next tick
        self._log(
            "info",
            "plan_reloaded",
            plan=path,
            contacts=len(new_c),
            added=len(new_c - old_c),
            removed=len(old_c - new_c),
        )
        return True

    async def _plan_watch_task(self, path: str) -> None:
        # A plan edited in place or renamed over is picked up within
        # _PLAN_POLL_S (a stat per poll); SIGHUP (tools/dtn_node.py) reloads
        # at once.
        last = file_stamp(path)
        while True:
            await trio.sleep(_PLAN_POLL_S)
            now = file_stamp(path)
            if now is not None and now != last:
                last = now
                self.reload_plan()

    def _open_contact(self, c: Contact) -> None:
        agent = self.core
        assert agent is not None
        peer = self._udp.get(c.to)
        if peer is not None:
            peer.contact = c
            if math.isfinite(c.start_s) and c.rate_bytes_s > 0:
                peer.pacer = _pacer(c.rate_bytes_s)
            if self.plan is not None:
                peer.link.owlt_s = self.plan.owlt_s(
                    c.frm, c.to, max(c.start_s, self._plan_s())
                )
                self._keep_partials_for(peer.link)
        mpeer = self._mtcp.get(c.to)
        if mpeer is not None:
            mpeer.contact = c
        if self.ltp is not None and self.ltp.has(c.to):
            owlt = None
            if self.plan is not None:
                owlt = self.plan.owlt_s(c.frm, c.to, max(c.start_s, self._plan_s()))
            self._apply(
                self._ltp_result(
                    self.ltp.contact(
                        c.to,
                        True,
                        self._ltp_now(),
                        owlt_s=owlt,
                        rate_bytes_s=c.rate_bytes_s if c.rate_bytes_s > 0 else None,
                    )
                )
            )
        self._open_contacts.add(c)
        self._log(
            "info",
            "contact_start",
            neighbour=c.to,
            end_s=c.end_s if math.isfinite(c.end_s) else None,
            rate_bytes_s=c.rate_bytes_s,
        )
        self._apply(agent.on_contact_start(c, self.now_ms()))

    def _close_contact(self, c: Contact) -> None:
        agent = self.core
        assert agent is not None
        self._log("info", "contact_end", neighbour=c.to)
        self._open_contacts.discard(c)
        actions = agent.on_contact_end(c, self.now_ms())
        peer = self._udp.get(c.to)
        if peer is not None and peer.contact == c:
            peer.contact = None
            peer.queue.clear()  # not sent in time: the ACK-less ones fail below
            actions += self._link_outputs(peer, peer.link.close())
        mpeer = self._mtcp.get(c.to)
        if mpeer is not None and mpeer.contact == c:
            mpeer.contact = None
        if self.ltp is not None and self.ltp.has(c.to):
            actions += self._ltp_result(self.ltp.contact(c.to, False, self._ltp_now()))
        self._apply(actions)

    # ------------------------------------------------------------ MTCP CL

    async def _mtcp_sender(self, peer: _MtcpPeer) -> None:
        agent = self.core
        assert agent is not None
        stream: trio.SocketStream | None = None
        queue = peer.queue
        try:
            while True:
                if not queue:
                    await peer.ready.wait()
                    peer.ready = trio.Event()
                    continue
                # What is queued goes out together (up to a count and a byte
                # budget): each bundle after its CBOR head as it is, not
                # copied, gathered into one sendmsg.
                batch = [queue.popleft()]
                sizes = [sum(map(len, batch[0][1]))]
                size = sizes[0]
                while queue and len(batch) < _MTCP_BATCH and size < _MTCP_BATCH_BYTES:
                    batch.append(queue.popleft())
                    sizes.append(sum(map(len, batch[-1][1])))
                    size += sizes[-1]
                peer.taken += len(batch)
                parts: list[bytes | memoryview] = []
                for (_, bundle_parts), n in zip(batch, sizes, strict=True):
                    parts.append(bstr_head(n))
                    parts += bundle_parts
                ok = True
                try:
                    if stream is None:
                        stream = await trio.open_tcp_stream(*peer.config.address)
                    # More than one sendmsg only when the socket buffer
                    # fills: no join copying frames, no write per bundle.
                    await send_buffers(stream, parts)
                    self.counters["mtcp_out"] += len(batch)
                except (OSError, trio.BrokenResourceError) as exc:
                    ok = False
                    self._log(
                        "info",
                        "mtcp_send_failed",
                        neighbour=peer.config.node,
                        detail=str(exc),
                    )
                    if stream is not None:
                        with contextlib.suppress(Exception):
                            await stream.aclose()
                    stream = None
                # MTCP has no acknowledgement: a bundle handed to TCP is sent
                # (after a failure the whole batch is retried).
                self._apply(
                    agent.on_transmit_done_many(
                        [(tx_id, ok) for tx_id, _ in batch], self.now_ms()
                    )
                )
                peer.reported += len(batch)
                self._mtcp_done.set()
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.aclose()

    def _buffer(self, before: int, after: int) -> bool:
        """Account a connection's partly received bytes going from ``before``
        to ``after``; False when all connections together would hold more
        than ``limits.max_buffered_bytes`` (the connection is then closed)."""
        self.counters["buffered_bytes"] += after - before
        if (
            after > before
            and self.counters["buffered_bytes"] > self.config.limits.max_buffered_bytes
        ):
            self.counters["buffer_refused"] += 1
            self._log(
                "warning",
                "buffer_limit",
                buffered=self.counters["buffered_bytes"],
                limit=self.config.limits.max_buffered_bytes,
            )
            return False
        return True

    async def _serve(
        self,
        listener: trio.SocketListener,
        handler: Callable[[trio.SocketStream, _Conn], Any],
        kind: str,
        limit: int,
    ) -> None:
        """Accept connections for ``handler``: at most ``limit`` at once, and
        never into the file descriptors kept for the store. At the limit the
        connection quiet the longest (and with no registered endpoint) is
        closed to make room if it has been quiet over a second
        (``<kind>_evicted``); else the new one is closed at once
        (``<kind>_refused``). Idle connections cannot lock clients out."""
        async with listener, trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    # EMFILE/ENFILE/ENOBUFS: one JSON line, a pause, go on.
                    self.counters["accept_errors"] += 1
                    self._log("warning", "accept_failed", kind=kind, detail=str(exc))
                    await trio.sleep(0.1)
                    continue
                active = (
                    self.counters["app_connections"] + self.counters["mtcp_connections"]
                )
                now = trio.current_time()
                if self.counters[f"{kind}_connections"] >= limit or (
                    active >= self._fd_budget
                ):
                    idle = [
                        c
                        for c in self._conns
                        if c.kind == kind
                        and not c.registered
                        and not c.scope.cancel_called
                        and now - c.last_active > 1.0
                    ]
                    if not idle:
                        self.counters[f"{kind}_refused"] += 1
                        with contextlib.suppress(Exception):
                            stream.socket.close()
                        continue
                    min(idle, key=lambda c: c.last_active).scope.cancel()
                    self.counters[f"{kind}_evicted"] += 1
                conn = _Conn(kind, now)
                self._conns.add(conn)
                self.counters[f"{kind}_connections"] += 1
                nursery.start_soon(self._run_connection, handler, stream, conn)

    async def _run_connection(
        self,
        handler: Callable[[trio.SocketStream, _Conn], Any],
        stream: trio.SocketStream,
        conn: _Conn,
    ) -> None:
        try:
            with conn.scope:
                await handler(stream, conn)
        except Exception as exc:  # one client or peer never stops the node
            self._handler_error(conn.kind, exc)
        finally:
            self._conns.discard(conn)
            self.counters[f"{conn.kind}_connections"] -= 1
            with contextlib.suppress(Exception):
                stream.socket.close()

    async def _mtcp_handler(self, stream: trio.SocketStream, conn: _Conn) -> None:
        agent = self.core
        assert agent is not None
        dec = MtcpDecoder(max_bundle_bytes=self.config.limits.mtcp_max_frame_bytes)
        held = 0
        try:
            async with stream:
                while True:
                    exact = dec.next_read_bytes
                    chunk = await (
                        self._read_piece(stream, exact)
                        if exact
                        else self._read_into(stream)
                    )
                    if not chunk:
                        return
                    conn.last_active = trio.current_time()
                    try:
                        # Frames read whole stay views of the read buffer
                        # (no copy of each bundle here): the agent reads
                        # them before this task's next checkpoint, and the
                        # store copies what it keeps (Received.data).
                        bundles = dec.feed_frames(chunk, _as_is)
                    finally:
                        ok = self._buffer(held, dec.buffered_bytes)
                        held = dec.buffered_bytes
                    if not ok:
                        return
                    if bundles:
                        self.counters["mtcp_in"] += len(bundles)
                        self._apply(
                            agent.on_receive_many(
                                [Received("mtcp", None, b, None) for b in bundles],
                                self.now_ms(),
                            )
                        )
        except DecodeError as exc:
            self.counters["junk"] += 1
            self._log("warning", "mtcp_bad_frame", detail=str(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self._buffer(held, 0)

    async def _read_into(
        self, stream: trio.SocketStream, limit: int = _READ_BYTES
    ) -> memoryview:
        """The next bytes of ``stream`` (empty at its end), read into the
        node's one preallocated buffer: no allocation per read (with glibc's
        mmap threshold pinned at 1 MiB, a 1 MiB ``receive_some`` was an
        ``mmap``, page faults and a ``munmap`` each: ~40 us per 64 KB read).

        The caller must consume the view before its next checkpoint: the
        read happens right after this task's checkpoint and nothing yields
        between it and the return, so no other task's read can overwrite
        it. Raises :class:`trio.BrokenResourceError` on a socket error."""
        if self._read_buf is None:
            self._read_buf = memoryview(bytearray(_READ_BYTES))
        await trio.lowlevel.checkpoint()
        sock = stream.socket
        while True:
            try:
                n = os.readv(sock.fileno(), [self._read_buf[:limit]])
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            return self._read_buf[:n]

    async def _app_read(
        self, stream: trio.SocketStream, reader: PushReader
    ) -> bytes | memoryview:
        """The next bytes of an app API connection for ``reader``: the rest
        of a large payload as it is (``value_left``); after a large message,
        exactly up to the next large payload if the stream already shows one
        (``value_offset`` of peeked bytes), so that payload can come in one
        read and be kept without a copy; else into the shared buffer."""
        left = reader.value_left
        if left:
            return await self._read_piece(stream, left)
        limit = _READ_BYTES
        if reader.last_large:
            try:
                ahead = await stream.socket.recv(_PEEK_BYTES, socket.MSG_PEEK)
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            limit = reader.value_offset(ahead) or _READ_BYTES
        return await self._read_into(stream, limit)

    async def _read_piece(self, stream: trio.SocketStream, left: int) -> bytes:
        """The next bytes of ``stream`` (empty at its end), at most ``left``
        (and :data:`_PIECE_BYTES`), in a new ``bytes`` object: the rest of a
        large frame, which the decoder keeps as it is (read into the shared
        buffer, it would be copied out, then copied again to join the
        frame), or the head of the frame after one (``next_read_bytes``).
        Raises :class:`trio.BrokenResourceError` on a socket error."""
        await trio.lowlevel.checkpoint()
        sock = stream.socket
        while True:
            try:
                return os.read(sock.fileno(), min(left, _PIECE_BYTES))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    # ------------------------------------------------------------ app API

    async def _open_app_listener(self, path: str) -> trio.SocketListener:
        """Listen on ``path``, mode 0600 (0660 with ``app_socket_group``).

        A stale socket (nobody accepting) is replaced; a live one (another
        daemon) or a file that is not a socket is refused with a
        :class:`ConfigError`, never removed. A missing parent directory is
        made with mode 0700 (0750 with a group)."""
        group = self.config.app_socket_group
        gid = None
        if group is not None:
            import grp

            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ConfigError(f"app_socket_group: no group {group!r}") from None
        _prepare_socket_path(path, gid)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # No window in which the socket has the umask's mode.
        old = os.umask(0o177 if gid is None else 0o117)
        try:
            await sock.bind(path)
        finally:
            os.umask(old)
        if gid is not None:
            os.chown(path, -1, gid)
            os.chmod(path, 0o660)
        else:
            os.chmod(path, 0o600)
        st = os.stat(path)
        self._app_socket_ino = (st.st_dev, st.st_ino)
        sock.listen(64)
        return trio.SocketListener(sock)

    def _remove_app_socket(self, path: str) -> None:
        """Remove our socket file at shutdown -- only if it is still ours."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self._app_socket_ino:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def _app_handler(self, stream: trio.SocketStream, conn: _Conn) -> None:
        out = _Outbox()
        subs: list[_Subscriber] = []
        with contextlib.suppress(OSError):
            # A 1 MB bundle in one or two writes, not five or more (the
            # default ~208 KiB buffer; the kernel caps it at wmem_max).
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _APP_SNDBUF)

        room = [trio.Event()]
        writer_done = False

        async def writer() -> None:
            nonlocal writer_done
            try:
                await write_all()
            finally:
                writer_done = True
                room[0].set()

        async def write_all() -> None:
            # Gather whatever is queued into one write: one syscall and one
            # wake-up of the client for a burst of replies or bundles.
            items = out.items
            while True:
                await out.ready.wait()
                if not items:
                    if out.closed:
                        return
                    out.ready = trio.Event()
                    continue
                parts = [items.popleft() for _ in range(min(len(items), IOV_MAX))]
                if not items and not out.closed:
                    out.ready = trio.Event()  # set again by the next put
                try:
                    await _send_buffers(stream, parts)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The client went away: end the connection, never the node.
                    out.close()
                    await stream.aclose()
                    return
                room[0].set()

        outbox: list[bytes] = []

        def reply(mid: int, **kw: Any) -> None:
            outbox.append(encode_message({"type": "ok", "id": mid, **kw}))

        def key_reply(mid: int, bundle_key: str) -> None:
            # A send's answer: written by a dedicated encoder.
            outbox.append(encode_key_reply(mid, bundle_key))

        def error(mid: int, message: str) -> None:
            outbox.append(
                encode_message({"type": "error", "id": mid, "message": message})
            )

        def push(d: Deliver) -> bool:
            # A large payload is queued as its own buffer, never joined into
            # a copy of the whole message (the writer hands it to the socket).
            parts = encode_bundle_message_parts(
                endpoint=d.endpoint,
                source=d.source,
                payload=d.payload,
                creation_ms=d.creation_ms,
                sequence=d.sequence,
                bundle_key=d.bundle_key,
                large=_GATHER_BYTES,
            )
            return out.put(parts)

        # A large send's payload is streamed out of its frame: read straight
        # into new bytes objects (value_left), it becomes the payload as it
        # is, not sliced (copied) out of a joined frame; its pieces count in
        # buffered_bytes, nothing is allocated for an announced length.
        reader = PushReader(max_message_bytes=self.config.limits.app_max_message_bytes)
        held = 0
        # A read's "delivered" confirmations, handed to the agent together
        # (_confirm_many) before the next other request and at its end.
        confirmed: list[str] = []
        refill: dict[_Subscriber, None] = {}
        try:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                while True:
                    # Backpressure: a client that does not read its replies
                    # is not read from either.
                    while len(out.items) > _APP_MAX_OUTBOX and not writer_done:
                        room[0] = trio.Event()
                        await room[0].wait()
                    try:
                        # Large reads: several 64 KB sends in one read are
                        # one store transaction (one fsync), not one each;
                        # a large payload read as it is, up to the next one
                        # exactly after one (_app_read).
                        chunk = await self._app_read(stream, reader)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    if not chunk:
                        break
                    conn.last_active = trio.current_time()
                    try:
                        msgs = reader.feed(chunk)
                    except DecodeError as exc:
                        self._log("warning", "appapi_bad_message", detail=str(exc))
                        break
                    finally:
                        ok = self._buffer(held, reader.buffered_bytes)
                        held = reader.buffered_bytes
                    if not ok:
                        break
                    # One store transaction (one fsync) for the whole chunk:
                    # replies and actions go out only after it committed. A
                    # chunk of only confirmations/status needs no fsync of
                    # its own (Agent.on_delivered says why).
                    outbox.clear()
                    actions: list[Action] = []
                    assert self.agent is not None
                    durable = any(
                        m["type"] in ("send", "service_request") for m in msgs
                    )
                    self._confirmed_keys.clear()
                    self._app_read_logged = False
                    # The answers of the read's store-free requests, kept if
                    # its transaction rolls back (_STORE_FREE).
                    kept: dict[int, list[bytes]] = {}
                    try:
                        with self.agent.store.transaction(durable=durable):
                            i = 0
                            while i < len(msgs):
                                m = msgs[i]
                                if m["type"] == "delivered" and self._take_confirmation(
                                    m["bundle_key"], subs, confirmed, refill
                                ):
                                    i += 1
                                    continue
                                if confirmed:
                                    actions += self._confirm_many(confirmed, refill)
                                if m["type"] == "send":
                                    # A run of sends: one agent call for all
                                    # (their replies in order, as one by one).
                                    j = i + 1
                                    while j < len(msgs) and msgs[j]["type"] == "send":
                                        j += 1
                                    actions += self._app_sends(
                                        msgs[i:j], key_reply, error
                                    )
                                    i = j
                                    continue
                                start = len(outbox)
                                actions += self._app_request(
                                    m, reply, error, push, subs
                                )
                                if m["type"] in _STORE_FREE:
                                    kept[i] = outbox[start:]
                                i += 1
                            if confirmed:
                                actions += self._confirm_many(confirmed, refill)
                    except StoreError as exc:
                        # The read's transaction rolled back as a whole
                        # (SQLite refused its batched rows or its commit:
                        # a full disk, an I/O error): nothing of it is
                        # stored, though the agent's memory holds its sends.
                        # Logged, the agent rebuilt from the store (outside
                        # any transaction now), the read's actions and
                        # confirmations dropped, and every request of it
                        # that wrote or read the store answered with the
                        # error -- never "ok" for a send not stored
                        # (spec/node.md, "Failure containment"); a
                        # register, unregister or ping took effect in
                        # memory only: its own answer (spec/appapi.md).
                        self._confirmed_keys.clear()
                        actions = []
                        outbox.clear()
                        self._app_store_error(exc)
                        for n, m in enumerate(msgs):
                            if n in kept:
                                outbox += kept[n]
                            elif m["type"] != "delivered":  # no reply
                                error(_request_id(m), f"store error: {exc}")
                    # Committed: ACKs held for the bundles confirmed go.
                    keys, self._confirmed_keys = self._confirmed_keys, []
                    self._release_confirmed(keys)
                    self._apply(actions)
                    conn.registered = bool(subs)
                    if outbox:
                        # A send's reply promises the bundle is stored.
                        replies = list(outbox)
                        self.when_durable(
                            functools.partial(out.put, replies),
                            APP_REPLY,
                            replies=replies,
                        )
                out.close()
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._buffer(held, 0)
            for sub in subs:
                self._unsubscribe(sub)

    def _app_store_error(self, exc: Exception, *, recover: bool = True) -> None:
        """A store error under an app read: the read's first is logged, the
        others only counted -- once a put poisons SQLite's transaction every
        later one of the read raises too (20 sends: 21 tracebacks)."""
        first = not self._app_read_logged
        self._app_read_logged = True
        self._handler_error("appapi", exc, recover=recover, log=first)

    def _take_confirmation(
        self,
        key: str,
        subs: list[_Subscriber],
        confirmed: list[str],
        refill: dict[_Subscriber, None],
    ) -> bool:
        """An app's ``delivered`` for a bundle pushed on this connection:
        count it out of the queue and add it to ``confirmed`` (True); any
        other (a bundle handed to a newer registration, an unknown key) is
        left to :meth:`_app_request` (False)."""
        for sub in subs:
            if sub.unconfirmed.pop(key, None) is not None:
                confirmed.append(key)
                refill[sub] = None
                return True
        return False

    def _confirm_many(
        self, confirmed: list[str], refill: dict[_Subscriber, None]
    ) -> list[Action]:
        """The agent forgets the ``confirmed`` bundles (one call for all:
        one at a time was ~6% of a receiving node's CPU at 1 KB); then
        deferred bundles fill the room in ``refill``'s queues. Both are
        emptied."""
        assert self.core is not None
        actions: list[Action] = []
        try:
            try:
                actions += self.core.on_delivered_many(confirmed, self.now_ms())
            except ConfirmationsInterrupted as exc:
                # The other keys' confirmations stand: their actions too.
                actions += exc.actions
                cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
                if isinstance(cause, StoreError):
                    self._app_store_error(cause)
                else:
                    self._handler_error("appapi", cause)
            self._confirmed_keys += confirmed  # their held ACKs: after the commit
            for sub in refill:
                actions += self._refill(sub)
        except Exception as exc:  # one request never stops the node
            self._handler_error("appapi", exc)
        finally:
            confirmed.clear()
            refill.clear()
        return actions

    def _app_request(
        self,
        m: dict[str, Any],
        reply: Callable[..., None],
        error: Callable[[int, str], None],
        push: Callable[[Deliver], bool],
        subs: list[_Subscriber],
    ) -> list[Action]:
        """Handle one app API request; return the agent actions to apply.
        (Sends never come here: the app loop gives every run of them to
        :meth:`_app_sends`.)"""
        kind = m["type"]
        actions: list[Action] = []
        mid = _request_id(m)
        try:
            if kind == "ping":
                reply(mid)
            elif kind == "status":
                reply(mid, status=self.status())
            elif kind == "bundles":
                reply(mid, **self.stored_bundles(int(m.get("limit", 1000))))
            elif kind == "register":
                sub = self._subscribe(m["endpoint"], push, takeover=True)
                subs.append(sub)
                reply(mid, endpoint=sub.endpoint)
            elif kind == "unregister":
                name = str(parse_eid(m["endpoint"]))
                for sub in [s for s in subs if s.endpoint == name]:
                    subs.remove(sub)
                    self._unsubscribe(sub)
                reply(mid)
            elif kind == "delivered":
                key = m["bundle_key"]
                for sub in subs:
                    if sub.unconfirmed.pop(key, None) is not None:
                        assert self.core is not None
                        actions += self.core.on_delivered(key, self.now_ms())
                        actions += self._refill(sub)
                        break
                    if key in sub.taken:
                        # Pushed here, then handed to a newer registration:
                        # the application has it all the same.
                        sub.taken.discard(key)
                        actions += self._confirm_taken(sub.endpoint, key)
                        break
            elif kind == "set_resources":
                fields = {k: v for k, v in m.items() if k not in ("type", "id")}
                reply(mid, resources=self.set_resources(**fields))
            elif kind == "service_request":
                replies, more = self._service_request(m["service"], m["requests"])
                reply(mid, replies=replies)
                actions += more
            else:
                error(mid, f"{kind} is not a request")
        except StoreFull as exc:
            error(mid, f"store full: {exc}")
        except StoreError as exc:
            # A store transaction rolled back under the request: the agent's
            # memory may hold confirmations or deletions whose rows are gone
            # -- log it and rebuild the agent from the store (spec/node.md,
            # "Failure containment").
            self._app_store_error(exc)
            error(mid, f"store error: {exc}")
        except DtnError as exc:
            error(mid, str(exc))
        except Exception as exc:  # one request never stops the node
            self._handler_error("appapi", exc)
            error(mid, f"request failed: {type(exc).__name__}")
        return actions

    def _app_sends(
        self,
        msgs: list[dict[str, Any]],
        key_reply: Callable[[int, str], None],
        error: Callable[[int, str], None],
    ) -> list[Action]:
        """Originate the bundles of app ``send`` requests ``msgs`` with one
        agent call (``NodeCore.send_many``); reply to each in order, as
        :meth:`_app_request` would one by one; return the agent actions.
        The replies must go out only once the store is durable
        (:meth:`when_durable`): the bundles' payloads may be written late."""
        assert self.core is not None
        requests: list[SendRequest] = []
        # Per message: its id, and what went wrong before the agent (None:
        # its outcome is the agent's, next in line).
        checked: list[tuple[int, Exception | None]] = []
        node = self.config.node
        # Sources that passed the checks below in this call (an app sends
        # from one or a few): checked once each, not once per send.
        passed: set[str] = set()
        for m in msgs:
            raw_id = m.get("id", 0)  # _request_id, inline: once per send
            mid = raw_id if type(raw_id) is int and 0 <= raw_id < 2**64 else 0
            try:
                source = m.get("source") or self.config.eid
                if source not in passed:
                    src = parse_eid(source)
                    if isinstance(src, IpnEid) and src.node != node:
                        raise InvalidArgument(f"source {source} is not on node {node}")
                    self._check_app_source(source)
                    passed.add(source)
                requests.append(
                    SendRequest(
                        source,
                        m["destination"],
                        m["payload"],
                        m.get("lifetime_ms") or self.config.lifetime_ms,
                    )
                )
            except Exception as exc:  # answered in its turn, below
                checked.append((mid, exc))
                continue
            checked.append((mid, None))
        actions: list[Action] = []
        outcomes: list[str | Exception] = []
        if requests:
            try:
                # Each reply waits for the sync (the app loop's when_durable):
                # with group commit the store may put off a payload's write
                # to that sync, and skip it if the bundle has left by then
                # (forwarded over MTCP: about half of them at 64 KB,
                # spec/performance.md, "Eighth round").
                outcomes, actions = self.core.send_many(
                    requests, self.now_ms(), write_later=self._deferred is not None
                )
            except SendsInterrupted as exc:
                # Each answered truly: the bundles stored before the failure
                # "ok" (an error would make the app send them again), the
                # request it stopped its error, the rest "not sent".
                outcomes, actions = exc.results, exc.actions
                cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
                if len(outcomes) < len(requests):
                    outcomes = [*outcomes, cause]
                else:
                    # The failure came after the sends (the services' turn
                    # contains its own, spec/node.md "Failure containment"):
                    # logged once, and no recover -- the bundles' rows and
                    # the agent's memory agree, and a recover inside
                    # this read's open transaction would re-route every
                    # stored bundle with actions that are lost if the broken
                    # commit fails it again, leaving them in flight for good.
                    if isinstance(cause, StoreError):
                        self._app_store_error(cause, recover=False)
                    else:
                        self._handler_error("appapi", cause, recover=False)
                outcomes += [
                    DtnError("not sent: an earlier send in the same read failed")
                ] * (len(requests) - len(outcomes))
            except Exception as exc:  # one request never stops the node
                outcomes = [exc] * len(requests)
        got = iter(outcomes)
        for mid, early in checked:
            outcome = next(got) if early is None else early
            if isinstance(outcome, str):
                key_reply(mid, outcome)  # "ok" with the bundle key
            elif isinstance(outcome, StoreFull):
                error(mid, f"store full: {outcome}")
            elif isinstance(outcome, StoreError):
                # As _app_request's, but no recover inside the read's open
                # transaction (above): the put that raised left the agent's
                # memory as it was, and a transaction SQLite rolled back
                # fails as the read ends, where the agent is rebuilt.
                self._app_store_error(outcome, recover=False)
                error(mid, f"store error: {outcome}")
            elif isinstance(outcome, DtnError):
                error(mid, str(outcome))
            else:
                self._handler_error("appapi", outcome)
                error(mid, f"request failed: {type(outcome).__name__}")
        return actions


class _ConfirmingChannel:
    """Async iterator over an endpoint's bundles; each bundle handed out is
    confirmed delivered to the agent."""

    def __init__(
        self,
        recv: trio.MemoryReceiveChannel[ReceivedBundle],
        confirm: Callable[[ReceivedBundle], None],
    ) -> None:
        self._recv = recv
        self._confirm = confirm

    async def receive(self) -> ReceivedBundle:
        """Wait for the next bundle."""
        b = await self._recv.receive()
        self._confirm(b)
        return b

    def __aiter__(self) -> _ConfirmingChannel:
        return self

    async def __anext__(self) -> ReceivedBundle:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@contextlib.asynccontextmanager
async def open_node(config: NodeConfig, **kw: Any) -> AsyncIterator[Node]:
    """Start a node in the background; stop it (cleanly) when the block exits."""
    node = Node(config, **kw)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # One error (the caller's, or the node's own failure): raise it as is.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def _prepare_socket_path(path: str, gid: int | None) -> None:
    """Make ``path``'s directory if missing; remove a stale socket there;
    refuse (:class:`ConfigError`) a live socket or a file of another kind."""
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o750 if gid is not None else 0o700)
        if gid is not None:
            os.chown(parent, -1, gid)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(
            f"app_socket: {path} exists and is not a socket (not removed)"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale: its daemon is gone
    else:
        raise ConfigError(
            f"app_socket: {path} is in use by another process (is a daemon running?)"
        )
    finally:
        probe.close()


def _fd_budget(reserve: int) -> int:
    """Connections this process can accept and still keep ``reserve`` file
    descriptors free (for the store's segment files, the WAL, sockets)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 64
    return max(0, soft - used - reserve)


async def _wait_readable(sock: Any) -> None:
    """Wait until a socket (or a test's fake one) has data."""
    wait = getattr(sock, "wait_readable", None)
    if wait is not None:
        await wait()
    else:
        await trio.lowlevel.wait_readable(sock)


async def _wait_writable(sock: Any) -> None:
    """Wait until a socket (or a test's fake one) can take a datagram."""
    wait = getattr(sock, "wait_writable", None)
    if wait is not None:
        await wait()
    else:
        await trio.lowlevel.wait_writable(sock)


_GATHER_BYTES = 16 * 1024
"""A pushed payload at least this long is queued as its own buffer, not
copied into its message's frame: the app writer gathers buffers."""


def _size(data: bytes | Buffers) -> int:
    """Length of a datagram given as one buffer or several."""
    return len(data) if isinstance(data, bytes) else sum(map(len, data))


async def _send_buffers(stream: trio.SocketStream, parts: list[bytes]) -> None:
    """Write ``parts`` in order, gathered (:func:`send_buffers`): nothing is
    joined, no payload copied in Python -- at 64 KB a receiving node copied
    each payload twice (into its frame, then into a join of the queued
    frames). Only the connection's writer task writes."""
    await send_buffers(stream, parts)


_TCPCL_ANSWER_KINDS: Final = frozenset(
    {
        EventKind.RECEIVED,
        EventKind.DUPLICATE,
        EventKind.VARIANT,
        EventKind.REASSEMBLED,
    }
)
"""The events naming the bundles a TCPCL transfer stands for."""


def _request_id(m: dict[str, Any]) -> int:
    """The id an app request is answered with: the schema checks ``id`` of
    requests that have one; anything else (a float, text, a bool on
    "delivered") is answered with id 0."""
    raw_id = m.get("id", 0)
    return raw_id if type(raw_id) is int and 0 <= raw_id < 2**64 else 0


class _Outbox:
    """What an app API connection's writer task is to send: buffers in
    order, and an event set when there are some (a trio memory channel
    cost ~5% of a receiving node's CPU at 1 KB: ``send_nowait`` per
    pushed buffer). Once closed (the client went away, or the connection
    ends), :meth:`put` drops what it is given and says so."""

    __slots__ = ("closed", "items", "ready")

    def __init__(self) -> None:
        self.items: deque[bytes] = deque()
        self.ready = trio.Event()
        self.closed = False

    def put(self, parts: list[bytes]) -> bool:
        """Queue ``parts`` for the writer; False (dropped) once closed."""
        if self.closed:
            return False
        self.items.extend(parts)
        self.ready.set()
        return True

    def close(self) -> None:
        """No more buffers; the writer ends once the queue is empty."""
        self.closed = True
        self.ready.set()
