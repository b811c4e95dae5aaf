"""LTP segments (RFC 5326 section 3), byte for byte.

Theory of operation
-------------------
Every segment is a header, a content and optional trailer extensions
(https://www.rfc-editor.org/rfc/rfc5326#section-3.1)::

    control byte   version (4 bits, 0) | segment type flags (4 bits)
    session id     originator engine id (SDNV), session number (SDNV)
    counts byte    header extension count (4 bits) | trailer extension count (4 bits)
    header extensions   each: tag (1 byte), length (SDNV), value
    content             depends on the type (below)
    trailer extensions  as header extensions

Segment types (section 3.1.1 with erratum 1657):

===== ===========================================================
0-3   red data: 0 plain, 1 checkpoint, 2 checkpoint + end of red part,
      3 checkpoint + end of red part + end of block
4, 7  green data: 4 plain, 7 end of block (5 and 6 are reserved)
8     report segment (RS)         9  report-acknowledgement (RA)
12    cancel from block sender (CS)   13 its acknowledgement (CAS)
14    cancel from block receiver (CR) 15 its acknowledgement (CAR)
===== ===========================================================

Contents (section 3.2): a data segment carries client service id, offset,
length, then (checkpoints only) checkpoint serial number and report serial
number, then the data; an RS carries report serial, checkpoint serial, upper
bound, lower bound, claim count and ``(offset, length)`` claims whose offsets
are relative to the lower bound; an RA carries a report serial; a cancel a
one-byte reason code; a cancel-acknowledgement nothing.

Extensions are carried as opaque ``(tag, value)`` pairs: decoded, kept on the
segment, re-encoded unchanged, otherwise ignored (section 3.1.5 lets a
receiver skip tags it does not know).

Hostile input: :func:`decode_segment_untrusted` raises only
:class:`~dcis.dtn.errors.DecodeError`; every length it reads is checked against the
bytes actually left before anything is sliced or allocated, and a report's
claim count against what its claims could possibly occupy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dcis.dtn.cl.ltp.sdnv import MAX_SDNV, decode_sdnv_untrusted, encode_sdnv
from dcis.dtn.errors import DecodeError, InvalidArgument

MAX_EXTENSIONS = 15
"""A count is a 4-bit field."""


class SegmentType(enum.IntEnum):
    """The four segment type flags (RFC 5326 section 3.1.1)."""

    RED = 0
    RED_CHECKPOINT = 1
    RED_EORP = 2
    RED_EORP_EOB = 3
    GREEN = 4
    GREEN_EOB = 7
    REPORT = 8
    REPORT_ACK = 9
    CANCEL_FROM_SENDER = 12
    CANCEL_ACK_TO_SENDER = 13
    CANCEL_FROM_RECEIVER = 14
    CANCEL_ACK_TO_RECEIVER = 15

    @property
    def is_data(self) -> bool:
        """Red or green data."""
        return self <= 7

    @property
    def is_red(self) -> bool:
        """Red-part data."""
        return self <= 3

    @property
    def is_checkpoint(self) -> bool:
        """A red data segment that asks for a report."""
        return 1 <= self <= 3

    @property
    def is_eorp(self) -> bool:
        """The last red segment of the block."""
        return self in (SegmentType.RED_EORP, SegmentType.RED_EORP_EOB)

    @property
    def is_eob(self) -> bool:
        """The last segment of the block."""
        return self in (SegmentType.RED_EORP_EOB, SegmentType.GREEN_EOB)


DATA_TYPES = tuple(t for t in SegmentType if t.is_data)


class CancelReason(enum.IntEnum):
    """Reason codes of cancel segments (RFC 5326 section 3.2.4)."""

    USR_CNCLD = 0
    """The client service cancelled the session."""
    UNREACH = 1
    """The client service is unreachable."""
    RLEXC = 2
    """Retransmission limit exceeded."""
    MISCOLORED = 3
    """Red data after green data, or the other way round."""
    SYS_CNCLD = 4
    """A system condition (here: a resource bound) ended the session."""
    RXMTCYCEXC = 5
    """Exceeded the retransmission-cycles limit."""


@dataclass(frozen=True, slots=True)
class SessionId:
    """A session: the engine that opened it (the block sender) and its number."""

    originator: int
    number: int

    def __post_init__(self) -> None:
        if not (0 <= self.originator <= MAX_SDNV and 0 <= self.number <= MAX_SDNV):
            raise InvalidArgument(f"session id out of range: {self}")


@dataclass(frozen=True, slots=True)
class Extension:
    """A header or trailer extension (section 3.1.5), carried and otherwise ignored."""

    tag: int
    value: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 255:
            raise InvalidArgument(f"extension tag must be one byte, got {self.tag}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSegment:
    """A red or green data segment (section 3.2.1). ``offset`` counts bytes
    from the start of the block; serial numbers are set only on checkpoints."""

    session: SessionId
    type: SegmentType
    client_service: int
    offset: int
    data: bytes
    checkpoint_serial: int | None = None
    report_serial: int | None = None
    header_extensions: tuple[Extension, ...] = ()
    trailer_extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        if not self.type.is_data:
            raise InvalidArgument(f"{self.type.name} is not a data segment type")
        if not self.data:
            raise InvalidArgument("a data segment carries at least one byte")
        if not (
            0 <= self.client_service <= MAX_SDNV
            and self.offset >= 0
            and self.offset + len(self.data) <= MAX_SDNV
        ):
            raise InvalidArgument("data segment field out of range")
        if self.type.is_checkpoint != (self.checkpoint_serial is not None) or (
            self.checkpoint_serial is None
        ) != (self.report_serial is None):
            raise InvalidArgument(
                "checkpoint and report serial numbers go on checkpoints only"
            )
        _check_serials(self.checkpoint_serial, self.report_serial)
        _check_extensions(self.header_extensions, self.trailer_extensions)

    @property
    def end(self) -> int:
        """Offset just past this segment's data."""
        return self.offset + len(self.data)


