"""UDP convergence layer: datagram framing and per-neighbour link state (sans-I/O).

Wire format (spec/udpcl.md):

- A *data datagram* is the bare BPv7 bundle (RFC 9171 section 4.1: an
  indefinite-length CBOR array, first byte ``0x9F``), exactly what ION's UDP
  CL and draft-sipos-dtn-udpcl send for a bundle that fits one datagram. Such
  a datagram is never acknowledged (best effort).
- A *DCiS segment* is a CBOR data item tagged with :data:`DCIS_TAG`
  (``0xD9 0xDC 0x15`` on the wire, CBOR major type 6). No BPv7 bundle can
  start with that byte, so the two kinds never collide:

  - ``DATA = #6.56341([0, sender_node, token, bundle: bstr])`` -- a bundle
    whose receipt the sender wants acknowledged with ``token``;
  - ``ACK  = #6.56341([1, sender_node, [* token]])`` -- the tokens of DATA
    segments whose bundles the sender of the ACK now holds durably.

  Between nodes that share a link key (derived from their certified X25519
  keys, see :func:`data_mac`), both carry a fifth/fourth element: a 16-byte
  MAC, so that nobody else can forge an ACK (which would delete bundles
  the next hop never got) or inject DATA in a neighbour's name.

Theory of operation
-------------------
:class:`UdpLink` is the per-neighbour state machine: it turns ``transmit``
requests into datagrams, retransmits unacknowledged DATA segments with
exponential backoff, reports each transmission's outcome (:class:`TxDone`)
and the neighbour's reachability (:class:`Reachability`). Tokens are drawn
from the driver's (cryptographic) generator per transmission, so one seen on
the wire says nothing about the next. The ack mode decides (transitions in
:meth:`UdpLink.best_effort` and :meth:`UdpLink.on_heard_bare`):

- ``on`` (default): always DATA segments; silence means unreachable, never legacy;
- ``none`` / ``off``: always bare bundles, best effort (ION, HDTN, µD3TN);
- ``auto``: DATA segments until a bare bundle arrives from the peer before
  any DCiS segment; then bare bundles (logged by the driver as
  :class:`PeerSwitched`); a DCiS segment switches it back. Switching never
  completes a transmission that was waiting for an ACK: those fail, and
  the agent keeps the bundles.

It never reads a clock: every method takes ``now_s`` (any monotonic
seconds) from its driver.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import cbor2

from dcis.crypto.cbor_guard import loads_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dtn.errors import DecodeError, InvalidArgument

DCIS_TAG = 0xDC15
"""CBOR tag number (56341) of DCiS hop-by-hop segments; wire prefix ``D9 DC 15``."""

DCIS_PREFIX = b"\xd9\xdc\x15"
BUNDLE_FIRST_BYTE = 0x9F
"""RFC 9171 section 4.1: a bundle is an indefinite-length CBOR array."""

KIND_DATA = 0
KIND_ACK = 1

MAX_ACK_TOKENS = 512
"""Most tokens one ACK datagram carries (about 5 KB, well under any MTU)."""

MAX_TOKEN = 2**64 - 1

# Worst-case bytes the DATA wrapper adds around a bundle: tag (3) + array head
# (1) + kind (1) + node (9) + token (9) + bstr head (5) + MAC (17).
DATA_OVERHEAD_BYTES = 45

MAC_BYTES = 16
"""Length of a segment MAC (HMAC-SHA-256 truncated, as RFC 2104 section 5 allows)."""

MAX_NODE = 2**63 - 1
"""Largest sender node number accepted: node numbers are kept as signed
64-bit integers (SQLite); a larger one is refused at decode."""

_MAC_LABEL = b"dcis-udpcl-v1"


@dataclass(frozen=True, slots=True)
class BareBundle:
    """A datagram carrying one bundle with no DCiS framing (best effort)."""

    bundle: bytes


@dataclass(frozen=True, slots=True)
class DataSegment:
    """A bundle from node ``sender`` to be acknowledged with ``token``;
    ``mac`` when the sender shares a link key with us."""

    sender: int
    token: int
    bundle: bytes
    mac: bytes | None = None


@dataclass(frozen=True, slots=True)
class AckSegment:
    """Node ``sender`` holds the bundles sent with these ``tokens``."""

    sender: int
    tokens: tuple[int, ...]
    mac: bytes | None = None


Datagram = BareBundle | DataSegment | AckSegment


def _mac(key: bytes, head: bytes, body: bytes) -> bytes:
    return hmac.new(key, _MAC_LABEL + head + body, hashlib.sha256).digest()[:MAC_BYTES]


def data_mac(
    key: bytes, *, sender: int, receiver: int, token: int, bundle: bytes
) -> bytes:
    """MAC of a DATA segment from ``sender`` to ``receiver`` under link key
    ``key``: HMAC-SHA-256 over a label, the kind, both node numbers, the
    token (8 bytes each, big-endian) and the bundle; first 16 bytes."""
    head = bytes([KIND_DATA]) + b"".join(
        v.to_bytes(8, "big") for v in (sender, receiver, token)
    )
    return _mac(key, head, bytes(bundle))


def ack_mac(
    key: bytes, *, sender: int, receiver: int, tokens: tuple[int, ...] | list[int]
) -> bytes:
    """MAC of an ACK segment (as :func:`data_mac`, over the token list)."""
    head = bytes([KIND_ACK]) + sender.to_bytes(8, "big") + receiver.to_bytes(8, "big")
    return _mac(key, head, b"".join(t.to_bytes(8, "big") for t in tokens))


def mac_ok(expected: bytes, got: bytes | None) -> bool:
    """Constant-time comparison of a received MAC (None: absent, fails)."""
    return got is not None and hmac.compare_digest(expected, got)


def encode_data_segment(
    *, sender: int, token: int, bundle: bytes, mac: bytes | None = None
) -> bytes:
    """Encode a DATA segment. Raises :class:`InvalidArgument` for out-of-range integers."""
    if not 0 <= sender <= MAX_TOKEN or not 0 <= token <= MAX_TOKEN:
        raise InvalidArgument(f"sender/token out of range: {sender}/{token}")
    body: list[object] = [KIND_DATA, sender, token, bytes(bundle)]
    if mac is not None:
        body.append(bytes(mac))
    return bytes(cbor2.dumps(cbor2.CBORTag(DCIS_TAG, body)))


def encode_ack_segment(
    *, sender: int, tokens: tuple[int, ...] | list[int], mac: bytes | None = None
) -> bytes:
    """Encode an ACK segment (at most :data:`MAX_ACK_TOKENS` tokens)."""
    if len(tokens) > MAX_ACK_TOKENS:
        raise InvalidArgument(
            f"at most {MAX_ACK_TOKENS} tokens per ACK, got {len(tokens)}"
        )
    if not 0 <= sender <= MAX_TOKEN or any(not 0 <= t <= MAX_TOKEN for t in tokens):
        raise InvalidArgument("sender/token out of range")
    body: list[object] = [KIND_ACK, sender, list(tokens)]
    if mac is not None:
        body.append(bytes(mac))
    return bytes(cbor2.dumps(cbor2.CBORTag(DCIS_TAG, body)))


def _uint(value: object, what: str, limit: int = MAX_TOKEN) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise DecodeError(
            f"{what} must be an unsigned integer <= {limit}", where="udpcl segment"
        )
    return value


def _opt_mac(body: list[object], n: int) -> bytes | None:
    if len(body) == n:
        return None
    mac = body[n]
    if not isinstance(mac, bytes) or len(mac) != MAC_BYTES:
        raise DecodeError(f"MAC must be {MAC_BYTES} bytes", where="udpcl segment")
    return mac


def decode_datagram_untrusted(data: bytes | bytearray | memoryview) -> Datagram:
    """Classify and decode one received datagram.

    A datagram whose first byte is ``0x9F`` is returned as :class:`BareBundle`
    without further checks (the agent decodes the bundle). Raises only
    :class:`DecodeError` (empty, unknown first byte, malformed DCiS segment).
    """
    raw = bytes(data)
    if not raw:
        raise DecodeError("empty datagram", where="udpcl")
    if raw[0] == BUNDLE_FIRST_BYTE:
        return BareBundle(raw)
    if not raw.startswith(DCIS_PREFIX):
        raise DecodeError(
            f"first byte 0x{raw[0]:02x} is neither a bundle nor a DCiS segment",
            where="udpcl",
        )
    try:
        # Guarded: cbor2's C decoder leaks on some malformed items (dcis.crypto.cbor_guard).
        item = loads_untrusted(raw, allowed_tags=(DCIS_TAG,), what="udpcl segment")
    except CborDecodeError as exc:
        raise DecodeError(str(exc), where="udpcl segment") from None
    if not isinstance(item, cbor2.CBORTag) or item.tag != DCIS_TAG:
        raise DecodeError("not a DCiS tagged item", where="udpcl segment")
    body = item.value
    if not isinstance(body, list) or not body:
        raise DecodeError(
            "segment body must be a non-empty array", where="udpcl segment"
        )
    kind = body[0]
    if kind == KIND_DATA and type(kind) is int:
        if len(body) not in (4, 5) or not isinstance(body[3], bytes):
            raise DecodeError(
                "DATA must be [0, node, token, bstr, ?mac]", where="udpcl segment"
            )
        bundle = body[3]
        if not bundle or bundle[0] != BUNDLE_FIRST_BYTE:
            raise DecodeError(
                "DATA does not carry a BPv7 bundle", where="udpcl segment"
            )
        return DataSegment(
            sender=_uint(body[1], "node", MAX_NODE),
            token=_uint(body[2], "token"),
            bundle=bundle,
            mac=_opt_mac(body, 4),
        )
    if kind == KIND_ACK and type(kind) is int:
        if (
            len(body) not in (3, 4)
            or not isinstance(body[2], list)
            or len(body[2]) > MAX_ACK_TOKENS
        ):
            raise DecodeError(
                "ACK must be [1, node, [* token], ?mac]", where="udpcl segment"
            )
        return AckSegment(
            sender=_uint(body[1], "node", MAX_NODE),
            tokens=tuple(_uint(t, "token") for t in body[2]),
            mac=_opt_mac(body, 3),
        )
    raise DecodeError(f"unknown segment kind {kind!r}", where="udpcl segment")


class AckMode(enum.Enum):
    """How a neighbour is treated (node.toml ``ack``)."""

    AUTO = "auto"
    """DCiS segments until the peer sends a bare bundle first (then bare,
    best effort, until it sends a DCiS segment). Not the default: a spoofed
    bare datagram can switch it."""
    ON = "on"
    """Always DCiS segments with acknowledgement; never fall back (default)."""
    OFF = "off"
    """Always bare bundles, best effort."""
    NONE = "none"
    """The peer does not acknowledge (ION, HDTN, µD3TN, the UDPCL draft):
    bare bundles only, never a DCiS segment, best effort."""


class PeerKind(enum.Enum):
    """What we have learned about a neighbour under :attr:`AckMode.AUTO`."""

    UNKNOWN = "unknown"
    DCIS = "dcis"
    LEGACY = "legacy"


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Output: send ``data`` to the neighbour (paced by the driver).

    ``token`` is set for a DATA segment: if the driver cannot send it at once
    (pacing), it calls :meth:`UdpLink.hold` and later :meth:`UdpLink.on_sent`,
    so that time spent in its queue does not count towards the ACK timeout.
    """

    data: bytes
    token: int | None = None


