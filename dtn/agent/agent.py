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
- ``_unclaimed[ep]`` -- for local endpoint ``ep``, not registered yet;
- delivering -- for a local endpoint: ``Deliver`` emitted, until
  ``on_delivered`` confirms;
- reassembly -- a fragment for a local endpoint, until all fragments arrived.

That place is the bundle entry's one :class:`~dcis.dtn.agent.location.Location`,
changed only by moves listed in one table (``location.MOVES``; any other
move raises ``IllegalMove``). The concerns live in their own modules:
``reception``, ``forwarding``, ``delivery``, ``reports``, ``timers`` and
``entries`` (the in-memory record of each stored bundle); ``Agent`` binds
their functions as its private methods.

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

import random
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

from dcis.dtn.agent import (
    delivery,
    entries,
    forwarding,
    held,
    reception,
    reports,
    timers,
)
from dcis.dtn.agent.actions import (
    Action,
    Event,
    EventKind,
    trusted_event,
)
from dcis.dtn.agent.entries import MAX_VARIANTS as MAX_VARIANTS
from dcis.dtn.agent.entries import Entry, FragmentGroup, Link, Pieces
from dcis.dtn.agent.entries import TooManyBundles as TooManyBundles
from dcis.dtn.agent.entries import content_digest as content_digest
from dcis.dtn.agent.location import Location, Step
from dcis.dtn.agent.reports import REPORT_FLAGS
from dcis.dtn.agent.store import (
    BundleState,
    BundleStore,
    StoreFull,
)
from dcis.dtn.bpv7.admin import StatusKind, StatusReason
from dcis.dtn.bpv7.bundle import (
    Bundle,
    encode_bundle_parts,
    originate_bundle,
)
from dcis.dtn.bpv7.eid import DTN_NONE, DtnEid, Eid, IpnEid, parse_eid
from dcis.dtn.bpv7.flags import BundleFlags, CrcType
from dcis.dtn.bpv7.processing import ForwardSplice
from dcis.dtn.errors import DtnError, InvalidArgument
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import check_dtn_routes

if TYPE_CHECKING:
    from dcis.dtn.routing.plan import ContactPlan

