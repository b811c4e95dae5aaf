"""The forwarding encode spliced from the stored bytes (issue 18): for a
bundle this node encoded itself, ``forwarded_parts`` gives exactly the
buffers of ``encode_bundle_parts(update_for_forwarding(b))`` -- or None
where that path deletes the bundle (hop limit) or raises -- and
``forward_splice`` refuses bundles with BPSec blocks and bytes that are not
the bundle's own canonical encoding."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.bpv7 import Bundle
from dcis.dtn.bpv7.bundle import GATHER_PAYLOAD_BYTES, encode_bundle_parts, make_bundle
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.eid import DtnEid, Eid, IpnEid
from dcis.dtn.bpv7.flags import BlockType, BundleFlags, CrcType
from dcis.dtn.bpv7.primary import CreationTimestamp
from dcis.dtn.bpv7.processing import (
    forward_splice,
    forwarded_parts,
    update_for_forwarding,
)
from dcis.dtn.errors import DtnError
from tests.property.bundle_strategies import bundles

G = GATHER_PAYLOAD_BYTES
# Around every length boundary the encoders branch on: the data's CBOR head
# (24, 256, 65536) and the gathered-buffers threshold.
payload_sizes = st.one_of(
    st.sampled_from(
        [0, 1, 23, 24, 255, 256, 1000, G - 1, G, G + 1, 65_535, 65_536, 70_000]
    ),
    st.integers(0, 3 * G),
)
nodes = st.sampled_from([IpnEid(1, 0), IpnEid(2**40, 0), DtnEid("//relay/")])
dwells = st.one_of(st.integers(0, 5), st.integers(0, 2**64 - 1))


def _slow(b: Bundle, node: Eid, dwell_ms: int) -> tuple[bytes, ...] | None:
    """The general path's answer: its buffers, or None where it deletes
    (hop limit) or raises."""
    try:
        out = update_for_forwarding(b, node=node, dwell_ms=dwell_ms)
    except DtnError:
        return None
    hop = out.hop_count
    if hop is not None and hop.exceeded:
        return None
    return encode_bundle_parts(out)


def _check(b: Bundle, node: Eid, dwell_ms: int, joined: bool) -> None:
    parts = encode_bundle_parts(b)
    stored = b"".join(parts) if joined else parts
    splice = forward_splice(b, stored)
    secured = any(blk.type_code in (BlockType.BIB, BlockType.BCB) for blk in b.blocks)
    if secured:
        assert splice is None
        return
    assert splice is not None
    fast = forwarded_parts(b, splice, node=node, dwell_ms=dwell_ms)
    slow = _slow(b, node, dwell_ms)
    assert fast == slow
    if fast is not None:
        # The same buffers, the payload not copied when gathered.
        assert len(fast) == (3 if len(b.payload) >= G else 1)
        if len(fast) == 3:
            assert fast[1] is b.payload
        # Forwarded twice (the next hop forwards what it got): still equal.
        again = forward_splice(fast_bundle := _forwarded(b, node, dwell_ms), fast)
        assert again is not None
        assert forwarded_parts(
            fast_bundle, again, node=node, dwell_ms=dwell_ms
        ) == _slow(fast_bundle, node, dwell_ms)


def _forwarded(b: Bundle, node: Eid, dwell_ms: int) -> Bundle:
    return update_for_forwarding(b, node=node, dwell_ms=dwell_ms)


@given(
    b=bundles(),
    size=payload_sizes,
    fill=st.binary(min_size=1, max_size=7),
    node=nodes,
    dwell_ms=dwells,
    no_clock=st.booleans(),
    joined=st.booleans(),
    security=st.sampled_from([None, None, BlockType.BIB, BlockType.BCB]),
)
def test_the_splice_is_the_general_encoding_of_any_bundle(
    b: Bundle,
    size: int,
    fill: bytes,
    node: Eid,
    dwell_ms: int,
    no_clock: bool,
    joined: bool,
    security: BlockType | None,
) -> None:
    # Any valid bundle (any extension blocks, numbers, flags and CRC types,
    # unknown and BPSec block types among them), its payload resized.
    payload = (fill * (size // len(fill) + 1))[:size]
    p = b.primary
    if no_clock:
        p = replace(p, creation=CreationTimestamp(0, p.creation.sequence))
    if p.fragment_offset is not None:
        p = replace(p, fragment_offset=0, total_adu_length=size)
    blocks = b.blocks[:-1]
    if security is not None:
        # A BIB or BCB targeting the payload block: the general path only.
        top = max((blk.number for blk in blocks), default=1)
        if top < 2**64 - 1:
            blocks = (*blocks, CanonicalBlock(security, top + 1, 0, 0, b"\x81\x01"))
    b = Bundle(p, (*blocks, replace(b.blocks[-1], data=payload)))
    _check(b, node, dwell_ms, joined)


@given(
    size=payload_sizes,
    crc=st.sampled_from(list(CrcType)),
    block_crc=st.sampled_from(list(CrcType)),
    creation_ms=st.sampled_from([0, 1, 1_000, 2**40]),
    previous=st.one_of(st.none(), st.just("ipn:7.0"), st.just("dtn://far/")),
    age=st.one_of(st.none(), st.integers(0, 2**40)),
    hop_limit=st.one_of(st.none(), st.integers(1, 255)),
    hops_left=st.integers(-2, 3),
    node=nodes,
    dwell_ms=dwells,
    joined=st.booleans(),
)
def test_the_splice_is_the_general_encoding_of_originated_shapes(
    size: int,
    crc: CrcType,
    block_crc: CrcType,
    creation_ms: int,
    previous: str | None,
    age: int | None,
    hop_limit: int | None,
    hops_left: int,
    node: Eid,
    dwell_ms: int,
    joined: bool,
) -> None:
    # The shapes this node originates (make_bundle/originate_bundle), with
    # the hop count near its limit: below it, at it, past it.
    count = 0 if hop_limit is None else max(0, hop_limit - hops_left)
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=bytes(range(256)) * (size // 256) + bytes(size % 256),
        creation_ms=creation_ms,
        sequence=3,
        lifetime_ms=3_600_000,
        flags=BundleFlags.NONE,
        crc_type=crc,
        block_crc_type=block_crc,
        previous_node=previous,
        bundle_age_ms=age,
        hop_limit=hop_limit,
        hop_count=count,
    )
    _check(b, node, dwell_ms, joined)


@given(b=bundles(max_payload=64))
def test_bytes_that_are_not_the_bundles_own_encoding_are_refused(b: Bundle) -> None:
    # Another payload block's bytes, or one byte off: no splice.
    data = b"".join(encode_bundle_parts(b))
    secured = any(blk.type_code in (BlockType.BIB, BlockType.BCB) for blk in b.blocks)
    assert (forward_splice(b, data) is None) == secured
    if b.primary.fragment_offset is None:  # (else may not fit the ADU)
        other = replace(b.blocks[-1], data=b.payload + b"!")
        longer = Bundle(b.primary, (*b.blocks[:-1], other))
        assert forward_splice(longer, data) is None
    assert forward_splice(b, data[:-1] + b"\x00") is None
    assert forward_splice(b, b"\x00" + data[1:]) is None


def test_a_payload_block_not_the_stored_one_is_refused() -> None:
    b = make_bundle(
        source="ipn:1.1", destination="ipn:2.1", payload=b"x" * G, creation_ms=1
    )
    parts = encode_bundle_parts(b)
    copy = Bundle(
        b.primary,
        (
            *b.blocks[:-1],
            CanonicalBlock(BlockType.PAYLOAD, 1, 0, CrcType.CRC32C, b"x" * G),
        ),
    )
    assert forward_splice(copy, parts) is None  # not the very data object
    assert forward_splice(b, parts) is not None


@pytest.mark.parametrize("size", [G - 1, G, G + 1])
@pytest.mark.parametrize("crc", list(CrcType))
def test_the_splice_keeps_the_buffers_at_the_gather_threshold(
    size: int, crc: CrcType
) -> None:
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"\x5a" * size,
        creation_ms=5,
        crc_type=crc,
        hop_limit=3,
    )
    for stored in (encode_bundle_parts(b), b"".join(encode_bundle_parts(b))):
        splice = forward_splice(b, stored)
        assert splice is not None
        fast = forwarded_parts(b, splice, node=IpnEid(1, 0), dwell_ms=7)
        assert fast is not None
        assert len(fast) == (1 if size < G else 3)
        assert fast == _slow(b, IpnEid(1, 0), 7)
