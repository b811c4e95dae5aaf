"""TCPCLv4 wire format (RFC 9174 sections 4 to 6): contact header and messages.

https://www.rfc-editor.org/rfc/rfc9174

Every multi-byte field is big-endian. The contact header is
``"dtn!" | version (4) | flags (CAN_TLS 0x01)``; every later message starts
with a one-byte type code:

==== ============ ==========================================================
code message      fields after the type code
==== ============ ==========================================================
0x01 XFER_SEGMENT flags u8 (END 0x01, START 0x02), transfer id u64,
                  [START only: extension items length u32, items],
                  data length u64, data
0x02 XFER_ACK     flags u8, transfer id u64, acknowledged length u64
0x03 XFER_REFUSE  reason u8, transfer id u64
0x04 KEEPALIVE    (none)
0x05 SESS_TERM    flags u8 (REPLY 0x01), reason u8
0x06 MSG_REJECT   reason u8, rejected message header u8
0x07 SESS_INIT    keepalive u16, segment MRU u64, transfer MRU u64,
                  node id length u16, node id (UTF-8),
                  extension items length u32, items
==== ============ ==========================================================

An extension item is ``flags u8 (CRITICAL 0x01) | type u16 | length u16 |
value``; the transfer extension type 0x0001 is the Transfer Length (u64).

:func:`decode_message_untrusted` parses one message from the start of a
buffer, returns None when more bytes are needed, and raises only
:class:`DecodeError`. Its :class:`Limits` bound every length a peer can
announce, *before* the bytes arrive, so a hostile length never makes the
caller buffer more than the limit: a segment longer than our segment MRU, a
node id or extension list longer than allowed, is an error at once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from dcis.dtn.errors import DecodeError, InvalidArgument

__all__ = [
    "CONTACT_HEADER_BYTES",
    "MAGIC",
    "TRANSFER_LENGTH_EXTENSION",
    "VERSION",
    "ContactFlags",
    "ContactHeader",
    "ExtensionItem",
    "KeepAlive",
    "Limits",
    "Message",
    "MessageType",
    "MsgReject",
    "RefuseReason",
    "RejectReason",
    "SegmentFlags",
    "SessInit",
    "SessTerm",
    "TermFlags",
    "TermReason",
    "XferAck",
    "XferRefuse",
    "XferSegment",
    "decode_contact_header_untrusted",
    "decode_message_untrusted",
    "encode_contact_header",
    "encode_message",
    "encode_segment_head",
]

MAGIC = b"dtn!"
VERSION = 4
CONTACT_HEADER_BYTES = 6
TRANSFER_LENGTH_EXTENSION = 0x0001
_U64 = (1 << 64) - 1


class MessageType(IntEnum):
    """Message type codes (RFC 9174 section 9.5)."""

    XFER_SEGMENT = 0x01
    XFER_ACK = 0x02
    XFER_REFUSE = 0x03
    KEEPALIVE = 0x04
    SESS_TERM = 0x05
    MSG_REJECT = 0x06
    SESS_INIT = 0x07


class ContactFlags(IntFlag):
    """Contact header flags (RFC 9174 4.2)."""

    NONE = 0
    CAN_TLS = 0x01


class SegmentFlags(IntFlag):
    """XFER_SEGMENT / XFER_ACK flags (RFC 9174 5.2.2)."""

    NONE = 0
    END = 0x01
    START = 0x02


class TermFlags(IntFlag):
    """SESS_TERM flags (RFC 9174 6.1)."""

    NONE = 0
    REPLY = 0x01


class RefuseReason(IntEnum):
    """XFER_REFUSE reason codes (RFC 9174 5.2.4)."""

    UNKNOWN = 0x00
    COMPLETED = 0x01
    NO_RESOURCES = 0x02
    RETRANSMIT = 0x03
    NOT_ACCEPTABLE = 0x04
    EXTENSION_FAILURE = 0x05
    SESSION_TERMINATING = 0x06


class TermReason(IntEnum):
    """SESS_TERM reason codes (RFC 9174 6.1)."""

    UNKNOWN = 0x00
    IDLE_TIMEOUT = 0x01
    VERSION_MISMATCH = 0x02
    BUSY = 0x03
    CONTACT_FAILURE = 0x04
    RESOURCE_EXHAUSTION = 0x05


class RejectReason(IntEnum):
    """MSG_REJECT reason codes (RFC 9174 5.1.2)."""

    TYPE_UNKNOWN = 0x01
    UNSUPPORTED = 0x02
    UNEXPECTED = 0x03


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds on what a peer may announce (all in bytes)."""

    segment_mru: int = 1 << 20
    max_node_id: int = 1024
    max_extensions: int = 65_536

    def __post_init__(self) -> None:
        if not 1 <= self.segment_mru <= _U64:
            raise InvalidArgument(
                f"segment_mru must be in 1..2^64-1, got {self.segment_mru}"
            )
        if self.max_node_id < 1 or self.max_extensions < 0:
            raise InvalidArgument("limits must be positive")


