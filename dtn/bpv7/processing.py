"""Bundle processing helpers for the agent: unprocessable blocks, forwarding updates.

RFC 9171 section 5.6 step 3 (block processing flags on reception) and 5.4
(forwarding: previous node, bundle age, hop count).
https://www.rfc-editor.org/rfc/rfc9171#section-5.6

Theory of operation
-------------------
:func:`update_for_forwarding` rewrites a bundle's hop blocks (previous
node, bundle age, hop count) for the next hop; the agent then encodes the
result. For a bundle this node encoded itself (originated here: the stored
bytes are ``encode_bundle_parts`` of the very bundle object) only the
extension blocks differ from the stored encoding -- each block carries its
own CRC, so the primary block and the payload block are the same bytes at
every hop. :func:`forward_splice` cuts those two pieces from the stored
encoding once (:data:`ForwardSplice`) and :func:`forwarded_parts` writes
the forwarded bundle as the primary block's bytes, the extension blocks
encoded (the previous node block and the next hop count block remembered:
they are the same for every bundle from here), and the payload block's
bytes: byte for byte ``encode_bundle_parts(update_for_forwarding(b))``
(spec/performance.md, "Seventh round: the forwarding encode spliced").
Anything else -- BPSec blocks, a hop limit exceeded, a value out of range
or a malformed block -- answers None, and the caller takes the general
path.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, TypeAlias

from dcis.dtn.bpv7.bundle import (
    GATHER_PAYLOAD_BYTES,
    Bundle,
    bcb_targets,
    trusted_bundle,
)
from dcis.dtn.bpv7.canonical import (
    KNOWN_BLOCK_TYPES,
    CanonicalBlock,
    HopCount,
    _set_CanonicalBlock_crc_type,
    _set_CanonicalBlock_data,
    _set_CanonicalBlock_flags,
    _set_CanonicalBlock_number,
    _set_CanonicalBlock_type_code,
    block_head,
    decode_bundle_age_untrusted,
    decode_hop_count_untrusted,
    encode_block_parts,
    encode_bundle_age,
    encode_hop_count,
    encode_previous_node,
)
from dcis.dtn.bpv7.eid import Eid
from dcis.dtn.bpv7.flags import BlockFlags, BlockType, CrcType
from dcis.dtn.bpv7.primary import check_uint, encode_primary
from dcis.dtn.errors import DecodeError, InvalidArgument


@dataclass(frozen=True, slots=True)
class BlockVerdict:
    """What to do with a received bundle given the blocks we cannot process.

    - ``delete``: a block asked for the bundle to be deleted (reason: block
      unsupported); ``bundle`` is then None.
    - ``report``: send a reception status report with reason BLOCK_UNSUPPORTED
      (if the bundle asked for reception reports and reporting is on).
    - ``bundle``: the bundle to keep processing, without the discarded blocks.
    - ``discarded`` / ``unprocessable``: block numbers, for logging.
    """

    bundle: Bundle | None
    delete: bool
    report: bool
    discarded: tuple[int, ...]
    unprocessable: tuple[int, ...]


def apply_unprocessable_blocks(
    b: Bundle, known_types: Collection[int] = KNOWN_BLOCK_TYPES
) -> BlockVerdict:
    """Honour the block processing flags of every block whose type is not in ``known_types``.

    RFC 9171 5.6 step 3: REPORT_IF_UNPROCESSABLE asks for a report;
    DELETE_BUNDLE_IF_UNPROCESSABLE deletes the bundle; otherwise
    DISCARD_IF_UNPROCESSABLE removes the block; a block with none of these is
    kept and forwarded unchanged. Callers pass the types they process (e.g.
    add BIB/BCB once BPSec is handled).
    """
    report = False
    delete = False
    discarded: list[int] = []
    unprocessable: list[int] = []
    for blk in b.blocks:
        if blk.type_code in known_types:
            continue
        unprocessable.append(blk.number)
        if blk.flags & BlockFlags.REPORT_IF_UNPROCESSABLE:
            report = True
        if blk.flags & BlockFlags.DELETE_BUNDLE_IF_UNPROCESSABLE:
            delete = True
        elif blk.flags & BlockFlags.DISCARD_IF_UNPROCESSABLE:
            discarded.append(blk.number)
    if delete:
        return BlockVerdict(None, True, report, (), tuple(unprocessable))
    kept = b
    if discarded:
        gone = set(discarded)
        kept = Bundle(
            b.primary, tuple(blk for blk in b.blocks if blk.number not in gone)
        )
    return BlockVerdict(kept, False, report, tuple(discarded), tuple(unprocessable))


def update_for_forwarding(b: Bundle, *, node: Eid, dwell_ms: int) -> Bundle:
    """The bundle as this node forwards it (RFC 9171 5.4, 4.4).

    Sets the previous node block to ``node`` (replacing any received one,
    keeping its number, flags and CRC type), adds ``dwell_ms`` (time held here)
    to the bundle age block if present, and increments the hop count if
    present. Use :func:`hop_limit_exceeded` afterwards to decide on deletion.
    Raises DecodeError if a received extension block is malformed.

    A new previous node block, and a bundle age block for a bundle without
    a creation time (RFC 9171 4.2.7), go before the payload block, numbered
    above every block present. The blocks are rebuilt in one pass without
    re-validating the bundle: it was valid, and the changes keep numbers
    unique, types unrepeated and the payload last (issue 18: this ran on
    every forwarded bundle, ~25 us in five validated constructions).
    """
    blocks = b.blocks
    # Blocks a BCB encrypts (RFC 9172 3.9) are opaque here: left as they are.
    encrypted = bcb_targets(blocks)
    out = list(blocks)
    prev_at = age_at = hop_at = -1
    top = 0
    for i, blk in enumerate(blocks):
        t = blk.type_code
        if t == BlockType.PREVIOUS_NODE and prev_at < 0:
            prev_at = i
        elif t == BlockType.BUNDLE_AGE and age_at < 0:
            age_at = i
        elif t == BlockType.HOP_COUNT and hop_at < 0:
            hop_at = i
        if blk.number > top:
            top = blk.number
    added: list[CanonicalBlock] = []
    if prev_at < 0:
        top += 1
        check_uint("block number (0 is the primary block)", top, 1)
        added.append(
            _block(
                BlockType.PREVIOUS_NODE,
                top,
                BlockFlags.NONE,
                CrcType.NONE,
                _previous_node_data(node),
            )
        )
    else:
        old = blocks[prev_at]
        if old.number not in encrypted:
            out[prev_at] = _block(
                BlockType.PREVIOUS_NODE,
                old.number,
                old.flags,
                old.crc_type,
                _previous_node_data(node),
            )
    if age_at >= 0:
        old = blocks[age_at]
        if old.number not in encrypted:
            age = decode_bundle_age_untrusted(old.data) + dwell_ms
            out[age_at] = _block(
                BlockType.BUNDLE_AGE,
                old.number,
                old.flags,
                old.crc_type,
                encode_bundle_age(age),
            )
    elif b.primary.creation.time_ms == 0:
        # RFC 9171 4.2.7: a bundle without a creation time must carry its age.
        top += 1
        check_uint("block number (0 is the primary block)", top, 1)
        added.append(_age_block(top, dwell_ms))
    if hop_at >= 0:
        old = blocks[hop_at]
        if old.number not in encrypted:
            out[hop_at] = _block(
                BlockType.HOP_COUNT,
                old.number,
                old.flags,
                old.crc_type,
                _next_hop_count_data(old.data),
            )
    if added:
        out[-1:-1] = added  # the payload block stays last
    return trusted_bundle(b.primary, tuple(out))


# Forwarding writes the same few block contents again and again: this node's
# EID as previous node, and the hop count one above each received one.
_CACHE_MAX = 1024
_PREVIOUS_NODE_DATA: dict[Eid, bytes] = {}
_NEXT_HOP_COUNT_DATA: dict[bytes, bytes] = {}


def _previous_node_data(node: Eid) -> bytes:
    """``encode_previous_node(node)``, remembered (a node forwards as itself)."""
    data = _PREVIOUS_NODE_DATA.get(node)
    if data is None:
        data = encode_previous_node(node)
        if len(_PREVIOUS_NODE_DATA) < _CACHE_MAX:
            _PREVIOUS_NODE_DATA[node] = data
    return data


def _next_hop_count_data(old: bytes) -> bytes:
    """The hop count block data one hop after ``old`` (same limit, count + 1);
    raises DecodeError for malformed ``old``, InvalidArgument past 2**64-1,
    as decoding and re-encoding would. Remembered: a few hundred values."""
    data = _NEXT_HOP_COUNT_DATA.get(old)
    if data is None:
        hc = decode_hop_count_untrusted(old)
        data = encode_hop_count(HopCount(hc.limit, hc.count + 1))
        if len(_NEXT_HOP_COUNT_DATA) < _CACHE_MAX and len(old) <= 32:
            _NEXT_HOP_COUNT_DATA[old] = data
    return data


def _block(
    type_code: int, number: int, flags: BlockFlags, crc_type: CrcType, data: bytes
) -> CanonicalBlock:
    """A block whose fields are known valid (taken from a valid block, or
    numbered above every block of a valid bundle): no re-validation."""
    blk = object.__new__(CanonicalBlock)
    _set_CanonicalBlock_type_code(blk, type_code)
    _set_CanonicalBlock_number(blk, number)
    _set_CanonicalBlock_flags(blk, flags)
    _set_CanonicalBlock_crc_type(blk, crc_type)
    _set_CanonicalBlock_data(blk, data)
    return blk


def _age_block(number: int, age_ms: int) -> CanonicalBlock:
    """A new bundle age block (RFC 9171 4.4.2) numbered ``number``, no
    flags and no CRC: the one forwarding adds to a bundle without a
    creation time (4.2.7), on the general path and the spliced one alike.
    Raises InvalidArgument for an age past 2**64-1."""
    return _block(
        BlockType.BUNDLE_AGE,
        number,
        BlockFlags.NONE,
        CrcType.NONE,
        encode_bundle_age(age_ms),
    )


ForwardSplice: TypeAlias = tuple[bytes, bytes, bytes]
"""The pieces of a bundle's canonical encoding that forwarding leaves
unchanged (:func:`forward_splice`): the outer array's head and the primary
block; the payload block up to its data (array head, fields, the data's
head); the payload block's CRC field (if it has one) and the closing
break. A plain tuple: one is made per bundle originated, and a frozen
dataclass's construction alone cost ~0.4 us of the ~1.5 us saved."""


