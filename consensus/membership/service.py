"""The membership service (service 16): SWIM + Lifeguard over bundles, aware
of the contact plan, with signed updates and resource advertisements.

Theory of operation
-------------------
Every ``period_ms`` (scaled by Lifeguard's local-health multiplier, LHM) a
node probes one member, taken round-robin from a shuffled list: it sends a
``ping`` and waits for the ``ack``. With the plan on (``plan_aware``) the wait
is the round trip CGR predicts (``earliest_arrival`` there, and back from the
moment of arrival; the plan is taken as symmetric) plus ``probe_timeout_ms``;
a member whose round trip exceeds ``horizon_ms`` is not probed but marked
``unreachable`` (expected silence) and looked at again when the plan gives it
a path (``recheck``). Without the plan (the plain-SWIM baseline) the wait is
``probe_timeout_ms`` alone and every member is probed.

No ack: ``ping-req`` to ``indirect_k`` reachable members, which probe the
target for us and forward its ack (or send a ``nack``, Lifeguard). Still
nothing: the node signs a ``suspect`` claim and starts the suspicion timer:
Lifeguard's ``max(min, max - (max-min)·log(C+1)/log(K+1))`` for C
independent confirmations, ``min = suspicion_mult·max(1, log10 N)·period``,
plus (plan on) the round trip to the subject, so a refutation has time to
come back. At the timer: ``dead`` (signed), unless the plan no longer gives a
path (then ``unreachable``).

A member refutes a claim about itself by raising its incarnation and gossiping
a fresh ``alive``. Updates ride on every message (piggyback), fewest-sent
first, each at most ``lambda_·ceil(log2(N+1))`` times; every
``push_pull_periods`` a node swaps its whole state with one member
(anti-entropy). A node also pings one ``dead`` member every
``reconnect_periods`` (carrying the dead claim, so a live one refutes) and
answers a ping from a member it holds dead with a push: after a partition
heals both sides find out at once (memberlist never re-contacts the dead).

Trust: every ``alive``/``left`` is signed by its subject, every
``suspect``/``dead`` by its accuser, each under an operator-issued
certificate (carried in ``alive``). Forged, older (replayed) and revoked
updates are dropped and counted in :attr:`MembershipService.counters`. A dead
or left entry is kept as a tombstone for ``tombstone_ms``, then forgotten,
but its incarnation floor stays: a stale full-state sync never revives it,
a higher incarnation (a restart) does.

Everything a peer can make us hold is bounded: ``max_members`` entries (and
floors), one queued update per member, ``MAX_RELAYS`` relayed probes, the
message size (``wire.MAX_UPDATES``) and the signature cache.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any

from dcis.consensus.membership.gossip import GossipQueue
from dcis.consensus.membership.table import Effect, Input, step
from dcis.consensus.membership.view import MemberInfo, MemberState, Resources
from dcis.consensus.membership.wire import (
    Kind,
    MemberRow,
    Message,
    Status,
    Update,
    UpdateSpans,
    check_digest_untrusted,
    decode_digest_untrusted,
    decode_message_untrusted,
    digest_record,
    encode_digest,
    encode_message,
    signed_bytes,
    split_digest,
)
from dcis.crypto.certificate import (
    NodeCertificate,
    decode_certificate_untrusted,
    encode_certificate,
)
from dcis.crypto.errors import CryptoError
from dcis.crypto.keys import key_id, verify_signature
from dcis.dtn.errors import DecodeError, InvalidArgument
from dcis.dtn.node.resources import RESOURCE_FIELDS, check_resource_fields
from dcis.dtn.node.service import Inbound, NodeCredentials, Send, ServiceContext

__all__ = [
    "MAX_RELAYS",
    "SERVICE",
    "MembershipConfig",
    "MembershipService",
    "Transition",
    "Verifier",
]

SERVICE = 16
"""The membership service number (``ipn:N.16``)."""
MAX_RELAYS = 64
"""Most indirect probes this node runs for others at once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipConfig:
    """Tunables (all times DTN ms). See spec/membership.md for how the plan
    sets the timeouts at run time."""

    period_ms: int = 1_000
    probe_timeout_ms: int = 500
    indirect_k: int = 3
    probe_rounds: int = 4
    horizon_ms: int = 30_000
    suspicion_mult: float = 4.0
    suspicion_max_mult: float = 6.0
    lambda_: int = 3
    max_piggyback: int = 16
    push_pull_periods: int = 30
    reconnect_periods: int = 1
    tombstone_ms: int = 3_600_000
    max_members: int = 4096
    lhm_max: int = 8
    plan_aware: bool = True
    join_fanout: int = 3
    resources_min_interval_ms: int = 10_000
    sync_max_updates: int = 256
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.period_ms <= 0 or self.probe_timeout_ms <= 0 or self.horizon_ms <= 0:
            raise ValueError("period, probe timeout and horizon must be > 0")
        if self.max_members < 2 or self.lambda_ < 1 or self.max_piggyback < 1:
            raise ValueError("max_members >= 2, lambda_ >= 1, max_piggyback >= 1")


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change at this node, for metrics and tests."""

    at_ms: int
    subject: int
    old: MemberState | None
    new: MemberState | None


class Verifier:
    """Ed25519 checks with a bounded memo of what already verified.

    Verification is a pure function of (key, message, signature), so one
    Verifier may be shared by every node of a simulation.
    """

    def __init__(self, max_entries: int = 65_536) -> None:
        self._ok: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
        self._max = max_entries
        self.decoded: dict[object, Update] = {}
        """Decoded updates by their CBOR fields (see ``decode_message_untrusted``)."""
        self.encoded: dict[Update, bytes] = {}
        """Encoded updates (see ``encode_message``)."""
        self.bodies: dict[bytes, Any] = {}
        """Decoded message bodies by their bytes (see ``decode_message_untrusted``)."""
        self.spans = UpdateSpans()
        """Encodings of decoded updates (see ``decode_message_untrusted``)."""
        self._certs: dict[bytes, tuple[NodeCertificate, bytes] | None] = {}
        self._updates: dict[tuple[bytes, Update], None] = {}

    def certificate(self, raw: bytes) -> tuple[NodeCertificate, bytes] | None:
        """``raw`` decoded, with the bytes its issuer signed; None when it
        does not decode. Memoised (bounded): a pure function of ``raw``, and
        every node meets every other node's certificate, so a simulation of
        N nodes decoded N^2 certificates without."""
        if raw in self._certs:
            return self._certs[raw]
        try:
            cert = decode_certificate_untrusted(raw)
        except CryptoError:
            got = None
        else:
            got = (cert, cert.signed_bytes())
        if len(self._certs) >= self._max:
            self._certs.pop(next(iter(self._certs)))
        self._certs[raw] = got
        return got

    def verify_update(self, public: bytes, u: Update) -> bool:
        """True when ``u``'s signature is ``public``'s over its signed
        fields. Memoised by the update itself (bounded), so a repeat costs
        a lookup, not an encoding of those fields and a lookup."""
        key = (public, u)
        if key in self._updates:
            return True
        if not self.verify(public, signed_bytes(u), u.signature):
            return False
        if len(self._updates) >= self._max:
            self._updates.pop(next(iter(self._updates)))
        self._updates[key] = None
        return True

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is ``public``'s over ``message``."""
        key = (public, message, signature)
        if key in self._ok:
            self._ok.move_to_end(key)
            return True
        try:
            verify_signature(public, message, signature)
        except CryptoError:
            return False
        self._ok[key] = None
        if len(self._ok) > self._max:
            self._ok.popitem(last=False)
        return True


