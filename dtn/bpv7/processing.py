"""Bundle processing helpers for the agent: unprocessable blocks, forwarding updates.

RFC 9171 section 5.6 step 3 (block processing flags on reception) and 5.4
(forwarding: previous node, bundle age, hop count).
https://www.rfc-editor.org/rfc/rfc9171#section-5.6
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from dcis.dtn.bpv7.bundle import Bundle, bcb_targets
from dcis.dtn.bpv7.canonical import (
    KNOWN_BLOCK_TYPES,
    CanonicalBlock,
    HopCount,
    bundle_age_block,
    decode_bundle_age_untrusted,
    decode_hop_count_untrusted,
    encode_bundle_age,
    encode_hop_count,
    previous_node_block,
)
from dcis.dtn.bpv7.eid import Eid
from dcis.dtn.bpv7.flags import BlockFlags, BlockType


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


def _replace_block(b: Bundle, old: CanonicalBlock, new: CanonicalBlock) -> Bundle:
    return Bundle(b.primary, tuple(new if blk is old else blk for blk in b.blocks))


def _insert_block(b: Bundle, new: CanonicalBlock) -> Bundle:
    # Extension blocks go before the payload block, which stays last.
    return Bundle(b.primary, (*b.blocks[:-1], new, b.blocks[-1]))


def update_for_forwarding(b: Bundle, *, node: Eid, dwell_ms: int) -> Bundle:
    """The bundle as this node forwards it (RFC 9171 5.4, 4.4).

    Sets the previous node block to ``node`` (replacing any received one,
    keeping its number, flags and CRC type), adds ``dwell_ms`` (time held here)
    to the bundle age block if present, and increments the hop count if
    present. Use :func:`hop_limit_exceeded` afterwards to decide on deletion.
    Raises DecodeError if a received extension block is malformed.
    """
    # Blocks a BCB encrypts (RFC 9172 3.9) are opaque here: left as they are.
    encrypted = bcb_targets(b.blocks)
    prev = b.block_of_type(BlockType.PREVIOUS_NODE)
    if prev is not None and prev.number in encrypted:
        pass
    elif prev is None:
        b = _insert_block(b, previous_node_block(node, b.next_block_number()))
    else:
        b = _replace_block(
            b,
            prev,
            previous_node_block(
                node, prev.number, flags=prev.flags, crc_type=prev.crc_type
            ),
        )
    age = b.block_of_type(BlockType.BUNDLE_AGE)
    if age is not None and age.number in encrypted:
        pass
    elif age is not None:
        b = _replace_block(
            b,
            age,
            replace(
                age,
                data=encode_bundle_age(
                    decode_bundle_age_untrusted(age.data) + dwell_ms
                ),
            ),
        )
    elif b.primary.creation.time_ms == 0:
        # RFC 9171 4.2.7: a bundle without a creation time must carry its age.
        b = _insert_block(b, bundle_age_block(dwell_ms, b.next_block_number()))
    hop = b.block_of_type(BlockType.HOP_COUNT)
    if hop is not None and hop.number not in encrypted:
        hc = decode_hop_count_untrusted(hop.data)
        b = _replace_block(
            b,
            hop,
            replace(hop, data=encode_hop_count(HopCount(hc.limit, hc.count + 1))),
        )
    return b


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