# Length of a block's CRC field (the byte string's head and value) by CRC type.
_CRC_FIELD_BYTES: Final = (0, 3, 5)

# Blocks whose presence keeps a bundle on the general path: a BIB's or a
# BCB's targets, and a BCB's ciphertext, are not rewritten here.
_SECURITY_BLOCKS: Final = frozenset((BlockType.BIB, BlockType.BCB))

_U64: Final = 0xFFFF_FFFF_FFFF_FFFF

# Enum members read for every bundle forwarded, bound once: on Python 3.11
# a member read off its class goes through EnumType's ``__getattr__``
# attribute hook, ~4x a global's cost (spec/performance.md, "Eighth round:
# the 1 KB path").
_PREVIOUS_NODE: Final = BlockType.PREVIOUS_NODE
_BUNDLE_AGE: Final = BlockType.BUNDLE_AGE
_HOP_COUNT: Final = BlockType.HOP_COUNT
_NO_BLOCK_FLAGS: Final = BlockFlags.NONE
_NO_CRC: Final = CrcType.NONE


def forward_splice(
    b: Bundle, data: bytes | memoryview | tuple[bytes, ...]
) -> ForwardSplice | None:
    """The unchanged pieces of ``data`` for :func:`forwarded_parts`, or None
    when ``b`` must take the general path (a BIB or a BCB among its blocks)
    or ``data`` is not laid out as its canonical encoding.

    ``data`` must be ``encode_bundle_parts(b)`` (or its join): bytes this
    node encoded from this very bundle object, e.g. one it originated --
    never bytes received, which may encode a field in a longer CBOR form.
    The primary block and the payload block's head are compared with
    their canonical encoding; the payload block's CRC field is taken from
    ``data`` (the caller's contract: not computed again).
    """
    blocks = b.blocks
    for blk in blocks:
        if blk.type_code in _SECURITY_BLOCKS:
            return None
    payload = blocks[-1]
    crc_type = payload.crc_type
    k = _CRC_FIELD_BYTES[crc_type]
    head = b"\x9f" + encode_primary(b.primary)
    n = len(payload.data)
    flags = payload.flags
    # The payload block's head (type and number 1), compared with ``data``
    # below: as block_head writes it, without its ~0.5 us of generality.
    if flags < 24 and 24 <= n < 0x10000:
        lead = 0x86 if crc_type else 0x85
        payload_head = (
            bytes((lead, 1, 1, flags, crc_type, 0x58, n))
            if n < 0x100
            else bytes((lead, 1, 1, flags, crc_type, 0x59, n >> 8, n & 0xFF))
        )
    else:
        payload_head = block_head(payload)
    if isinstance(data, tuple):
        if len(data) == 1:
            data = data[0]
        elif len(data) != 3 or data[1] is not payload.data:
            return None
        else:
            first, tail = data[0], data[2]
            if (
                len(tail) != k + 1
                or first[: len(head)] != head
                or first[len(first) - len(payload_head) :] != payload_head
            ):
                return None
            return (head, payload_head, bytes(tail))
    end = len(data) - 1  # the closing break
    start = end - k - len(payload.data) - len(payload_head)
    if (
        start < len(head)
        or data[end] != 0xFF
        or data[: len(head)] != head
        or data[start : start + len(payload_head)] != payload_head
    ):
        return None
    return (head, payload_head, bytes(data[end - k :]))


