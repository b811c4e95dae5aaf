"""The primary bundle block (RFC 9171 section 4.3.1).

https://www.rfc-editor.org/rfc/rfc9171#section-4.3.1

CDDL (RFC 9171 Appendix B)::

    primary-block = [
        version: 7, bundle-control-flags, crc-type, destination: eid,
        source-node: eid, report-to: eid, creation-timestamp, lifetime: uint,
        ? (fragment-offset: uint, total-application-data-length: uint),
        ? crc-value,   ; present iff crc-type != 0
    ]
    creation-timestamp = [dtn-time, sequence: uint]
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from dcis.dtn.bpv7 import cbor
from dcis.dtn.bpv7.crc import crc16_raw, crc32c_raw
from dcis.dtn.bpv7.eid import DTN_NONE, Eid, encode_eid, read_eid
from dcis.dtn.bpv7.flags import BundleFlags, CrcType
from dcis.dtn.errors import DecodeError, InvalidArgument

BP_VERSION: Final = 7
U64_MAX: Final = (1 << 64) - 1


def check_uint(name: str, value: object, lo: int = 0, hi: int = U64_MAX) -> None:
    """Raise :class:`InvalidArgument` unless ``value`` is an int in ``lo..hi``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name} must be in {lo}..{hi}, got {value}")


_check_u64 = check_uint


@dataclass(frozen=True, slots=True)
class CreationTimestamp:
    """Bundle creation timestamp (RFC 9171 4.2.7).

    ``time_ms`` is DTN time (ms since 2000-01-01T00:00:00Z; 0 = the source had
    no accurate clock), ``sequence`` distinguishes bundles created in the same
    millisecond. Raises :class:`InvalidArgument` if either is not a u64.
    """

    time_ms: int
    sequence: int

    def __post_init__(self) -> None:
        _check_u64("creation time_ms", self.time_ms)
        _check_u64("creation sequence", self.sequence)


@dataclass(frozen=True, slots=True, kw_only=True)
class PrimaryBlock:
    """The primary block: every field of RFC 9171 4.3.1.

    ``fragment_offset`` and ``total_adu_length`` (bytes) are set exactly when
    ``flags`` has :attr:`BundleFlags.IS_FRAGMENT`. ``lifetime_ms`` is in
    milliseconds. Raises :class:`InvalidArgument` on any inconsistency.
    """

    version: int = BP_VERSION
    flags: BundleFlags = BundleFlags.NONE
    crc_type: CrcType = CrcType.CRC32C
    destination: Eid
    source: Eid
    report_to: Eid = DTN_NONE
    creation: CreationTimestamp
    lifetime_ms: int
    fragment_offset: int | None = None
    total_adu_length: int | None = None

    def __post_init__(self) -> None:
        if self.version != BP_VERSION:
            raise InvalidArgument(
                f"bundle protocol version must be 7, got {self.version}"
            )
        _check_u64("flags", self.flags)
        if self.crc_type not in (0, 1, 2):
            raise InvalidArgument(f"crc_type must be 0, 1 or 2, got {self.crc_type}")
        _check_u64("lifetime_ms", self.lifetime_ms)
        if int(self.flags) & _IS_FRAGMENT:  # int: IntFlag's & is slow
            if self.fragment_offset is None or self.total_adu_length is None:
                raise InvalidArgument(
                    "IS_FRAGMENT set: fragment_offset and total_adu_length are required"
                )
            _check_u64("fragment_offset", self.fragment_offset)
            _check_u64("total_adu_length", self.total_adu_length)
        elif self.fragment_offset is not None or self.total_adu_length is not None:
            raise InvalidArgument(
                "fragment_offset/total_adu_length given but IS_FRAGMENT is not set"
            )

    @property
    def is_fragment(self) -> bool:
        """True when this bundle is a fragment."""
        return bool(int(self.flags) & _IS_FRAGMENT)


# Slot setters for the decoder's trusted construction (faster than object.__setattr__).
_set_CreationTimestamp_sequence: Final = CreationTimestamp.__dict__["sequence"].__set__
_set_CreationTimestamp_time_ms: Final = CreationTimestamp.__dict__["time_ms"].__set__
_set_PrimaryBlock_crc_type: Final = PrimaryBlock.__dict__["crc_type"].__set__
_set_PrimaryBlock_creation: Final = PrimaryBlock.__dict__["creation"].__set__
_set_PrimaryBlock_destination: Final = PrimaryBlock.__dict__["destination"].__set__
_set_PrimaryBlock_flags: Final = PrimaryBlock.__dict__["flags"].__set__
_set_PrimaryBlock_fragment_offset: Final = PrimaryBlock.__dict__[
    "fragment_offset"
].__set__
_set_PrimaryBlock_lifetime_ms: Final = PrimaryBlock.__dict__["lifetime_ms"].__set__
_set_PrimaryBlock_report_to: Final = PrimaryBlock.__dict__["report_to"].__set__
_set_PrimaryBlock_source: Final = PrimaryBlock.__dict__["source"].__set__
_set_PrimaryBlock_total_adu_length: Final = PrimaryBlock.__dict__[
    "total_adu_length"
].__set__
_set_PrimaryBlock_version: Final = PrimaryBlock.__dict__["version"].__set__


