"""Canonical bundle blocks and the extension blocks of RFC 9171.

https://www.rfc-editor.org/rfc/rfc9171#section-4.3.2 (canonical block) and
4.4.1 (previous node), 4.4.2 (bundle age), 4.4.3 (hop count).

CDDL (RFC 9171 Appendix B)::

    canonical-block = [
        block-type-code: uint, block-number: uint, block-control-flags,
        crc-type, block-type-specific-data: bstr, ? crc-value,
    ]
    previous-node-block-data = eid           ; inside the bstr
    bundle-age-block-data = uint             ; milliseconds
    hop-count-block-data = [hop-limit: uint, hop-count: uint]

A block of a type we do not process keeps its ``data`` byte for byte, so a
bundle forwarded through us is unchanged apart from the blocks we must update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from dcis.dtn.bpv7 import cbor
from dcis.dtn.bpv7.crc import crc16_raw, crc32c_raw
from dcis.dtn.bpv7.eid import Eid, encode_eid, read_eid
from dcis.dtn.bpv7.flags import BlockFlags, BlockType, CrcType
from dcis.dtn.bpv7.primary import CRC_TYPES, check_crc, check_uint
from dcis.dtn.errors import DecodeError, InvalidArgument

Data = bytes | memoryview


@lru_cache(maxsize=512)
def block_flags(value: int) -> BlockFlags:
    """``BlockFlags(value)``, cached: IntFlag construction is slow and few values occur."""
    return BlockFlags(value)


@dataclass(frozen=True, slots=True, repr=False)
class CanonicalBlock:
    """One canonical block (RFC 9171 4.3.2).

    ``data`` is the block-type-specific data: the *content* of the CBOR byte
    string (for the payload block, the payload bytes). ``number`` is unique in
    the bundle and >= 1 (1 is the payload block). Raises
    :class:`InvalidArgument` when a field is out of range.
    """

    type_code: int
    number: int
    flags: BlockFlags = BlockFlags.NONE
    crc_type: CrcType = CrcType.NONE
    data: bytes = b""

    def __post_init__(self) -> None:
        check_uint("block type code (0 is reserved)", self.type_code, 1)
        check_uint("block number (0 is the primary block)", self.number, 1)
        if self.type_code == BlockType.PAYLOAD and self.number != 1:
            raise InvalidArgument(
                f"the payload block must have number 1, got {self.number}"
            )
        check_uint("block flags", self.flags)
        if self.crc_type not in (0, 1, 2):
            raise InvalidArgument(f"crc_type must be 0, 1 or 2, got {self.crc_type!r}")
        if not isinstance(self.data, bytes):
            raise InvalidArgument(
                f"block data must be bytes, got {type(self.data).__name__}"
            )

    def __repr__(self) -> str:
        # A 1 MB payload must not turn a log line or a test failure into 2 MB of hex.
        data = self.data
        shown = (
            repr(data)
            if len(data) <= 48
            else f"<{len(data)} bytes: {data[:16].hex()}...>"
        )
        return (
            f"CanonicalBlock(type_code={self.type_code}, number={self.number}, "
            f"flags={self.flags!r}, crc_type={self.crc_type!r}, data={shown})"
        )


# Slot setters for the decoder's trusted construction (faster than object.__setattr__).
_set_CanonicalBlock_crc_type: Final = CanonicalBlock.__dict__["crc_type"].__set__
_set_CanonicalBlock_data: Final = CanonicalBlock.__dict__["data"].__set__
_set_CanonicalBlock_flags: Final = CanonicalBlock.__dict__["flags"].__set__
_set_CanonicalBlock_number: Final = CanonicalBlock.__dict__["number"].__set__
_set_CanonicalBlock_type_code: Final = CanonicalBlock.__dict__["type_code"].__set__


def trusted_block(
    type_code: int, number: int, flags: BlockFlags, crc_type: CrcType, data: bytes
) -> CanonicalBlock:
    """A :class:`CanonicalBlock` built without ``__post_init__``'s checks,
    for a caller whose fields are known valid (taken from a valid block)."""
    blk = object.__new__(CanonicalBlock)
    _set_CanonicalBlock_type_code(blk, type_code)
    _set_CanonicalBlock_number(blk, number)
    _set_CanonicalBlock_flags(blk, flags)
    _set_CanonicalBlock_crc_type(blk, crc_type)
    _set_CanonicalBlock_data(blk, data)
    return blk


def encode_block_parts(
    block: CanonicalBlock, crc: bytes | None = None
) -> list[bytes | memoryview]:
    """The canonical encoding of ``block`` as a list of chunks (payload not copied).

    Callers ``b"".join`` the chunks of a whole bundle once. ``crc``: the
    block's CRC field (the CBOR byte string holding the CRC value) when the
    caller has it from a canonical encoding of this same block
    (``bundle.stored_payload_crc``); it is then not computed again.
    """
    crc_type = block.crc_type
    data = block.data
    type_code = block.type_code
    number = block.number
    flags = block.flags
    n = len(data)
    if type_code < 24 and number < 24 and flags < 24 and n < 0x10000:
        # Nearly every block: one-byte header fields (the CRC field is the
        # 6th element when there is one).
        first = 0x86 if crc_type else 0x85
        if n < 24:
            header = bytes((first, type_code, number, flags, crc_type, 0x40 | n))
        elif n < 0x100:
            header = bytes((first, type_code, number, flags, crc_type, 0x58, n))
        else:
            header = bytes(
                (first, type_code, number, flags, crc_type, 0x59, n >> 8, n & 0xFF)
            )
    else:
        uint = cbor.uint
        header = b"".join(
            (
                b"\x86" if crc_type else b"\x85",
                uint(type_code),
                uint(number),
                uint(flags),
                _CRC_TYPE_BYTE[crc_type],
                cbor.head(2, n),
            )
        )
    if not crc_type:
        return [header, data]
    if crc is not None:
        return [header, data, crc]
    if crc_type == 2:
        crc32 = crc32c_raw(b"\x44\0\0\0\0", crc32c_raw(data, crc32c_raw(header)))
        return [header, data, b"\x44" + crc32.to_bytes(4, "big")]
    crc16 = crc16_raw(b"\x42\0\0", crc16_raw(data, crc16_raw(header)))
    return [header, data, b"\x42" + crc16.to_bytes(2, "big")]


def block_head(block: CanonicalBlock) -> bytes:
    """The canonical encoding of ``block`` up to its data: the array head,
    the four header fields and the head of the data's byte string."""
    return bytes(encode_block_parts(block, b"")[0])


