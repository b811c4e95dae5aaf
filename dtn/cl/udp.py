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
:class:`UdpLink` is the per-neighbour state machine, and the one
implementation of hop-by-hop ACKs and retransmission: the trio runtime
(``dcis.dtn.runtime.node``) drives it over real sockets and the simulator
(``dcis.dtn.sim.engine``) over modelled links. It turns ``transmit``
requests into datagrams, retransmits unacknowledged DATA segments with
exponential backoff, reports each transmission's outcome (:class:`TxDone`)
and the neighbour's reachability (:class:`Reachability`). Each transmission
moves through :class:`TxState` by the one table :data:`TX_TRANSITIONS`
(queued by the driver's pacer, awaiting its ACK, acknowledged, failed);
what the link knows of its peer moves by :data:`PEER_TRANSITIONS`. Tokens
are drawn from the driver's generator per transmission (cryptographic in
the runtime, so one seen on the wire says nothing about the next; seeded in
the simulator). The encoders write CBOR heads directly and the decoder
reads the common segments head by head, falling back to the guarded CBOR
decoder for anything else (both paths give the same answer). The ack mode
decides (:meth:`UdpLink.best_effort` and :data:`PEER_TRANSITIONS`):

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

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
KIND_PART = 2
KIND_NEED = 3

MAX_ACK_TOKENS = 512
"""Most tokens one ACK datagram carries (about 5 KB, well under any MTU)."""

MAX_TOKEN = 2**64 - 1

# Worst-case bytes the DATA wrapper adds around a bundle: tag (3) + array head
# (1) + kind (1) + node (9) + token (9) + bstr head (5) + MAC (17).
DATA_OVERHEAD_BYTES = 45

# Worst-case bytes the PART wrapper adds around a chunk: tag (3) + array head
# (1) + kind (1) + node (9) + token (9) + offset (9) + total (9) + bstr head
# (5) + MAC (17).
PART_OVERHEAD_BYTES = 63

MAX_NEED_RANGES = 64
"""Most missing ranges one NEED datagram lists."""

MIN_PART_CHUNK_BYTES = 512
"""Smallest chunk a PART segment carries, but a transfer's last: a sender
whose datagrams hold less fragments instead, and a receiver refuses
smaller ones, so that a transfer is at most ``total / 512`` ranges to keep
track of (a peer sending 1-byte parts at every other offset would otherwise
make the bookkeeping outgrow the bytes it is about)."""

NEED_RESENDS_PER_PART = 3
"""A transfer's budget of parts resent in NEED rounds, per part it has: a
NEED, forged or not, can make us send a transfer at most this many times
over again, yet a long lossy one (more gaps than one NEED lists, each round
drawing the next NEED) has room to finish."""

MAX_TRANSFER_BYTES = 2**32 - 1
"""Largest ``total`` a PART may announce (a receiver's own limit is lower)."""

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
    bundle: bytes | memoryview
    """The bundle's bytes; from :func:`decode_datagram_untrusted`, a bundle of
    :data:`VIEW_BUNDLE_BYTES` or more is a view of the datagram (not copied:
    the decoder copies its payload once, into the decoded bundle)."""
    mac: bytes | None = None


VIEW_BUNDLE_BYTES = 16 * 1024
"""A DATA segment's bundle at least this long is decoded as a ``memoryview``
of the datagram, not sliced out of it (a 64 KB copy per UDP fragment at 1 MB:
spec/performance.md, "Eighth round: UDP 1 MB"); shorter ones as ``bytes``."""


@dataclass(frozen=True, slots=True)
class AckSegment:
    """Node ``sender`` holds the bundles sent with these ``tokens``."""

    sender: int
    tokens: tuple[int, ...]
    mac: bytes | None = None


@dataclass(frozen=True, slots=True)
class PartSegment:
    """Bytes ``offset`` to ``offset + len(chunk)`` of an encoded bundle of
    ``total`` bytes that node ``sender`` sends in several datagrams, to be
    acknowledged (once whole and held) with ``token``, as a DATA segment is."""

    sender: int
    token: int
    offset: int
    total: int
    chunk: bytes | memoryview
    """From :func:`decode_datagram_untrusted`, a chunk of
    :data:`VIEW_BUNDLE_BYTES` or more is a view of the datagram."""
    mac: bytes | None = None

    @property
    def end(self) -> int:
        """The offset just after this chunk."""
        return self.offset + len(self.chunk)


@dataclass(frozen=True, slots=True)
class NeedSegment:
    """Node ``sender`` holds part of the transfer sent with ``token`` and
    misses these ``ranges`` (``(start, end)``, ascending, disjoint): a request
    to send them again. Not an acknowledgement of anything."""

    sender: int
    token: int
    ranges: tuple[tuple[int, int], ...]
    mac: bytes | None = None


Datagram = BareBundle | DataSegment | AckSegment | PartSegment | NeedSegment

Buffers = tuple[bytes | memoryview, ...]
"""A datagram or a bundle as buffers to send gathered (``sendmsg``): a
large payload a buffer of its own, possibly a view of a stored bundle's."""


def _mac(key: bytes, head: bytes, body: bytes | memoryview | Buffers) -> bytes:
    h = hmac.new(key, _MAC_LABEL + head, hashlib.sha256)
    if isinstance(body, tuple):
        for part in body:  # a bundle in parts: hashed in place, not joined
            h.update(part)
    else:
        h.update(body)
    return h.digest()[:MAC_BYTES]


def data_mac(
    key: bytes,
    *,
    sender: int,
    receiver: int,
    token: int,
    bundle: bytes | memoryview | Buffers,
) -> bytes:
    """MAC of a DATA segment from ``sender`` to ``receiver`` under link key
    ``key``: HMAC-SHA-256 over a label, the kind, both node numbers, the
    token (8 bytes each, big-endian) and the bundle (bytes, or the
    buffers of ``encode_bundle_parts``); first 16 bytes."""
    head = bytes([KIND_DATA]) + b"".join(
        v.to_bytes(8, "big") for v in (sender, receiver, token)
    )
    return _mac(key, head, bundle)