# The last primary blocks encoded and their bytes, by identity. A bundle's
# primary block is encoded several times (a security block binds it, then
# the bundle is written; a bundle sent from here is encoded when it is
# stored and again, with new extension blocks, when it is forwarded);
# PrimaryBlock is frozen and the reference held here keeps its id from
# being reused, so an identity match is always the same value.
# (An OrderedDict: taking the oldest key of a plain dict that is added to at
# one end and emptied at the other scans the deleted slots, ~1 us a time.)
_encoded: OrderedDict[int, tuple[PrimaryBlock, bytes]] = OrderedDict()
_ENCODED_MAX: Final = 1024


def encode_primary(p: PrimaryBlock) -> bytes:
    """Canonical CBOR encoding of the primary block, CRC computed."""
    got = _encoded.get(id(p))
    if got is not None and got[0] is p:
        return got[1]
    out = _encode_primary(p)
    if len(_encoded) >= _ENCODED_MAX:
        _encoded.popitem(last=False)
    _encoded[id(p)] = (p, out)
    return out


def _encode_primary(p: PrimaryBlock) -> bytes:
    crc_type = p.crc_type
    uint = cbor.uint
    c = p.creation
    body = b"".join(
        (
            _PRIMARY_HEAD[(p.fragment_offset is not None, crc_type != 0)],
            uint(p.flags),
            _CRC_TYPE_BYTE[crc_type],
            encode_eid(p.destination),
            encode_eid(p.source),
            encode_eid(p.report_to),
            b"\x82",
            uint(c.time_ms),
            uint(c.sequence),
            uint(p.lifetime_ms),
        )
    )
    if p.fragment_offset is not None:
        body += uint(p.fragment_offset) + uint(p.total_adu_length)  # type: ignore[arg-type]
    if crc_type == 2:
        body += b"\x44"
        return body + crc32c_raw(b"\0\0\0\0", crc32c_raw(body)).to_bytes(4, "big")
    if crc_type == 1:
        body += b"\x42"
        return body + crc16_raw(b"\0\0", crc16_raw(body)).to_bytes(2, "big")
    return body


# Array head + version, by (is fragment, has CRC): 8 to 11 elements.
_PRIMARY_HEAD: Final = {
    (False, False): b"\x88\x07",
    (False, True): b"\x89\x07",
    (True, False): b"\x8a\x07",
    (True, True): b"\x8b\x07",
}
_CRC_TYPE_BYTE: Final = (b"\x00", b"\x01", b"\x02")


_W: Final = "primary block, field "
_IS_FRAGMENT: Final = int(BundleFlags.IS_FRAGMENT)
CRC_TYPES: Final = (CrcType.NONE, CrcType.CRC16, CrcType.CRC32C)
"""CrcType by value, without the cost of an enum call."""


@lru_cache(maxsize=512)
def bundle_flags(value: int) -> BundleFlags:
    """``BundleFlags(value)``, cached: IntFlag construction is slow and few values occur."""
    return BundleFlags(value)


def trusted_primary(
    *,
    flags: BundleFlags,
    crc_type: CrcType,
    destination: Eid,
    source: Eid,
    report_to: Eid,
    time_ms: int,
    sequence: int,
    lifetime_ms: int,
    fragment_offset: int | None = None,
    total_adu_length: int | None = None,
) -> PrimaryBlock:
    """A :class:`PrimaryBlock` built without
    :meth:`PrimaryBlock.__post_init__`, for a caller that checked every
    field (u64 values, a CrcType member, IS_FRAGMENT in the flags exactly
    when the fragment fields are given)."""
    primary = object.__new__(PrimaryBlock)
    _set_PrimaryBlock_version(primary, BP_VERSION)
    _set_PrimaryBlock_flags(primary, flags)
    _set_PrimaryBlock_crc_type(primary, crc_type)
    _set_PrimaryBlock_destination(primary, destination)
    _set_PrimaryBlock_source(primary, source)
    _set_PrimaryBlock_report_to(primary, report_to)
    creation = object.__new__(CreationTimestamp)
    _set_CreationTimestamp_time_ms(creation, time_ms)
    _set_CreationTimestamp_sequence(creation, sequence)
    _set_PrimaryBlock_creation(primary, creation)
    _set_PrimaryBlock_lifetime_ms(primary, lifetime_ms)
    _set_PrimaryBlock_fragment_offset(primary, fragment_offset)
    _set_PrimaryBlock_total_adu_length(primary, total_adu_length)
    return primary


