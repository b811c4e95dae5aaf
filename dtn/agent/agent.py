"""The bundle protocol agent: a sans-I/O core (RFC 9171 section 5).

Theory of operation
-------------------
The agent owns a :class:`~dcis.dtn.agent.store.BundleStore` and reacts to inputs
(``send``, ``on_receive``, ``on_contact_start/end``, ``on_transmit_done``,
``on_delivered``, ``on_tick``) by returning a list of actions
(:mod:`dcis.dtn.agent.actions`). It never reads a clock, touches a socket or
sleeps; ``now`` is DTN time in ms, passed in by the driver.

Every stored bundle is in exactly one of these places (in memory; the store
holds the durable copy and enough metadata to rebuild them in ``recover``):

- ``_queues[n]`` -- routed to neighbour ``n``, waiting for a contact with
  ``n`` to be open (and for room in its transmit window);
- in flight -- a ``Transmit`` was emitted; ``on_transmit_done`` decides;
- ``_unrouted[d]`` -- no route yet to destination node ``d``: waits for a
  contact with ``d`` itself, or for the contact plan to change;
- delivering -- for a local endpoint: ``Deliver`` emitted (or the endpoint
  not registered yet), until ``on_delivered`` confirms;
- reassembly -- a fragment for a local endpoint, until all fragments arrived.

Queues and the expiry heap use lazy deletion: an entry removed from the store
is dropped from ``_entries`` and skipped when a queue or the heap reaches it,
so no operation scans the whole store. Per bundle, the work is O(log n)
(heap) plus one decode and one encode per transmission.

Durability: each public method runs inside one store transaction, committed
before the method returns its actions. So an ``Ack`` (or the return of
``send``) is only ever seen by the driver after the bundle is durable, and
the bundle leaves the store only in ``on_transmit_done(ok=True)`` (the next
hop took it), on delivery confirmation, or at expiry/deletion.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from dcis.dtn.agent.actions import (
    Ack,
    Action,
    Deletion,
    DeletionCause,
    Deliver,
    Event,
    Schedule,
    Transmit,
)
from dcis.dtn.agent.store import (
    MAX_INT64,
    BundleState,
    BundleStore,
    StoreCorrupt,
    StoredBundle,
    StoreError,
    StoreFull,
)
from dcis.dtn.bpv7.admin import StatusKind, StatusReason, make_status_report
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.canonical import ZERO_BLOCK_NUMBER
from dcis.dtn.bpv7.eid import DTN_NONE, DtnEid, Eid, IpnEid, is_null_eid, parse_eid
from dcis.dtn.bpv7.flags import BlockType, BundleFlags, CrcType
from dcis.dtn.bpv7.fragment import fragment_bundle, reassemble
from dcis.dtn.bpv7.primary import encode_primary
from dcis.dtn.bpv7.processing import apply_unprocessable_blocks, update_for_forwarding
from dcis.dtn.errors import DecodeError, DtnError, InvalidArgument
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import check_dtn_routes
from dcis.dtn.time import DtnTime

if TYPE_CHECKING:
    from dcis.dtn.routing.plan import ContactPlan

__all__ = ["Agent", "AgentConfig", "Received", "SecurityHook", "StoreFull"]

# _prepare's answer when it fragmented a bundle (the fragments head the queue).
_REQUEUED = object()
# Bytes a fragment's primary block may add (offset, total ADU length).
_FRAGMENT_MARGIN = 24
# Smallest payload piece worth a fragment of its own.
_MIN_FRAGMENT_PAYLOAD = 64
# Bundle sizes are rounded up to this for route lookups (see Agent._route).
_ROUTE_SIZE_QUANTUM = 1024
# Copies of one bundle key with different contents kept apart (see
# Agent._receive_one), besides the first; and reassembly candidates tried.
MAX_VARIANTS = 4
_MAX_COMBINATIONS = 16
# Blocks every hop rewrites: not part of a bundle's content.
_HOP_BLOCKS = frozenset(
    {BlockType.PREVIOUS_NODE, BlockType.BUNDLE_AGE, BlockType.HOP_COUNT}
)


def content_digest(bundle: Bundle) -> bytes:
    """What makes two copies of a bundle the same: a 16-byte BLAKE2b digest of
    the primary block and every block but those each hop rewrites (previous
    node, bundle age, hop count). Copies sharing a key but not this digest
    are different bundles (one of them forged or broken)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(encode_primary(bundle.primary))
    for blk in bundle.blocks:
        if blk.type_code in _HOP_BLOCKS:
            continue
        h.update(b"%d|%d|%d|" % (blk.type_code, blk.number, len(blk.data)))
        h.update(blk.data)
    return h.digest()


class TooManyBundles(StoreFull):
    """A new bundle was refused: the agent holds ``AgentConfig.max_bundles``."""

    def __init__(self, held: int) -> None:
        DtnError.__init__(self, f"store full: {held} bundles held, the most allowed")
        self.needed_bytes = 0
        self.used_bytes = 0
        self.limit_bytes = 0


def _variant_base(key: str) -> str | None:
    """The key a variant's store key was made from (``key#<32 hex>``), else
    None. Bundle keys themselves end in a decimal number."""
    if len(key) > 33 and key[-33] == "#":
        tail = key[-32:]
        if all(c in "0123456789abcdef" for c in tail):
            return key[:-33]
    return None


def _fragment_of(frag: Bundle, whole: Bundle) -> bool:
    """True if fragment ``frag`` carries exactly a piece of ``whole``."""
    p, w = frag.primary, whole.primary
    off = p.fragment_offset
    if off is None or p.total_adu_length != len(whole.payload):
        return False
    same_primary = (
        p.source == w.source
        and p.destination == w.destination
        and p.creation == w.creation
        and p.lifetime_ms == w.lifetime_ms
    )
    piece = frag.payload
    return same_primary and whole.payload[off : off + len(piece)] == piece


# Block types the agent processes itself, plus BPSec's BIB/BCB which the
# security layer above handles: none of them is "unprocessable" here.
_KNOWN_BLOCK_TYPES = frozenset(
    {
        BlockType.PAYLOAD,
        BlockType.PREVIOUS_NODE,
        BlockType.BUNDLE_AGE,
        BlockType.HOP_COUNT,
        BlockType.BIB,
        BlockType.BCB,
    }
)

_REPORT_FLAGS = (
    BundleFlags.REPORT_RECEPTION
    | BundleFlags.REPORT_FORWARDING
    | BundleFlags.REPORT_DELIVERY
    | BundleFlags.REPORT_DELETION
)
_KIND_FLAG = {
    StatusKind.RECEIVED: BundleFlags.REPORT_RECEPTION,
    StatusKind.FORWARDED: BundleFlags.REPORT_FORWARDING,
    StatusKind.DELIVERED: BundleFlags.REPORT_DELIVERY,
    StatusKind.DELETED: BundleFlags.REPORT_DELETION,
}