@dataclass(frozen=True, slots=True)
class TxDone:
    """Output: transmission ``tx_id`` finished; ``ok`` means the next hop has it
    (acknowledged), or it left as best effort."""

    tx_id: int
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reachability:
    """Output: the neighbour stopped (``reachable=False``: ``failures``
    transmissions in a row went unacknowledged) or started again
    (an ACK arrived) answering."""

    reachable: bool
    failures: int = 0


@dataclass(frozen=True, slots=True)
class PeerSwitched:
    """Output (``auto`` only): the peer was found to be ``kind``
    (``reason`` says why); the driver logs it."""

    kind: PeerKind
    reason: str


LinkOutput = SendDatagram | TxDone | Reachability | PeerSwitched


@dataclass(slots=True)
class _Pending:
    tx_id: int
    token: int
    datagram: bytes
    bundle: bytes
    deadline_s: float
    tries: int


@dataclass(slots=True)
class LinkCounters:
    """Per-neighbour counters (reported by ``dcis status``)."""

    sent_datagrams: int = 0
    retransmits: int = 0
    acked: int = 0
    timeouts: int = 0
    best_effort: int = 0
    stale_acks: int = 0
    too_big: int = 0
    mac_failures: int = 0


@dataclass(slots=True)
class UdpLink:
    """Sending side of the UDP CL towards one neighbour (sans-I/O).

    The retransmission timeout of a DATA segment's n-th send is
    ``(2 * owlt_s + ack_timeout_s) * 2**(n-1)`` (times 4 while the neighbour
    is unreachable; at most ``max_rto_s``): a silent peer is probed less and
    less often. After ``max_tries`` sends
    without an ACK the transmission is reported failed (the agent keeps the
    bundle and retries later); after ``unreachable_after`` failures in a row
    the neighbour is reported unreachable (:class:`Reachability`) until an
    ACK arrives. ``rng`` draws the tokens (the driver passes
    ``random.SystemRandom()``); ``mac_key`` (32 bytes) makes every DATA
    segment carry a MAC for ``neighbor``.
    """

    local_node: int
    neighbor: int
    ack_mode: AckMode = AckMode.ON
    mtu_bytes: int = 65_000
    ack_timeout_s: float = 1.0
    max_tries: int = 4
    max_rto_s: float = 60.0
    unreachable_after: int = 3
    rng: random.Random = field(default_factory=random.SystemRandom)
    mac_key: bytes | None = None
    owlt_s: float = 0.0
    peer: PeerKind = PeerKind.UNKNOWN
    reachable: bool = True
    counters: LinkCounters = field(default_factory=LinkCounters)
    _pending: OrderedDict[int, _Pending] = field(default_factory=OrderedDict)
    _failures_in_a_row: int = 0

    def __post_init__(self) -> None:
        if self.mtu_bytes < 64:
            raise InvalidArgument(f"mtu_bytes must be >= 64, got {self.mtu_bytes}")
        if self.max_tries < 1:
            raise InvalidArgument(f"max_tries must be >= 1, got {self.max_tries}")

    @property
    def best_effort(self) -> bool:
        """True when bundles go out bare and unacknowledged."""
        if self.ack_mode in (AckMode.OFF, AckMode.NONE):
            return True
        return self.ack_mode is AckMode.AUTO and self.peer is PeerKind.LEGACY

    @property
    def in_flight(self) -> int:
        """Transmissions waiting for an ACK."""
        return len(self._pending)

    @property
    def failures_in_a_row(self) -> int:
        """Transmissions that failed since the last ACK."""
        return self._failures_in_a_row

    def _rto_s(self, tries: int) -> float:
        base = 2.0 * self.owlt_s + self.ack_timeout_s
        # Doubling per try; an unreachable neighbour is probed four times
        # less often from the first try on.
        exp = min(tries - 1 + (0 if self.reachable else 2), 30)
        return min(base * 2.0**exp, max(self.max_rto_s, base))

    def _new_token(self) -> int:
        while True:
            token = self.rng.getrandbits(64)
            if token not in self._pending:
                return token

    def transmit(self, tx_id: int, bundle: bytes, now_s: float) -> list[LinkOutput]:
        """Send one encoded bundle; the outcome comes back as a :class:`TxDone`."""
        if len(bundle) > self.mtu_bytes:
            self.counters.too_big += 1
            return [
                TxDone(
                    tx_id,
                    False,
                    f"bundle of {len(bundle)} bytes exceeds the {self.mtu_bytes}-byte MTU",
                )
            ]
        if self.best_effort:
            self.counters.sent_datagrams += 1
            self.counters.best_effort += 1
            return [SendDatagram(bytes(bundle)), TxDone(tx_id, True, "best effort")]
        token = self._new_token()
        mac = (
            None
            if self.mac_key is None
            else data_mac(
                self.mac_key,
                sender=self.local_node,
                receiver=self.neighbor,
                token=token,
                bundle=bundle,
            )
        )
        datagram = encode_data_segment(
            sender=self.local_node, token=token, bundle=bundle, mac=mac
        )
        self._pending[token] = _Pending(
            tx_id, token, datagram, bytes(bundle), now_s + self._rto_s(1), 1
        )
        self.counters.sent_datagrams += 1
        return [SendDatagram(datagram, token)]

    def hold(self, token: int) -> None:
        """The driver queued this DATA segment instead of sending it: stop its
        ACK timer until :meth:`on_sent`."""
        p = self._pending.get(token)
        if p is not None:
            p.deadline_s = math.inf

    def on_sent(self, token: int, now_s: float) -> None:
        """A held DATA segment left now: its ACK timer starts."""
        p = self._pending.get(token)
        if p is not None and p.deadline_s == math.inf:
            p.deadline_s = now_s + self._rto_s(p.tries)

    def on_ack(self, tokens: tuple[int, ...], now_s: float) -> list[LinkOutput]:
        """An authentic ACK arrived from this neighbour (the driver checked its
        source address and MAC): complete the matching transmissions."""
        out: list[LinkOutput] = self.on_heard_dcis()
        done: list[LinkOutput] = []
        for token in tokens:
            p = self._pending.pop(token, None)
            if p is None:
                self.counters.stale_acks += 1
                continue
            self.counters.acked += 1
            done.append(TxDone(p.tx_id, True))
        if done:
            self._failures_in_a_row = 0
            if not self.reachable:
                self.reachable = True
                out.append(Reachability(True))
        return out + done

    def on_heard_dcis(self) -> list[LinkOutput]:
        """Any authentic DCiS segment arrived from this neighbour: it speaks
        our ACKs."""
        if self.peer is PeerKind.DCIS:
            return []
        was = self.peer
        self.peer = PeerKind.DCIS
        if self.ack_mode is AckMode.AUTO and was is PeerKind.LEGACY:
            return [PeerSwitched(PeerKind.DCIS, "DCiS segment received")]
        return []

    def on_heard_bare(self, now_s: float) -> list[LinkOutput]:
        """A bare bundle arrived from this neighbour's address. Under ``auto``,
        if we have never heard a DCiS segment from it, it is a plain UDP CL
        peer: later bundles go bare. What is in flight fails (the agent keeps
        it and sends it again): nothing waiting for an ACK is ever counted
        as delivered because of a datagram anyone could forge."""
        if self.ack_mode is not AckMode.AUTO or self.peer is not PeerKind.UNKNOWN:
            return []
        self.peer = PeerKind.LEGACY
        out: list[LinkOutput] = [
            PeerSwitched(PeerKind.LEGACY, "bare bundle before any DCiS segment")
        ]
        out += [
            TxDone(p.tx_id, False, "peer switched to best effort")
            for p in self._pending.values()
        ]
        self._pending.clear()
        return out

    def next_deadline(self) -> float | None:
        """Earliest retransmission timeout, or None when nothing is in flight."""
        d = min((p.deadline_s for p in self._pending.values()), default=math.inf)
        return None if d == math.inf else d

    def on_timer(self, now_s: float) -> list[LinkOutput]:
        """Retransmit or fail every transmission whose timeout has passed."""
        out: list[LinkOutput] = []
        for token in [t for t, p in self._pending.items() if p.deadline_s <= now_s]:
            p = self._pending[token]
            if p.tries >= self.max_tries:
                del self._pending[token]
                self.counters.timeouts += 1
                self._failures_in_a_row += 1
                out.append(TxDone(p.tx_id, False, f"no ACK after {p.tries} tries"))
                if self.reachable and self._failures_in_a_row >= self.unreachable_after:
                    self.reachable = False
                    out.append(Reachability(False, self._failures_in_a_row))
                continue
            p.tries += 1
            p.deadline_s = now_s + self._rto_s(p.tries)
            self.counters.retransmits += 1
            self.counters.sent_datagrams += 1
            out.append(SendDatagram(p.datagram, p.token))
        return out

    def close(self) -> list[LinkOutput]:
        """The contact ended: every transmission still in flight failed."""
        out: list[LinkOutput] = [
            TxDone(p.tx_id, False, "contact ended") for p in self._pending.values()
        ]
        self._pending.clear()
        return out