@dataclass(frozen=True, slots=True)
class ReceptionClaim:
    """Bytes ``[lower + offset, lower + offset + length)`` were received.
    ``offset`` is relative to the report's lower bound, as on the wire."""

    offset: int
    length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSegment:
    """A report segment (section 3.2.2): what arrived of ``[lower, upper)``."""

    session: SessionId
    report_serial: int
    checkpoint_serial: int
    upper_bound: int
    lower_bound: int
    claims: tuple[ReceptionClaim, ...]
    header_extensions: tuple[Extension, ...] = ()
    trailer_extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.lower_bound <= self.upper_bound <= MAX_SDNV:
            raise InvalidArgument("report bounds out of order")
        if not 1 <= self.report_serial <= MAX_SDNV:
            raise InvalidArgument("report serial number must be >= 1")
        if not 0 <= self.checkpoint_serial <= MAX_SDNV:
            raise InvalidArgument("checkpoint serial number out of range")
        for c in self.claims:
            if (
                c.offset < 0
                or c.length < 1
                or self.lower_bound + c.offset + c.length > self.upper_bound
            ):
                raise InvalidArgument(f"claim {c} outside the report's bounds")
        _check_extensions(self.header_extensions, self.trailer_extensions)

    def absolute_claims(self) -> list[tuple[int, int]]:
        """The claims as ``(start, end)`` block offsets."""
        lo = self.lower_bound
        return [(lo + c.offset, lo + c.offset + c.length) for c in self.claims]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportAckSegment:
    """Acknowledges the report with ``report_serial`` (section 3.2.3)."""

    session: SessionId
    report_serial: int
    header_extensions: tuple[Extension, ...] = ()
    trailer_extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.report_serial <= MAX_SDNV:
            raise InvalidArgument("report serial number must be >= 1")
        _check_extensions(self.header_extensions, self.trailer_extensions)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelSegment:
    """Cancels the session (section 3.2.4): from the block sender (CS) when
    ``from_sender``, else from the block receiver (CR)."""

    session: SessionId
    from_sender: bool
    reason: CancelReason | int
    header_extensions: tuple[Extension, ...] = ()
    trailer_extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= int(self.reason) <= 255:
            raise InvalidArgument("reason code is one byte")
        _check_extensions(self.header_extensions, self.trailer_extensions)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelAckSegment:
    """Acknowledges a cancel (section 3.2.5): to the block sender (CAS) when
    ``to_sender``, else to the block receiver (CAR)."""

    session: SessionId
    to_sender: bool
    header_extensions: tuple[Extension, ...] = ()
    trailer_extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        _check_extensions(self.header_extensions, self.trailer_extensions)