def ack_mac(
    key: bytes, *, sender: int, receiver: int, tokens: tuple[int, ...] | list[int]
) -> bytes:
    """MAC of an ACK segment (as :func:`data_mac`, over the token list)."""
    head = bytes([KIND_ACK]) + sender.to_bytes(8, "big") + receiver.to_bytes(8, "big")
    return _mac(key, head, b"".join(t.to_bytes(8, "big") for t in tokens))


def part_mac(
    key: bytes,
    *,
    sender: int,
    receiver: int,
    token: int,
    offset: int,
    total: int,
    chunk: bytes | memoryview | Buffers,
) -> bytes:
    """MAC of a PART segment (as :func:`data_mac`: the head also carries the
    chunk's offset and the transfer's total length, 8 bytes each)."""
    head = bytes([KIND_PART]) + b"".join(
        v.to_bytes(8, "big") for v in (sender, receiver, token, offset, total)
    )
    return _mac(key, head, chunk)


def need_mac(
    key: bytes,
    *,
    sender: int,
    receiver: int,
    token: int,
    ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]],
) -> bytes:
    """MAC of a NEED segment (as :func:`data_mac`, over every range bound)."""
    head = bytes([KIND_NEED]) + b"".join(
        v.to_bytes(8, "big") for v in (sender, receiver, token)
    )
    return _mac(key, head, b"".join(v.to_bytes(8, "big") for r in ranges for v in r))


def mac_ok(expected: bytes, got: bytes | None) -> bool:
    """Constant-time comparison of a received MAC (None: absent, fails)."""
    return got is not None and hmac.compare_digest(expected, got)


def _head(major: int, n: int) -> bytes:
    """A CBOR head in its shortest form (RFC 8949 section 4.2.1), as cbor2 writes it."""
    m = major << 5
    if n >= 0x100000000:  # first: the usual case of a random 64-bit token
        return bytes((m | 27,)) + n.to_bytes(8, "big")
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + n.to_bytes(2, "big")
    return bytes((m | 26,)) + n.to_bytes(4, "big")


_MAC_HEAD = _head(2, MAC_BYTES)


def encode_data_segment(
    *, sender: int, token: int, bundle: bytes, mac: bytes | None = None
) -> bytes:
    """Encode a DATA segment (deterministic CBOR, the bytes cbor2 writes).
    Raises :class:`InvalidArgument` for out-of-range integers."""
    if not 0 <= sender <= MAX_TOKEN or not 0 <= token <= MAX_TOKEN:
        raise InvalidArgument(f"sender/token out of range: {sender}/{token}")
    parts = [
        DCIS_PREFIX,
        b"\x84\x00" if mac is None else b"\x85\x00",
        _head(0, sender),
        _head(0, token),
        _head(2, len(bundle)),
        bundle,
    ]
    if mac is not None:
        parts += (_head(2, len(mac)), mac)
    return b"".join(parts)


def encode_data_segment_parts(
    *,
    sender: int,
    token: int,
    bundle: Buffers,
    mac: bytes | None = None,
) -> Buffers:
    """:func:`encode_data_segment` of the bundle whose buffers are
    ``bundle`` (``encode_bundle_parts``), as buffers for a gathered send:
    the segment's head joined to the bundle's first buffer, the bundle's
    other buffers as they are (a large payload is not copied), the MAC
    after them. ``b"".join`` of the result is ``encode_data_segment``'s."""
    if len(bundle) < 2:
        one = b"".join(bundle)
        return (encode_data_segment(sender=sender, token=token, bundle=one, mac=mac),)
    if not 0 <= sender <= MAX_TOKEN or not 0 <= token <= MAX_TOKEN:
        raise InvalidArgument(f"sender/token out of range: {sender}/{token}")
    head = b"".join(
        (
            DCIS_PREFIX,
            b"\x84\x00" if mac is None else b"\x85\x00",
            _head(0, sender),
            _head(0, token),
            _head(2, sum(map(len, bundle))),
            bundle[0],
        )
    )
    if mac is None:
        return (head, *bundle[1:])
    return (head, *bundle[1:], _head(2, len(mac)) + mac)


def encode_ack_segment(
    *, sender: int, tokens: tuple[int, ...] | list[int], mac: bytes | None = None
) -> bytes:
    """Encode an ACK segment (at most :data:`MAX_ACK_TOKENS` tokens)."""
    if len(tokens) > MAX_ACK_TOKENS:
        raise InvalidArgument(
            f"at most {MAX_ACK_TOKENS} tokens per ACK, got {len(tokens)}"
        )
    if not 0 <= sender <= MAX_TOKEN or (
        tokens and not 0 <= min(tokens) <= max(tokens) <= MAX_TOKEN
    ):
        raise InvalidArgument("sender/token out of range")
    parts = [
        DCIS_PREFIX,
        b"\x83\x01" if mac is None else b"\x84\x01",
        _head(0, sender),
        _head(4, len(tokens)),
    ]
    parts += [_head(0, t) for t in tokens]
    if mac is not None:
        parts += (_head(2, len(mac)), mac)
    return b"".join(parts)


def _slices(bundle: bytes | memoryview | Buffers, start: int, end: int) -> Buffers:
    """Bytes ``start`` to ``end`` of a bundle given as one buffer or as
    buffers, as views (nothing copied)."""
    if not isinstance(bundle, tuple):
        return (memoryview(bundle)[start:end],)
    out: list[bytes | memoryview] = []
    pos = 0
    for buf in bundle:
        n = len(buf)
        lo, hi = max(start - pos, 0), min(end - pos, n)
        if lo < hi:
            out.append(buf if lo == 0 and hi == n else memoryview(buf)[lo:hi])
        pos += n
        if pos >= end:
            break
    return tuple(out)