_CRC_TYPE_BYTE: Final = (b"\x00", b"\x01", b"\x02")


def encode_block(block: CanonicalBlock) -> bytes:
    """Canonical CBOR encoding of one canonical block, CRC computed."""
    return b"".join(encode_block_parts(block))


ZERO_BLOCK_NUMBER = "block number 0 is the primary block's"
""":attr:`DecodeError.what` of a canonical block numbered 0 (see
``decode_bundle_untrusted(renumber_zero_blocks=True)``)."""


def read_block(
    buf: bytes | memoryview,
    mv: memoryview,
    pos: int,
    end: int,
    index: int,
    check_data: bool = True,
    *,
    allow_zero_number: bool = False,
) -> tuple[CanonicalBlock, int]:
    """Decode the canonical block at ``pos`` (the ``index``-th canonical block).

    Verifies the CRC over the raw input and, unless ``check_data`` is False
    (then call :func:`check_block_data` later), for the extension blocks we
    process (previous node, bundle age, hop count), the block-type-specific
    data. Returns ``(block, new_pos)``; raises only :class:`DecodeError`, whose
    ``where`` names the block number and type once they are known. With
    ``allow_zero_number`` an extension block numbered 0 is returned as it is
    (the caller renumbers it); otherwise that is an error.
    """
    start = pos
    read_uint = cbor.read_uint
    # Field names only on the hot path; the block's number and type are added
    # to the error's "where" below, so building strings costs nothing unless
    # something is wrong.
    type_code = number = -1
    try:
        # Fast path: array head and the four header fields each one byte
        # (values below 24), which is how nearly every block starts.
        if (
            pos + 5 <= end
            and (buf[pos] == 0x85 or buf[pos] == 0x86)
            and buf[pos + 1] < 24
            and buf[pos + 2] < 24
            and buf[pos + 3] < 24
            and buf[pos + 4] < 24
        ):
            count = buf[pos] - 0x80
            type_code = buf[pos + 1]
            number = buf[pos + 2]
            flags = buf[pos + 3]
            crc_type = buf[pos + 4]
            pos += 5
        else:
            count, pos = cbor.read_array_head(buf, pos, end, "array")
            if count != 5 and count != 6:
                raise DecodeError(
                    f"canonical block must have 5 or 6 elements, got {count}",
                    where="array",
                )
            type_code, pos = read_uint(buf, pos, end, "type_code")
            number, pos = read_uint(buf, pos, end, "number")
            flags, pos = read_uint(buf, pos, end, "flags")
            crc_type, pos = read_uint(buf, pos, end, "crc_type")
        if crc_type > 2:
            raise DecodeError(f"unknown CRC type {crc_type}", where="crc_type")
        if count != (6 if crc_type else 5):
            raise DecodeError(
                f"{count} elements, but CRC type {crc_type} requires {6 if crc_type else 5}",
                where="array",
            )
        if type_code == 0:
            raise DecodeError("block type 0 is reserved", where="type_code")
        if number == 0 and not allow_zero_number:
            raise DecodeError(ZERO_BLOCK_NUMBER, where="number")
        if type_code == 1 and number != 1:
            raise DecodeError(
                f"the payload block must have number 1, got {number}", where="number"
            )
        ds, de = cbor.read_string_span(buf, pos, end, cbor.MAJOR_BYTES, "data")
        pos = de
        if crc_type:
            pos = check_crc(buf, mv, start, pos, end, crc_type, "crc")
    except DecodeError as exc:
        known = (
            f"block {number} (type {type_code})"
            if number >= 0 and type_code >= 0
            else f"block at index {index}"
        )
        raise DecodeError(exc.what, where=f"{known}, field {exc.where}") from None
    # bytes(bytes) is the same object, so a bytes input costs exactly one copy here.
    data = bytes(buf[ds:de])
    # All fields checked above: skip __post_init__ (hot path).
    block = object.__new__(CanonicalBlock)
    _set_CanonicalBlock_type_code(block, type_code)
    _set_CanonicalBlock_number(block, number)
    _set_CanonicalBlock_flags(block, block_flags(flags))
    _set_CanonicalBlock_crc_type(block, CRC_TYPES[crc_type])
    _set_CanonicalBlock_data(block, data)
    if check_data and type_code in _CHECKERS:
        _CHECKERS[type_code](data, f"block {number} (type {type_code}), field data")
    return block, pos


