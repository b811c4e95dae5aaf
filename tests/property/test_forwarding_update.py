"""update_for_forwarding (RFC 9171 5.4) rebuilt in one pass without
re-validation (issue 18) gives the bundle the validated version gave, on
any valid bundle: the previous version is kept below as the model."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.bpv7 import Bundle, encode_bundle
from dcis.dtn.bpv7.bundle import bcb_targets
from dcis.dtn.bpv7.canonical import (
    CanonicalBlock,
    HopCount,
    bundle_age_block,
    decode_bundle_age_untrusted,
    decode_hop_count_untrusted,
    encode_bundle_age,
    encode_hop_count,
    previous_node_block,
)
from dcis.dtn.bpv7.eid import DtnEid, Eid, IpnEid
from dcis.dtn.bpv7.flags import BlockType
from dcis.dtn.bpv7.primary import CreationTimestamp
from dcis.dtn.bpv7.processing import update_for_forwarding
from dcis.dtn.errors import DtnError
from tests.property.bundle_strategies import bundles


# The model: update_for_forwarding as it was before issue 18, one validated
# Bundle / CanonicalBlock construction per change.
def _replace_block(b: Bundle, old: CanonicalBlock, new: CanonicalBlock) -> Bundle:
    return Bundle(b.primary, tuple(new if blk is old else blk for blk in b.blocks))


def _insert_block(b: Bundle, new: CanonicalBlock) -> Bundle:
    # Extension blocks go before the payload block, which stays last.
    return Bundle(b.primary, (*b.blocks[:-1], new, b.blocks[-1]))


def model_update(b: Bundle, *, node: Eid, dwell_ms: int) -> Bundle:
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


def _outcome(fn: object, b: Bundle, node: Eid, dwell_ms: int) -> object:
    try:
        out = fn(b, node=node, dwell_ms=dwell_ms)  # type: ignore[operator]
    except DtnError as exc:  # the same error type, for the same bundle
        return type(exc)
    assert isinstance(out, Bundle)
    return out, encode_bundle(out)


@given(
    b=bundles(),
    node=st.sampled_from([IpnEid(3, 0), IpnEid(2**40, 0), DtnEid("//relay/")]),
    dwell_ms=st.integers(0, 2**40),
    no_clock=st.booleans(),
)
def test_the_one_pass_update_gives_the_models_bundle(
    b: Bundle, node: Eid, dwell_ms: int, no_clock: bool
) -> None:
    if no_clock:
        b = Bundle(
            replace(
                b.primary, creation=CreationTimestamp(0, b.primary.creation.sequence)
            ),
            b.blocks,
        )
    assert _outcome(update_for_forwarding, b, node, dwell_ms) == _outcome(
        model_update, b, node, dwell_ms
    )
