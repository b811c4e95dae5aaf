"""Administrative records: bundle status reports (RFC 9171 section 6.1).

https://www.rfc-editor.org/rfc/rfc9171#section-6.1.1

CDDL (RFC 9171 Appendix B)::

    admin-record = [record-type-code: uint, record-content: any]
    bundle-status-report = [
        bundle-status-information, status-report-reason-code: uint,
        source-node-eid: eid, subject-creation-timestamp: creation-timestamp,
        ? (subject-payload-offset: uint, subject-payload-length: uint),
    ]
    bundle-status-information = [
        reporting-node-received-bundle: status-info-content,
        reporting-node-forwarded-bundle: status-info-content,
        reporting-node-delivered-bundle: status-info-content,
        reporting-node-deleted-bundle: status-info-content,
    ]
    status-info-content = [status-indicator: bool, ? timestamp: dtn-time]

Administrative records of other types are kept opaque (``UnknownAdminRecord``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from dcis.dtn.bpv7 import cbor
from dcis.dtn.bpv7.bundle import Bundle, make_bundle
from dcis.dtn.bpv7.eid import Eid, encode_eid, is_null_eid, read_eid
from dcis.dtn.bpv7.flags import AdminRecordType, BundleFlags, CrcType
from dcis.dtn.bpv7.primary import CreationTimestamp, check_uint
from dcis.dtn.errors import DecodeError, InvalidArgument


class StatusReason(IntEnum):
    """Bundle status report reason codes (RFC 9171 9.5, RFC 9172 11.2)."""

    NO_INFO = 0
    LIFETIME_EXPIRED = 1
    FORWARDED_OVER_UNIDIRECTIONAL_LINK = 2
    TRANSMISSION_CANCELED = 3
    DEPLETED_STORAGE = 4
    DESTINATION_EID_UNAVAILABLE = 5
    NO_KNOWN_ROUTE = 6
    NO_TIMELY_CONTACT = 7
    BLOCK_UNINTELLIGIBLE = 8
    HOP_LIMIT_EXCEEDED = 9
    TRAFFIC_PARED = 10
    BLOCK_UNSUPPORTED = 11
    MISSING_SECURITY_OPERATION = 12
    UNKNOWN_SECURITY_OPERATION = 13
    UNEXPECTED_SECURITY_OPERATION = 14
    FAILED_SECURITY_OPERATION = 15
    CONFLICTING_SECURITY_OPERATION = 16


class StatusKind(IntEnum):
    """Which of the four status assertions; the value is its index on the wire."""

    RECEIVED = 0
    FORWARDED = 1
    DELIVERED = 2
    DELETED = 3


@dataclass(frozen=True, slots=True)
class StatusAssertion:
    """One status assertion: ``time_ms`` (DTN time) only when the subject asked for times."""

    asserted: bool = False
    time_ms: int | None = None

    def __post_init__(self) -> None:
        if self.time_ms is not None:
            if not self.asserted:
                raise InvalidArgument(
                    "a status time is only allowed on an asserted status"
                )
            check_uint("status time_ms", self.time_ms)


_NOT_ASSERTED: Final = StatusAssertion()


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport:
    """A bundle status report about the subject bundle (RFC 9171 6.1.1).

    ``reason`` is kept as an ``int`` when the code is not in :class:`StatusReason`.
    ``fragment_offset``/``payload_length`` are set when the subject is a fragment.
    """

    received: StatusAssertion = _NOT_ASSERTED
    forwarded: StatusAssertion = _NOT_ASSERTED
    delivered: StatusAssertion = _NOT_ASSERTED
    deleted: StatusAssertion = _NOT_ASSERTED
    reason: StatusReason | int = StatusReason.NO_INFO
    source: Eid
    creation: CreationTimestamp
    fragment_offset: int | None = None
    payload_length: int | None = None

    def __post_init__(self) -> None:
        check_uint("reason", self.reason)
        if (self.fragment_offset is None) != (self.payload_length is None):
            raise InvalidArgument("fragment_offset and payload_length go together")

    @property
    def subject_key(self) -> str:
        """The subject's ``Bundle.bundle_key``."""
        key = f"{self.source}|{self.creation.time_ms}|{self.creation.sequence}"
        if self.fragment_offset is not None:
            key += f"|{self.fragment_offset}|{self.payload_length}"
        return key