def check_block_data(block: CanonicalBlock) -> None:
    """Validate the data of a previous node, bundle age or hop count block
    (no-op for other types). Raises :class:`DecodeError`."""
    checker = _CHECKERS.get(block.type_code)
    if checker is not None:
        checker(
            block.data, f"block {block.number} (type {block.type_code}), field data"
        )


# --- extension blocks -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HopCount:
    """Hop count block content (RFC 9171 4.4.3): ``limit`` in 1..255, ``count`` hops so far."""

    limit: int
    count: int

    def __post_init__(self) -> None:
        check_uint("hop limit", self.limit, 0, 255)
        check_uint("hop count", self.count)

    @property
    def exceeded(self) -> bool:
        """True when the bundle has taken more hops than its limit allows."""
        return self.count > self.limit


def encode_previous_node(eid: Eid) -> bytes:
    """Block-type-specific data of a previous node block."""
    return encode_eid(eid)


_CACHE_MAX: Final = 1024
"""Most entries of each decoded-data cache below (then new values are not kept)."""

_PREVIOUS_NODES: dict[bytes, Eid] = {}
"""Previous node block data decoded so far (as for hop counts: a node hears
from a few neighbours, and reads each bundle's previous node twice)."""


def decode_previous_node_untrusted(
    data: Data, where: str = "previous node block"
) -> Eid:
    """Decode previous node block data; raises only :class:`DecodeError`."""
    if type(data) is bytes:
        got = _PREVIOUS_NODES.get(data)
        if got is not None:
            return got
        eid = _decode_previous_node(data, where)
        if len(_PREVIOUS_NODES) < _CACHE_MAX and len(data) <= 64:
            _PREVIOUS_NODES[data] = eid
        return eid
    return _decode_previous_node(data, where)