Segment = (
    DataSegment | ReportSegment | ReportAckSegment | CancelSegment | CancelAckSegment
)


def _check_serials(cp: int | None, rs: int | None) -> None:
    # https://www.rfc-editor.org/rfc/rfc5326#section-3.2.1: checkpoint serial
    # numbers start at a random value >= 1; a report serial of 0 means the
    # checkpoint is not a response to a report.
    if cp is not None and not 1 <= cp <= MAX_SDNV:
        raise InvalidArgument("checkpoint serial number must be >= 1")
    if rs is not None and not 0 <= rs <= MAX_SDNV:
        raise InvalidArgument("report serial number out of range")


def _check_extensions(h: tuple[Extension, ...], t: tuple[Extension, ...]) -> None:
    if len(h) > MAX_EXTENSIONS or len(t) > MAX_EXTENSIONS:
        raise InvalidArgument(f"at most {MAX_EXTENSIONS} extensions each")


def segment_type(seg: Segment) -> SegmentType:
    """The type code of ``seg``."""
    if isinstance(seg, DataSegment):
        return seg.type
    if isinstance(seg, ReportSegment):
        return SegmentType.REPORT
    if isinstance(seg, ReportAckSegment):
        return SegmentType.REPORT_ACK
    if isinstance(seg, CancelSegment):
        return (
            SegmentType.CANCEL_FROM_SENDER
            if seg.from_sender
            else SegmentType.CANCEL_FROM_RECEIVER
        )
    return (
        SegmentType.CANCEL_ACK_TO_SENDER
        if seg.to_sender
        else SegmentType.CANCEL_ACK_TO_RECEIVER
    )


def _encode_extensions(out: bytearray, exts: tuple[Extension, ...]) -> None:
    for e in exts:
        out.append(e.tag)
        out += encode_sdnv(len(e.value))
        out += e.value


def encode_segment(seg: Segment) -> bytes:
    """The wire bytes of ``seg`` (RFC 5326 section 3)."""
    out = bytearray((segment_type(seg),))
    out += encode_sdnv(seg.session.originator)
    out += encode_sdnv(seg.session.number)
    out.append((len(seg.header_extensions) << 4) | len(seg.trailer_extensions))
    _encode_extensions(out, seg.header_extensions)
    if isinstance(seg, DataSegment):
        out += encode_sdnv(seg.client_service)
        out += encode_sdnv(seg.offset)
        out += encode_sdnv(len(seg.data))
        if seg.checkpoint_serial is not None:
            out += encode_sdnv(seg.checkpoint_serial)
            out += encode_sdnv(seg.report_serial or 0)
        out += seg.data
    elif isinstance(seg, ReportSegment):
        for v in (
            seg.report_serial,
            seg.checkpoint_serial,
            seg.upper_bound,
            seg.lower_bound,
            len(seg.claims),
        ):
            out += encode_sdnv(v)
        for c in seg.claims:
            out += encode_sdnv(c.offset)
            out += encode_sdnv(c.length)
    elif isinstance(seg, ReportAckSegment):
        out += encode_sdnv(seg.report_serial)
    elif isinstance(seg, CancelSegment):
        out.append(int(seg.reason))
    _encode_extensions(out, seg.trailer_extensions)
    return bytes(out)