COUNTER_NAMES = (
    "received",
    "sent",
    "delivered",
    "forwarded",
    "expired",
    "refused",
    "dropped",
    "duplicates",
    "deleted",
    "fragmented",
    "reassembled",
    "status_reports",
    "transmits",
    "transmit_failed",
    "store_corrupt",
    "variants",
)
"""Keys of :attr:`Agent.counters` (all present from the start)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Tunables of an :class:`Agent`.

    - ``max_bundle_bytes``: the link MTU. A bundle whose encoding is larger is
      fragmented before transmission (unless MUST_NOT_FRAGMENT: then it is
      sent whole and the CLA must cope). None = no limit.
    - ``window``: transmissions in flight per neighbour before the agent waits
      for ``on_transmit_done``.
    - ``retry_delay_ms``: after ``on_transmit_done(ok=False)`` on an open
      contact, wait this long before sending to that neighbour again.
    - ``hop_limit``: hop count block limit put on bundles this node creates
      (None = no hop count block).
    - ``crc_type``: CRC of the primary and payload blocks of bundles created
      here.
    - ``status_report_lifetime_ms``: lifetime of status reports sent.
    - ``purge_interval_ms``: how often ``on_tick`` forgets expired delivered keys.
    - ``max_forward_lifetime_ms``: the longest this node holds a bundle for
      another node (its expiry here is at most this long after arrival; a
      lifetime of 2**64-1 ms from an unauthenticated sender must not pin
      store space forever). None = the bundle's own lifetime.
    - ``max_tombstone_ms``: the longest a delivered key is remembered (None:
      the bundle's own lifetime).
    - ``max_bundles``: the most bundles held at once (each costs memory
      beyond its bytes, which ``limit_bytes`` counts: a flood of tiny
      bundles must not exhaust RAM); a new one beyond it is refused like a
      full store (``TooManyBundles``, no Ack). None = no bound.
    - ``reroute_interval_ms`` / ``max_reroute_interval_ms``: with a contact
      plan, bundles without a route to a destination are routed again after
      this long, then after twice as long each time up to the maximum
      (contact volume booked by other bundles may have been given back).
    """

    max_bundle_bytes: int | None = None
    window: int = 64
    retry_delay_ms: int = 1_000
    hop_limit: int | None = 64
    crc_type: CrcType = CrcType.CRC32C
    status_report_lifetime_ms: int = 86_400_000
    purge_interval_ms: int = 60_000
    reroute_interval_ms: int = 60_000
    max_reroute_interval_ms: int = 3_600_000
    max_forward_lifetime_ms: int | None = None
    max_tombstone_ms: int | None = None
    max_bundles: int | None = None
    mtu_by_neighbour: dict[int, int | None] = field(default_factory=dict)
    """Per-neighbour MTU overriding ``max_bundle_bytes`` (None: no limit), e.g.
    for a stream CL such as TCPCL that carries a bundle of any size whole."""

    def __post_init__(self) -> None:
        if self.max_bundle_bytes is not None and self.max_bundle_bytes < 64:
            raise InvalidArgument(
                f"max_bundle_bytes must be >= 64, got {self.max_bundle_bytes}"
            )
        if self.window < 1:
            raise InvalidArgument(f"window must be >= 1, got {self.window}")
        if self.retry_delay_ms < 0:
            raise InvalidArgument(
                f"retry_delay_ms must be >= 0, got {self.retry_delay_ms}"
            )
        if self.hop_limit is not None and not 1 <= self.hop_limit <= 255:
            raise InvalidArgument(f"hop_limit must be in 1..255, got {self.hop_limit}")
        if not 1 <= self.reroute_interval_ms <= self.max_reroute_interval_ms:
            raise InvalidArgument(
                "need 1 <= reroute_interval_ms <= max_reroute_interval_ms, got"
                f" {self.reroute_interval_ms} and {self.max_reroute_interval_ms}"
            )


class SecurityHook(Protocol):
    """End-to-end security at a bundle's two ends (RFC 9172 section 5); e.g.
    ``dcis.dtn.agent.security.SecurityPolicy``.

    ``protect`` is applied to every bundle this node originates for another
    node (``send``); it may raise an :class:`InvalidArgument` (e.g. no
    certificate for the destination), which ``send`` lets through.
    ``check`` is applied once to every whole bundle received for this node
    (after reassembly): ``(plaintext bundle, None)`` to accept, ``(None,
    reason)`` to delete it with that status report reason.
    """

    def protect(self, bundle: Bundle, *, now: int | None = None) -> Bundle: ...

    def check(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]: ...


class Received(NamedTuple):
    """One received bundle for :meth:`Agent.on_receive_many`."""

    cla: str
    neighbor: int | None
    data: bytes
    cl_token: int | None = None


@dataclass(slots=True)
class _Entry:
    """In-memory state of one stored bundle."""

    key: str
    destination: str
    dest_node: int | str
    expiry_ms: int
    size: int
    received_ms: int
    prev_node: int | None
    state: BundleState
    frag_group: str | None = None
    # neighbour whose queue holds it
    queued_to: int | None = None
    # waiting in _unrouted (no route yet)
    unrouted: bool = False
    # transmission in flight
    tx_id: int | None = None
    # Deliver emitted, awaiting on_delivered
    handed: bool = False
    # (offset, payload length, total ADU length) of a fragment for reassembly
    frag_range: tuple[int, int, int] | None = None
    # bundle processing flags (None: not known yet, after recover)
    flags: int | None = None
    # contact whose residual volume CGR charged for it (not sent yet)
    booked: Contact | None = None
    # content_digest of the copy received, when what is stored differs from
    # it (decrypted by the security policy); else computed from the store
    digest: bytes | None = None


@dataclass(slots=True)
class _Link:
    """An open contact to one neighbour."""

    contact: Contact
    remaining_bytes: float
    inflight: int = 0
    backoff_until: int = 0


@dataclass(slots=True)
class _Group:
    """Fragments of one bundle awaiting reassembly."""

    total: int
    parts: dict[str, tuple[int, int]] = field(
        default_factory=dict
    )  # key -> (offset, length)
    # Sum of the parts' lengths: the union cannot cover ``total`` before
    # this does, so the (sorting) coverage check waits for it.
    length_sum: int = 0


def _node_of(eid: Eid) -> int | str:
    return eid.node if isinstance(eid, IpnEid) else eid.node_id


class NoRoute(InvalidArgument):
    """``send`` to a ``dtn:`` destination that is neither local nor has a static route."""