def encode_part_segments(
    *,
    sender: int,
    token: int,
    bundle: bytes | memoryview | Buffers,
    chunk_bytes: int,
    mac_key: bytes | None = None,
    receiver: int = 0,
) -> list[tuple[Buffers, int, int]]:
    """Cut an encoded bundle into PART segments of at most ``chunk_bytes``
    of it each: ``(datagram buffers, start, end)`` per segment, in order.
    The chunks are views of ``bundle`` (nothing copied); with ``mac_key``
    each carries its :func:`part_mac` for ``receiver``. ``b"".join`` of a
    datagram's buffers decodes to the :class:`PartSegment` it describes."""
    total = sum(map(len, bundle)) if isinstance(bundle, tuple) else len(bundle)
    if not 0 <= sender <= MAX_TOKEN or not 0 <= token <= MAX_TOKEN:
        raise InvalidArgument(f"sender/token out of range: {sender}/{token}")
    if not 0 < total <= MAX_TRANSFER_BYTES or chunk_bytes < 1:
        raise InvalidArgument(f"cannot cut {total} bytes in chunks of {chunk_bytes}")
    first = b"\x86\x02" if mac_key is None else b"\x87\x02"
    fixed = DCIS_PREFIX + first + _head(0, sender) + _head(0, token)
    total_head = _head(0, total)
    out: list[tuple[Buffers, int, int]] = []
    for start in range(0, total, chunk_bytes):
        end = min(start + chunk_bytes, total)
        chunk = _slices(bundle, start, end)
        head = fixed + _head(0, start) + total_head + _head(2, end - start)
        if mac_key is None:
            out.append(((head, *chunk), start, end))
            continue
        mac = part_mac(
            mac_key,
            sender=sender,
            receiver=receiver,
            token=token,
            offset=start,
            total=total,
            chunk=chunk,
        )
        out.append(((head, *chunk, _MAC_HEAD + mac), start, end))
    return out


def encode_need_segment(
    *,
    sender: int,
    token: int,
    ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]],
    mac: bytes | None = None,
) -> bytes:
    """Encode a NEED segment (at most :data:`MAX_NEED_RANGES` ranges,
    ascending and disjoint, each ``start < end``)."""
    if not 0 <= sender <= MAX_TOKEN or not 0 <= token <= MAX_TOKEN:
        raise InvalidArgument(f"sender/token out of range: {sender}/{token}")
    if not _ranges_ok(ranges):
        raise InvalidArgument(f"bad NEED ranges: {list(ranges)[:4]}")
    parts = [
        DCIS_PREFIX,
        b"\x84\x03" if mac is None else b"\x85\x03",
        _head(0, sender),
        _head(0, token),
        _head(4, 2 * len(ranges)),
    ]
    parts += [_head(0, v) for r in ranges for v in r]
    if mac is not None:
        parts += (_head(2, len(mac)), mac)
    return b"".join(parts)