def read_primary(
    buf: bytes | memoryview, mv: memoryview, pos: int, end: int
) -> tuple[PrimaryBlock, int]:
    """Decode the primary block at ``pos`` of ``buf`` (``mv`` views the same bytes).

    Verifies its CRC. Returns ``(block, new_pos)``; raises only :class:`DecodeError`.
    """
    start = pos
    read_uint = cbor.read_uint
    ib = buf[pos] if pos < end else 0
    if 0x88 <= ib <= 0x8B:  # fast path: the only valid array heads
        count, pos = ib - 0x80, pos + 1
    else:
        count, pos = cbor.read_array_head(buf, pos, end, "primary block, field array")
    if not 8 <= count <= 11:
        raise DecodeError(
            f"primary block must have 8 to 11 elements, got {count}",
            where="primary block, field array",
        )
    if pos < end and buf[pos] == BP_VERSION:  # fast path
        version, pos = BP_VERSION, pos + 1
    else:
        version, pos = read_uint(buf, pos, end, "primary block, field version")
    if version != BP_VERSION:
        raise DecodeError(
            f"unsupported bundle protocol version {version} (only 7)",
            where="primary block, field version",
        )
    flags, pos = read_uint(buf, pos, end, "primary block, field flags")
    crc_type, pos = read_uint(buf, pos, end, "primary block, field crc_type")
    if crc_type > 2:
        raise DecodeError(
            f"unknown CRC type {crc_type}", where="primary block, field crc_type"
        )
    is_frag = bool(flags & _IS_FRAGMENT)
    expected = 8 + (2 if is_frag else 0) + (1 if crc_type else 0)
    if count != expected:
        raise DecodeError(
            f"{count} elements, but flags (fragment={is_frag}) and CRC type {crc_type} require {expected}",
            where="primary block, field array",
        )
    destination, pos = read_eid(buf, pos, end, "primary block, field destination")
    source, pos = read_eid(buf, pos, end, "primary block, field source")
    report_to, pos = read_eid(buf, pos, end, "primary block, field report_to")
    if pos < end and buf[pos] == 0x82:  # fast path
        n, pos = 2, pos + 1
    else:
        n, pos = cbor.read_array_head(
            buf, pos, end, "primary block, field creation_timestamp"
        )
    if n != 2:
        raise DecodeError(
            f"creation timestamp must be [time, sequence], got {n} elements",
            where="primary block, field creation_timestamp",
        )
    time_ms, pos = read_uint(
        buf, pos, end, "primary block, field creation_timestamp.time"
    )
    sequence, pos = read_uint(
        buf, pos, end, "primary block, field creation_timestamp.sequence"
    )
    lifetime_ms, pos = read_uint(buf, pos, end, "primary block, field lifetime")
    offset: int | None = None
    total: int | None = None
    if is_frag:
        offset, pos = read_uint(buf, pos, end, "primary block, field fragment_offset")
        total, pos = read_uint(buf, pos, end, "primary block, field total_adu_length")
    if crc_type:
        pos = check_crc(buf, mv, start, pos, end, crc_type, "primary block, field crc")
    # Every field was checked above (CBOR uints are u64 by construction), so
    # skip __post_init__: this is the hot path of every received bundle.
    primary = trusted_primary(
        flags=bundle_flags(flags),
        crc_type=CRC_TYPES[crc_type],
        destination=destination,
        source=source,
        report_to=report_to,
        time_ms=time_ms,
        sequence=sequence,
        lifetime_ms=lifetime_ms,
        fragment_offset=offset,
        total_adu_length=total,
    )
    return primary, pos


def check_crc(
    buf: bytes | memoryview,
    mv: memoryview,
    start: int,
    pos: int,
    end: int,
    crc_type: int,
    where: str,
) -> int:
    """Read the CRC byte string at ``pos`` and verify it over ``buf[start:...]``.

    The CRC covers the block from ``start`` through the CRC field with its
    value zeroed (RFC 9171 4.2.1); the computation runs over a memoryview, so
    no block content (e.g. a large payload) is copied. Returns the new position.
    """
    want = 2 if crc_type == 1 else 4
    if pos + 1 + want <= end and buf[pos] == 0x40 + want:  # canonical head: fast path
        cs, ce = pos + 1, pos + 1 + want
    else:
        cs, ce = cbor.read_string_span(buf, pos, end, cbor.MAJOR_BYTES, where)
    if ce - cs != want:
        raise DecodeError(
            f"CRC field must be {want} bytes for CRC type {crc_type}, got {ce - cs}",
            where=where,
        )
    received = int.from_bytes(buf[cs:ce], "big")
    if crc_type == 2:
        computed = crc32c_raw(b"\0\0\0\0", crc32c_raw(mv[start:cs]))
    else:
        computed = crc16_raw(b"\0\0", crc16_raw(mv[start:cs]))
    if computed != received:
        raise DecodeError(
            f"CRC mismatch: block carries {received:#x}, computed {computed:#x}",
            where=where,
        )
    return ce