@dataclass(slots=True)
class _Entry:
    node: int
    state: MemberState
    inc: int
    advert: Update | None = None
    claim: Update | None = None
    last_heard_ms: int = 0
    suspect_start: int = 0
    suspect_deadline: int | None = None
    suspect_rtt: int = 0
    confirmers: Set[int] = frozenset()
    """Accusers of the current suspicion (one shared empty set until one:
    a set per entry was N^2 objects for the garbage collector to walk)."""
    tombstone_until: int | None = None
    recheck_at: int = 0
    key: tuple[int, int] = (0, 0)
    """Precedence of what is held (see :meth:`rekey`)."""
    rec: bytes = b""
    """``key`` as this entry's digest record."""
    seq: int = 0
    """When the entry was made (ascending: the order of ``_entries``)."""

    def __post_init__(self) -> None:
        self.rekey()

    def rekey(self) -> None:
        """Recompute ``key`` and ``rec``: call after ``advert``, ``claim`` or
        ``inc`` changed (digests and every merge read them, N per exchange)."""
        a = self.advert.key if self.advert is not None else (self.inc, 0)
        c = self.claim.key if self.claim is not None else a
        self.key = c if c > a else a
        self.rec = digest_record(self.node, *self.key)

    @property
    def resources(self) -> Resources:
        if self.advert is not None and self.advert.resources is not None:
            return self.advert.resources
        return Resources()


@dataclass(slots=True)
class _Probe:
    seq: int
    target: int
    deadline: int
    indirect: bool = False
    reconnect: bool = False
    relays: set[int] = field(default_factory=set)
    nacks: int = 0
    nacked: set[int] = field(default_factory=set)
    rtt: int = 0
    round: int = 1


_STATUS_INPUT = {
    Status.ALIVE: Input.ALIVE_NEWS,
    Status.SUSPECT: Input.SUSPECT_NEWS,
    Status.DEAD: Input.DEAD_NEWS,
    Status.LEFT: Input.LEFT_NEWS,
}
_FORWARD = Effect.FORWARD.value
_CANCEL_TIMER = Effect.CANCEL_TIMER.value
_UNTOMB = Effect.UNTOMB.value
_ACCUSE = Effect.ACCUSE.value
_START_TIMER = Effect.START_TIMER.value
_SHORTEN_TIMER = Effect.SHORTEN_TIMER.value
_DECLARE_DEAD = Effect.DECLARE_DEAD.value
_TOMBSTONE = Effect.TOMBSTONE.value
_FORGET = Effect.FORGET.value
_LIVE = (MemberState.ALIVE, MemberState.SUSPECT, MemberState.UNREACHABLE)
_GONE = (MemberState.DEAD, MemberState.LEFT)