@dataclass(frozen=True, slots=True)
class UnknownAdminRecord:
    """An administrative record of a type we do not process; ``content`` is its raw CBOR."""

    type_code: int
    content: bytes


AdminRecord = StatusReport | UnknownAdminRecord


def _assertion(a: StatusAssertion) -> bytes:
    if not a.asserted:
        return b"\x81\xf4"
    if a.time_ms is None:
        return b"\x81\xf5"
    return b"\x82\xf5" + cbor.uint(a.time_ms)


def encode_admin_record(record: AdminRecord) -> bytes:
    """Canonical CBOR of an administrative record (the payload of an admin bundle)."""
    if isinstance(record, UnknownAdminRecord):
        return b"\x82" + cbor.uint(record.type_code) + record.content
    r = record
    frag = r.fragment_offset is not None
    parts = [
        b"\x82\x01",
        b"\x86" if frag else b"\x84",
        b"\x84",
        _assertion(r.received),
        _assertion(r.forwarded),
        _assertion(r.delivered),
        _assertion(r.deleted),
        cbor.uint(r.reason),
        encode_eid(r.source),
        b"\x82" + cbor.uint(r.creation.time_ms) + cbor.uint(r.creation.sequence),
    ]
    if frag:
        parts.append(cbor.uint(r.fragment_offset))  # type: ignore[arg-type]
        parts.append(cbor.uint(r.payload_length))  # type: ignore[arg-type]
    return b"".join(parts)


def _skip_item(
    buf: bytes | memoryview, pos: int, end: int, where: str, depth: int = 0
) -> int:
    """Skip one well-formed CBOR item (bounded nesting), for opaque record content."""
    if depth > 16:
        raise DecodeError("CBOR nested deeper than 16 levels", where=where)
    major, arg, pos = cbor.read_head(buf, pos, end, where)
    if arg < 0:
        raise DecodeError(
            "indefinite-length items are not allowed in administrative records",
            where=where,
        )
    if major in (2, 3):
        if arg > end - pos:
            raise DecodeError(
                f"length {arg} exceeds the {end - pos} bytes of input left", where=where
            )
        return pos + arg
    if major in (4, 5):
        n = arg * (2 if major == 5 else 1)
        if n > end - pos:  # every item takes at least one byte
            raise DecodeError(f"{n} items cannot fit in {end - pos} bytes", where=where)
        for _ in range(n):
            pos = _skip_item(buf, pos, end, where, depth + 1)
        return pos
    if major == 6:
        return _skip_item(buf, pos, end, where, depth + 1)
    return pos


def _read_bool(
    buf: bytes | memoryview, pos: int, end: int, where: str
) -> tuple[bool, int]:
    if pos >= end:
        raise DecodeError("truncated: expected a boolean", where=where)
    b = buf[pos]
    if b not in (0xF4, 0xF5):
        raise DecodeError(f"expected a boolean, found byte {b:#04x}", where=where)
    return b == 0xF5, pos + 1


def decode_admin_record_untrusted(data: bytes | memoryview) -> AdminRecord:
    """Decode an administrative record (an admin bundle's payload).

    Raises only :class:`DecodeError`, naming the field at fault.
    """
    try:
        return _decode_admin(data)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(
            f"malformed administrative record ({type(exc).__name__}: {exc})"
        ) from exc