__all__ = [
    "Agent",
    "AgentConfig",
    "ConfirmationsInterrupted",
    "Received",
    "SecurityHook",
    "SendsInterrupted",
    "StoreFull",
]


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
    - ``window_bytes``: bytes in flight per neighbour before the agent waits
      (None = only ``window`` counts). A transmission starts while fewer
      bytes than this are in flight, so one bundle larger than it still goes.
      With both, a link can keep many small bundles in flight (hop ACKs
      that wait for the peer's fsync) without as many large ones
      overrunning the peer's receive buffer.
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
    - ``keep_decoded``: the most just-stored bundles kept decoded in memory
      so that delivering or forwarding them reads neither the store nor the
      decoder again (``entries.load_bundle``; at most ``keep_decoded_bytes``
      bytes of them). 0 (the default) keeps none; the daemon keeps
      ``entries.HOT_MAX_BUNDLES``, the simulator's agents
      ``dcis.dtn.sim.engine.SIM_KEEP_DECODED`` each (a thousand agents).
    - ``keep_decoded_bytes``: the most encoded bytes of those bundles
      (``entries.HOT_MAX_BYTES`` by default, as the simulator's agents keep;
      the daemon keeps ``entries.DAEMON_HOT_MAX_BYTES``: at 64 KB a 4 MiB
      cache holds ~64 bundles, fewer than a daemon queues at 48 sends in
      flight, and each one not kept is read back and decoded to forward it).
    - ``reroute_interval_ms`` / ``max_reroute_interval_ms``: with a contact
      plan, bundles without a route to a destination are routed again after
      this long, then after twice as long each time up to the maximum
      (contact volume booked by other bundles may have been given back).
    """

    max_bundle_bytes: int | None = None
    window: int = 64
    window_bytes: int | None = None
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
    keep_decoded: int = 0
    keep_decoded_bytes: int = entries.HOT_MAX_BYTES
    mtu_by_neighbour: dict[int, int | None] = field(default_factory=dict)
    """Per-neighbour MTU overriding ``max_bundle_bytes`` (None: no limit), e.g.
    for a stream CL such as TCPCL that carries a bundle of any size whole."""
    hold_fragments_ms: dict[str, int] = field(default_factory=dict)
    """Per convergence layer name (``on_receive``'s ``cla``): the longest a
    fragment for a local endpoint that the sender wants acknowledged is held
    in memory, unacknowledged, while the rest of its bundle arrives; the
    whole bundle is then stored once and every piece acknowledged with it
    (``dcis.dtn.agent.held``). Must stay well under that CL's ACK timeout.
    Empty (the default): every fragment is stored as it comes. The daemon
    holds UDP fragments."""
    hold_fragments_bytes: int = 8 * 1024 * 1024
    """The most bytes of fragments held that way at once (beyond it, they
    are stored as they come)."""

    def __post_init__(self) -> None:
        if self.max_bundle_bytes is not None and self.max_bundle_bytes < 64:
            raise InvalidArgument(
                f"max_bundle_bytes must be >= 64, got {self.max_bundle_bytes}"
            )
        if self.keep_decoded < 0:
            raise InvalidArgument(f"keep_decoded must be >= 0, got {self.keep_decoded}")
        if any(ms < 0 for ms in self.hold_fragments_ms.values()):
            raise InvalidArgument(
                f"hold_fragments_ms values must be >= 0, got {self.hold_fragments_ms}"
            )
        if self.hold_fragments_bytes < 0:
            raise InvalidArgument(
                f"hold_fragments_bytes must be >= 0, got {self.hold_fragments_bytes}"
            )
        if self.keep_decoded_bytes < 0:
            raise InvalidArgument(
                f"keep_decoded_bytes must be >= 0, got {self.keep_decoded_bytes}"
            )
        if self.window < 1:
            raise InvalidArgument(f"window must be >= 1, got {self.window}")
        if self.window_bytes is not None and self.window_bytes < 1:
            raise InvalidArgument(
                f"window_bytes must be >= 1 or None, got {self.window_bytes}"
            )
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
    data: bytes | memoryview
    """The encoded bundle. A ``memoryview`` (a frame still in the driver's
    read buffer) is read only during the call: the agent keeps none of it
    but what the decoder and the store copy (one copy of the payload each,
    the store's into its segment file)."""
    cl_token: int | None = None


class SendRequest(NamedTuple):
    """One app bundle to originate, for :meth:`Agent.send_many` (the
    arguments of :meth:`Agent.send` that a daemon's app API passes)."""

    source: str
    destination: str
    payload: bytes
    lifetime_ms: int


class SendsInterrupted(Exception):
    """:meth:`Agent.send_many` (or ``NodeCore.send_many``) stopped by a
    failure that is no single request's (its ``__cause__``), after the
    bundles of ``results`` were stored.

    ``results``: the outcomes of the first ``len(results)`` requests, as
    ``send_many`` returns them (a key: stored, and kept -- the call's
    transaction block closed normally); the request after them, if any,
    is the one the failure stopped, and those after it were not
    attempted. ``actions``: those of the stored bundles, to carry out as
    usual (their transmissions among them).
    """

    def __init__(self, results: list[str | Exception], actions: list[Action]) -> None:
        super().__init__(f"stopped after {len(results)} requests")
        self.results = results
        self.actions = actions


class ConfirmationsInterrupted(Exception):
    """:meth:`Agent.on_delivered_many` (or ``NodeCore.on_delivered_many``):
    the confirmation of ``failed`` keys raised (the first one's exception is
    the ``__cause__``); every other key was confirmed, and ``actions`` are
    the call's, to carry out as usual."""

    def __init__(self, failed: int, actions: list[Action]) -> None:
        super().__init__(f"{failed} confirmations failed")
        self.failed = failed
        self.actions = actions


# Flag tests as ints (an IntFlag's & builds a new flag: ~1.5 us each).
_AGENT_SET_FLAGS = int(BundleFlags.IS_FRAGMENT | BundleFlags.ADMIN_RECORD)
_REPORT_BITS = int(REPORT_FLAGS)

# Where a bundle for a local endpoint waits until the application has it.
_FOR_ENDPOINT = frozenset({Location.UNCLAIMED, Location.DELIVERING})

# Members read for every delivery confirmed, bound once (on Python 3.11 a
# member read off its class goes through EnumType's __getattr__ hook: ~4x
# a global's cost; entries.py).
_DELIVERED: Final = StatusKind.DELIVERED
_NO_INFO: Final = StatusReason.NO_INFO
_DELIVERED_EVENT: Final = EventKind.DELIVERED


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
        self._entries: dict[str, Entry] = {}
        self._expiry: list[tuple[int, str]] = []
        self._queues: dict[int, deque[str]] = {}
        self._unrouted: dict[int | str, dict[str, None]] = {}
        # Retries of unrouted bundles per destination: heap of (at, dst), the
        # current retry time and interval of each destination.
        self._reroute: list[tuple[int, int]] = []
        self._reroute_at: dict[int, int] = {}
        self._reroute_iv: dict[int, int] = {}
        self._links: dict[int, Link] = {}
        # tx_id -> (bundle key, neighbour, bytes sent, the link it went on)
        self._inflight: dict[int, tuple[str, int, int, Link]] = {}
        # bundle key -> the pieces of a bundle cut at transmission (in flight)
        self._pieces: dict[str, Pieces] = {}
        # whole bundle key -> its fragments held unacknowledged (held.py)
        self._held: dict[str, held.HeldGroup] = {}
        self._held_bytes = 0
        # (deadline, whole bundle key) of each held group, lazily deleted
        self._held_due: list[tuple[int, str]] = []
        # endpoint -> keys of bundles waiting for it to be registered
        self._unclaimed: dict[str, dict[str, None]] = {}
        self._groups: dict[str, FragmentGroup] = {}
        # base key -> how many variants of it are held (MAX_VARIANTS bound)
        self._variants: dict[str, int] = {}
        # Bundles just stored, decoded (entries.load_bundle): key -> (bundle,
        # encoded size, when stored), oldest first, bounded by
        # AgentConfig.keep_decoded and keep_decoded_bytes.
        # (An OrderedDict: the oldest key of a plain dict emptied at its
        # front is found by scanning deleted slots.)
        self._hot: OrderedDict[
            str, tuple[Bundle, int, int, bytes | None, ForwardSplice | None]
        ] = OrderedDict()
        self._hot_bytes = 0
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
                e = self._entries.get(key)
                # Only bundles for a local endpoint: a key of any other
                # bundle (a driver's mistake) is ignored.
                if e is not None and e.location in _FOR_ENDPOINT:
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
        write_later: bool = False,
        created: tuple[int, int] | None = None,
    ) -> tuple[str, list[Action]]:
        """Originate a bundle from local endpoint ``source`` to ``destination``.

        Returns ``(bundle_key, actions)``; the bundle is durably stored when
        this returns. ``report_to`` defaults to ``source`` when ``flags`` ask
        for status reports, else ``dtn:none``. Raises :class:`StoreFull` when
        the store refuses it, :class:`InvalidArgument` for bad arguments.

        ``write_later``: the caller tells nobody that the bundle is stored
        before the store's next durability point (a group-commit sync: the
        daemon's reply to an app's ``send``), so the store may write its
        payload then, or never if it was forwarded and deleted by then
        (``BundleStore.put``); until that sync a ``kill -9`` may lose it.

        ``created``: ``(creation ms, sequence number)`` of a bundle this
        node originated before, with these arguments, whose store
        transaction rolled back: it is originated again as the same bundle
        (the same key; a retransmission keeps its creation timestamp, RFC
        9171 4.2.7, so receivers that have it see a duplicate), its
        lifetime counted from then. One still held is left as it is.
        """
        actions: list[Action] = []
        with self.store.transaction():
            key = self._send(
                source,
                destination,
                payload,
                lifetime_ms,
                now,
                flags,
                report_to,
                actions,
                write_later,
                created,
            )
        self._finish(actions)
        return key, actions

    def send_many(
        self, requests: Iterable[SendRequest], now: int, *, write_later: bool = False
    ) -> tuple[list[str | Exception], list[Action]]:
        """:meth:`send` for several bundles (no flags, default report-to), in
        one store transaction and with one look at the timers: what a daemon
        does with the sends of one app read (issue 18: the per-call work of
        ``send`` was a few percent of a 1 KB bundle's CPU).

        Returns each request's outcome, in order -- its bundle key, or the
        exception :meth:`send` would have raised for it alone (the others go
        on; a refused one leaves no action) -- and the actions of all.

        A failure that is no single request's (``requests`` itself raising,
        e.g. a malformed request) stops the call: the bundles stored before
        it stay stored (the transaction block closes normally) and
        :class:`SendsInterrupted` carries their outcomes and actions, so
        that the caller answers each request truly (an app told "failed"
        for a stored bundle sends it again: a duplicate).

        ``write_later``: as :meth:`send`'s, for every request.
        """
        actions: list[Action] = []
        results: list[str | Exception] = []
        none = BundleFlags.NONE
        failure: Exception | None = None
        with self.store.transaction():
            try:
                for source, destination, payload, lifetime_ms in requests:
                    mark = len(actions)
                    try:
                        results.append(
                            self._send(
                                source,
                                destination,
                                payload,
                                lifetime_ms,
                                now,
                                none,
                                None,
                                actions,
                                write_later,
                            )
                        )
                    except Exception as exc:  # the request's outcome, as send's
                        del actions[mark:]
                        results.append(exc)
            except Exception as exc:  # the rest are not attempted
                failure = exc
        self._finish(actions)
        if failure is not None:
            raise SendsInterrupted(results, actions) from failure
        return results, actions

    def _send(
        self,
        source: str,
        destination: str,
        payload: bytes,
        lifetime_ms: int,
        now: int,
        flags: BundleFlags,
        report_to: str | None,
        actions: list[Action],
        write_later: bool = False,
        created: tuple[int, int] | None = None,
    ) -> str:
        """:meth:`send`'s work inside the caller's transaction; the bundle
        key (raises as ``send``)."""
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
        if type(flags) is not BundleFlags:
            flags = BundleFlags(flags)
        if int(flags) & _AGENT_SET_FLAGS:
            raise InvalidArgument(
                "IS_FRAGMENT and ADMIN_RECORD are set by the agent, not by send()"
            )
        wants_reports = bool(int(flags) & _REPORT_BITS)
        rpt: Eid = (
            parse_eid(report_to)
            if report_to is not None
            else (src if wants_reports else DTN_NONE)
        )
        bundle = self._originate(
            source=src,
            destination=dst,
            payload=bytes(payload),
            lifetime_ms=lifetime_ms,
            now=now,
            flags=flags,
            report_to=rpt,
            created=created,
        )
        if created is not None and bundle.bundle_key in self._entries:
            return bundle.bundle_key  # held already: the same bundle
        if self.security is not None and self._dest_of(dst) != self.node:
            # End-to-end protection at the source (RFC 9172 5.1.1); the
            # primary block, hence the key, is unchanged.
            bundle = self.security.protect(bundle, now=now)
        key = bundle.bundle_key
        # A large payload is stored after its head with one writev, not
        # joined to it first (one copy of it fewer: spec/performance.md).
        parts = encode_bundle_parts(bundle)
        data: bytes | tuple[bytes, ...] = parts[0] if len(parts) == 1 else parts
        try:
            self._accept(
                bundle,
                data,
                key,
                prev_node=None,
                now=now,
                actions=actions,
                own_encoding=True,
                write_later=write_later,
            )
        except StoreFull as exc:
            self.counters["refused"] += 1
            actions.append(Event("refused", key, str(exc)))
            raise
        self.counters["sent"] += 1
        return key

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
        items = list(batch)
        with self.store.transaction():
            if len(items) > 1:
                # Decoded first, so that the delivered keys among them are
                # looked up in one statement (reception.decode_all), not
                # one per bundle; none is decoded twice.
                decoded, delivered = reception.decode_all(self, items)
                for item, bundle in zip(items, decoded, strict=True):
                    self._receive_one(
                        item.cla,
                        item.neighbor,
                        item.data,
                        now,
                        item.cl_token,
                        actions,
                        bundle,
                        delivered,
                    )
            else:
                for item in items:
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
        old = self._links.get(nb)
        self._links[nb] = Link(
            contact=contact, remaining_bytes=self._volume(contact, now)
        )
        with self.store.transaction(durable=False):
            if old is not None and old.sending is not None:
                # Another contact to nb was open (overlapping contacts) and
                # this one replaces its link, whose end is then ignored:
                # the pieces still to go on it never go, as when it closes.
                forwarding.abort_pieces(self, old.sending, now, actions)
            self._check_plan(now, actions)
            waiting = self._unrouted.pop(nb, None)
            if waiting:
                q = self._queues.setdefault(nb, deque())
                for key in waiting:
                    e = self._entries.get(key)
                    if e is not None and e.location is Location.UNROUTED:
                        e.move(Step.ROUTE, hop=nb)
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
            if link.sending is not None:
                # Pieces of a bundle were still to go: none goes on another
                # contact; the whole bundle goes again.
                forwarding.abort_pieces(self, link.sending, now, actions)
            if q:
                for key in q:
                    e = self._entries.get(key)
                    if e is not None and forwarding.queued_for(e, nb):
                        e.move(Step.RELEASE)
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

    def on_delivered(self, bundle_key: str, now: int) -> list[Action]:
        """The driver handed ``Deliver(bundle_key)`` to the application: the
        bundle is removed and its key remembered so it is never delivered
        again.

        The commit is not forced to disk (no fsync of its own): it survives a
        crash of the process, and the next durable commit (any bundle
        received or sent) makes it durable; only a power loss in between can
        deliver the bundle a second time -- never lose it. An fsync per
        confirmation was a third of a forwarding node's disk waits.

        Raises what the confirmation raised (a :class:`StoreError`, say)."""
        try:
            return self.on_delivered_many((bundle_key,), now)
        except ConfirmationsInterrupted as exc:
            raise exc.__cause__ or exc from None

    def on_delivered_many(self, bundle_keys: Iterable[str], now: int) -> list[Action]:
        """Like :meth:`on_delivered` for several keys in order, in one store
        commit and with one look at the timers (a daemon reads an app's
        confirmations many at a time: one call per key was ~6% of a
        receiving node's CPU).

        A key whose confirmation raises (the store failing) does not undo
        the others': every key is confirmed on its own, the transaction
        block closes normally, and :class:`ConfirmationsInterrupted`
        carries the first failure (its ``__cause__``) and the actions of
        all -- the confirmed keys' reports and events among them. Not a
        rollback of the batch: what a confirmation changed in memory
        (entries gone, counters, report sequence numbers) cannot be undone,
        nor can a :class:`MemoryStore`'s writes, so keeping the done keys'
        effect is the state both agree on. The failed key stays where it
        was (delivered again after a restart, never lost).
        """
        actions: list[Action] = []
        entries = self._entries
        failure: Exception | None = None
        failed = 0
        with self.store.transaction(durable=False):
            for bundle_key in bundle_keys:
                e = entries.get(bundle_key)
                if e is None or e.location is not Location.DELIVERING:
                    continue
                try:
                    self._confirm_delivered(e, now, actions)
                except Exception as exc:  # this key's alone
                    failed += 1
                    if failure is None:
                        failure = exc
        if actions:
            self._finish(actions)
        if failure is not None:
            raise ConfirmationsInterrupted(failed, actions) from failure
        return actions

    def _confirm_delivered(self, e: Entry, now: int, actions: list[Action]) -> None:
        """Confirm ``e`` delivered: reported, its key remembered, removed
        (its row discarded with the batch's others at the commit)."""
        bundle_key = e.key
        self._report_entry(e, _DELIVERED, _NO_INFO, now, actions)
        keep = self.config.max_tombstone_ms
        self.store.mark_delivered(
            bundle_key,
            e.expiry_ms if keep is None else min(e.expiry_ms, now + keep),
        )
        self._remove(e)
        self.counters["delivered"] += 1
        actions.append(trusted_event(_DELIVERED_EVENT, bundle_key, e.destination))
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

    def recover(self, now: int) -> list[Action]:
        """Rebuild the in-memory queues from the store after a restart.

        Register local endpoints first. Bundles whose lifetime ended are
        expired; bundles awaiting delivery are handed over again (their
        delivery was never confirmed); every other bundle is routed again.
        In-memory state from before (if any) is discarded.
        """
        actions: list[Action] = []
        self._entries.clear()
        self._hot.clear()
        self._hot_bytes = 0
        self._expiry.clear()
        self._queues.clear()
        self._unrouted.clear()
        self._inflight.clear()
        self._pieces.clear()
        self._held.clear()  # never acknowledged: the senders still have them
        self._held_bytes = 0
        self._held_due.clear()
        self._unclaimed.clear()
        self._groups.clear()
        self._variants.clear()
        self._backoff.clear()
        self._reroute.clear()
        self._reroute_at.clear()
        self._reroute_iv.clear()
        for link in self._links.values():
            link.inflight = 0
            link.inflight_bytes = 0
            link.sending = None
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
                elif rec.state == BundleState.DELIVERING:
                    self._hand_over(e.key, actions, now)
                elif rec.state == BundleState.REASSEMBLY:
                    self._recover_fragment(e, now, actions)
                elif e.destination in self._endpoints:
                    self._make_local(e, now, actions)
                else:
                    self._forward(e, now, actions)
        self._last_schedule = None
        self._finish(actions)
        return actions

    def forget_unstored(
        self, keys: Iterable[str], why: str
    ) -> tuple[list[Action], set[int]]:
        """The store dropped ``keys`` on its own: bundles put with
        ``write_later`` whose late write failed at a sync (the disk refused
        it: ``why``). None of them was acknowledged to anyone -- the driver
        withholds their hop ACKs and app replies -- so each is refused as
        on a full store: forgotten, with a "refused" event; its sender
        keeps it and sends it again (spec/agent.md, "A late write that
        fails"). Keys this agent does not hold are skipped.

        Returns the actions and the previous hops of the bundles forgotten
        (received ones): the Acks of the pieces a bundle reassembled from
        pieces held in memory was made of name no bundle (``Ack``), so a
        driver withholds every such Ack from those neighbours still waiting
        for the sync."""
        actions: list[Action] = []
        hops: set[int] = set()
        entries = self._entries
        with self.store.transaction(durable=False):
            for key in keys:
                e = entries.get(key)
                if e is None:
                    continue
                if e.prev_node is not None:
                    hops.add(e.prev_node)
                # Its row is gone already: the store.discard this makes
                # runs a DELETE that matches nothing (harmless).
                self._remove(e)
                self.counters["refused"] += 1
                actions.append(
                    Event("refused", key, f"its late write failed at the sync: {why}")
                )
        self._finish(actions)
        return actions, hops

    @property
    def stored(self) -> int:
        """How many bundles this agent holds."""
        return len(self._entries)

    def holds(self, bundle_key: str) -> bool:
        """True if bundle ``bundle_key`` is in this agent's store."""
        return bundle_key in self._entries

    def transmission_key(self, tx_id: int) -> str | None:
        """The key of the bundle ``Transmit(tx_id)`` carries, until its
        outcome is reported (None then, or for an unknown ``tx_id``)."""
        info = self._inflight.get(tx_id)
        return None if info is None else info[0]

    # ------------------------------------------- timers (dtn/agent/timers.py)

    on_tick = timers.on_tick
    next_deadline = timers.next_deadline
    _finish = timers.finish
    _expire = timers.expire

    # --------------------------------- reception (dtn/agent/reception.py)

    _receive_one = reception.receive_one
    _variant_key = reception.variant_key
    _duplicate = reception.duplicate
    _expiry_of = reception.expiry_of
    _accept = reception.accept

    # ------------------------------------- entries (dtn/agent/entries.py)

    _store_new = entries.store_new
    _track = entries.track
    _held_digest = entries.held_digest
    _remove = entries.remove
    _delete = entries.delete
    _load = entries.load
    _load_bundle = entries.load_bundle
    _hot_payload_crc = entries.hot_payload_crc
    _hot_splice = entries.hot_splice
    _store_corrupt = entries.store_corrupt
    _corrupt = entries.corrupt

    # ------------------------ delivery and reassembly (dtn/agent/delivery.py)

    _security_check = delivery.security_check
    _hand_over = delivery.hand_over
    _make_local = delivery.make_local
    _add_fragment = delivery.add_fragment
    _reassemble = delivery.reassemble_group
    _recover_fragment = delivery.recover_fragment
    _hold_fragment = held.hold_fragment

    # ------------------------------- forwarding (dtn/agent/forwarding.py)

    _transmit_done = forwarding.transmit_done
    _no_route = forwarding.no_route
    _now_s = forwarding.now_s
    _volume = forwarding.volume
    _check_plan = forwarding.check_plan
    _retry_unrouted = forwarding.retry_unrouted
    _unbook = forwarding.unbook
    _forward = forwarding.forward
    _route = forwarding.route
    _pump = forwarding.pump
    _prepare = forwarding.prepare
    _fragment = forwarding.fragment

    # -------------------- status reports, RFC 9171 6.1 (dtn/agent/reports.py)

    _report_entry = reports.report_entry
    _report_bundle = reports.report_bundle

    # ------------------------------------------------------------ internals

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
        created: tuple[int, int] | None = None,
    ) -> Bundle:
        if created is None:
            created = (now, self._next_seq(str(source), now))
        elif not all(type(x) is int and x >= 0 for x in created):
            raise InvalidArgument(f"created must be two ints >= 0, got {created!r}")
        elif created[0] == self._last_seq_ms and created[1] >= self._seq:
            self._seq = created[1] + 1  # never given to another bundle
        return originate_bundle(
            source=source,
            destination=destination,
            payload=payload,
            creation_ms=created[0],
            sequence=created[1],
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