def forwarded_parts(
    b: Bundle, splice: ForwardSplice, *, node: Eid, dwell_ms: int
) -> tuple[bytes, ...] | None:
    """``encode_bundle_parts(update_for_forwarding(b, node=node,
    dwell_ms=dwell_ms))``, byte for byte and in the same buffers, written
    from ``splice`` (:func:`forward_splice` of ``b`` and its stored bytes)
    with only the extension blocks encoded. None when the general path
    must decide: the hop limit exceeded (the bundle is deleted there), a
    malformed extension block, a number or an age out of range.
    """
    blocks = b.blocks
    head, payload_head, tail = splice
    parts: list[bytes | memoryview] = [head]
    prev_seen = age_seen = hop_seen = False
    top = 1  # the payload block's number
    try:
        for blk in blocks[:-1]:
            t = blk.type_code
            n = blk.number
            if n > top:
                top = n
            if t == _PREVIOUS_NODE and not prev_seen:
                prev_seen = True
                parts.append(_previous_node_block(n, blk.flags, blk.crc_type, node))
            elif t == _BUNDLE_AGE and not age_seen:
                age_seen = True
                age = decode_bundle_age_untrusted(blk.data) + dwell_ms
                parts.extend(
                    encode_block_parts(
                        _block(t, n, blk.flags, blk.crc_type, encode_bundle_age(age))
                    )
                )
            elif t == _HOP_COUNT and not hop_seen:
                hop_seen = True
                got = _next_hop_count_block(n, blk.flags, blk.crc_type, blk.data)
                if got is None:
                    return None  # hop limit exceeded
                parts.append(got)
            else:
                parts.extend(encode_block_parts(blk))
        if not prev_seen:
            top += 1
            if top > _U64:
                return None
            parts.append(_previous_node_block(top, _NO_BLOCK_FLAGS, _NO_CRC, node))
        if not age_seen and b.primary.creation.time_ms == 0:
            top += 1
            if top > _U64:
                return None
            parts.extend(encode_block_parts(_age_block(top, dwell_ms)))
    except (DecodeError, InvalidArgument):
        return None
    parts.append(payload_head)
    data = blocks[-1].data
    if len(data) < GATHER_PAYLOAD_BYTES:
        parts.append(data)
        parts.append(tail)
        return (b"".join(parts),)
    return (b"".join(parts), data, tail)