def _decode_admin(data: bytes | memoryview) -> AdminRecord:
    buf = data
    end = len(buf)
    w = "admin record"
    n, pos = cbor.read_array_head(buf, 0, end, w)
    if n != 2:
        raise DecodeError(f"must be [type, content], got {n} elements", where=w)
    type_code, pos = cbor.read_uint(buf, pos, end, w + ", field type")
    if type_code != AdminRecordType.STATUS_REPORT:
        stop = _skip_item(buf, pos, end, w + ", field content")
        if stop != end:
            raise DecodeError(f"{end - stop} bytes after the record", where=w)
        return UnknownAdminRecord(type_code, bytes(buf[pos:stop]))
    w = "status report"
    count, pos = cbor.read_array_head(buf, pos, end, w)
    if count not in (4, 6):
        raise DecodeError(f"must have 4 or 6 elements, got {count}", where=w)
    k, pos = cbor.read_array_head(buf, pos, end, w + ", field status information")
    if k != 4:
        raise DecodeError(f"status information must have 4 entries, got {k}", where=w)
    assertions = []
    for kind in StatusKind:
        fw = f"{w}, field {kind.name.lower()}"
        m, pos = cbor.read_array_head(buf, pos, end, fw)
        if m not in (1, 2):
            raise DecodeError(
                f"status entry must be [bool, ? time], got {m} elements", where=fw
            )
        asserted, pos = _read_bool(buf, pos, end, fw)
        t: int | None = None
        if m == 2:
            t, pos = cbor.read_uint(buf, pos, end, fw + ".time")
            if not asserted:
                raise DecodeError("a time on a status that is not asserted", where=fw)
        assertions.append(StatusAssertion(asserted, t))
    reason, pos = cbor.read_uint(buf, pos, end, w + ", field reason")
    source, pos = read_eid(buf, pos, end, w + ", field source")
    m, pos = cbor.read_array_head(buf, pos, end, w + ", field creation_timestamp")
    if m != 2:
        raise DecodeError(
            f"creation timestamp must have 2 elements, got {m}",
            where=w + ", field creation_timestamp",
        )
    ct, pos = cbor.read_uint(buf, pos, end, w + ", field creation_timestamp.time")
    seq, pos = cbor.read_uint(buf, pos, end, w + ", field creation_timestamp.sequence")
    off: int | None = None
    length: int | None = None
    if count == 6:
        off, pos = cbor.read_uint(buf, pos, end, w + ", field fragment_offset")
        length, pos = cbor.read_uint(buf, pos, end, w + ", field payload_length")
    if pos != end:
        raise DecodeError(f"{end - pos} bytes after the record", where=w)
    try:
        reason_v: StatusReason | int = StatusReason(reason)
    except ValueError:
        reason_v = reason
    return StatusReport(
        received=assertions[0],
        forwarded=assertions[1],
        delivered=assertions[2],
        deleted=assertions[3],
        reason=reason_v,
        source=source,
        creation=CreationTimestamp(ct, seq),
        fragment_offset=off,
        payload_length=length,
    )


def status_report_for(
    subject: Bundle,
    kinds: set[StatusKind] | frozenset[StatusKind],
    *,
    reason: StatusReason | int,
    now_ms: int,
) -> StatusReport:
    """A status report asserting ``kinds`` about ``subject`` at DTN time ``now_ms``.

    Times are included only when the subject set STATUS_TIME_REQUESTED.
    """
    with_time = bool(subject.primary.flags & BundleFlags.STATUS_TIME_REQUESTED)
    a = [
        StatusAssertion(True, now_ms if with_time else None)
        if k in kinds
        else _NOT_ASSERTED
        for k in StatusKind
    ]
    p = subject.primary
    return StatusReport(
        received=a[0],
        forwarded=a[1],
        delivered=a[2],
        deleted=a[3],
        reason=reason,
        source=p.source,
        creation=p.creation,
        fragment_offset=p.fragment_offset,
        payload_length=len(subject.payload) if p.fragment_offset is not None else None,
    )


def make_status_report(
    subject: Bundle,
    kinds: set[StatusKind] | frozenset[StatusKind],
    *,
    reason: StatusReason | int = StatusReason.NO_INFO,
    now_ms: int,
    source: Eid,
    sequence: int = 0,
    lifetime_ms: int = 86_400_000,
    crc_type: CrcType = CrcType.CRC32C,
) -> Bundle | None:
    """The admin bundle carrying a status report about ``subject``, sent to its report-to EID.

    ``source`` is the reporting node's administrative endpoint. Returns None when
    no report may be sent: the report-to EID is ``dtn:none``, or the subject is
    itself an administrative record (RFC 9171 5.1: never report on reports).
    ``ipn:0.0`` counts as ``dtn:none`` (RFC 9758 3.4: the ipn null endpoint).
    """
    if subject.is_admin_record or is_null_eid(subject.primary.report_to):
        return None
    report = status_report_for(subject, kinds, reason=reason, now_ms=now_ms)
    return make_bundle(
        source=source,
        destination=subject.primary.report_to,
        payload=encode_admin_record(report),
        creation_ms=now_ms,
        sequence=sequence,
        lifetime_ms=lifetime_ms,
        flags=BundleFlags.ADMIN_RECORD,
        crc_type=crc_type,
    )