@dataclass(frozen=True, slots=True)
class ContactHeader:
    """The contact header: version and flags (the magic is implied)."""

    flags: ContactFlags = ContactFlags.NONE
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class ExtensionItem:
    """A session or transfer extension item."""

    type: int
    value: bytes
    critical: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFFFF:
            raise InvalidArgument(f"extension type must fit u16, got {self.type}")
        if len(self.value) > 0xFFFF:
            raise InvalidArgument("extension value longer than 65535 bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessInit:
    """SESS_INIT (RFC 9174 4.6): the sender's parameters."""

    keepalive_s: int
    segment_mru: int
    transfer_mru: int
    node_id: str
    extensions: tuple[ExtensionItem, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.keepalive_s <= 0xFFFF:
            raise InvalidArgument(f"keepalive_s must fit u16, got {self.keepalive_s}")
        for v in (self.segment_mru, self.transfer_mru):
            if not 0 <= v <= _U64:
                raise InvalidArgument(f"MRU must fit u64, got {v}")
        if len(self.node_id.encode()) > 0xFFFF:
            raise InvalidArgument("node id longer than 65535 bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class XferSegment:
    """XFER_SEGMENT (RFC 9174 5.2.2); ``extensions`` only with START."""

    flags: SegmentFlags
    transfer_id: int
    data: bytes
    extensions: tuple[ExtensionItem, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class XferAck:
    """XFER_ACK (RFC 9174 5.2.3): cumulative acknowledged length."""

    flags: SegmentFlags
    transfer_id: int
    length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class XferRefuse:
    """XFER_REFUSE (RFC 9174 5.2.4)."""

    reason: RefuseReason | int
    transfer_id: int


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """KEEPALIVE (RFC 9174 5.1.1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessTerm:
    """SESS_TERM (RFC 9174 6.1)."""

    flags: TermFlags
    reason: TermReason | int


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgReject:
    """MSG_REJECT (RFC 9174 5.1.2)."""

    reason: RejectReason | int
    header: int


Message = (
    XferSegment | XferAck | XferRefuse | KeepAlive | SessTerm | MsgReject | SessInit
)


# -- encoding -----------------------------------------------------------------


def encode_contact_header(h: ContactHeader) -> bytes:
    """The 6-byte contact header."""
    return MAGIC + bytes([h.version & 0xFF, int(h.flags) & 0xFF])


def _encode_items(items: tuple[ExtensionItem, ...]) -> bytes:
    return b"".join(
        struct.pack(">BHH", 0x01 if i.critical else 0, i.type, len(i.value)) + i.value
        for i in items
    )


def encode_segment_head(
    flags: SegmentFlags,
    transfer_id: int,
    data_length: int,
    extensions: tuple[ExtensionItem, ...] = (),
) -> bytes:
    """The bytes of an XFER_SEGMENT up to its data (lets a sender avoid copying the data)."""
    head = struct.pack(">BBQ", MessageType.XFER_SEGMENT, int(flags), transfer_id)
    if flags & SegmentFlags.START:
        items = _encode_items(extensions)
        head += struct.pack(">I", len(items)) + items
    return head + struct.pack(">Q", data_length)


def encode_message(m: Message) -> bytes:
    """Encode one message. Raises InvalidArgument for values that do not fit."""
    try:
        if isinstance(m, XferSegment):
            return (
                encode_segment_head(m.flags, m.transfer_id, len(m.data), m.extensions)
                + m.data
            )
        if isinstance(m, XferAck):
            return struct.pack(
                ">BBQQ", MessageType.XFER_ACK, int(m.flags), m.transfer_id, m.length
            )
        if isinstance(m, XferRefuse):
            return struct.pack(
                ">BBQ", MessageType.XFER_REFUSE, int(m.reason), m.transfer_id
            )
        if isinstance(m, KeepAlive):
            return bytes([MessageType.KEEPALIVE])
        if isinstance(m, SessTerm):
            return struct.pack(
                ">BBB", MessageType.SESS_TERM, int(m.flags), int(m.reason)
            )
        if isinstance(m, MsgReject):
            return struct.pack(">BBB", MessageType.MSG_REJECT, int(m.reason), m.header)
        nid = m.node_id.encode()
        items = _encode_items(m.extensions)
        return (
            struct.pack(
                ">BHQQH",
                MessageType.SESS_INIT,
                m.keepalive_s,
                m.segment_mru,
                m.transfer_mru,
                len(nid),
            )
            + nid
            + struct.pack(">I", len(items))
            + items
        )
    except struct.error as exc:
        raise InvalidArgument(f"field does not fit: {exc}") from None


# -- decoding -----------------------------------------------------------------


def decode_contact_header_untrusted(
    buf: bytes | bytearray | memoryview,
) -> ContactHeader | None:
    """The contact header at the start of ``buf`` (None: fewer than 6 bytes).

    Raises DecodeError when the magic is wrong (not a TCPCL peer). A version
    other than 4 is returned as is: the session answers it (RFC 9174 4.3).
    """
    if len(buf) < CONTACT_HEADER_BYTES:
        # Only the magic's bytes can be judged yet (a 5-byte prefix holds
        # the version too, which is not the magic's business).
        n = min(len(buf), len(MAGIC))
        if bytes(buf[:n]) != MAGIC[:n]:
            raise DecodeError("not a TCPCL contact header (bad magic)")
        return None
    if bytes(buf[:4]) != MAGIC:
        raise DecodeError("not a TCPCL contact header (bad magic)")
    return ContactHeader(flags=ContactFlags(buf[5] & 0x01), version=buf[4])


def _items_untrusted(raw: bytes, where: str) -> tuple[ExtensionItem, ...]:
    out = []
    i = 0
    n = len(raw)
    while i < n:
        if n - i < 5:
            raise DecodeError("truncated extension item header", where=where)
        flags, typ, length = struct.unpack_from(">BHH", raw, i)
        i += 5
        if n - i < length:
            raise DecodeError("extension item longer than the item list", where=where)
        out.append(ExtensionItem(typ, bytes(raw[i : i + length]), bool(flags & 0x01)))
        i += length
    return tuple(out)


def decode_message_untrusted(
    buf: bytes | bytearray | memoryview, limits: Limits
) -> tuple[Message, int] | None:
    """One message from the start of ``buf`` and the bytes it took, or None (need more).

    Raises DecodeError for an unknown type code (``where`` = ``"type 0x.."``),
    a length beyond ``limits``, or malformed contents.
    """
    n = len(buf)
    if n < 1:
        return None
    t = buf[0]
    if t == MessageType.XFER_SEGMENT:
        if n < 10:
            return None
        flags, tid = struct.unpack_from(">BQ", buf, 1)
        i = 10
        items: tuple[ExtensionItem, ...] = ()
        if flags & SegmentFlags.START:
            if n < i + 4:
                return None
            (ilen,) = struct.unpack_from(">I", buf, i)
            i += 4
            if ilen > limits.max_extensions:
                raise DecodeError(
                    f"transfer extensions of {ilen} bytes", where="XFER_SEGMENT"
                )
            if n < i + ilen:
                return None
            items = _items_untrusted(
                bytes(buf[i : i + ilen]), "XFER_SEGMENT extensions"
            )
            i += ilen
        if n < i + 8:
            return None
        (dlen,) = struct.unpack_from(">Q", buf, i)
        i += 8
        if dlen > limits.segment_mru:
            raise DecodeError(
                f"segment of {dlen} bytes exceeds our segment MRU {limits.segment_mru}",
                where="XFER_SEGMENT",
            )
        if n < i + dlen:
            return None
        seg = XferSegment(
            flags=SegmentFlags(flags & 0x03),
            transfer_id=tid,
            data=bytes(buf[i : i + dlen]),
            extensions=items,
        )
        return seg, i + dlen
    if t == MessageType.XFER_ACK:
        if n < 18:
            return None
        flags, tid, length = struct.unpack_from(">BQQ", buf, 1)
        return XferAck(
            flags=SegmentFlags(flags & 0x03), transfer_id=tid, length=length
        ), 18
    if t == MessageType.XFER_REFUSE:
        if n < 10:
            return None
        reason, tid = struct.unpack_from(">BQ", buf, 1)
        return XferRefuse(reason=_enum(RefuseReason, reason), transfer_id=tid), 10
    if t == MessageType.KEEPALIVE:
        return KeepAlive(), 1
    if t == MessageType.SESS_TERM:
        if n < 3:
            return None
        return SessTerm(
            flags=TermFlags(buf[1] & 0x01), reason=_enum(TermReason, buf[2])
        ), 3
    if t == MessageType.MSG_REJECT:
        if n < 3:
            return None
        return MsgReject(reason=_enum(RejectReason, buf[1]), header=buf[2]), 3
    if t == MessageType.SESS_INIT:
        if n < 21:
            return None
        keepalive, smru, tmru, nid_len = struct.unpack_from(">HQQH", buf, 1)
        if nid_len > limits.max_node_id:
            raise DecodeError(f"node id of {nid_len} bytes", where="SESS_INIT")
        i = 21
        if n < i + nid_len + 4:
            return None
        try:
            node_id = bytes(buf[i : i + nid_len]).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("node id is not UTF-8", where="SESS_INIT") from None
        i += nid_len
        (ilen,) = struct.unpack_from(">I", buf, i)
        i += 4
        if ilen > limits.max_extensions:
            raise DecodeError(f"session extensions of {ilen} bytes", where="SESS_INIT")
        if n < i + ilen:
            return None
        items = _items_untrusted(bytes(buf[i : i + ilen]), "SESS_INIT extensions")
        i += ilen
        return (
            SessInit(
                keepalive_s=keepalive,
                segment_mru=smru,
                transfer_mru=tmru,
                node_id=node_id,
                extensions=items,
            ),
            i,
        )
    raise DecodeError("unknown message type", where=f"type 0x{t:02x}")


def _enum(kind: type[IntEnum], v: int) -> int:
    try:
        return kind(v)
    except ValueError:
        return v  # an unassigned code is kept as a number (RFC 9174: treat as Unknown)