# Encoded forwarding blocks, by their fields: the previous node block is
# the same for every bundle from this node, the hop count block for every
# bundle with the same count so far.
# The previous node blocks of the last node asked for, by number, flags and
# CRC type (an agent forwards as one EID object: hashing an Eid per bundle
# would cost what the lookup saves).
_PREVIOUS_NODE_BLOCKS: list[tuple[Eid, dict[tuple[int, int, int], bytes]]] = []
_NEXT_HOP_COUNT_BLOCKS: dict[tuple[int, int, int, bytes], bytes | None] = {}


def _previous_node_block(number: int, flags: int, crc_type: int, node: Eid) -> bytes:
    """The encoded previous node block naming ``node``, remembered."""
    slot = _PREVIOUS_NODE_BLOCKS
    if not slot or slot[0][0] is not node:
        slot[:] = [(node, {})]
    table = slot[0][1]
    key = (number, flags, crc_type)
    got = table.get(key)
    if got is None:
        got = b"".join(
            encode_block_parts(
                _block(
                    BlockType.PREVIOUS_NODE,
                    number,
                    BlockFlags(flags),
                    CrcType(crc_type),
                    _previous_node_data(node),
                )
            )
        )
        if len(table) < _CACHE_MAX:
            table[key] = got
    return got