def _decode_previous_node(data: Data, where: str) -> Eid:
    eid, pos = read_eid(data, 0, len(data), where)
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} bytes after the EID", where=where)
    return eid


def encode_bundle_age(age_ms: int) -> bytes:
    """Block-type-specific data of a bundle age block (``age_ms`` milliseconds)."""
    check_uint("bundle age (ms)", age_ms)
    return cbor.uint(age_ms)


def decode_bundle_age_untrusted(data: Data, where: str = "bundle age block") -> int:
    """Decode bundle age block data (ms); raises only :class:`DecodeError`."""
    age, pos = cbor.read_uint(data, 0, len(data), where)
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} bytes after the bundle age", where=where)
    return age


def encode_hop_count(hc: HopCount) -> bytes:
    """Block-type-specific data of a hop count block."""
    return b"\x82" + cbor.uint(hc.limit) + cbor.uint(hc.count)


_HOP_COUNTS: dict[bytes, HopCount] = {}
"""Hop count block data decoded so far (a few hundred values occur at most;
HopCount is frozen, so sharing is safe). Reading it takes ~2 us, and a
bundle's hop count is read three to four times on its way through a node."""


def decode_hop_count_untrusted(data: Data, where: str = "hop count block") -> HopCount:
    """Decode hop count block data; raises only :class:`DecodeError`."""
    if type(data) is bytes:
        got = _HOP_COUNTS.get(data)
        if got is not None:
            return got
        hc = _decode_hop_count(data, where)
        if len(_HOP_COUNTS) < _CACHE_MAX:
            _HOP_COUNTS[data] = hc
        return hc
    return _decode_hop_count(data, where)


def _decode_hop_count(data: Data, where: str) -> HopCount:
    n, pos = cbor.read_array_head(data, 0, len(data), where)
    if n != 2:
        raise DecodeError(
            f"hop count must be [limit, count], got {n} elements", where=where
        )
    limit, pos = cbor.read_uint(data, pos, len(data), where + ".limit")
    count, pos = cbor.read_uint(data, pos, len(data), where + ".count")
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} bytes after the hop count", where=where)
    try:
        return HopCount(limit, count)
    except InvalidArgument as exc:
        raise DecodeError(str(exc), where=where) from exc


_CHECKERS: Final[dict[int, Callable[[Data, str], object]]] = {
    BlockType.PREVIOUS_NODE: decode_previous_node_untrusted,
    BlockType.BUNDLE_AGE: decode_bundle_age_untrusted,
    BlockType.HOP_COUNT: decode_hop_count_untrusted,
}

CHECKED_BLOCK_TYPES: Final = frozenset(_CHECKERS)
"""Block types whose data the decoder validates (unless a BCB encrypts them)."""

KNOWN_BLOCK_TYPES: Final = frozenset(
    {
        BlockType.PAYLOAD,
        BlockType.PREVIOUS_NODE,
        BlockType.BUNDLE_AGE,
        BlockType.HOP_COUNT,
    }
)
"""Block types this module processes; others are kept byte for byte."""


def previous_node_block(
    eid: Eid,
    number: int,
    *,
    flags: BlockFlags = BlockFlags.NONE,
    crc_type: CrcType = CrcType.NONE,
) -> CanonicalBlock:
    """A previous node block naming ``eid``."""
    return CanonicalBlock(
        BlockType.PREVIOUS_NODE, number, flags, crc_type, encode_previous_node(eid)
    )


def bundle_age_block(
    age_ms: int,
    number: int,
    *,
    flags: BlockFlags = BlockFlags.NONE,
    crc_type: CrcType = CrcType.NONE,
) -> CanonicalBlock:
    """A bundle age block of ``age_ms`` milliseconds."""
    return CanonicalBlock(
        BlockType.BUNDLE_AGE, number, flags, crc_type, encode_bundle_age(age_ms)
    )


def hop_count_block(
    hc: HopCount,
    number: int,
    *,
    flags: BlockFlags = BlockFlags.NONE,
    crc_type: CrcType = CrcType.NONE,
) -> CanonicalBlock:
    """A hop count block."""
    return CanonicalBlock(
        BlockType.HOP_COUNT, number, flags, crc_type, encode_hop_count(hc)
    )