class Agent:
    """A bundle protocol agent for ipn node ``node`` (sans-I/O).

    ``store`` holds the bundles; ``plan`` enables contact graph routing
    (``dcis.dtn.routing.cgr.Router``); ``plan_epoch`` is the DTN time (ms) of the
    plan's time 0; ``rng`` is a seeded generator (jitter of retries).

    Construction does not read the store: call :meth:`recover` once (after
    :meth:`register`-ing the local endpoints) to resume the bundles a durable
    store holds from before a restart.
    """

    def __init__(
        self,
        *,
        node: int,
        store: BundleStore,
        plan: ContactPlan | None = None,
        plan_epoch: int = 0,
        config: AgentConfig | None = None,
        rng: random.Random | None = None,
        security: SecurityHook | None = None,
        dtn_routes: Mapping[str, int] | None = None,
    ) -> None:
        if type(node) is not int or node < 1:
            raise InvalidArgument(f"node must be an ipn node number >= 1, got {node!r}")
        self.node = node
        # Static routes for dtn: node IDs (node.toml; the plan's own come
        # after, so node.toml wins): a dtn: bundle goes where its ipn node does.
        self.dtn_routes = check_dtn_routes(dtn_routes or {})
        self.eid = IpnEid(node, 0)
        self.store = store
        self.plan = plan
        self.plan_epoch = plan_epoch
        self.config = config if config is not None else AgentConfig()
        self.security = security
        self._rng = rng if rng is not None else random.Random(node)
        self._router: Any = None
        self._plan_version = -1
        if plan is not None:
            from dcis.dtn.routing.cgr import Router

            self._router = Router(plan)
            self._plan_version = plan.version
        self._endpoints: set[str] = set()
        self._entries: dict[str, _Entry] = {}
        self._expiry: list[tuple[int, str]] = []
        self._queues: dict[int, deque[str]] = {}
        self._unrouted: dict[int | str, dict[str, None]] = {}
        # Retries of unrouted bundles per destination: heap of (at, dst), the
        # current retry time and interval of each destination.
        self._reroute: list[tuple[int, int]] = []
        self._reroute_at: dict[int, int] = {}
        self._reroute_iv: dict[int, int] = {}
        self._links: dict[int, _Link] = {}
        # tx_id -> (bundle key, neighbour, bytes sent, the link it went on)
        self._inflight: dict[int, tuple[str, int, int, _Link]] = {}
        # endpoint -> keys of bundles waiting for it to be registered
        self._unclaimed: dict[str, dict[str, None]] = {}
        self._groups: dict[str, _Group] = {}
        # base key -> how many variants of it are held (MAX_VARIANTS bound)
        self._variants: dict[str, int] = {}
        self._backoff: list[tuple[int, int]] = []  # (until, neighbour)
        self._next_tx = 1
        self._seq = 0
        self._last_seq_ms = -1
        self._next_purge = 0
        self._last_schedule: int | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)

    # ------------------------------------------------------------------ API

    def register(self, endpoint: str, *, now: int | None = None) -> list[Action]:
        """Register local endpoint ``endpoint`` (e.g. ``"ipn:5.1"``).

        Returns ``Deliver`` actions for bundles already held for it (from
        before a restart, or received before registration). With ``now``
        (DTN time, ms), held bundles whose lifetime is over are expired
        instead of delivered (without it, ``on_tick`` expires them on time
        but a late tick could let one through). Raises
        :class:`InvalidArgument` for a malformed EID or one of another node.
        """
        eid = parse_eid(endpoint)
        if isinstance(eid, IpnEid) and eid.node != self.node:
            raise InvalidArgument(f"endpoint {endpoint} is not on node {self.node}")
        name = str(eid)
        self._endpoints.add(name)
        actions: list[Action] = []
        waiting = self._unclaimed.pop(name, None)
        # A dtn: bundle that came before its endpoint was registered here
        # was held as unroutable (dtn: names are never forwarded): it is
        # for this node after all.
        held = self._unrouted.get(eid.node_id) if isinstance(eid, DtnEid) else None
        mine = [k for k in held if self._entries[k].destination == name] if held else []
        if waiting or mine:
            with self.store.transaction(durable=False):
                for key in waiting or ():
                    self._hand_over(key, actions, now)
                for key in mine:
                    self._make_local(self._entries[key], now, actions)
        return actions

    def redeliver(self, keys: Iterable[str], now: int | None = None) -> list[Action]:
        """Hand these held bundles over again (a ``Deliver`` each, or held
        for their endpoint until it is registered): the driver deferred
        them to bound what a slow application makes it hold in memory."""
        actions: list[Action] = []
        with self.store.transaction(durable=False):
            for key in keys:
                self._hand_over(key, actions, now)
        return actions

    def unregister(self, endpoint: str) -> None:
        """Stop delivering to ``endpoint``: bundles for it are held until it is
        registered again or they expire."""
        self._endpoints.discard(str(parse_eid(endpoint)))

    def send(
        self,
        *,
        source: str,
        destination: str,
        payload: bytes,
        lifetime_ms: int,
        now: int,
        flags: BundleFlags = BundleFlags.NONE,
        report_to: str | None = None,
    ) -> tuple[str, list[Action]]:
        """Originate a bundle from local endpoint ``source`` to ``destination``.

        Returns ``(bundle_key, actions)``; the bundle is durably stored when
        this returns. ``report_to`` defaults to ``source`` when ``flags`` ask
        for status reports, else ``dtn:none``. Raises :class:`StoreFull` when
        the store refuses it, :class:`InvalidArgument` for bad arguments.
        """
        src = parse_eid(source)
        dst = parse_eid(destination)
        if isinstance(src, IpnEid) and src.node != self.node:
            raise InvalidArgument(
                f"source {source} is not an endpoint of node {self.node}"
            )
        if isinstance(src, DtnEid) and str(src) not in self._endpoints:
            raise InvalidArgument(f"source {source} is not a registered endpoint")
        if isinstance(dst, DtnEid) and dst.is_none:
            raise InvalidArgument("destination must not be dtn:none")
        if (
            isinstance(dst, DtnEid)
            and not isinstance(self._dest_of(dst), int)
            and not self._is_local_dtn(dst)
        ):
            raise NoRoute(
                f"no route to {dst}: dtn: destinations are forwarded only by a"
                f" static route from {dst.node_id} to an ipn node number"
                " ([dtn_routes] in node.toml, or the plan's dtn routes)"
            )
        if type(lifetime_ms) is not int or lifetime_ms <= 0:
            raise InvalidArgument(
                f"lifetime_ms must be a positive int, got {lifetime_ms!r}"
            )
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise InvalidArgument(
                f"payload must be bytes, got {type(payload).__name__}"
            )
        flags = BundleFlags(flags)
        if flags & (BundleFlags.IS_FRAGMENT | BundleFlags.ADMIN_RECORD):
            raise InvalidArgument(
                "IS_FRAGMENT and ADMIN_RECORD are set by the agent, not by send()"
            )
        wants_reports = bool(flags & _REPORT_FLAGS)
        rpt: Eid = (
            parse_eid(report_to)
            if report_to is not None
            else (src if wants_reports else DTN_NONE)
        )
        actions: list[Action] = []
        with self.store.transaction():
            bundle = self._originate(
                source=src,
                destination=dst,
                payload=bytes(payload),
                lifetime_ms=lifetime_ms,
                now=now,
                flags=flags,
                report_to=rpt,
            )
            if self.security is not None and self._dest_of(dst) != self.node:
                # End-to-end protection at the source (RFC 9172 5.1.1); the
                # primary block, hence the key, is unchanged.
                bundle = self.security.protect(bundle, now=now)
            key = bundle.bundle_key
            data = encode_bundle(bundle)
            try:
                self._accept(
                    bundle, data, key, prev_node=None, now=now, actions=actions
                )
            except StoreFull as exc:
                self.counters["refused"] += 1
                actions.append(Event("refused", key, str(exc)))
                raise
            self.counters["sent"] += 1
        self._finish(actions)
        return key, actions

    def on_receive(
        self,
        *,
        cla: str,
        neighbor: int | None,
        data: bytes,
        now: int,
        cl_token: int | None = None,
    ) -> list[Action]:
        """Process one bundle received from the convergence layer ``cla``.

        ``neighbor`` is the node it came from (None if unknown; then the
        previous node block names it). Never raises for bad bytes: a bundle
        that fails to decode yields ``Event("dropped", "", reason)``. Emits
        ``Ack(neighbor, cl_token)`` (when both are given) once the bundle is
        durably held, was a duplicate, or was deliberately deleted; a bundle
        refused for lack of space or undecodable is not acknowledged, so the
        previous hop keeps it and retries.
        """
        actions: list[Action] = []
        with self.store.transaction():
            self._receive_one(cla, neighbor, data, now, cl_token, actions)
        self._finish(actions)
        return actions

    def on_receive_many(self, batch: Iterable[Received], now: int) -> list[Action]:
        """Like :meth:`on_receive` for several bundles, with one store commit.

        A daemon that drains its socket passes everything it read; with
        ``SqliteStore(synchronous="FULL")`` this is one fsync for the batch.
        """
        actions: list[Action] = []
        with self.store.transaction():
            for item in batch:
                self._receive_one(
                    item.cla, item.neighbor, item.data, now, item.cl_token, actions
                )
        self._finish(actions)
        return actions

    def on_contact_start(self, contact: Contact, now: int) -> list[Action]:
        """A contact from this node to ``contact.to`` is open now.

        Contacts from other nodes are ignored. Bundles queued for that
        neighbour, and bundles destined to it without a route, are transmitted
        (within the contact's remaining volume and the window).
        """
        actions: list[Action] = []
        if contact.frm != self.node or contact.to == self.node:
            return actions
        nb = contact.to
        self._links[nb] = _Link(
            contact=contact, remaining_bytes=self._volume(contact, now)
        )
        with self.store.transaction(durable=False):
            self._check_plan(now, actions)
            waiting = self._unrouted.pop(nb, None)
            if waiting:
                q = self._queues.setdefault(nb, deque())
                for key in waiting:
                    e = self._entries.get(key)
                    if e is not None and e.unrouted:
                        e.unrouted = False
                        e.queued_to = nb
                        q.append(key)
            self._pump(nb, now, actions)
        self._finish(actions)
        return actions

    def on_contact_end(self, contact: Contact, now: int) -> list[Action]:
        """The contact to ``contact.to`` closed: what is still queued for that
        neighbour is routed again (or waits for the next contact)."""
        actions: list[Action] = []
        if contact.frm != self.node:
            return actions
        nb = contact.to
        link = self._links.get(nb)
        if link is None or link.contact != contact:
            return actions
        del self._links[nb]
        q = self._queues.pop(nb, None)
        with self.store.transaction(durable=False):
            if q:
                for key in q:
                    e = self._entries.get(key)
                    if e is not None and e.queued_to == nb and e.tx_id is None:
                        e.queued_to = None
                        self._forward(e, now, actions)
        self._finish(actions)
        return actions

    def on_transmit_done(self, tx_id: int, ok: bool, now: int) -> list[Action]:
        """Outcome of ``Transmit(tx_id)``: ``ok=True`` -- the next hop holds
        it, the bundle leaves this node; ``ok=False`` -- kept and retried
        (after ``retry_delay_ms`` if the contact is still open, else when a
        contact opens). Unknown ``tx_id`` values are ignored."""
        actions: list[Action] = []
        with self.store.transaction(durable=False):
            self._transmit_done(tx_id, ok, now, actions)
        self._finish(actions)
        return actions

    def on_transmit_done_many(
        self, results: Iterable[tuple[int, bool]], now: int
    ) -> list[Action]:
        """Like :meth:`on_transmit_done` for several ``(tx_id, ok)`` pairs, in
        one store commit."""
        actions: list[Action] = []
        with self.store.transaction(durable=False):
            for tx_id, ok in results:
                self._transmit_done(tx_id, ok, now, actions)
        self._finish(actions)
        return actions

    def _transmit_done(
        self, tx_id: int, ok: bool, now: int, actions: list[Action]
    ) -> None:
        info = self._inflight.pop(tx_id, None)
        if info is None:
            return
        key, nb, nbytes, sent_on = info
        link = self._links.get(nb)
        if link is sent_on:
            # Same contact still open (not one opened since): its window
            # slot is free again, and a failed transmission's bytes were
            # not delivered -- give them back to its remaining volume so
            # the retry fits where it first did.
            link.inflight = max(0, link.inflight - 1)
            if not ok:
                link.remaining_bytes += nbytes
        e = self._entries.get(key)
        if e is not None and e.tx_id == tx_id:
            e.tx_id = None
            e.state = BundleState.PENDING
            if ok:
                self._report_entry(
                    e, StatusKind.FORWARDED, StatusReason.NO_INFO, now, actions
                )
                self._remove(e)
                self.counters["forwarded"] += 1
                actions.append(Event("forwarded", key, f"to node {nb}"))
            else:
                self.counters["transmit_failed"] += 1
                if link is not None:
                    # Retry on this contact after a delay (jittered so that
                    # a failing link does not spin in lock step).
                    e.queued_to = nb
                    self._queues.setdefault(nb, deque()).appendleft(key)
                    delay = self.config.retry_delay_ms
                    delay += int(delay * 0.1 * self._rng.random())
                    link.backoff_until = now + delay
                    heapq.heappush(self._backoff, (link.backoff_until, nb))
                else:
                    e.queued_to = None
                    self._forward(e, now, actions)
        if link is not None:
            self._pump(nb, now, actions)

    def on_delivered(self, bundle_key: str, now: int) -> list[Action]:
        """The driver handed ``Deliver(bundle_key)`` to the application: the
        bundle is removed and its key remembered so it is never delivered
        again.

        The commit is not forced to disk (no fsync of its own): it survives a
        crash of the process, and the next durable commit (any bundle
        received or sent) makes it durable; only a power loss in between can
        deliver the bundle a second time -- never lose it. An fsync per
        confirmation was a third of a forwarding node's disk waits."""
        actions: list[Action] = []
        e = self._entries.get(bundle_key)
        if e is None or not e.handed:
            return actions
        with self.store.transaction(durable=False):
            self._report_entry(
                e, StatusKind.DELIVERED, StatusReason.NO_INFO, now, actions
            )
            keep = self.config.max_tombstone_ms
            self.store.mark_delivered(
                bundle_key,
                e.expiry_ms if keep is None else min(e.expiry_ms, now + keep),
            )
            self._remove(e)
            self.counters["delivered"] += 1
            actions.append(Event("delivered", bundle_key, e.destination))
            group = self._groups.get(bundle_key)
            if group is not None:
                # Fragments of it that came before it did (another path sent
                # it whole): duplicates now, not worth their space until
                # they expire.
                for key in list(group.parts):
                    fe = self._entries.get(key)
                    if fe is not None:
                        self._remove(fe)
                        self.counters["duplicates"] += 1
                        actions.append(Event("duplicate", key, "delivered whole"))
        self._finish(actions)
        return actions

    def on_tick(self, now: int) -> list[Action]:
        """Timers: expire bundles whose lifetime ended, retry after backoff,
        forget old delivered keys."""
        actions: list[Action] = []
        with self.store.transaction(durable=False):
            heap = self._expiry
            while heap and heap[0][0] <= now:
                expiry, key = heapq.heappop(heap)
                e = self._entries.get(key)
                if e is not None and e.expiry_ms == expiry:
                    self._expire(e, now, actions)
            self._check_plan(now, actions)
            rr = self._reroute
            while rr and rr[0][0] <= now:
                at, d = heapq.heappop(rr)
                if self._reroute_at.get(d) == at:
                    self._retry_unrouted(d, now, actions)
            bo = self._backoff
            while bo and bo[0][0] <= now:
                _, nb = heapq.heappop(bo)
                if nb in self._links:
                    self._pump(nb, now, actions)
            if now >= self._next_purge:
                self.store.purge_delivered(now)
                self._next_purge = now + self.config.purge_interval_ms
        self._finish(actions)
        return actions

    def next_deadline(self) -> DtnTime | None:
        """When ``on_tick`` must next be called (None: no timer pending)."""
        heap = self._expiry
        while heap:
            expiry, key = heap[0]
            e = self._entries.get(key)
            if e is not None and e.expiry_ms == expiry:
                break
            heapq.heappop(heap)
        bo = self._backoff
        while bo and bo[0][1] not in self._links:
            heapq.heappop(bo)
        rr = self._reroute
        while rr and self._reroute_at.get(rr[0][1]) != rr[0][0]:
            heapq.heappop(rr)
        cands = []
        if heap:
            cands.append(heap[0][0])
        if bo:
            cands.append(bo[0][0])
        if rr:
            cands.append(rr[0][0])
        return DtnTime(min(cands)) if cands else None

    def recover(self, now: int) -> list[Action]:
        """Rebuild the in-memory queues from the store after a restart.

        Register local endpoints first. Bundles whose lifetime ended are
        expired; bundles awaiting delivery are handed over again (their
        delivery was never confirmed); every other bundle is routed again.
        In-memory state from before (if any) is discarded.
        """
        actions: list[Action] = []
        self._entries.clear()
        self._expiry.clear()
        self._queues.clear()
        self._unrouted.clear()
        self._inflight.clear()
        self._unclaimed.clear()
        self._groups.clear()
        self._variants.clear()
        self._backoff.clear()
        self._reroute.clear()
        self._reroute_at.clear()
        self._reroute_iv.clear()
        for link in self._links.values():
            link.inflight = 0
        with self.store.transaction(durable=False):
            recs = list(self.store.records())
            for rec in recs:
                try:
                    dest_node = self._dest_of(parse_eid(rec.destination))
                except DtnError:
                    dest_node = rec.destination
                self._track(rec, dest_node, None)
            for rec in recs:
                e = self._entries[rec.key]
                if e.expiry_ms <= now:
                    self._expire(e, now, actions)
                elif e.state == BundleState.DELIVERING:
                    self._hand_over(e.key, actions, now)
                elif e.state == BundleState.REASSEMBLY:
                    self._recover_fragment(e, now, actions)
                elif e.destination in self._endpoints:
                    self._make_local(e, now, actions)
                else:
                    if e.state == BundleState.FORWARDING:
                        e.state = BundleState.PENDING
                    self._forward(e, now, actions)
        self._last_schedule = None
        self._finish(actions)
        return actions

    @property
    def stored(self) -> int:
        """How many bundles this agent holds."""
        return len(self._entries)

    def holds(self, bundle_key: str) -> bool:
        """True if bundle ``bundle_key`` is in this agent's store."""
        return bundle_key in self._entries

    # ------------------------------------------------------------ internals

    def _finish(self, actions: list[Action]) -> None:
        # The expiry heap deletes lazily: entries of bundles that left stay
        # until their time comes. Rebuild it when they outnumber the live
        # ones, so memory follows stored bundles, not bundles handled.
        if len(self._expiry) > 2 * len(self._entries) + 1024:
            self._expiry = [(e.expiry_ms, k) for k, e in self._entries.items()]
            heapq.heapify(self._expiry)
        at = self.next_deadline()
        if at is not None and at != self._last_schedule:
            actions.append(Schedule(at))
        self._last_schedule = at

    def _dest_of(self, eid: Eid) -> int | str:
        """Where a bundle for ``eid`` goes: its ipn node, a static route's node
        for a ``dtn:`` node ID that has one, else the node ID itself (held)."""
        if isinstance(eid, IpnEid):
            return eid.node
        nid = eid.node_id
        got = self.dtn_routes.get(nid)
        if got is None and self.plan is not None:
            got = self.plan.dtn_routes.get(nid)
        return nid if got is None else got

    def _is_local_dtn(self, eid: DtnEid) -> bool:
        nid = eid.node_id
        return any(e.startswith(nid) for e in self._endpoints)

    def _no_route(self, e: _Entry, now: int, actions: list[Action]) -> None:
        """Say why ``e`` waits (``no_route`` event; the runtime logs it at info)."""
        d = e.dest_node
        if isinstance(d, str):
            why = f"{e.destination}: no static route from {d} to an ipn node"
        elif self._router is None:
            why = f"no contact plan and no open contact to node {d}"
        else:
            why = f"no route to node {d} in the contact plan arriving before expiry"
        actions.append(Event("no_route", e.key, why))

    def _now_s(self, now: int) -> float:
        return (now - self.plan_epoch) / 1000.0

    def _volume(self, contact: Contact, now: int) -> float:
        rate = contact.rate_bytes_s
        if rate <= 0 or not math.isfinite(rate) or not math.isfinite(contact.end_s):
            return math.inf  # open-ended or unknown rate: no volume bound
        return max(0.0, (contact.end_s - max(contact.start_s, self._now_s(now))) * rate)

    def _originate(
        self,
        *,
        source: Eid,
        destination: Eid,
        payload: bytes,
        lifetime_ms: int,
        now: int,
        flags: BundleFlags,
        report_to: Eid,
    ) -> Bundle:
        seq = self._next_seq(str(source), now)
        return make_bundle(
            source=source,
            destination=destination,
            payload=payload,
            creation_ms=now,
            sequence=seq,
            lifetime_ms=lifetime_ms,
            report_to=report_to,
            flags=flags,
            crc_type=self.config.crc_type,
            hop_limit=self.config.hop_limit,
        )

    def _next_seq(self, source: str, now: int) -> int:
        # Creation sequence: distinct per creation time (RFC 9171 4.2.7);
        # bumped past keys still held, so that a restart within the same
        # millisecond cannot collide with a stored bundle.
        if now != self._last_seq_ms:
            self._last_seq_ms = now
            self._seq = 0
        while True:
            seq = self._seq
            self._seq += 1
            if f"{source}|{now}|{seq}" not in self._entries:
                return seq

    def _receive_one(
        self,
        cla: str,
        neighbor: int | None,
        data: bytes,
        now: int,
        cl_token: int | None,
        actions: list[Action],
    ) -> None:
        ack = (
            Ack(neighbor, cl_token)
            if neighbor is not None and cl_token is not None
            else None
        )
        renumbered = False
        try:
            try:
                bundle = decode_bundle_untrusted(data)
            except DecodeError as exc:
                # ION 4.1.3's fragments number every extension block 0
                # (spec/interop.md): take them, renumbered, rather than
                # lose every fragmented bundle an ION node sends.
                if exc.what != ZERO_BLOCK_NUMBER:
                    raise
                bundle = decode_bundle_untrusted(data, renumber_zero_blocks=True)
                data = encode_bundle(bundle)
                renumbered = True
            prev = bundle.previous_node
            hop = bundle.hop_count
            age = bundle.bundle_age_ms
        except DecodeError as exc:
            self.counters["dropped"] += 1
            actions.append(
                Event(
                    "dropped",
                    "",
                    f"undecodable bundle from {cla} neighbour {neighbor}: {exc}",
                )
            )
            return
        key = bundle.bundle_key
        self.counters["received"] += 1
        # Node numbers are stored as signed 64-bit integers: a larger one
        # (a hostile or foreign sender) is "unknown", never a crash.
        prev_node = neighbor if neighbor is None or neighbor <= MAX_INT64 else None
        if prev_node is None and isinstance(prev, IpnEid) and prev.node <= MAX_INT64:
            prev_node = prev.node
        p = bundle.primary
        # Duplicates: a bundle we hold (the same content), or one delivered
        # here already. A copy with the key of one we hold but other content
        # is kept apart (bounded), never taken for a duplicate: a forger who
        # saw the key must not get the genuine bundle dropped.
        if key in self._entries or (
            bundle.is_fragment and bundle.original_key in self._entries
        ):
            variant = self._variant_key(bundle, key, now, actions)
            if variant is None:
                self._duplicate(key, ack, actions)
                return
            if not variant:
                self.counters["refused"] += 1
                actions.append(
                    Event("refused", key, f"more than {MAX_VARIANTS} copies differ")
                )
                return
            actions.append(Event("variant", variant, "same key, other content"))
            self.counters["variants"] += 1
            key = variant
        dest_node = self._dest_of(p.destination)
        local = dest_node == self.node or str(p.destination) in self._endpoints
        # Delivered keys are whole-bundle keys: original_key == key unless a fragment.
        if local and self.store.is_delivered(bundle.original_key):
            self._duplicate(key, ack, actions)
            return
        actions.append(
            Event(
                "received",
                key,
                f"from {cla} neighbour {prev_node}"
                + (" (extension blocks numbered 0 renumbered)" if renumbered else ""),
            )
        )
        if p.creation.time_ms == 0 and age is None:
            self._delete(
                key,
                bundle,
                "no_age",
                "no creation time and no bundle age block",
                StatusReason.NO_INFO,
                now,
                actions,
                ack=ack,
            )
            return
        expiry = self._expiry_of(bundle, age, now)
        cap = self.config.max_forward_lifetime_ms
        if cap is not None and not local:
            expiry = min(expiry, now + cap)
        if expiry <= now:
            self.counters["expired"] += 1
            actions.append(Event("expired", key, "lifetime over on arrival"))
            self._report_bundle(
                bundle, StatusKind.DELETED, StatusReason.LIFETIME_EXPIRED, now, actions
            )
            if ack is not None:
                actions.append(ack)
            return
        if hop is not None and hop.exceeded:
            self._delete(
                key,
                bundle,
                "hop_limit",
                f"hop limit exceeded ({hop.count} > {hop.limit})",
                StatusReason.HOP_LIMIT_EXCEEDED,
                now,
                actions,
                ack=ack,
            )
            return
        # RFC 9171 5.6 step 3 (4.2.4 flags): blocks we cannot process.
        verdict = apply_unprocessable_blocks(bundle, _KNOWN_BLOCK_TYPES)
        if verdict.report:
            self._report_bundle(
                bundle,
                StatusKind.RECEIVED,
                StatusReason.BLOCK_UNSUPPORTED,
                now,
                actions,
                force=True,
            )
        if verdict.bundle is None:
            self._delete(
                key,
                bundle,
                "unprocessable_block",
                f"unprocessable block(s) {list(verdict.unprocessable)} ask for deletion",
                StatusReason.BLOCK_UNSUPPORTED,
                now,
                actions,
                ack=ack,
            )
            return
        if verdict.discarded:
            bundle = verdict.bundle
            data = encode_bundle(bundle)
        else:
            data = bytes(data)
        try:
            self._accept(
                bundle,
                data,
                key,
                prev_node=prev_node,
                now=now,
                actions=actions,
                expiry=expiry,
                received=True,
            )
        except StoreFull as exc:
            self.counters["refused"] += 1
            actions.append(Event("refused", key, str(exc)))
            return
        self._report_bundle(
            bundle, StatusKind.RECEIVED, StatusReason.NO_INFO, now, actions
        )
        if ack is not None:
            actions.append(ack)

    def _variant_key(
        self, bundle: Bundle, key: str, now: int, actions: list[Action]
    ) -> str | None:
        """For a bundle whose key (or whole bundle's key) we hold: None if it
        is a copy of what we hold; else the key to keep it apart under
        (``""`` when the bound of variants for ``key`` is reached)."""
        digest = content_digest(bundle)
        variant = f"{key}#{digest.hex()}"
        if variant in self._entries:
            return None
        held = self._entries.get(key)
        if held is not None:
            if self._held_digest(held, actions, now) == digest:
                return None
        else:
            whole = self._entries[bundle.original_key]
            data = self._load(whole.key, actions, now)
            if data is None:
                return variant
            try:
                if _fragment_of(bundle, decode_bundle_untrusted(data)):
                    return None
            except DecodeError:
                return variant
        return "" if self._variants.get(key, 0) >= MAX_VARIANTS else variant

    def _held_digest(self, e: _Entry, actions: list[Action], now: int) -> bytes | None:
        if e.digest is None:
            data = self._load(e.key, actions, now)
            if data is None:
                return None
            try:
                e.digest = content_digest(decode_bundle_untrusted(data))
            except DecodeError:
                return None
        return e.digest

    def _duplicate(self, key: str, ack: Ack | None, actions: list[Action]) -> None:
        self.counters["duplicates"] += 1
        actions.append(Event("duplicate", key))
        if ack is not None:
            actions.append(ack)

    def _expiry_of(self, bundle: Bundle, age: int | None, now: int) -> int:
        p = bundle.primary
        if p.creation.time_ms == 0:
            # No clock at the source: the bundle age block says how old it is.
            expiry = now + p.lifetime_ms - (age or 0)
        else:
            expiry = p.creation.time_ms + p.lifetime_ms
        # Lifetimes are u64 on the wire; the store keeps signed 64-bit times
        # (2**63 ms is 292 million years: "never" either way).
        return min(expiry, MAX_INT64)

    def _accept(
        self,
        bundle: Bundle,
        data: bytes,
        key: str,
        *,
        prev_node: int | None,
        now: int,
        actions: list[Action],
        expiry: int | None = None,
        received: bool = False,
    ) -> None:
        """Store ``bundle`` (raises StoreFull) and route/deliver it.

        ``received``: it came from the network, so a whole bundle for this
        node passes the security policy's check (if any) first.
        """
        p = bundle.primary
        if expiry is None:
            expiry = self._expiry_of(bundle, bundle.bundle_age_ms, now)
        dest_node = self._dest_of(p.destination)
        destination = str(p.destination)
        local = dest_node == self.node or destination in self._endpoints
        group: str | None = None
        if local:
            state = (
                BundleState.REASSEMBLY if bundle.is_fragment else BundleState.DELIVERING
            )
            if bundle.is_fragment:
                group = bundle.original_key
        else:
            state = BundleState.PENDING
        if local and bundle.is_admin_record and destination not in self._endpoints:
            # Status reports for an endpoint nobody registered: log, do not hold.
            self.counters["status_reports"] += 1
            actions.append(
                Event("admin_record", key, f"for unregistered {destination}")
            )
            return
        digest = None
        if received and state == BundleState.DELIVERING and self.security is not None:
            checked = self._security_check(bundle, key, now, actions, len(data))
            if checked is None:
                return
            if checked is not bundle:
                # Stored decrypted: remember what the received copy was.
                digest = content_digest(bundle)
                bundle, data = checked, encode_bundle(checked)
        verify = getattr(self.security, "verify", None)
        if received and state == BundleState.PENDING and verify is not None:
            # RFC 9172 verifier role on the path (RFC 9173 rules): a bundle
            # whose block fails is not forwarded; the blocks stay.
            ok, why = verify(bundle, now)
            if ok is None:
                self._delete(
                    key,
                    bundle,
                    "security",
                    "failed a verifier rule",
                    why or StatusReason.FAILED_SECURITY_OPERATION,
                    now,
                    actions,
                )
                return
        e = self._store_new(
            key,
            data,
            destination=destination,
            dest_node=dest_node,
            expiry_ms=expiry,
            state=state,
            received_ms=now,
            prev_node=prev_node,
            flags=int(p.flags),
            frag_group=group,
        )
        e.digest = digest
        if state == BundleState.DELIVERING:
            self._hand_over(key, actions, now)
        elif state == BundleState.REASSEMBLY:
            p = bundle.primary
            assert p.fragment_offset is not None
            assert p.total_adu_length is not None
            e.frag_range = (p.fragment_offset, len(bundle.payload), p.total_adu_length)
            self._add_fragment(e, now, actions)
        else:
            self._forward(e, now, actions)

    def _store_new(
        self,
        key: str,
        data: bytes,
        *,
        destination: str,
        dest_node: int | str,
        expiry_ms: int,
        state: BundleState,
        received_ms: int,
        prev_node: int | None,
        flags: int,
        frag_group: str | None = None,
        force: bool = False,
    ) -> _Entry:
        """Put a new bundle in the store (raises StoreFull unless ``force``)
        and track it in memory and on the expiry heap."""
        rec = StoredBundle(
            key=key,
            destination=destination,
            expiry_ms=expiry_ms,
            state=state,
            size_bytes=len(data),
            received_ms=received_ms,
            prev_node=prev_node,
            frag_group=frag_group,
        )
        cap = self.config.max_bundles
        if cap is not None and not force and len(self._entries) >= cap:
            raise TooManyBundles(len(self._entries))
        self.store.put(rec, data, force=force)
        return self._track(rec, dest_node, flags)

    def _track(
        self, rec: StoredBundle, dest_node: int | str, flags: int | None
    ) -> _Entry:
        """The in-memory entry of stored bundle ``rec``, on the expiry heap."""
        e = _Entry(
            key=rec.key,
            destination=rec.destination,
            dest_node=dest_node,
            expiry_ms=rec.expiry_ms,
            size=rec.size_bytes,
            received_ms=rec.received_ms,
            prev_node=rec.prev_node,
            state=rec.state,
            frag_group=rec.frag_group,
            flags=flags,
        )
        self._entries[rec.key] = e
        heapq.heappush(self._expiry, (rec.expiry_ms, rec.key))
        base = _variant_base(rec.key)
        if base is not None:
            self._variants[base] = self._variants.get(base, 0) + 1
        return e

    # -- delivery and reassembly

    def _security_check(
        self,
        bundle: Bundle,
        key: str,
        now: int,
        actions: list[Action],
        room_for: int | None,
    ) -> Bundle | None:
        """The plaintext bundle if the security policy accepts ``bundle``,
        else None (deleted with the policy's reason, RFC 9172 5.1.2).

        Room in the store for ``room_for`` bytes is checked first (raises
        StoreFull): the policy records an accepted bundle against replay, so
        one it accepted and we then refused could never be accepted again
        when its sender retries.
        """
        assert self.security is not None
        store = self.store
        if room_for is not None and store.used_bytes + room_for > store.limit_bytes:
            raise StoreFull(
                needed_bytes=room_for,
                used_bytes=store.used_bytes,
                limit_bytes=store.limit_bytes,
            )
        plain, reason = self.security.check(bundle, now)
        if plain is None:
            why = StatusReason(reason) if reason is not None else StatusReason.NO_INFO
            self._delete(
                key,
                bundle,
                "security",
                f"refused by the security policy ({why.name.lower()})",
                why,
                now,
                actions,
            )
            return None
        return plain

    def _hand_over(self, key: str, actions: list[Action], now: int | None) -> None:
        e = self._entries.get(key)
        if e is None:
            return
        if now is not None and e.expiry_ms <= now:
            # Never deliver after the lifetime (the tick may be late).
            self._expire(e, now, actions)
            return
        if e.destination not in self._endpoints:
            self._unclaimed.setdefault(e.destination, {})[key] = None
            return
        data = self._load(key, actions, now)
        if data is None:
            return
        try:
            b = decode_bundle_untrusted(data)
        except DecodeError as exc:
            self._corrupt(e, exc, actions)
            return
        e.handed = True
        e.state = BundleState.DELIVERING
        c = b.primary.creation
        actions.append(
            Deliver(
                endpoint=e.destination,
                source=str(b.primary.source),
                payload=b.payload,
                creation_ms=c.time_ms,
                sequence=c.sequence,
                bundle_key=key,
            )
        )

    def _make_local(self, e: _Entry, now: int | None, actions: list[Action]) -> None:
        """Held bundle ``e`` (not in flight) turns out to be for a local
        endpoint registered since it came: deliver (or reassemble) it
        (``now`` None: ``register`` was not told the time)."""
        if e.unrouted:
            self._unrouted.get(e.dest_node, {}).pop(e.key, None)
            e.unrouted = False
        e.queued_to = None
        self._unbook(e)
        data = self._load(e.key, actions, now)
        if data is None:
            return
        try:
            fragment = decode_bundle_untrusted(data).is_fragment
        except DecodeError as exc:
            self._corrupt(e, exc, actions)
            return
        if fragment:
            e.state = BundleState.REASSEMBLY
            self.store.set_state(e.key, e.state)
            self._recover_fragment(e, e.received_ms if now is None else now, actions)
        else:
            e.state = BundleState.DELIVERING
            self.store.set_state(e.key, e.state)
            self._hand_over(e.key, actions, now)

    def _add_fragment(self, e: _Entry, now: int, actions: list[Action]) -> None:
        assert e.frag_group is not None
        assert e.frag_range is not None
        off, length, total = e.frag_range
        g = self._groups.get(e.frag_group)
        if g is None:
            g = self._groups[e.frag_group] = _Group(total=total)
        old = g.parts.get(e.key)
        g.length_sum += length - (old[1] if old is not None else 0)
        g.parts[e.key] = (off, length)
        if g.length_sum < g.total:
            return  # O(1) per fragment until the pieces could cover the ADU
        # Covered? Sort the (few) parts; fragments overlap legitimately
        # after refragmentation, so check the union.
        reach = 0
        for o, n in sorted(g.parts.values()):
            if o > reach:
                return
            reach = max(reach, o + n)
        if reach < g.total:
            return
        self._reassemble(e.frag_group, g, now, actions)

    def _reassemble(
        self, group: str, g: _Group, now: int, actions: list[Action]
    ) -> None:
        """All fragments of ``group`` are here: replace them by the whole
        bundle (RFC 9171 5.9) and hand it over.

        Where copies of one fragment differ (variants: one forged or
        broken), each choice is tried -- the copy held first, first -- up to
        ``_MAX_COMBINATIONS``; with a security policy the first whole
        bundle it accepts wins. When none reassembles (or passes), nothing
        is deleted: the fragments wait for more copies, or expire."""
        frags: list[tuple[Bundle, _Entry]] = []
        for key in list(g.parts):
            fe = self._entries.get(key)
            data = self._load(key, actions, now)
            if fe is None or data is None:
                return
            try:
                frags.append((decode_bundle_untrusted(data), fe))
            except DecodeError as exc:
                self._corrupt(fe, exc, actions)
                return
        slots: dict[tuple[int, int], list[tuple[Bundle, _Entry]]] = {}
        for b, fe in frags:
            rng = (b.primary.fragment_offset or 0, len(b.payload))
            slots.setdefault(rng, []).append((b, fe))
        for alts in slots.values():
            alts.sort(key=lambda t: _variant_base(t[1].key) is not None)
        whole: Bundle | None = None
        reason = "no combination of fragments"
        for combo in itertools.islice(
            itertools.product(*slots.values()), _MAX_COMBINATIONS
        ):
            try:
                cand = reassemble([b for b, _ in combo])
            except InvalidArgument as exc:
                reason = str(exc)
                continue
            key = cand.bundle_key
            if key in self._entries or self.store.is_delivered(key):
                whole = cand
                break
            if self.security is not None:
                plain, why = self.security.check(cand, now)
                if plain is None:
                    reason = f"refused by the security policy ({why!r})"
                    continue
                cand = plain
            whole = cand
            break
        if whole is None:
            # Fragments that agree on the key but not on their contents (a
            # forged or broken sender): keep waiting, they expire in time.
            actions.append(Event("dropped", group, f"reassembly failed: {reason}"))
            return
        key = whole.bundle_key
        entries = [fe for _, fe in frags]
        del self._groups[group]
        # The copies that lost are of a bundle now whole here: duplicates.
        for fe in entries:
            self._remove(fe)
        if key in self._entries or self.store.is_delivered(key):
            self.counters["duplicates"] += 1
            actions.append(Event("duplicate", key, "reassembled again"))
            return
        data = encode_bundle(whole)
        p = whole.primary
        # force: the whole bundle replaces fragments already accepted.
        self._store_new(
            key,
            data,
            destination=str(p.destination),
            dest_node=self._dest_of(p.destination),
            expiry_ms=max(fe.expiry_ms for fe in entries),
            state=BundleState.DELIVERING,
            received_ms=now,
            prev_node=None,
            flags=int(p.flags),
            force=True,
        )
        self.counters["reassembled"] += 1
        actions.append(Event("reassembled", key, f"from {len(frags)} fragments"))
        self._hand_over(key, actions, now)

    def _recover_fragment(self, e: _Entry, now: int, actions: list[Action]) -> None:
        data = self._load(e.key, actions, now)
        if data is None:
            return
        try:
            b = decode_bundle_untrusted(data)
        except DecodeError as exc:
            self._corrupt(e, exc, actions)
            return
        p = b.primary
        if p.fragment_offset is None or p.total_adu_length is None:
            self._corrupt(e, DecodeError("stored fragment is not a fragment"), actions)
            return
        e.frag_group = b.original_key
        e.frag_range = (p.fragment_offset, len(b.payload), p.total_adu_length)
        self._add_fragment(e, now, actions)

    # -- forwarding

    def _check_plan(self, now: int, actions: list[Action]) -> None:
        plan = self.plan
        if plan is None or plan.version == self._plan_version:
            return
        self._plan_version = plan.version
        # The plan changed: bundles without a route may have one now, and
        # bundles queued for a neighbour not in contact now were routed over
        # contacts the new plan may have dropped (they would wait for it
        # until they expire). Plan changes are rare: O(bundles held) is fine.
        pending = [k for keys in self._unrouted.values() for k in keys]
        self._unrouted.clear()
        for key in pending:
            e = self._entries.get(key)
            if e is not None and e.unrouted:
                e.unrouted = False
                if isinstance(e.dest_node, str):
                    # the plan may have brought a static route for its dtn: node
                    e.dest_node = self._dest_of(parse_eid(e.destination))
                self._forward(e, now, actions)
        for nb in [n for n in self._queues if n not in self._links]:
            for key in self._queues.pop(nb):
                e = self._entries.get(key)
                if e is not None and e.queued_to == nb and e.tx_id is None:
                    e.queued_to = None
                    self._forward(e, now, actions)

    def _retry_unrouted(self, d: int, now: int, actions: list[Action]) -> None:
        """Route the bundles waiting for destination ``d`` again; those still
        without a route wait twice as long for the next try."""
        del self._reroute_at[d]
        iv = self._reroute_iv.get(d, self.config.reroute_interval_ms)
        self._reroute_iv[d] = min(2 * iv, self.config.max_reroute_interval_ms)
        for key in list(self._unrouted.pop(d, {})):
            e = self._entries.get(key)
            if e is not None and e.unrouted:
                e.unrouted = False
                self._forward(e, now, actions)
        if d not in self._unrouted:
            self._reroute_iv.pop(d, None)  # all routed: start afresh next time

    def _unbook(self, e: _Entry) -> None:
        # A bundle routed but not sent over its contact gives the volume back.
        booked = e.booked
        if booked is not None:
            e.booked = None
            # A contact the plan has since dropped has no volume to give back.
            with suppress(InvalidArgument):
                self._router.release(booked, e.size)

    def _forward(self, e: _Entry, now: int, actions: list[Action]) -> None:
        """Pick a next hop for ``e`` and queue it there, or hold it unrouted."""
        self._unbook(e)
        d = e.dest_node
        nb: int | None = None
        if isinstance(d, int):
            if d in self._links:
                nb = d  # a contact with the destination itself is open
            elif self._router is not None:
                nb = self._route(e, d, now)
        if nb is None:
            e.unrouted = True
            e.queued_to = None
            self._unrouted.setdefault(d, {})[e.key] = None
            self._no_route(e, now, actions)
            if (
                self._router is not None
                and isinstance(d, int)
                and d not in self._reroute_at
            ):
                at = now + self._reroute_iv.get(d, self.config.reroute_interval_ms)
                self._reroute_at[d] = at
                heapq.heappush(self._reroute, (at, d))
            return
        e.unrouted = False
        e.queued_to = nb
        self._queues.setdefault(nb, deque()).append(e.key)
        if nb in self._links:
            self._pump(nb, now, actions)

    def _route(self, e: _Entry, dst: int, now: int) -> int | None:
        """CGR next hop for ``e`` (None: no route that arrives in time).

        The router's route cache is keyed by size and deadline, so both are
        made coarse: the size is rounded up to whole KiB (a route that fits
        the larger size fits the bundle), and the deadline is checked here
        on the earliest-arrival route (if it arrives too late, every route
        does). Bundles to one destination then share cached routes.
        """
        excluded = () if e.prev_node is None or e.prev_node == dst else (e.prev_node,)
        size = -(-e.size // _ROUTE_SIZE_QUANTUM) * _ROUTE_SIZE_QUANTUM
        route = self._router.best_route(
            self.node, dst, self._now_s(now), size, excluded=excluded
        )
        if route is None or route.arrival_s > self._now_s(e.expiry_ms):
            return None
        if route.contacts:
            e.booked = route.contacts[0]
            self._router.consume(e.booked, e.size)
        return int(route.next_hop)

    def _pump(self, nb: int, now: int, actions: list[Action]) -> None:
        """Transmit what is queued for open neighbour ``nb``, within the
        window and the contact's remaining volume."""
        link = self._links.get(nb)
        q = self._queues.get(nb)
        if link is None or not q or now < link.backoff_until:
            return
        skipped: list[str] = []
        window = self.config.window
        while q and link.inflight < window:
            key = q.popleft()
            e = self._entries.get(key)
            if e is None or e.queued_to != nb or e.tx_id is not None:
                continue
            if e.expiry_ms <= now:
                # Lifetime over, its tick not run yet (contact events come
                # first at one instant): expire it, never forward it.
                self._expire(e, now, actions)
                continue
            wire = self._prepare(e, link, now, actions)
            if wire is _REQUEUED:
                continue  # fragmented: the fragments are at the queue's front
            if wire is None:
                if key in self._entries and e.queued_to == nb:
                    skipped.append(key)  # does not fit this contact: keep it queued
                    if len(skipped) >= window:
                        # The contact is (nearly) full: looking further down
                        # a long queue for a bundle small enough would cost
                        # a decode per queued bundle on every call.
                        break
                continue
            assert isinstance(wire, bytes)
            tx = self._next_tx
            self._next_tx += 1
            e.tx_id = tx
            if e.booked is not None and e.booked != link.contact:
                # Booked on a later contact, going on this one: the booking
                # moves here (a driver's open-ended link is not in the plan).
                self._unbook(e)
                with suppress(InvalidArgument):
                    self._router.consume(link.contact, e.size)
            e.booked = None  # the volume is used now, not just planned
            e.state = BundleState.FORWARDING
            self._inflight[tx] = (key, nb, len(wire), link)
            link.inflight += 1
            link.remaining_bytes -= len(wire)
            self.counters["transmits"] += 1
            actions.append(Transmit(nb, wire, tx))
        if skipped:
            q.extendleft(reversed(skipped))

    def _prepare(
        self, e: _Entry, link: _Link, now: int, actions: list[Action]
    ) -> bytes | object | None:
        """The bytes to send for ``e`` (blocks updated); ``_REQUEUED`` if it
        was fragmented to fit (its fragments now head the queue); None if it
        cannot go now (too big for what is left of the contact) or was
        deleted (hop limit, unreadable)."""
        data = self._load(e.key, actions, now)
        if data is None:
            self._entries.pop(e.key, None)
            return None
        try:
            b = decode_bundle_untrusted(data)
            # RFC 9171 5.4: previous node = us, bundle age + time held here,
            # hop count + 1.
            out = update_for_forwarding(
                b, node=self.eid, dwell_ms=max(0, now - e.received_ms)
            )
        except DecodeError as exc:
            self._corrupt(e, exc, actions)
            return None
        hop = out.hop_count
        if hop is not None and hop.exceeded:
            self._delete(
                e.key,
                b,
                "hop_limit",
                f"hop limit {hop.limit} reached",
                StatusReason.HOP_LIMIT_EXCEEDED,
                now,
                actions,
                entry=e,
            )
            return None
        wire = encode_bundle(out)
        limit = link.remaining_bytes
        mtu = self.config.mtu_by_neighbour.get(
            link.contact.to, self.config.max_bundle_bytes
        )
        if mtu is not None:
            limit = min(limit, mtu)
        if len(wire) <= limit:
            return wire
        # An anonymous bundle (null source) has no unique id, so its fragments
        # could never be told apart and reassembled (RFC 9171 5.8): never split it.
        if (
            b.primary.flags & BundleFlags.MUST_NOT_FRAGMENT
            or b.is_admin_record
            or is_null_eid(b.primary.source)
        ):
            if len(wire) <= link.remaining_bytes:
                return (
                    wire  # over the MTU but must not be fragmented: the CLA must cope
                )
            return None
        # A fragment's primary block is up to ~20 bytes longer (offset and
        # total ADU length): keep a margin so that the first one really fits.
        overhead = len(wire) - len(b.payload) + _FRAGMENT_MARGIN
        first = int(limit) - overhead
        per = len(b.payload) if mtu is None else mtu - overhead
        # Pieces smaller than this are not worth their headers.
        smallest = min(_MIN_FRAGMENT_PAYLOAD, len(b.payload) - 1)
        if smallest < 1 or per < smallest:
            # Cannot usefully fragment for this MTU: as for MUST_NOT_FRAGMENT.
            return wire if len(wire) <= link.remaining_bytes else None
        if first < smallest:
            return None  # too little volume left: wait for the next contact
        if self._fragment(e, b, first, per, actions):
            return _REQUEUED
        return None

    def _fragment(
        self, e: _Entry, b: Bundle, first: int, per: int, actions: list[Action]
    ) -> bool:
        """Replace queued bundle ``e`` by fragments (RFC 9171 5.8): the first
        carries ``first`` payload bytes, the others at most ``per``. They
        take its place at the front of its queue. False if nothing to split."""
        n = len(b.payload)
        sizes = [min(first, n)]
        pos = sizes[0]
        while pos < n:
            step = min(per, n - pos)
            sizes.append(step)
            pos += step
        if len(sizes) < 2:
            return False
        nb = e.queued_to
        self._remove(e)
        new_keys: list[str] = []
        for fb in fragment_bundle(b, sizes):
            data = encode_bundle(fb)
            key = fb.bundle_key
            if key in self._entries:
                continue  # an identical fragment is already held
            # force: the fragments replace a bundle already accepted, and
            # refusing them now would lose it.
            fe = self._store_new(
                key,
                data,
                destination=e.destination,
                dest_node=e.dest_node,
                expiry_ms=e.expiry_ms,
                state=BundleState.PENDING,
                received_ms=e.received_ms,
                prev_node=e.prev_node,
                flags=int(fb.primary.flags),
                force=True,
            )
            fe.queued_to = nb
            new_keys.append(key)
        self.counters["fragmented"] += 1
        actions.append(Event("fragmented", e.key, f"into {len(sizes)} fragments"))
        if nb is not None:
            self._queues.setdefault(nb, deque()).extendleft(reversed(new_keys))
        return True

    # -- removal, deletion, expiry

    def _remove(self, e: _Entry) -> None:
        """Drop ``e`` from the store and memory (queues/heap skip it lazily)."""
        self._unbook(e)
        self.store.delete(e.key)
        if self._entries.pop(e.key, None) is not None:
            base = _variant_base(e.key)
            if base is not None:
                n = self._variants.get(base, 0) - 1
                if n > 0:
                    self._variants[base] = n
                else:
                    self._variants.pop(base, None)
        if e.unrouted:
            keys = self._unrouted.get(e.dest_node)
            if keys is not None:
                keys.pop(e.key, None)
        if e.frag_group is not None:
            g = self._groups.get(e.frag_group)
            if g is not None:
                part = g.parts.pop(e.key, None)
                if part is not None:
                    g.length_sum -= part[1]
                if not g.parts:
                    del self._groups[e.frag_group]
        waiting = self._unclaimed.get(e.destination)
        if waiting is not None:
            waiting.pop(e.key, None)

    def _expire(self, e: _Entry, now: int, actions: list[Action]) -> None:
        self._report_entry(
            e, StatusKind.DELETED, StatusReason.LIFETIME_EXPIRED, now, actions
        )
        self._remove(e)
        self.counters["expired"] += 1
        actions.append(Event("expired", e.key, f"lifetime ended at {e.expiry_ms}"))

    def _delete(
        self,
        key: str,
        bundle: Bundle,
        cause: DeletionCause,
        why: str,
        reason: StatusReason,
        now: int,
        actions: list[Action],
        entry: _Entry | None = None,
        ack: Ack | None = None,
    ) -> None:
        """Delete ``bundle`` (and stored ``entry``) by rule ``cause`` (``why``
        in words), report it with ``reason``, then pass on ``ack``."""
        if entry is not None:
            self._remove(entry)
        self.counters["deleted"] += 1
        actions.append(Deletion("deleted", key, why, cause=cause))
        self._report_bundle(bundle, StatusKind.DELETED, reason, now, actions)
        if ack is not None:
            actions.append(ack)

    def _load(self, key: str, actions: list[Action], now: int | None) -> bytes | None:
        """The stored bytes of ``key``; None when not stored or damaged in the
        store since its commit (then counted, reported and removed: a
        damaged bundle is never delivered nor forwarded)."""
        try:
            return self.store.get(key)
        except StoreCorrupt as exc:
            self._store_corrupt(key, str(exc), actions, now)
            return None

    def _store_corrupt(
        self, key: str, detail: str, actions: list[Action], now: int | None
    ) -> None:
        self.counters["store_corrupt"] += 1
        actions.append(Event("store_corrupt", key, detail))
        raw = getattr(self.store, "get_unchecked", None)
        try:
            data = raw(key) if raw is not None else None
            b = decode_bundle_untrusted(data) if data is not None else None
        except (DecodeError, StoreError):
            b = None
        e = self._entries.get(key)
        if e is not None:
            self._remove(e)
        else:
            self.store.delete(key)
        if b is not None and now is not None:
            # The primary block still decodes (its CRC held): tell its
            # report-to endpoint the bundle is gone from here.
            self._report_bundle(
                b,
                StatusKind.DELETED,
                StatusReason.DEPLETED_STORAGE,
                now,
                actions,
                force=True,
            )

    def _corrupt(self, e: _Entry, exc: DecodeError, actions: list[Action]) -> None:
        # Only a damaged store file gets here; say so loudly and move on.
        self._remove(e)
        self.counters["dropped"] += 1
        actions.append(Event("dropped", e.key, f"stored copy unreadable: {exc}"))

    # -- status reports (RFC 9171 section 6.1)

    def _report_entry(
        self,
        e: _Entry,
        kind: StatusKind,
        reason: StatusReason,
        now: int,
        actions: list[Action],
    ) -> None:
        """Report ``kind`` about stored bundle ``e`` if it asked (call before removing it)."""
        if e.flags is not None and not e.flags & _KIND_FLAG[kind]:
            return  # the common case: no report wanted, no decode needed
        data = self._load(e.key, actions, now)
        if data is None:
            return
        try:
            b = decode_bundle_untrusted(data)
        except DecodeError:
            return
        e.flags = int(b.primary.flags)
        self._report_bundle(b, kind, reason, now, actions)

    def _report_bundle(
        self,
        bundle: Bundle,
        kind: StatusKind,
        reason: StatusReason,
        now: int,
        actions: list[Action],
        *,
        force: bool = False,
    ) -> None:
        """Send a status report asserting ``kind`` about ``bundle`` to its
        report-to endpoint if its flags ask (or ``force``). Never about an
        administrative record; silently skipped (counted) if the store is full."""
        p = bundle.primary
        if not force and not p.flags & _KIND_FLAG[kind]:
            return
        if bundle.is_admin_record or p.report_to == DTN_NONE:
            return
        seq = self._next_seq(str(self.eid), now)
        report = make_status_report(
            bundle,
            {kind},
            reason=reason,
            now_ms=now,
            source=self.eid,
            sequence=seq,
            lifetime_ms=self.config.status_report_lifetime_ms,
            crc_type=self.config.crc_type,
        )
        if report is None:
            return
        key = report.bundle_key
        try:
            self._accept(
                report,
                encode_bundle(report),
                key,
                prev_node=None,
                now=now,
                actions=actions,
            )
        except StoreFull as exc:
            self.counters["refused"] += 1
            actions.append(Event("refused", key, f"status report: {exc}"))
            return
        self.counters["status_reports"] += 1
        actions.append(
            Event(
                "status_report",
                key,
                f"{kind.name.lower()} ({reason.name.lower()}) about {bundle.bundle_key} to {p.report_to}",
            )
        )