def _next_hop_count_block(
    number: int, flags: int, crc_type: int, old: bytes
) -> bytes | None:
    """The encoded hop count block one hop after data ``old``, remembered;
    None when that count exceeds the limit. Raises as
    :func:`_next_hop_count_data`."""
    key = (number, flags, crc_type, old)
    if key in _NEXT_HOP_COUNT_BLOCKS:
        return _NEXT_HOP_COUNT_BLOCKS[key]
    data = _next_hop_count_data(old)
    got: bytes | None = None
    if not decode_hop_count_untrusted(data).exceeded:
        got = b"".join(
            encode_block_parts(
                _block(
                    BlockType.HOP_COUNT,
                    number,
                    BlockFlags(flags),
                    CrcType(crc_type),
                    data,
                )
            )
        )
    if len(_NEXT_HOP_COUNT_BLOCKS) < _CACHE_MAX and len(old) <= 32:
        _NEXT_HOP_COUNT_BLOCKS[key] = got
    return got


def hop_limit_exceeded(b: Bundle) -> bool:
    """True when the bundle's hop count exceeds its hop limit (delete: reason 9)."""
    hc = b.hop_count
    return hc is not None and hc.count > hc.limit


def lifetime_expired(b: Bundle, now_ms: int) -> bool:
    """True when the bundle's lifetime has run out at DTN time ``now_ms``.

    Uses the creation time when known, else the bundle age block (the age as
    received; the caller adds local dwell time through ``now_ms - received``
    bookkeeping of its own).
    """
    p = b.primary
    if p.creation.time_ms:
        return now_ms > p.creation.time_ms + p.lifetime_ms
    age = b.bundle_age_ms
    return age is not None and age > p.lifetime_ms
