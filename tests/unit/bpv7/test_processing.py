"""Unprocessable blocks and forwarding updates."""

from __future__ import annotations

from dcis.dtn.bpv7 import (
    BlockFlags,
    BlockType,
    Bundle,
    CanonicalBlock,
    HopCount,
    IpnEid,
    apply_unprocessable_blocks,
    hop_limit_exceeded,
    make_bundle,
    update_for_forwarding,
)


def with_blocks(*blocks: CanonicalBlock) -> Bundle:
    return make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"p",
        creation_ms=5,
        extra_blocks=blocks,
    )


def test_unknown_block_without_flags_is_kept() -> None:
    b = with_blocks(CanonicalBlock(99, 2, data=b"z"))
    v = apply_unprocessable_blocks(b)
    assert v.bundle == b
    assert not v.delete
    assert not v.report
    assert v.unprocessable == (2,)


def test_discard_and_report() -> None:
    b = with_blocks(
        CanonicalBlock(
            99,
            2,
            BlockFlags.DISCARD_IF_UNPROCESSABLE | BlockFlags.REPORT_IF_UNPROCESSABLE,
            data=b"z",
        ),
        CanonicalBlock(98, 3, data=b"y"),
    )
    v = apply_unprocessable_blocks(b)
    assert v.bundle is not None
    assert [blk.number for blk in v.bundle.blocks] == [3, 1]
    assert v.discarded == (2,)
    assert v.report


def test_delete_wins_over_discard() -> None:
    b = with_blocks(
        CanonicalBlock(99, 2, BlockFlags.DISCARD_IF_UNPROCESSABLE, data=b"z"),
        CanonicalBlock(98, 3, BlockFlags.DELETE_BUNDLE_IF_UNPROCESSABLE, data=b"y"),
    )
    v = apply_unprocessable_blocks(b)
    assert v.delete
    assert v.bundle is None


def test_known_types_are_configurable() -> None:
    b = with_blocks(
        CanonicalBlock(
            BlockType.BIB, 2, BlockFlags.DELETE_BUNDLE_IF_UNPROCESSABLE, data=b"z"
        )
    )
    assert apply_unprocessable_blocks(b).delete
    assert not apply_unprocessable_blocks(b, known_types={1, 11}).delete


def test_forwarding_updates_previous_node_age_and_hops() -> None:
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"p",
        creation_ms=0,
        previous_node="ipn:7.0",
        hop_limit=2,
        hop_count=2,
    )
    f = update_for_forwarding(b, node=IpnEid(3, 0), dwell_ms=250)
    assert f.previous_node == IpnEid(3, 0)
    assert f.bundle_age_ms == 250
    assert f.hop_count == HopCount(2, 3)
    assert hop_limit_exceeded(f)
    assert [blk.number for blk in f.blocks] == [blk.number for blk in b.blocks]


def test_forwarding_inserts_previous_node_before_payload() -> None:
    b = make_bundle(
        source="ipn:1.1", destination="ipn:2.1", payload=b"p", creation_ms=5
    )
    f = update_for_forwarding(b, node=IpnEid(3, 0), dwell_ms=1)
    assert [blk.type_code for blk in f.blocks] == [
        BlockType.PREVIOUS_NODE,
        BlockType.PAYLOAD,
    ]
    assert f.bundle_age_ms is None