@dataclass(slots=True)
class AckBatcher:
    """Receiving side: collects tokens to acknowledge per neighbour, so that a
    burst of DATA segments is answered by a few ACK datagrams."""

    local_node: int
    _tokens: dict[int, list[int]] = field(default_factory=dict)

    def add(self, neighbor: int, token: int) -> None:
        """Queue ``token`` for acknowledgement to ``neighbor``."""
        self._tokens.setdefault(neighbor, []).append(token)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def flush(
        self, keys: Callable[[int], bytes | None] | None = None
    ) -> list[tuple[int, bytes]]:
        """Return ``(neighbor, ack_datagram)`` pairs for everything queued;
        ``keys(neighbor)`` gives the link key to MAC them with (None: none)."""
        out: list[tuple[int, bytes]] = []
        for neighbor, tokens in self._tokens.items():
            key = keys(neighbor) if keys is not None else None
            for i in range(0, len(tokens), MAX_ACK_TOKENS):
                part = tokens[i : i + MAX_ACK_TOKENS]
                mac = (
                    None
                    if key is None
                    else ack_mac(
                        key, sender=self.local_node, receiver=neighbor, tokens=part
                    )
                )
                out.append(
                    (
                        neighbor,
                        encode_ack_segment(
                            sender=self.local_node, tokens=part, mac=mac
                        ),
                    )
                )
        self._tokens.clear()
        return out


@dataclass(slots=True)
class Pacer:
    """Token bucket pacing sends to a contact's rate.

    ``rate_bytes_s`` <= 0 or infinite means unpaced. ``burst_bytes`` is how far
    ahead of the rate a sender may get (at least one datagram).
    """

    rate_bytes_s: float
    burst_bytes: float = 65_536.0
    _tokens: float = 0.0
    _last_s: float | None = None

    def delay_s(self, size_bytes: int, now_s: float) -> float:
        """Seconds to wait before sending ``size_bytes`` (0.0: send now).

        Call again after waiting; once it returns 0.0 the bytes are charged.
        """
        rate = self.rate_bytes_s
        if rate <= 0 or rate == float("inf"):
            return 0.0
        cap = max(self.burst_bytes, float(size_bytes))
        if self._last_s is None:
            self._tokens = cap
        else:
            self._tokens = min(cap, self._tokens + (now_s - self._last_s) * rate)
        self._last_s = now_s
        # The tolerance keeps float rounding from asking for a 1e-17 s wait forever.
        if self._tokens + 1e-6 >= size_bytes:
            self._tokens -= size_bytes
            return 0.0
        return (size_bytes - self._tokens) / rate