def data_header_bytes(
    *, originator: int, number: int, client_service: int, offset: int, length: int
) -> int:
    """Worst-case bytes a checkpoint data segment adds to ``length`` bytes of
    data (no extensions): what a sender subtracts from the MTU."""
    return (
        1
        + len(encode_sdnv(originator))
        + len(encode_sdnv(number))
        + 1
        + len(encode_sdnv(client_service))
        + len(encode_sdnv(offset))
        + len(encode_sdnv(length))
        + 20  # two serial numbers of up to 10 bytes each
    )


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def sdnv(self, what: str) -> int:
        value, self.pos = decode_sdnv_untrusted(self.data, self.pos, what)
        return value

    def byte(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise DecodeError(f"{what} missing", where="ltp segment")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise DecodeError(
                f"{what}: {n} bytes claimed, {len(self.data) - self.pos} left",
                where="ltp segment",
            )
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def extensions(self, count: int, what: str) -> tuple[Extension, ...]:
        out = []
        for _ in range(count):
            tag = self.byte(f"{what} extension tag")
            n = self.sdnv(f"{what} extension length")
            out.append(Extension(tag, self.take(n, f"{what} extension value")))
        return tuple(out)


def decode_segment_untrusted(data: bytes | bytearray | memoryview) -> Segment:
    """Decode one LTP segment (one UDP datagram, RFC 7122 section 4).

    Raises only :class:`DecodeError`: empty or truncated input, a version
    other than 0, a reserved segment type, a length beyond the bytes present,
    a claim outside its report's bounds, or bytes left over.
    """
    r = _Reader(bytes(data))
    control = r.byte("control byte")
    if control >> 4 != 0:
        raise DecodeError(f"version {control >> 4} is not 0", where="ltp segment")
    try:
        kind = SegmentType(control & 0x0F)
    except ValueError:
        raise DecodeError(
            f"reserved segment type {control & 0x0F}", where="ltp segment"
        ) from None
    originator = r.sdnv("session originator")
    number = r.sdnv("session number")
    session = SessionId(originator, number)
    counts = r.byte("extension counts")
    header = r.extensions(counts >> 4, "header")
    seg: Segment
    try:
        if kind.is_data:
            service = r.sdnv("client service id")
            offset = r.sdnv("offset")
            length = r.sdnv("length")
            cp = rs = None
            if kind.is_checkpoint:
                cp = r.sdnv("checkpoint serial")
                rs = r.sdnv("report serial")
            body = r.take(length, "client service data")
            trailer = r.extensions(counts & 0x0F, "trailer")
            seg = DataSegment(
                session=session,
                type=kind,
                client_service=service,
                offset=offset,
                data=body,
                checkpoint_serial=cp,
                report_serial=rs,
                header_extensions=header,
                trailer_extensions=trailer,
            )
        elif kind is SegmentType.REPORT:
            rs = r.sdnv("report serial")
            cp = r.sdnv("checkpoint serial")
            upper = r.sdnv("upper bound")
            lower = r.sdnv("lower bound")
            count = r.sdnv("claim count")
            # Every claim takes at least two bytes: never loop (or allocate)
            # for more claims than the datagram could hold.
            if count > (len(r.data) - r.pos) // 2:
                raise DecodeError(
                    f"{count} claims cannot fit in the bytes left", where="ltp report"
                )
            claims = tuple(
                ReceptionClaim(r.sdnv("claim offset"), r.sdnv("claim length"))
                for _ in range(count)
            )
            trailer = r.extensions(counts & 0x0F, "trailer")
            seg = ReportSegment(
                session=session,
                report_serial=rs,
                checkpoint_serial=cp,
                upper_bound=upper,
                lower_bound=lower,
                claims=claims,
                header_extensions=header,
                trailer_extensions=trailer,
            )
        elif kind is SegmentType.REPORT_ACK:
            rs = r.sdnv("report serial")
            trailer = r.extensions(counts & 0x0F, "trailer")
            seg = ReportAckSegment(
                session=session,
                report_serial=rs,
                header_extensions=header,
                trailer_extensions=trailer,
            )
        elif kind in (SegmentType.CANCEL_FROM_SENDER, SegmentType.CANCEL_FROM_RECEIVER):
            reason = r.byte("reason code")
            trailer = r.extensions(counts & 0x0F, "trailer")
            try:
                code: CancelReason | int = CancelReason(reason)
            except ValueError:
                code = reason  # reserved codes are carried as numbers
            seg = CancelSegment(
                session=session,
                from_sender=kind is SegmentType.CANCEL_FROM_SENDER,
                reason=code,
                header_extensions=header,
                trailer_extensions=trailer,
            )
        else:
            trailer = r.extensions(counts & 0x0F, "trailer")
            seg = CancelAckSegment(
                session=session,
                to_sender=kind is SegmentType.CANCEL_ACK_TO_SENDER,
                header_extensions=header,
                trailer_extensions=trailer,
            )
    except InvalidArgument as exc:
        raise DecodeError(str(exc), where=f"ltp {kind.name}") from exc
    if r.pos != len(r.data):
        raise DecodeError(
            f"{len(r.data) - r.pos} bytes after the segment", where="ltp segment"
        )
    return seg