def _ranges_ok(ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> bool:
    """1 to MAX_NEED_RANGES ranges, each ``start < end``, ascending, disjoint."""
    if not 0 < len(ranges) <= MAX_NEED_RANGES:
        return False
    prev = 0
    for start, end in ranges:
        if not prev <= start < end <= MAX_TRANSFER_BYTES:
            return False
        prev = end
    return True


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


def _arg_at(raw: bytes, pos: int, major: int = 0) -> tuple[int, int]:
    """The argument of the head of major type ``major`` (an unsigned
    integer's value, a string's or an array's length) at ``raw[pos]``, and
    the position after the head; (-1, pos) if there is no such head
    (definite lengths only)."""
    if pos >= len(raw) or raw[pos] >> 5 != major:
        return -1, pos
    ai = raw[pos] & 0x1F
    if ai < 24:
        return ai, pos + 1
    if ai > 27:
        return -1, pos
    end = pos + 1 + (1 << (ai - 24))
    if end > len(raw):
        return -1, pos
    return int.from_bytes(raw[pos + 1 : end], "big"), end


def _mac_at(raw: bytes, pos: int) -> bytes | None:
    """The 16-byte MAC that ends ``raw`` at ``pos`` (None if it is not one)."""
    if raw[pos : pos + 1] == _MAC_HEAD and len(raw) == pos + 1 + MAC_BYTES:
        return raw[pos + 1 :]
    return None


def _decode_segment_fast(raw: bytes) -> Datagram | None:
    """The common DCiS segments, read head by head without a general CBOR
    decoder: definite lengths, every field in place, in range, nothing
    trailing. Returns None for anything else, which the general path then
    decodes or refuses (so both give the same answer for every input)."""
    n = len(raw)
    if n < 6:
        return None
    arr, kind = raw[3], raw[4]
    sender, pos = _arg_at(raw, 5)
    if not 0 <= sender <= MAX_NODE:
        return None
    if kind == KIND_DATA and arr in (0x84, 0x85):
        token, pos = _arg_at(raw, pos)
        if token < 0:
            return None
        length, pos = _arg_at(raw, pos, 2)
        if length <= 0 or pos + length > n or raw[pos] != BUNDLE_FIRST_BYTE:
            return None
        bundle: bytes | memoryview = (
            memoryview(raw)[pos : pos + length]
            if length >= VIEW_BUNDLE_BYTES
            else raw[pos : pos + length]
        )
        pos += length
        if arr == 0x84:
            return _data_segment(sender, token, bundle, None) if pos == n else None
        mac = _mac_at(raw, pos)
        return None if mac is None else _data_segment(sender, token, bundle, mac)
    if kind == KIND_ACK and arr in (0x83, 0x84):
        count, pos = _arg_at(raw, pos, 4)
        if not 0 <= count <= MAX_ACK_TOKENS:
            return None
        tokens = []
        for _ in range(count):
            token, pos = _arg_at(raw, pos)
            if token < 0:
                return None
            tokens.append(token)
        if arr == 0x83:
            return AckSegment(sender, tuple(tokens)) if pos == n else None
        mac = _mac_at(raw, pos)
        return None if mac is None else AckSegment(sender, tuple(tokens), mac)
    if kind == KIND_PART and arr in (0x86, 0x87):
        return _decode_part_fast(raw, sender, pos, arr == 0x87)
    if kind == KIND_NEED and arr in (0x84, 0x85):
        token, pos = _arg_at(raw, pos)
        count, pos = _arg_at(raw, pos, 4)
        if token < 0 or not 0 <= count <= 2 * MAX_NEED_RANGES or count % 2:
            return None
        bounds = []
        for _ in range(count):
            v, pos = _arg_at(raw, pos)
            if v < 0:
                return None
            bounds.append(v)
        ranges = tuple(zip(bounds[::2], bounds[1::2], strict=True))
        if not _ranges_ok(ranges):
            return None
        if arr == 0x84:
            return NeedSegment(sender, token, ranges) if pos == n else None
        mac = _mac_at(raw, pos)
        return None if mac is None else NeedSegment(sender, token, ranges, mac)
    return None


def _decode_part_fast(
    raw: bytes, sender: int, pos: int, with_mac: bool
) -> Datagram | None:
    """The fast path of a PART segment, after its sender (None: not in the
    common form, or out of range)."""
    n = len(raw)
    token, pos = _arg_at(raw, pos)
    offset, pos = _arg_at(raw, pos)
    total, pos = _arg_at(raw, pos)
    length, pos = _arg_at(raw, pos, 2)
    if min(token, offset, total) < 0 or length <= 0 or pos + length > n:
        return None
    if offset + length > total or total > MAX_TRANSFER_BYTES:
        return None
    if offset == 0 and raw[pos] != BUNDLE_FIRST_BYTE:
        return None
    chunk: bytes | memoryview = (
        memoryview(raw)[pos : pos + length]
        if length >= VIEW_BUNDLE_BYTES
        else raw[pos : pos + length]
    )
    pos += length
    mac = None
    if with_mac:
        mac = _mac_at(raw, pos)
        if mac is None:
            return None
    elif pos != n:
        return None
    return PartSegment(sender, token, offset, total, chunk, mac)


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
    fast = _decode_segment_fast(raw)
    if fast is not None:
        return fast
    return _decode_segment_general(raw)


def _decode_segment_general(raw: bytes) -> Datagram:
    """Any DCiS segment (after the prefix check), through the guarded CBOR
    decoder. Raises only :class:`DecodeError`."""
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
    if kind == KIND_PART and type(kind) is int:
        return _decode_part_general(body)
    if kind == KIND_NEED and type(kind) is int:
        if (
            len(body) not in (4, 5)
            or not isinstance(body[3], list)
            or len(body[3]) > 2 * MAX_NEED_RANGES
        ):
            raise DecodeError(
                "NEED must be [3, node, token, [* uint], ?mac]"
                f" (at most {MAX_NEED_RANGES} ranges)",
                where="udpcl segment",
            )
        bounds = [_uint(v, "range bound", MAX_TRANSFER_BYTES) for v in body[3]]
        ranges = tuple(zip(bounds[::2], bounds[1::2], strict=False))
        if len(bounds) % 2 or not _ranges_ok(ranges):
            raise DecodeError(
                f"NEED ranges must be 1 to {MAX_NEED_RANGES} ascending, disjoint"
                " (start, end) pairs",
                where="udpcl segment",
            )
        return NeedSegment(
            sender=_uint(body[1], "node", MAX_NODE),
            token=_uint(body[2], "token"),
            ranges=ranges,
            mac=_opt_mac(body, 4),
        )
    raise DecodeError(f"unknown segment kind {kind!r}", where="udpcl segment")


def _decode_part_general(body: list[object]) -> PartSegment:
    if len(body) not in (6, 7) or not isinstance(body[5], bytes) or not body[5]:
        raise DecodeError(
            "PART must be [2, node, token, offset, total, bstr, ?mac]",
            where="udpcl segment",
        )
    chunk = body[5]
    total = _uint(body[4], "total", MAX_TRANSFER_BYTES)
    offset = _uint(body[3], "offset", MAX_TRANSFER_BYTES)
    if offset + len(chunk) > total:
        raise DecodeError("PART chunk ends after its total", where="udpcl segment")
    if offset == 0 and chunk[0] != BUNDLE_FIRST_BYTE:
        raise DecodeError("PART does not start a BPv7 bundle", where="udpcl segment")
    return PartSegment(
        sender=_uint(body[1], "node", MAX_NODE),
        token=_uint(body[2], "token"),
        offset=offset,
        total=total,
        chunk=chunk,
        mac=_opt_mac(body, 6),
    )


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

    ``data`` is one buffer, or -- for a bundle given to
    :meth:`UdpLink.transmit` in parts -- the datagram's buffers, to send
    gathered (``sendmsg``) as one datagram; :attr:`size` is its length.
    ``token`` is set for a DATA segment: if the driver cannot send it at once
    (pacing), it calls :meth:`UdpLink.hold` and later :meth:`UdpLink.on_sent`,
    so that time spent in its queue does not count towards the ACK timeout.
    """

    data: bytes | Buffers
    token: int | None = None

    @property
    def size(self) -> int:
        """The datagram's length in bytes."""
        data = self.data
        return len(data) if isinstance(data, bytes) else sum(map(len, data))


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


class TxState(enum.Enum):
    """Where one acknowledged transmission (a DATA segment) stands."""

    # Members are singletons compared by identity: hash them by identity too
    # (C speed; Enum's own __hash__ is Python code, and every transition
    # looks up a (state, input) pair).
    __hash__ = object.__hash__

    QUEUED = "queued"
    """Handed to the driver, which has not put it on the wire yet (pacing):
    its ACK timer is stopped."""
    AWAITING_ACK = "awaiting_ack"
    """On the wire; its ACK timer runs."""
    ACKED = "acked"
    """Final: the neighbour acknowledged it (reported ``TxDone(ok=True)``)."""
    FAILED = "failed"
    """Final: given up (reported ``TxDone(ok=False)``); the agent keeps the bundle."""


class TxInput(enum.Enum):
    """What can happen to a transmission in flight."""

    __hash__ = object.__hash__  # as TxState's

    HOLD = "hold"
    """The driver queued the segment instead of sending it (:meth:`UdpLink.hold`)."""
    SENT = "sent"
    """A queued segment left (:meth:`UdpLink.on_sent`)."""
    ACK = "ack"
    """An authentic ACK carried its token (:meth:`UdpLink.on_ack`)."""
    TIMEOUT = "timeout"
    """Its ACK timer expired with tries left (:meth:`UdpLink.on_timer`)."""
    LAST_TIMEOUT = "last_timeout"
    """Its ACK timer expired after ``max_tries`` sends."""
    CLOSE = "close"
    """The contact ended (:meth:`UdpLink.close`)."""
    PEER_LEGACY = "peer_legacy"
    """``auto`` found a peer that does not acknowledge (:meth:`UdpLink.on_heard_bare`)."""
    NEED = "need"
    """An authentic NEED named ranges of a transfer in PART segments
    (:meth:`UdpLink.on_need`)."""


class TxEffect(enum.Enum):
    """What a transition makes the link do."""

    NOTHING = "nothing"
    STOP_TIMER = "stop_timer"
    START_TIMER = "start_timer"
    RESEND = "resend"
    """Send the segment again (same token) and restart its timer, one try
    more; for a transfer in PART segments, only its last part (a probe:
    the receiver answers with a NEED if it misses any)."""
    RESEND_NEEDED = "resend_needed"
    """Send again the PART segments overlapping the ranges a NEED names,
    and the transfer's last part (the one the receiver answers with its
    next NEED), within the transfer's budget of
    :data:`NEED_RESENDS_PER_PART` resends per part; the tries start over at
    1 and the timer restarts (the receiver is there and advancing)."""
    REPORT_OK = "report_ok"
    REPORT_FAILED = "report_failed"


TX_TRANSITIONS: dict[tuple[TxState, TxInput], tuple[TxState, TxEffect]] = {
    (TxState.AWAITING_ACK, TxInput.HOLD): (TxState.QUEUED, TxEffect.STOP_TIMER),
    (TxState.QUEUED, TxInput.HOLD): (TxState.QUEUED, TxEffect.NOTHING),
    (TxState.QUEUED, TxInput.SENT): (TxState.AWAITING_ACK, TxEffect.START_TIMER),
    (TxState.AWAITING_ACK, TxInput.SENT): (TxState.AWAITING_ACK, TxEffect.NOTHING),
    (TxState.AWAITING_ACK, TxInput.ACK): (TxState.ACKED, TxEffect.REPORT_OK),
    # A retransmission still queued when the first copy's ACK arrives.
    (TxState.QUEUED, TxInput.ACK): (TxState.ACKED, TxEffect.REPORT_OK),
    (TxState.AWAITING_ACK, TxInput.TIMEOUT): (TxState.AWAITING_ACK, TxEffect.RESEND),
    (TxState.AWAITING_ACK, TxInput.LAST_TIMEOUT): (
        TxState.FAILED,
        TxEffect.REPORT_FAILED,
    ),
    (TxState.QUEUED, TxInput.CLOSE): (TxState.FAILED, TxEffect.REPORT_FAILED),
    (TxState.AWAITING_ACK, TxInput.CLOSE): (TxState.FAILED, TxEffect.REPORT_FAILED),
    (TxState.QUEUED, TxInput.PEER_LEGACY): (TxState.FAILED, TxEffect.REPORT_FAILED),
    (TxState.AWAITING_ACK, TxInput.PEER_LEGACY): (
        TxState.FAILED,
        TxEffect.REPORT_FAILED,
    ),
    (TxState.AWAITING_ACK, TxInput.NEED): (
        TxState.AWAITING_ACK,
        TxEffect.RESEND_NEEDED,
    ),
    # Parts still waiting at the driver: what they carry may be what the
    # receiver misses; the timer runs again once they leave.
    (TxState.QUEUED, TxInput.NEED): (TxState.QUEUED, TxEffect.NOTHING),
}
"""The hop-ACK and retransmission state machine of one transmission:
``(state, input) -> (next state, effect)``. Every transition of
:class:`UdpLink` goes through this table; a pair it does not list (a late
input for a finished transmission, say) changes nothing. A queued segment
has no running timer, so it cannot time out."""


class Heard(enum.Enum):
    """What arrived from a neighbour, as far as its :class:`PeerKind` goes."""

    __hash__ = object.__hash__  # as TxState's

    DCIS = "dcis"
    """An authentic DCiS segment (DATA or ACK)."""
    BARE = "bare"
    """A bare bundle from its address."""


PEER_TRANSITIONS: dict[tuple[PeerKind, Heard], tuple[PeerKind, str | None]] = {
    (PeerKind.UNKNOWN, Heard.DCIS): (PeerKind.DCIS, None),
    (PeerKind.DCIS, Heard.DCIS): (PeerKind.DCIS, None),
    (PeerKind.LEGACY, Heard.DCIS): (PeerKind.DCIS, "DCiS segment received"),
    (PeerKind.UNKNOWN, Heard.BARE): (
        PeerKind.LEGACY,
        "bare bundle before any DCiS segment",
    ),
    (PeerKind.DCIS, Heard.BARE): (PeerKind.DCIS, None),
    (PeerKind.LEGACY, Heard.BARE): (PeerKind.LEGACY, None),
}
"""What the link learns about its peer: ``(kind, heard) -> (next kind,
reason to report a switch or None)``. A bare bundle counts only under
``auto`` (under every other mode :meth:`UdpLink.on_heard_bare` does nothing)."""

# Members read for every transmission, bound once: on Python 3.11 a member
# read off its class (``TxEffect.RESEND``) goes through EnumType's
# ``__getattr__`` attribute hook, ~4x a global's cost (spec/performance.md,
# "Eighth round: the 1 KB path").
_UNACKED_MODES: Final = (AckMode.OFF, AckMode.NONE)
_AUTO: Final = AckMode.AUTO
_LEGACY: Final = PeerKind.LEGACY
_NOTHING: Final = TxEffect.NOTHING
_START_TIMER: Final = TxEffect.START_TIMER
_STOP_TIMER: Final = TxEffect.STOP_TIMER
_RESEND: Final = TxEffect.RESEND
_REPORT_OK: Final = TxEffect.REPORT_OK
_RESEND_NEEDED: Final = TxEffect.RESEND_NEEDED
_ACK: Final = TxInput.ACK
_HEARD_DCIS: Final = Heard.DCIS

# The segment and outputs made for every datagram, built with slot setters:
# a frozen dataclass's __init__ sets each field through object.__setattr__
# (~150 ns a field). Same objects (tests/unit/cl/test_udp_trusted.py).
_new: Final = object.__new__
_set_DataSegment_sender: Final = DataSegment.__dict__["sender"].__set__
_set_DataSegment_token: Final = DataSegment.__dict__["token"].__set__
_set_DataSegment_bundle: Final = DataSegment.__dict__["bundle"].__set__
_set_DataSegment_mac: Final = DataSegment.__dict__["mac"].__set__
_set_SendDatagram_data: Final = SendDatagram.__dict__["data"].__set__
_set_SendDatagram_token: Final = SendDatagram.__dict__["token"].__set__
_set_TxDone_tx_id: Final = TxDone.__dict__["tx_id"].__set__
_set_TxDone_ok: Final = TxDone.__dict__["ok"].__set__
_set_TxDone_reason: Final = TxDone.__dict__["reason"].__set__


def _data_segment(
    sender: int, token: int, bundle: bytes | memoryview, mac: bytes | None
) -> DataSegment:
    d = _new(DataSegment)
    _set_DataSegment_sender(d, sender)
    _set_DataSegment_token(d, token)
    _set_DataSegment_bundle(d, bundle)
    _set_DataSegment_mac(d, mac)
    return d


def _send_datagram(data: bytes | Buffers, token: int | None) -> SendDatagram:
    d = _new(SendDatagram)
    _set_SendDatagram_data(d, data)
    _set_SendDatagram_token(d, token)
    return d


def _tx_done_ok(tx_id: int) -> TxDone:
    d = _new(TxDone)
    _set_TxDone_tx_id(d, tx_id)
    _set_TxDone_ok(d, True)
    _set_TxDone_reason(d, "")
    return d


@dataclass(slots=True)
class _Pending:
    tx_id: int
    token: int
    datagram: bytes | Buffers
    deadline_s: float
    tries: int
    state: TxState = TxState.AWAITING_ACK
    parts: list[tuple[Buffers, int, int]] | None = None
    """A transfer in PART segments: each datagram with its byte range."""
    resend_budget: int = 0
    """Parts a NEED may still make us send again (a transfer's)."""


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
    transfers: int = 0
    """Bundles sent whole in PART segments (larger than one datagram)."""
    parts_resent: int = 0
    needs: int = 0
    """Authentic NEEDs acted on."""
    stale_needs: int = 0


@dataclass(slots=True)
class UdpLink:
    """Sending side of the UDP CL towards one neighbour (sans-I/O): the one
    implementation of hop-by-hop acknowledgement and retransmission, driven
    by the runtime (:mod:`dcis.dtn.runtime.node`, over real sockets) and by
    the simulator (:mod:`dcis.dtn.sim.engine`, over modelled links).

    Each transmission follows :data:`TX_TRANSITIONS`; the peer's kind
    follows :data:`PEER_TRANSITIONS`.

    The retransmission timeout of a DATA segment's n-th send is
    ``(2 * owlt_s + ack_timeout_s) * 2**(n-1)`` (times 4 while the neighbour
    is unreachable; at most ``max_rto_s``): a silent peer is probed less and
    less often. After ``max_tries`` sends
    without an ACK the transmission is reported failed (the agent keeps the
    bundle and retries later); after ``unreachable_after`` failures in a row
    the neighbour is reported unreachable (:class:`Reachability`) until an
    ACK arrives. ``rng`` draws the tokens (the runtime passes
    ``random.SystemRandom()``, the simulator a seeded generator);
    ``mac_key`` (32 bytes) makes every DATA segment carry a MAC for
    ``neighbor``.

    A bundle larger than ``mtu_bytes`` but no larger than
    ``max_transfer_bytes`` (0: none) goes whole, in PART segments of at most
    ``mtu_bytes`` each -- only with ``ack_mode`` ``on``, whose peer is a DCiS
    node by configuration; other bundles over the MTU are refused (the
    agent fragments them), as are those whose chunks would be under
    :data:`MIN_PART_CHUNK_BYTES` (``mtu_bytes`` too small). The transfer is
    one transmission with one token: its timer starts when its last part
    leaves, a timeout resends the last part only, and a NEED from the
    receiver resends the parts it misses and the last one (see
    :attr:`TxEffect.RESEND_NEEDED`).
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
    max_transfer_bytes: int = 0
    peer: PeerKind = PeerKind.UNKNOWN
    reachable: bool = True
    counters: LinkCounters = field(default_factory=LinkCounters)
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _failures_in_a_row: int = 0

    def __post_init__(self) -> None:
        if self.mtu_bytes < 64:
            raise InvalidArgument(f"mtu_bytes must be >= 64, got {self.mtu_bytes}")
        if self.max_tries < 1:
            raise InvalidArgument(f"max_tries must be >= 1, got {self.max_tries}")

    @property
    def best_effort(self) -> bool:
        """True when bundles go out bare and unacknowledged."""
        if self.ack_mode in _UNACKED_MODES:
            return True
        return self.ack_mode is _AUTO and self.peer is _LEGACY

    @property
    def in_flight(self) -> int:
        """Transmissions waiting for an ACK."""
        return len(self._pending)

    @property
    def failures_in_a_row(self) -> int:
        """Transmissions that failed since the last ACK."""
        return self._failures_in_a_row

    def state_of(self, token: int) -> TxState | None:
        """The state of the transmission sent with ``token`` (None once it
        has finished, or for a token it never used)."""
        p = self._pending.get(token)
        return None if p is None else p.state

    def tx_id_of(self, token: int) -> int | None:
        """The ``tx_id`` of the transmission in flight with ``token`` (None
        once it has finished, or for a token it never used)."""
        p = self._pending.get(token)
        return None if p is None else p.tx_id

    def _rto_s(self, tries: int, worst: bool = False) -> float:
        base = 2.0 * self.owlt_s + self.ack_timeout_s
        # Doubling per try; an unreachable neighbour (``worst``: as if it
        # were) is probed four times less often from the first try on.
        exp = min(tries - 1 + (0 if self.reachable and not worst else 2), 30)
        return min(base * 2.0**exp, max(self.max_rto_s, base))

    def give_up_after_s(self) -> float:
        """The longest a transmission can still be retried after its last
        send: every try's timeout while the neighbour is unreachable (the
        longest), plus a round trip's light time. A receiver keeps a partial
        transfer that long (its sender may still probe for it)."""
        tries = range(1, self.max_tries + 1)
        return sum(self._rto_s(t, worst=True) for t in tries) + 2.0 * self.owlt_s

    def _new_token(self) -> int:
        while True:
            token = self.rng.getrandbits(64)
            if token not in self._pending:
                return token

    def _step(
        self,
        p: _Pending,
        event: TxInput,
        now_s: float,
        out: list[LinkOutput],
        ranges: tuple[tuple[int, int], ...] = (),
    ) -> None:
        """Apply one input to one transmission, as :data:`TX_TRANSITIONS` says."""
        step = TX_TRANSITIONS.get((p.state, event))
        if step is None:
            return
        p.state, effect = step
        if effect is _NOTHING:
            return
        if effect is _START_TIMER:
            p.deadline_s = now_s + self._rto_s(p.tries)
        elif effect is _STOP_TIMER:
            p.deadline_s = math.inf
        elif effect is _RESEND:
            p.tries += 1
            p.deadline_s = now_s + self._rto_s(p.tries)
            self.counters.retransmits += 1
            self.counters.sent_datagrams += 1
            out.append(SendDatagram(p.datagram, p.token))
        elif effect is _RESEND_NEEDED:
            self._resend_needed(p, ranges, now_s, out)
        elif effect is _REPORT_OK:
            del self._pending[p.token]
            self.counters.acked += 1
            out.append(_tx_done_ok(p.tx_id))
        else:  # REPORT_FAILED
            del self._pending[p.token]
            if event is TxInput.LAST_TIMEOUT:
                self.counters.timeouts += 1
                self._failures_in_a_row += 1
                out.append(TxDone(p.tx_id, False, f"no ACK after {p.tries} tries"))
                if self.reachable and self._failures_in_a_row >= self.unreachable_after:
                    self.reachable = False
                    out.append(Reachability(False, self._failures_in_a_row))
            elif event is TxInput.CLOSE:
                out.append(TxDone(p.tx_id, False, "contact ended"))
            else:
                out.append(TxDone(p.tx_id, False, "peer switched to best effort"))

    def _resend_needed(
        self,
        p: _Pending,
        ranges: tuple[tuple[int, int], ...],
        now_s: float,
        out: list[LinkOutput],
    ) -> None:
        """The RESEND_NEEDED effect: the parts of ``p`` that overlap
        ``ranges`` (ascending, as decoded), then its last part if they do
        not include it -- the receiver answers only a part ending at
        ``total``, so a round without one would draw no NEED for the gaps
        this one could not list. The last one sent carries the token, so
        that the timer restarts when it leaves if the driver has to queue
        it. A round is cut at the transfer's resend budget (the last part
        kept). Served, it starts the tries over (the receiver is there and
        advancing). A NEED that names no byte of the transfer, or comes once
        its budget is spent, is stale: nothing sent, the timer left as it
        is; it costs O(ranges), never a pass over the parts."""
        parts = p.parts
        budget = p.resend_budget
        if parts is None or budget <= 0:
            self.counters.stale_needs += 1
            return
        n = len(parts)
        total = parts[-1][2]
        chunk = parts[0][2]  # the first part's end: every part but the last's length
        again: list[int] = []
        nxt = 0  # first part index not taken yet
        for lo, hi in ranges:
            hi = min(hi, total)
            if lo >= hi:
                continue
            first, stop = max(lo // chunk, nxt), min((hi - 1) // chunk + 1, n)
            if first < stop:
                again += range(first, min(stop, first + budget - len(again)))
                nxt = stop
                if len(again) >= budget:
                    break
        if not again:
            self.counters.stale_needs += 1
            return
        if again[-1] != n - 1:
            if len(again) < budget:
                again.append(n - 1)
            else:
                again[-1] = n - 1
        p.resend_budget = budget - len(again)
        p.tries = 1
        self.counters.needs += 1
        for i in again[:-1]:
            out.append(_send_datagram(parts[i][0], None))
        out.append(_send_datagram(parts[-1][0], p.token))
        self.counters.parts_resent += len(again)
        self.counters.sent_datagrams += len(again)
        p.deadline_s = now_s + self._rto_s(1)

    def _heard(self, heard: Heard) -> list[LinkOutput]:
        was = self.peer
        self.peer, reason = PEER_TRANSITIONS[(was, heard)]
        if reason is None or self.ack_mode is not _AUTO:
            return []
        return [PeerSwitched(self.peer, reason)]

    def transmit(
        self, tx_id: int, bundle: bytes | Buffers, now_s: float
    ) -> list[LinkOutput]:
        """Send one encoded bundle -- bytes, or its buffers as
        ``encode_bundle_parts`` gives them (then the datagram's
        :class:`SendDatagram` carries buffers too, the payload not copied);
        the outcome comes back as a :class:`TxDone`."""
        if isinstance(bundle, tuple) and len(bundle) == 1:
            bundle = bytes(bundle[0])  # one buffer: the bytes path
        size = sum(map(len, bundle)) if isinstance(bundle, tuple) else len(bundle)
        if size > self.mtu_bytes:
            # (A PART cannot announce more than MAX_TRANSFER_BYTES, whatever
            # the configured limit.)
            if (
                self.ack_mode is AckMode.ON
                and size <= min(self.max_transfer_bytes, MAX_TRANSFER_BYTES)
                and self.mtu_bytes - PART_OVERHEAD_BYTES >= MIN_PART_CHUNK_BYTES
            ):
                return self._transmit_parts(tx_id, bundle, now_s)
            self.counters.too_big += 1
            return [
                TxDone(
                    tx_id,
                    False,
                    f"bundle of {size} bytes exceeds the {self.mtu_bytes}-byte MTU",
                )
            ]
        if self.best_effort:
            self.counters.sent_datagrams += 1
            self.counters.best_effort += 1
            data = bundle if isinstance(bundle, tuple) else bytes(bundle)
            return [SendDatagram(data), TxDone(tx_id, True, "best effort")]
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
        datagram: bytes | Buffers = (
            encode_data_segment_parts(
                sender=self.local_node, token=token, bundle=bundle, mac=mac
            )
            if isinstance(bundle, tuple)
            else encode_data_segment(
                sender=self.local_node, token=token, bundle=bundle, mac=mac
            )
        )
        self._pending[token] = _Pending(
            tx_id, token, datagram, now_s + self._rto_s(1), 1
        )
        self.counters.sent_datagrams += 1
        return [_send_datagram(datagram, token)]

    def _transmit_parts(
        self, tx_id: int, bundle: bytes | Buffers, now_s: float
    ) -> list[LinkOutput]:
        """A bundle over the MTU, whole in PART segments (see the class)."""
        token = self._new_token()
        parts = encode_part_segments(
            sender=self.local_node,
            token=token,
            bundle=bundle,
            chunk_bytes=self.mtu_bytes - PART_OVERHEAD_BYTES,
            mac_key=self.mac_key,
            receiver=self.neighbor,
        )
        last = parts[-1][0]
        self._pending[token] = _Pending(
            tx_id,
            token,
            last,
            now_s + self._rto_s(1),
            1,
            parts=parts,
            resend_budget=NEED_RESENDS_PER_PART * len(parts),
        )
        self.counters.transfers += 1
        self.counters.sent_datagrams += len(parts)
        out: list[LinkOutput] = [
            _send_datagram(bufs, None) for bufs, _, _ in parts[:-1]
        ]
        out.append(_send_datagram(last, token))
        return out

    def hold(self, token: int) -> None:
        """The driver queued this DATA segment instead of sending it: stop its
        ACK timer until :meth:`on_sent`."""
        p = self._pending.get(token)
        if p is not None:
            self._step(p, TxInput.HOLD, 0.0, [])

    def on_sent(self, token: int, now_s: float) -> None:
        """A held DATA segment left now: its ACK timer starts."""
        p = self._pending.get(token)
        if p is not None:
            self._step(p, TxInput.SENT, now_s, [])

    def on_ack(self, tokens: tuple[int, ...], now_s: float) -> list[LinkOutput]:
        """An authentic ACK arrived from this neighbour (the driver checked its
        source address and MAC): complete the matching transmissions."""
        out: list[LinkOutput] = self._heard(_HEARD_DCIS)
        done: list[LinkOutput] = []
        for token in tokens:
            p = self._pending.get(token)
            if p is None:
                self.counters.stale_acks += 1
                continue
            self._step(p, _ACK, now_s, done)
        if done:
            self._failures_in_a_row = 0
            if not self.reachable:
                self.reachable = True
                out.append(Reachability(True))
        return out + done

    def on_need(
        self, token: int, ranges: tuple[tuple[int, int], ...], now_s: float
    ) -> list[LinkOutput]:
        """An authentic NEED arrived from this neighbour (the driver checked
        its source address and MAC): resend the parts of that transfer it
        misses. A NEED for a finished transmission, or for a DATA segment,
        changes nothing."""
        out: list[LinkOutput] = self._heard(_HEARD_DCIS)
        p = self._pending.get(token)
        if p is None or p.parts is None:
            self.counters.stale_needs += 1
            return out
        self._step(p, TxInput.NEED, now_s, out, ranges)
        return out

    def on_heard_dcis(self) -> list[LinkOutput]:
        """Any authentic DCiS segment arrived from this neighbour: it speaks
        our ACKs."""
        return self._heard(_HEARD_DCIS)

    def on_heard_bare(self, now_s: float) -> list[LinkOutput]:
        """A bare bundle arrived from this neighbour's address. Under ``auto``,
        if we have never heard a DCiS segment from it, it is a plain UDP CL
        peer: later bundles go bare. What is in flight fails (the agent keeps
        it and sends it again): nothing waiting for an ACK is ever counted
        as delivered because of a datagram anyone could forge."""
        if self.ack_mode is not AckMode.AUTO:
            return []
        out = self._heard(Heard.BARE)
        if self.peer is PeerKind.LEGACY and out:
            for p in list(self._pending.values()):
                self._step(p, TxInput.PEER_LEGACY, now_s, out)
        return out

    def next_deadline(self) -> float | None:
        """Earliest retransmission timeout, or None when nothing is in flight."""
        if not self._pending:
            return None
        d = min([p.deadline_s for p in self._pending.values()])
        return None if d == math.inf else d

    def on_timer(self, now_s: float) -> list[LinkOutput]:
        """Retransmit or fail every transmission whose timeout has passed."""
        out: list[LinkOutput] = []
        for p in [p for p in self._pending.values() if p.deadline_s <= now_s]:
            last = p.tries >= self.max_tries
            self._step(p, TxInput.LAST_TIMEOUT if last else TxInput.TIMEOUT, now_s, out)
        return out

    def close(self) -> list[LinkOutput]:
        """The contact ended: every transmission still in flight failed."""
        out: list[LinkOutput] = []
        for p in list(self._pending.values()):
            self._step(p, TxInput.CLOSE, 0.0, out)
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