class MembershipService:
    """Service 16; also the node's :class:`~dcis.consensus.membership.view.MembershipView`.

    Requires ``ctx.credentials`` (refuses to start without: updates are
    signed). ``verifier`` may be shared between nodes of one process.
    """

    service = SERVICE

    def __init__(
        self,
        config: MembershipConfig | None = None,
        *,
        verifier: Verifier | None = None,
        resources: Resources | None = None,
    ) -> None:
        self.config = config or MembershipConfig()
        self.verifier = verifier or Verifier()
        self.counters: Counter[str] = Counter()
        self.transitions: deque[Transition] = deque(maxlen=10_000)
        self._resources = resources or Resources()
        self._ctx: ServiceContext | None = None
        self._cred: NodeCredentials | None = None
        self._op_id = b""  # key_id of the operator's key, from start()
        self._me = 0
        self._inc = 0
        self._advert: Update | None = None
        self._left = False
        self._left_update: Update | None = None
        self._dead: list[int] = []  # members held dead (reconnect picks)
        self._dead_at: dict[int, int] = {}  # member -> index in _dead
        self._entries: dict[int, _Entry] = {}
        self._eseq = 0  # the next entry's ``seq``
        self._suspicion: dict[tuple[int, int], int] = {}  # see _suspicion_ms
        self._limit_for = -1  # _retransmit_limit's member count and value
        self._limit = 0
        # The digest's records, their set and bytes, until a key changes
        # (see _held): most exchanges meet a node whose keys did not.
        self._held_cache: tuple[set[bytes], bytes] | None = None
        self._floor: OrderedDict[int, int] = OrderedDict()
        self._certs: dict[
            int, tuple[bytes, bytes]
        ] = {}  # node -> (cert bytes, sign key)
        self._queue = GossipQueue()
        self._order: list[int] = []
        self._order_pos = 0
        self._seq = 0
        self._probe: _Probe | None = None
        self._reconnect: dict[int, _Probe] = {}
        self._relays: dict[
            int, tuple[int, int, int]
        ] = {}  # my seq -> (origin, seq, deadline)
        self._timers: list[tuple[int, int, str, int]] = []
        self._tseq = 0
        self._next_period = 0
        self._periods = 0
        self._burst_until = 0
        self._lhm = 0
        self._last_push: dict[int, int] = {}
        self._last_readvert = -(1 << 62)
        self._pending_resources = False
        self._started_ms = 0

    # -- Service protocol ------------------------------------------------------

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        """Begin an incarnation: sign our ``alive`` and push it to seeds."""
        cred = ctx.credentials
        if cred is None:
            raise ValueError("membership needs credentials (signed updates)")
        self._ctx, self._cred, self._me = ctx, cred, ctx.node
        self._op_id = key_id(cred.operator_public)
        self._started_ms = now_ms
        self._certs[self._me] = (
            encode_certificate(cred.certificate),
            cred.certificate.sign_public,
        )
        raw = ctx.state.get("inc")
        stored = int.from_bytes(raw, "big") if raw else 0
        self._set_inc(max(stored + 1 if raw else 0, ctx.incarnation))
        self._next_period = now_ms + ctx.rng.randrange(self.config.period_ms)
        return self._join(now_ms)

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        """Handle one membership message; bad bytes are counted and dropped."""
        sender = _node_of(inbound.source)
        if sender is None:
            self.counters["dropped_malformed"] += 1
            return []
        try:
            v = self.verifier
            msg = decode_message_untrusted(
                inbound.payload, memo=v.decoded, bodies=v.bodies, spans=v.spans
            )
        except DecodeError:
            self.counters["dropped_malformed"] += 1
            return []
        self.counters["msgs_received"] += 1
        if msg.kind in (Kind.QUERY, Kind.ANSWER):
            return self._query(inbound.source, sender, msg, now_ms)
        if _service_of(inbound.source) != SERVICE or sender == self._me:
            self.counters["dropped_malformed"] += 1
            return []
        out: list[Send] = []
        for u in msg.updates:
            out += self._absorb(u, now_ms)
        e = self._entries.get(sender)
        if e is not None:
            e.last_heard_ms = now_ms
        out += self._handle(sender, msg, now_ms)
        return out

    def on_send_result(
        self, tag: int, bundle_key: str | None, error: str | None, now_ms: int
    ) -> list[Send]:
        """Nothing to do: a lost probe shows as a missing ack."""
        return []

    def on_contact(self, neighbor: int, up: bool, now_ms: int) -> list[Send]:
        """A contact with ``neighbor`` came up: look at it again now."""
        e = self._entries.get(neighbor)
        if up and e is not None:
            e.recheck_at = now_ms
            if e.state in _GONE and not self._left:
                return self._reconnect_ping(neighbor, now_ms)
        return []

    def on_tick(self, now_ms: int) -> list[Send]:
        """Run the timers that are due and the protocol period."""
        out: list[Send] = []
        while self._timers and self._timers[0][0] <= now_ms:
            _, _, kind, arg = heapq.heappop(self._timers)
            out += self._timer(kind, arg, now_ms)
        if now_ms >= self._next_period and not self._left:
            period = self.config.period_ms * (1 + self._lhm)
            self._next_period = max(self._next_period + period, now_ms + 1)
            out += self._period(now_ms)
        return out

    def next_deadline(self) -> int | None:
        """The next time ``on_tick`` has work."""
        t = self._timers[0][0] if self._timers else None
        if self._left:
            return t
        return self._next_period if t is None else min(t, self._next_period)

    def stop(self) -> None:
        """Nothing to flush: the incarnation is persisted when it changes."""

    # -- MembershipView ----------------------------------------------------------

    def members(self) -> Mapping[int, MemberInfo]:
        """Every member this node knows of (itself included)."""
        out = {
            n: MemberInfo(
                node=n,
                state=e.state,
                incarnation=e.inc,
                last_heard_ms=e.last_heard_ms,
                resources=e.resources,
            )
            for n, e in self._entries.items()
        }
        if self._me:
            out[self._me] = MemberInfo(
                node=self._me,
                state=MemberState.LEFT if self._left else MemberState.ALIVE,
                incarnation=self._inc,
                last_heard_ms=0,
                resources=self._resources,
            )
        return out

    def live(self) -> frozenset[int]:
        """Members in state alive, suspect or unreachable (and this node)."""
        s = {n for n, e in self._entries.items() if e.state in _LIVE}
        if self._me and not self._left:
            s.add(self._me)
        return frozenset(s)

    def kx_public(self, node: int) -> bytes | None:
        """The X25519 public key in ``node``'s verified certificate, or None
        when none has been verified yet (services that seal data to members
        read it: the object store wraps object keys with it)."""
        known = self._certs.get(node)
        if known is None:
            return None
        try:
            return decode_certificate_untrusted(known[0]).kx_public
        except CryptoError:
            return None

    def state_of(self, node: int) -> MemberState | None:
        """``node``'s state here, None if unknown."""
        if node == self._me and self._me:
            return MemberState.LEFT if self._left else MemberState.ALIVE
        e = self._entries.get(node)
        return None if e is None else e.state

    def forgotten(self, node: int) -> bool:
        """Whether ``node`` was dead or left here and its tombstone expired."""
        return node not in self._entries and node in self._floor

    @property
    def incarnation(self) -> int:
        """This node's own incarnation number."""
        return self._inc

    @property
    def local_health(self) -> int:
        """Lifeguard's local-health multiplier (0 = healthy)."""
        return self._lhm

    # -- embedding program ---------------------------------------------------------

    def set_resources(self, resources: Resources, now_ms: int) -> list[Send]:
        """Advertise new resources (a new incarnation), at most once per
        ``resources_min_interval_ms``; a later change waits for its turn.
        Raises :class:`~dcis.dtn.errors.InvalidArgument` for a value out of
        range (see :func:`dcis.dtn.node.resources.check_resource_fields`)
        or more store free than total."""
        check_resource_fields(_resource_fields(resources))
        if resources.store_free_bytes > resources.store_total_bytes:
            raise InvalidArgument(
                f"store_free_bytes ({resources.store_free_bytes}) exceeds "
                f"store_total_bytes ({resources.store_total_bytes})"
            )
        self._resources = resources
        if self._ctx is None or self._left:
            return []
        wait = self._last_readvert + self.config.resources_min_interval_ms - now_ms
        if wait > 0:
            if not self._pending_resources:
                self._pending_resources = True
                self._timer_at(now_ms + wait, "resources", 0)
            return []
        self._readvertise(now_ms)
        return []

    def advertise_resources(self, fields: Mapping[str, Any], now_ms: int) -> list[Send]:
        """Some resource fields changed (the embedding program's
        ``Node.set_resources`` or the app API): merge them with the current
        advertisement and :meth:`set_resources`. Raises InvalidArgument."""
        merged = _resource_fields(self._resources)
        merged.update(check_resource_fields(fields))
        return self.set_resources(Resources(**merged), now_ms)

    def advertised_resources(self) -> dict[str, Any]:
        """This node's resources as it advertises them (or will, when the
        re-advertisement interval allows)."""
        return _resource_fields(self._resources)

    def seed_roster(self, updates: Sequence[Update], now_ms: int) -> None:
        """Take a provisioned roster (signed ``alive`` updates, verified like
        any other) as known state without gossiping it: a constellation whose
        members are known in advance need not flood its own join."""
        for u in updates:
            if u.subject != self._me and u.status == Status.ALIVE:
                # Quiet: what it would queue is dropped and its transitions
                # cleared below (N^2 absorbs in a simulation of N nodes).
                self._absorb(u, now_ms, quiet=True)
                self._queue.discard(u.subject)
        self.transitions.clear()

    def leave(self, now_ms: int) -> list[Send]:
        """Graceful leave: sign ``left`` and push it to a few members."""
        if self._ctx is None or self._left:
            return []
        self._left = True
        self._held_cache = None
        left = self._sign(self._me, self._inc, Status.LEFT)
        self._left_update = left
        self._enqueue(left)
        out: list[Send] = []
        targets = self._routable(
            [n for n, e in self._entries.items() if e.state in _LIVE], now_ms
        )
        rng = self._ctx.rng
        for t in rng.sample(targets, min(len(targets), self.config.join_fanout)):
            out.append(
                self._send(
                    t,
                    self._push_msg((left,)),
                    now_ms,
                    self.config.horizon_ms,
                )
            )
        return out

    # -- internals: identity -------------------------------------------------------

    def _set_inc(self, inc: int) -> None:
        assert self._ctx is not None
        self._inc = inc
        self._held_cache = None
        self._ctx.state.put("inc", inc.to_bytes(8, "big"))
        self._advert = self._sign(self._me, inc, Status.ALIVE, self._resources)
        self._enqueue(self._advert)

    def _readvertise(self, now_ms: int) -> None:
        self._last_readvert = now_ms
        self._pending_resources = False
        self._set_inc(self._inc + 1)

    def _sign(
        self, subject: int, inc: int, status: Status, res: Resources | None = None
    ) -> Update:
        assert self._cred is not None
        unsigned = Update(
            subject=subject,
            incarnation=inc,
            status=status,
            signer=self._me,
            resources=res if status == Status.ALIVE else None,
            cert=self._certs[self._me][0]
            if status == Status.ALIVE and self._me in self._certs
            else None,
        )
        sig = self._cred.identity.sign(signed_bytes(unsigned))
        return Update(
            subject=unsigned.subject,
            incarnation=unsigned.incarnation,
            status=unsigned.status,
            signer=unsigned.signer,
            resources=unsigned.resources,
            cert=unsigned.cert,
            signature=sig,
        )

    def _refute(self, above: int, now_ms: int) -> None:
        self.counters["refutations"] += 1
        self._lhm = min(self.config.lhm_max, self._lhm + 1)
        self._set_inc(above + 1)

    # -- internals: verification ---------------------------------------------------

    def _signer_key(self, u: Update, now_ms: int) -> bytes | None:
        """The signer's verified public key, learning its certificate from an
        ``alive``; None (and counted) when it cannot be trusted."""
        assert self._cred is not None
        if u.signer in self._cred.revoked or u.subject in self._cred.revoked:
            self.counters["dropped_revoked"] += 1
            return None
        if u.cert is not None:
            known = self._certs.get(u.signer)
            if known is not None and known[0] == u.cert:
                return known[1]
            got = self.verifier.certificate(u.cert)
            if got is None:
                self.counters["dropped_forged"] += 1
                return None
            cert, signed = got
            op = self._cred.operator_public
            # verify_certificate's checks, with the signature through the memo.
            if (
                cert.issuer != self._op_id
                or cert.node != u.signer
                or not cert.valid_at(now_ms)
                or not self.verifier.verify(op, signed, cert.signature)
            ):
                self.counters["dropped_forged"] += 1
                return None
            if (
                len(self._certs) >= 2 * self.config.max_members
                and u.signer not in self._certs
            ):
                self.counters["dropped_full"] += 1
                return None
            self._certs[u.signer] = (u.cert, cert.sign_public)
            return cert.sign_public
        known = self._certs.get(u.signer)
        if known is None:
            self.counters["dropped_unknown_signer"] += 1
            return None
        return known[1]

    def _verified(self, u: Update, now_ms: int) -> bool:
        key = self._signer_key(u, now_ms)
        if key is None:
            return False
        if not self.verifier.verify_update(key, u):
            self.counters["dropped_forged"] += 1
            return False
        return True

    # -- internals: updates --------------------------------------------------------

    def _absorb(self, u: Update, now_ms: int, *, quiet: bool = False) -> list[Send]:
        """Take ``u`` if it verifies and is news. ``quiet``: a new member is
        neither queued nor recorded as a transition (``seed_roster``)."""
        e = self._entries.get(u.subject)
        if e is not None and (u is e.advert or u is e.claim):
            # The decode memo hands back the very object we hold: a repeat.
            self.counters["duplicates"] += 1
            return []
        if u.subject == self._me:
            return self._about_me(u, now_ms)
        floor = self._floor.get(u.subject)
        if e is None and floor is not None and u.incarnation <= floor:
            self.counters["dropped_stale"] += 1
            return []
        if e is not None:
            if u.key < e.key:
                self.counters["dropped_stale"] += 1
                return []
            if u.key == e.key:
                if (
                    u.status == Status.SUSPECT
                    and u.signer not in e.confirmers
                    and len(e.confirmers) < self.config.indirect_k + 2
                    and self._verified(u, now_ms)
                ):
                    e.confirmers = {*e.confirmers, u.signer}
                    self._apply(e, Input.CONFIRM, now_ms, u)
                else:
                    self.counters["duplicates"] += 1
                return []
        if not self._verified(u, now_ms):
            return []
        if e is None:
            if u.status != Status.ALIVE:
                if u.status in (Status.DEAD, Status.LEFT):
                    self._raise_floor(u.subject, u.incarnation)
                else:
                    self.counters["dropped_unknown_subject"] += 1
                return []
            if len(self._entries) >= self.config.max_members:
                self.counters["dropped_full"] += 1
                return []
            self._floor.pop(u.subject, None)
            e = _Entry(
                node=u.subject,
                state=MemberState.ALIVE,
                inc=u.incarnation,
                advert=u,
                seq=self._eseq,
            )
            self._eseq += 1
            e.last_heard_ms = now_ms
            self._entries[u.subject] = e
            self._held_cache = None
            self._order.insert(
                self._ctx_rng().randrange(len(self._order) + 1), u.subject
            )
            if not quiet:
                self.transitions.append(
                    Transition(now_ms, u.subject, None, MemberState.ALIVE)
                )
                self._enqueue(u)
            return []
        if u.status == Status.ALIVE:
            e.advert, e.claim = u, None
            e.confirmers = frozenset()
        else:
            e.claim = u
            if u.status == Status.SUSPECT:
                e.confirmers = {u.signer}
        e.inc = u.incarnation
        self._rekey(e)
        e.last_heard_ms = now_ms
        self._apply(e, _STATUS_INPUT[u.status], now_ms, u)
        return []

    def _about_me(self, u: Update, now_ms: int) -> list[Send]:
        if self._left:
            return []
        if u.key <= (self._inc, 0) or (
            u.status == Status.ALIVE and u.incarnation <= self._inc
        ):
            return []
        if not self._verified(u, now_ms):
            return []
        self._refute(u.incarnation, now_ms)
        return []

    def _apply(
        self, e: _Entry, inp: Input, now_ms: int, cause: Update | None = None
    ) -> None:
        old = e.state
        new, flags = step(old, inp)
        eff = flags.value  # an int: IntFlag's ``&`` is ~1 us a test
        if not eff and new == old:
            return
        e.state = new
        if new != old:
            self.transitions.append(Transition(now_ms, e.node, old, new))
            if new == MemberState.DEAD:
                self._dead_add(e.node)
            elif old == MemberState.DEAD:
                self._dead_remove(e.node)
        if eff & _FORWARD and cause is not None:
            self._enqueue(cause)
        if eff & _CANCEL_TIMER:
            e.suspect_deadline = None
        if eff & _UNTOMB:
            e.tombstone_until = None
            # A member we held gone is back (a restart or a healed partition):
            # swap whole states for log2 N periods, so the rest of both sides
            # is back in that many periods rather than at piggyback speed.
            # It also shows that our own silence was the network's, not
            # ours: local health back to 0, so periods are nominal again.
            self._lhm = 0
            self._next_period = min(self._next_period, now_ms + self.config.period_ms)
            self._burst_until = self._periods + math.ceil(
                math.log2(len(self._entries) + 2)
            )
        if eff & _ACCUSE:
            claim = self._sign(e.node, e.inc, Status.SUSPECT)
            e.claim = claim
            self._rekey(e)
            e.confirmers = {self._me}
            self._enqueue(claim)
        if eff & _START_TIMER:
            e.suspect_start = now_ms
            e.suspect_rtt = 0
            if self.config.plan_aware:
                rtt = self._rtt(e.node, now_ms)
                e.suspect_rtt = self.config.horizon_ms if rtt is None else rtt
            self._arm_suspicion(e, now_ms)
        if eff & _SHORTEN_TIMER and e.suspect_deadline is not None:
            self._arm_suspicion(e, now_ms)
        if eff & _DECLARE_DEAD:
            claim = self._sign(e.node, e.inc, Status.DEAD)
            e.claim = claim
            self._rekey(e)
            self._enqueue(claim)
        if eff & _TOMBSTONE:
            e.suspect_deadline = None
            e.tombstone_until = now_ms + self.config.tombstone_ms
            self._timer_at(e.tombstone_until, "tombstone", e.node)
        if eff & _FORGET:
            self._dead_remove(e.node)
            del self._entries[e.node]
            self._held_cache = None
            self._queue.discard(e.node)
            self._raise_floor(e.node, e.inc)
            if e.node in self._order:
                self._order.remove(e.node)

    def _dead_add(self, node: int) -> None:
        if node not in self._dead_at:
            self._dead_at[node] = len(self._dead)
            self._dead.append(node)

    def _dead_remove(self, node: int) -> None:
        i = self._dead_at.pop(node, None)
        if i is not None:
            last = self._dead.pop()
            if last != node:
                self._dead[i] = last
                self._dead_at[last] = i

    def _rekey(self, e: _Entry) -> None:
        e.rekey()
        self._held_cache = None

    def _raise_floor(self, node: int, inc: int) -> None:
        self._held_cache = None
        self._floor[node] = max(inc, self._floor.get(node, 0))
        self._floor.move_to_end(node)
        while len(self._floor) > self.config.max_members:
            self._floor.popitem(last=False)

    def _suspicion_ms(self, confirmations: int) -> int:
        n = max(2, len(self._entries) + 1)
        key = (n, confirmations)
        got = self._suspicion.get(key)
        if got is None:
            if len(self._suspicion) >= 64:
                self._suspicion.clear()
            got = self._suspicion[key] = self._suspicion_for(n, confirmations)
        return got

    def _suspicion_for(self, n: int, confirmations: int) -> int:
        """Lifeguard's suspicion timeout for ``n`` members (a pure function:
        kept per (n, confirmations), as after a partition every member
        starts and shortens timers about half the others)."""
        lo = (
            self.config.suspicion_mult * max(1.0, math.log10(n)) * self.config.period_ms
        )
        hi = self.config.suspicion_max_mult * lo
        k = self.config.indirect_k
        c = max(0, confirmations - 1)
        t = hi - (hi - lo) * math.log(c + 1) / math.log(k + 1)
        return int(max(lo, t))

    def _arm_suspicion(self, e: _Entry, now_ms: int) -> None:
        deadline = (
            e.suspect_start + self._suspicion_ms(len(e.confirmers)) + e.suspect_rtt
        )
        deadline = max(deadline, now_ms)
        e.suspect_deadline = deadline
        self._timer_at(deadline, "suspect", e.node)

    # -- internals: dissemination --------------------------------------------------

    def _enqueue(self, u: Update) -> None:
        cur = self._queue.get(u.subject)
        if cur is None or u.key >= cur.key:
            self._queue.put(u)

    def _retransmit_limit(self) -> int:
        n = len(self._entries) + 1
        if n != self._limit_for:  # two logarithms per message otherwise
            self._limit_for = n
            self._limit = self.config.lambda_ * max(1, math.ceil(math.log2(n + 1)))
        return self._limit

    def _piggyback(self, extra: Update | None = None) -> tuple[Update, ...]:
        out = self._queue.take(self.config.max_piggyback, self._retransmit_limit())
        if (
            self._advert is not None
            and not self._left
            and all(x is not self._advert for x in out)
        ):
            out.append(self._advert)
        if extra is not None and all(x is not extra for x in out):
            out.append(extra)
        return tuple(out)

    # -- internals: anti-entropy (digests) ---------------------------------------

    def _own_update(self) -> Update | None:
        if self._left:
            if self._left_update is None:
                self._left_update = self._sign(self._me, self._inc, Status.LEFT)
            return self._left_update
        return self._advert

    def _key_of(self, node: int) -> tuple[int, int] | None:
        """What this node holds about ``node``: the precedence key, or None."""
        if node == self._me:
            return (self._inc, 3 if self._left else 0)
        e = self._entries.get(node)
        if e is not None:
            return e.key
        floor = self._floor.get(node)
        return None if floor is None else (floor, 3)

    def _digest(self) -> bytes:
        """Everything this node holds, as (subject, incarnation, rank)
        records: its own entry, every member's key and every tombstone floor
        (so a forgotten member's old claims are not sent back to it)."""
        return self._held()[1]

    def _held(self) -> tuple[set[bytes], bytes]:
        """The digest's records, as a set and joined: kept until a key
        changes (every change to what ``_key_of`` gives, an entry made or
        dropped, sets ``_held_cache`` to None)."""
        if self._held_cache is None:
            recs = self._records()
            self._held_cache = (set(recs), b"".join(recs))
        return self._held_cache

    def _records(self) -> list[bytes]:
        """The digest's records, in its order, from scratch."""
        recs = [digest_record(self._me, *self._key_of(self._me))]  # type: ignore[misc]
        recs += [e.rec for e in self._entries.values()]
        floors = self._floor.items()
        recs += [digest_record(n, f, 3) for n, f in floors if n not in self._entries]
        return recs

    def _push_msg(self, extra: tuple[Update, ...] = ()) -> Message:
        """A ``push``: the piggyback (and ``extra``) plus this node's digest."""
        ups = self._piggyback()
        ups = tuple(u for u in extra if all(u is not x for x in ups)) + ups
        return Message(kind=Kind.PUSH, updates=ups, digest=self._digest())

    def _newer(
        self,
        theirs: Mapping[int, tuple[int, int]],
        *,
        full: bool,
        ents: Iterable[_Entry] | None = None,
    ) -> list[Update]:
        """The updates that beat what ``theirs`` lists (``full``: a subject it
        does not list is unknown to it; else only listed subjects count; a
        listed key (0, 0) means "nothing"), at most ``sync_max_updates``,
        a random subset when there are more. ``ents``: the entries to look
        at, in the entries' order (default: every one)."""
        out: list[list[Update]] = []
        me = self._own_update()
        t = theirs.get(self._me)
        if me is not None and (
            (t is None and full) or (t is not None and (t == (0, 0) or me.key > t))
        ):
            out.append([me])
        if ents is None:
            ents = self._entries.values()
            if not full:
                ents = [e for e in ents if e.node in theirs]
        for e in ents:
            t = theirs.get(e.node)
            if t is None:
                if not full:
                    continue
            elif t != (0, 0) and e.key <= t:
                continue
            ups = []
            if e.advert is not None and (t is None or t == (0, 0) or e.advert.key > t):
                ups.append(e.advert)
            if e.claim is not None:
                ups.append(e.claim)
            if ups:
                out.append(ups)
        cap = self.config.sync_max_updates
        if sum(len(u) for u in out) > cap:
            self._ctx_rng().shuffle(out)
        flat: list[Update] = []
        for ups in out:
            if len(flat) + len(ups) > cap:
                break
            flat += ups
        return flat

    def _answer_push(self, sender: int, msg: Message, now_ms: int) -> list[Send]:
        """A peer's digest: send back what it lacks, and list what we lack
        (our key, or (0, 0) for a subject unknown here) for it to send."""
        try:
            check_digest_untrusted(msg.digest)
        except DecodeError:
            self.counters["dropped_malformed"] += 1
            return []
        chunks = split_digest(msg.digest)
        held = self._held()[0]
        # A record we hold too is at our key: neither side wants it. Only
        # the others are unpacked (most are the same, N per exchange; the
        # set differences are taken in C).
        alike = set(chunks)
        differ = [c for c in chunks if c not in held] if alike - held else []
        cap = self.config.sync_max_updates
        wants: list[tuple[int, int, int]] = []
        # (The loop stops when full: with a cap below 1, after one record.)
        firsts = differ if cap > 0 else [c for c in chunks[:1] if c not in held]
        for s, i, r in decode_digest_untrusted(b"".join(firsts)):
            mine = self._key_of(s)
            if mine is None:
                wants.append((s, 0, 0))
            elif (i, r) > mine:
                wants.append((s, *mine))
            if len(wants) >= cap:
                break
        if self._unique_subjects(chunks, alike, differ):
            # Each subject listed once: what they list and we hold alike is
            # at our key, the rest is in ``differ``.
            theirs = _keys(decode_digest_untrusted(b"".join(differ)))
            me = digest_record(self._me, *self._key_of(self._me))  # type: ignore[misc]
            if me in alike:
                theirs[self._me] = self._key_of(self._me)  # type: ignore[assignment]
            if _ZERO_KEY in msg.digest:
                # A record at key (0, 0) lists "nothing": not held alike.
                alike.difference_update([c for c in chunks if c.endswith(_ZERO_KEY)])
            ups = self._newer(theirs, full=True, ents=self._entries_not_in(alike))
        else:
            ups = self._newer(_keys(decode_digest_untrusted(msg.digest)), full=True)
        reply = Message(kind=Kind.PULL, updates=tuple(ups), digest=encode_digest(wants))
        return [self._send(sender, reply, now_ms, self.config.horizon_ms)]

    def _unique_subjects(
        self, chunks: list[bytes], alike: Set[bytes], differ: list[bytes]
    ) -> bool:
        """Whether each subject is listed once in ``chunks`` (``alike``: their
        set; ``differ``: those not held here). Records held here name
        distinct subjects, so only a record not held can repeat a subject:
        a few are checked one by one, many all together (in C)."""
        if len(alike) != len(chunks):
            return False
        if len(differ) * 16 > len(chunks):
            return len(set(map(_SUBJECT, chunks))) == len(chunks)
        subjects = [_subject(c) for c in differ]
        if len(set(subjects)) != len(subjects):
            return False
        for s in subjects:
            key = self._key_of(s)
            if key is not None and digest_record(s, *key) in alike:
                return False
        return True

    def _entries_not_in(self, alike: Set[bytes]) -> list[_Entry]:
        """The entries whose record is not in ``alike``, in the entries'
        order: when few, found from the held records not in it (a set
        difference in C), looked up and sorted; else in one pass."""
        recs = self._held()[0] - alike
        if len(recs) * 8 > len(self._entries):
            return [e for e in self._entries.values() if e.rec not in alike]
        ents = self._entries
        found = []
        for r in recs:
            e = ents.get(_subject(r))
            if e is not None and e.rec == r:
                found.append(e)
        found.sort(key=_SEQ)
        return found

    def _answer_pull(self, sender: int, msg: Message, now_ms: int) -> list[Send]:
        """The answer to our push: its updates are absorbed already; send
        what it listed as wanted. A full answer means more differences than
        one exchange carries: push again next period."""
        if len(msg.updates) >= self.config.sync_max_updates:
            self._burst_until = max(self._burst_until, self._periods + 1)
        if not msg.digest:
            return []
        try:
            recs = decode_digest_untrusted(msg.digest)
        except DecodeError:
            self.counters["dropped_malformed"] += 1
            return []
        ups = self._newer(_keys(recs), full=False)
        if not ups:
            return []
        reply = Message(kind=Kind.PULL, updates=tuple(ups))
        return [self._send(sender, reply, now_ms, self.config.horizon_ms)]

    # -- internals: sending --------------------------------------------------------

    def _ctx_rng(self) -> random.Random:
        assert self._ctx is not None
        return self._ctx.rng

    def _send(self, to: int, msg: Message, now_ms: int, lifetime_ms: int) -> Send:
        self.counters["msgs_sent"] += 1
        return Send(
            destination=f"ipn:{to}.{SERVICE}",
            payload=encode_message(msg, memo=self.verifier.encoded),
            lifetime_ms=max(1, lifetime_ms),
        )

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % (1 << 32)
        return self._seq

    def _timer_at(self, at_ms: int, kind: str, arg: int) -> None:
        self._tseq += 1
        heapq.heappush(self._timers, (at_ms, self._tseq, kind, arg))

    def _rtt(self, node: int, now_ms: int) -> int | None:
        """Round trip to ``node`` by the plan (ms), None beyond the horizon."""
        if not self.config.plan_aware:
            return 0
        assert self._ctx is not None
        a1 = self._ctx.earliest_arrival(node, at_ms=now_ms)
        if a1 is None or a1 - now_ms > self.config.horizon_ms:
            return None
        a2 = self._ctx.earliest_arrival(node, at_ms=a1)
        if a2 is None:
            return None
        rtt = (a1 - now_ms) + (a2 - a1)
        return rtt if rtt <= self.config.horizon_ms else None

    def _recheck_after(self, node: int, now_ms: int) -> int:
        assert self._ctx is not None
        a1 = self._ctx.earliest_arrival(node, at_ms=now_ms)
        if a1 is None:
            return now_ms + self.config.horizon_ms
        return max(now_ms + self.config.period_ms, a1 - self.config.horizon_ms // 2)

    def _routable(self, nodes: list[int], now_ms: int) -> list[int]:
        if not self.config.plan_aware:
            return nodes
        return [n for n in nodes if self._rtt(n, now_ms) is not None]

    # -- internals: the protocol period ----------------------------------------

    def _seeds(self) -> tuple[int, ...]:
        assert self._ctx is not None
        if self.config.seeds is not None:
            return self.config.seeds
        return tuple(sorted(self._ctx.plan.nodes))

    def _join(self, now_ms: int) -> list[Send]:
        assert self._ctx is not None
        cands = [s for s in self._seeds() if s != self._me]
        if not cands:
            return []
        reach = self._routable(cands, now_ms) or cands
        picks = self._ctx.rng.sample(reach, min(len(reach), self.config.join_fanout))
        msg = self._push_msg()
        return [self._send(p, msg, now_ms, self.config.horizon_ms) for p in picks]

    def _period(self, now_ms: int) -> list[Send]:
        assert self._ctx is not None
        self._periods += 1
        out: list[Send] = []
        if self._probe is None:
            out += self._start_probe(now_ms)
        if self._periods % self.config.reconnect_periods == 0:
            # One member held dead, at random (a few draws: O(1) at any N).
            for _ in range(min(4, len(self._dead))):
                n = self._dead[self._ctx.rng.randrange(len(self._dead))]
                if n not in self._reconnect:
                    out += self._reconnect_ping(n, now_ms)
                    break
        if (
            self._periods % self.config.push_pull_periods == 0
            or self._periods <= self._burst_until
        ):
            live = [n for n, e in self._entries.items() if e.state in _LIVE]
            if not live:
                return out + self._join(now_ms)
            rng = self._ctx.rng
            # Discovery: a seed (by default, a node of the plan) that is no
            # member yet hears from us too, so that two groups that joined
            # through different seeds find each other.
            unknown = [
                n
                for n in self._seeds()
                if n != self._me and n not in self._entries and n not in self._floor
            ]
            for t in rng.sample(unknown, min(len(unknown), 4)):
                if self._rtt(t, now_ms) is not None:
                    msg = self._push_msg()
                    out.append(self._send(t, msg, now_ms, self.config.horizon_ms))
                    break
            for t in rng.sample(live, min(len(live), 8)):
                if self._rtt(t, now_ms) is not None:
                    msg = self._push_msg()
                    out.append(self._send(t, msg, now_ms, self.config.horizon_ms))
                    break
        return out

    def _start_probe(self, now_ms: int) -> list[Send]:
        assert self._ctx is not None
        tries = 0  # route look-ups this period (CGR work is bounded)
        n = len(self._order)
        for _ in range(n):
            if tries >= 8:
                break
            if self._order_pos >= n:
                self._ctx.rng.shuffle(self._order)
                self._order_pos = 0
            target = self._order[self._order_pos]
            self._order_pos += 1
            e = self._entries[target]
            if e.state in _GONE:
                continue
            if e.state == MemberState.UNREACHABLE and e.recheck_at > now_ms:
                continue
            tries += 1
            rtt = self._rtt(target, now_ms)
            if rtt is None:
                e.recheck_at = self._recheck_after(target, now_ms)
                self._apply(e, Input.NO_ROUTE, now_ms)
                continue
            if e.state == MemberState.UNREACHABLE:
                self._apply(e, Input.ROUTE, now_ms)
            return self._ping(e, rtt, 1, now_ms)
        return []

    def _ping(self, e: _Entry, rtt: int, round_: int, now_ms: int) -> list[Send]:
        wait = rtt + self.config.probe_timeout_ms * (1 + self._lhm)
        seq = self._next_seq()
        self._probe = _Probe(
            seq=seq,
            target=e.node,
            deadline=now_ms + wait,
            rtt=rtt,
            round=round_,
        )
        self._timer_at(now_ms + wait, "probe", seq)
        msg = Message(kind=Kind.PING, seq=seq, updates=self._piggyback(e.claim))
        return [self._send(e.node, msg, now_ms, wait)]

    def _reconnect_ping(self, target: int, now_ms: int) -> list[Send]:
        e = self._entries.get(target)
        if e is None or target in self._reconnect:
            return []
        rtt = self._rtt(target, now_ms)
        if rtt is None:
            return []
        wait = rtt + self.config.probe_timeout_ms
        seq = self._next_seq()
        self._reconnect[target] = _Probe(
            seq=seq, target=target, deadline=now_ms + wait, reconnect=True
        )
        self._timer_at(now_ms + wait, "reconnect", target)
        msg = Message(kind=Kind.PING, seq=seq, updates=self._piggyback(e.claim))
        return [self._send(target, msg, now_ms, wait)]

    def _timer(self, kind: str, arg: int, now_ms: int) -> list[Send]:
        if kind == "probe":
            return self._probe_timeout(arg, now_ms)
        if kind == "reconnect":
            p = self._reconnect.get(arg)
            if p is not None and p.deadline <= now_ms:
                del self._reconnect[arg]
            return []
        if kind == "relay":
            r = self._relays.pop(arg, None)
            if r is not None:
                origin, seq, _ = r
                return [
                    self._send(
                        origin,
                        Message(kind=Kind.NACK, seq=seq, updates=self._piggyback()),
                        now_ms,
                        self.config.horizon_ms,
                    )
                ]
            return []
        if kind == "resources":
            if self._pending_resources and not self._left:
                self._readvertise(now_ms)
            return []
        e = self._entries.get(arg)
        if e is None:
            return []
        if (
            kind == "suspect"
            and e.suspect_deadline is not None
            and e.suspect_deadline <= now_ms
        ):
            e.suspect_deadline = None
            if self.config.plan_aware and self._rtt(e.node, now_ms) is None:
                e.recheck_at = self._recheck_after(e.node, now_ms)
                self._apply(e, Input.NO_ROUTE, now_ms)
            else:
                self._apply(e, Input.SUSPECT_TIMEOUT, now_ms)
        elif (
            kind == "tombstone"
            and e.tombstone_until is not None
            and e.tombstone_until <= now_ms
        ):
            self._apply(e, Input.TOMBSTONE_EXPIRED, now_ms)
        return []

    def _probe_timeout(self, seq: int, now_ms: int) -> list[Send]:
        p = self._probe
        if p is None or p.seq != seq or p.deadline > now_ms:
            return []
        e = self._entries.get(p.target)
        if e is None or e.state in _GONE:
            self._probe = None
            return []
        if self.config.plan_aware and self._rtt(p.target, now_ms) is None:
            # The plan closed the path while we waited: expected silence.
            self._probe = None
            e.recheck_at = self._recheck_after(p.target, now_ms)
            self._apply(e, Input.NO_ROUTE, now_ms)
            return []
        if not p.indirect:
            self._lhm = min(self.config.lhm_max, self._lhm + 1)
            return self._indirect(p, now_ms)
        # Lifeguard: a relay that sent no nack may mean we are the slow one.
        if p.relays - p.nacked:
            self._lhm = min(self.config.lhm_max, self._lhm + 1)
        self._probe = None
        if p.round < self.config.probe_rounds:
            # Another whole round (direct, then indirect) before suspecting:
            # over several lossy hops one round fails too easily.
            return self._ping(e, p.rtt, p.round + 1, now_ms)
        self._apply(e, Input.PROBE_FAILED, now_ms)
        return []

    def _indirect(self, p: _Probe, now_ms: int) -> list[Send]:
        assert self._ctx is not None
        rng, k, ents = self._ctx.rng, self.config.indirect_k, self._entries
        # Relays from a random sample: constant work per probe at any N.
        pool = self._order
        if len(pool) > 8 * k + 8:
            pool = rng.sample(pool, 8 * k + 8)
        cands = [
            n for n in pool if n != p.target and ents[n].state == MemberState.ALIVE
        ]
        if len(cands) < k and len(pool) < len(self._order):
            cands = [
                n
                for n, e in ents.items()
                if e.state == MemberState.ALIVE and n != p.target
            ]
        rng.shuffle(cands)
        relays: list[tuple[int, int]] = []
        for c in cands:
            if len(relays) >= self.config.indirect_k:
                break
            rtt = self._rtt(c, now_ms)
            if rtt is not None:
                relays.append((c, rtt))
        p.indirect = True
        p.relays = {r for r, _ in relays}
        far = max((r for _, r in relays), default=0)
        wait = far + p.rtt + 2 * self.config.probe_timeout_ms * (1 + self._lhm)
        p.deadline = now_ms + (wait if relays else 0)
        self._timer_at(p.deadline, "probe", p.seq)
        out = []
        for r, _ in relays:
            msg = Message(
                kind=Kind.PING_REQ,
                seq=p.seq,
                target=p.target,
                updates=self._piggyback(),
            )
            out.append(self._send(r, msg, now_ms, wait))
        return out

    # -- internals: messages -------------------------------------------------------

    def _handle(self, sender: int, msg: Message, now_ms: int) -> list[Send]:
        k = msg.kind
        if k == Kind.PING:
            out = [
                self._send(
                    sender,
                    Message(kind=Kind.ACK, seq=msg.seq, updates=self._piggyback()),
                    now_ms,
                    self.config.horizon_ms,
                )
            ]
            e = self._entries.get(sender)
            if (
                e is not None
                and e.state in _GONE
                and now_ms - self._last_push.get(sender, -(1 << 62))
                >= self.config.period_ms
            ):
                # A member we hold dead talks to us: swap state so that both
                # sides refute (partition heal).
                self._last_push[sender] = now_ms
                if len(self._last_push) > self.config.max_members:
                    self._last_push.pop(next(iter(self._last_push)))
                out.append(
                    self._send(
                        sender,
                        self._push_msg((e.claim,) if e.claim is not None else ()),
                        now_ms,
                        self.config.horizon_ms,
                    )
                )
            return out
        if k == Kind.ACK:
            return self._ack(sender, msg.seq, now_ms)
        if k == Kind.NACK:
            p = self._probe
            if p is not None and p.seq == msg.seq and p.indirect and sender in p.relays:
                p.nacks += 1
                p.nacked.add(sender)
            return []
        if k == Kind.PING_REQ:
            if msg.target in (0, self._me) or len(self._relays) >= MAX_RELAYS:
                self.counters["dropped_relay"] += 1
                return []
            rtt = self._rtt(msg.target, now_ms)
            wait = (rtt or 0) + self.config.probe_timeout_ms
            if rtt is None:
                return [
                    self._send(
                        sender,
                        Message(kind=Kind.NACK, seq=msg.seq),
                        now_ms,
                        self.config.horizon_ms,
                    )
                ]
            seq = self._next_seq()
            self._relays[seq] = (sender, msg.seq, now_ms + wait)
            self._timer_at(now_ms + wait, "relay", seq)
            return [
                self._send(
                    msg.target,
                    Message(kind=Kind.PING, seq=seq, updates=self._piggyback()),
                    now_ms,
                    wait,
                )
            ]
        if k == Kind.PUSH:
            return self._answer_push(sender, msg, now_ms)
        if k == Kind.PULL:
            return self._answer_pull(sender, msg, now_ms)
        return []

    def _ack(self, sender: int, seq: int, now_ms: int) -> list[Send]:
        relay = self._relays.pop(seq, None)
        if relay is not None:
            origin, oseq, _ = relay
            return [
                self._send(
                    origin,
                    Message(kind=Kind.ACK, seq=oseq, updates=self._piggyback()),
                    now_ms,
                    self.config.horizon_ms,
                )
            ]
        p = self._probe
        if p is not None and p.seq == seq:
            if not p.indirect:
                self._lhm = max(0, self._lhm - 1)
            self._probe = None
            e = self._entries.get(p.target)
            if e is not None:
                e.last_heard_ms = now_ms
                self._apply(e, Input.PROBE_OK, now_ms)
            return []
        rp = self._reconnect.get(sender)
        if rp is not None and rp.seq == seq:
            del self._reconnect[sender]
        return []

    def _query(self, source: str, sender: int, msg: Message, now_ms: int) -> list[Send]:
        if msg.kind != Kind.QUERY or sender != self._me:
            self.counters["dropped_query"] += 1
            return []
        rows = tuple(
            MemberRow(
                node=m.node,
                state=str(m.state),
                incarnation=m.incarnation,
                heard_ago_ms=0
                if m.node == self._me
                else (max(0, now_ms - m.last_heard_ms) if m.last_heard_ms else None),
                resources=m.resources,
            )
            for m in sorted(self.members().values(), key=lambda m: m.node)
        )
        self.counters["msgs_sent"] += 1
        answer = Message(kind=Kind.ANSWER, seq=msg.seq, members=rows)
        return [
            Send(destination=source, payload=encode_message(answer), lifetime_ms=60_000)
        ]


_SUBJECT = itemgetter(slice(0, 8))  # a digest record's subject bytes
_SEQ = attrgetter("seq")
_ZERO_KEY = bytes(9)  # a digest record's incarnation and rank at key (0, 0)


def _subject(rec: bytes) -> int:
    """A digest record's subject."""
    return int.from_bytes(rec[:8], "big")


def _keys(recs: list[tuple[int, int, int]]) -> dict[int, tuple[int, int]]:
    """Digest records as subject -> (incarnation, rank), the last one of a
    subject listed twice winning (built in C: N records per exchange)."""
    return dict(zip(map(itemgetter(0), recs), map(itemgetter(1, 2), recs), strict=True))


def _resource_fields(r: Resources) -> dict[str, Any]:
    return {name: getattr(r, name) for name in RESOURCE_FIELDS}


_EIDS: dict[str, tuple[int | None, int | None]] = {}
"""Endpoint ids already parsed, to (node, service): every message's source
is parsed twice, and a node hears from a few hundred peers at most."""
_EIDS_MAX = 4096
_EIDS_KEPT_LEN = 64


def _node_of(eid: str) -> int | None:
    return _eid(eid)[0]


def _service_of(eid: str) -> int | None:
    return _eid(eid)[1]


def _eid(eid: str) -> tuple[int | None, int | None]:
    got = _EIDS.get(eid)
    if got is None:
        got = (_parse_node(eid), _parse_service(eid))
        # Only ids of members' length are kept: a source is a peer's
        # string of any length (parse_eid's own cache draws the same line).
        if len(eid) <= _EIDS_KEPT_LEN:
            if len(_EIDS) >= _EIDS_MAX:
                _EIDS.clear()
            _EIDS[eid] = got
    return got


def _parse_node(eid: str) -> int | None:
    if not eid.startswith("ipn:"):
        return None
    node, _, _svc = eid[4:].partition(".")
    return int(node) if _decimal(node) and 0 < int(node) < (1 << 64) else None


def _parse_service(eid: str) -> int | None:
    if not eid.startswith("ipn:"):
        return None
    _, _, svc = eid[4:].partition(".")
    return int(svc) if _decimal(svc) else None


def _decimal(s: str) -> bool:
    """ASCII digits only (``"²".isdigit()`` is true and ``int("²")`` raises)."""
    return s.isascii() and s.isdigit()
