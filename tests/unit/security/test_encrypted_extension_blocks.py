"""Extension blocks encrypted by a BCB (RFC 9172 3.9) survive decoding and forwarding.

dcis.dtn.bpv7 validates the data of previous node, bundle age and hop count
blocks; when a BCB targets one of them its data is ciphertext, so the
decoder skips that check, the Bundle properties read None (this node cannot
process the block) and forwarding leaves the block alone.
"""

from __future__ import annotations

import pytest

from dcis.dtn.bpsec import add_bcb_aes_gcm, verify_and_decrypt
from dcis.dtn.bpv7 import (
    Bundle,
    HopCount,
    IpnEid,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.bundle import bcb_targets
from dcis.dtn.bpv7.canonical import CanonicalBlock, decode_hop_count_untrusted
from dcis.dtn.bpv7.flags import BlockType, CrcType
from dcis.dtn.bpv7.processing import update_for_forwarding
from dcis.dtn.errors import DecodeError

KEY = bytes(range(32))


def _plain() -> Bundle:
    return make_bundle(
        source="ipn:1.1",
        destination="ipn:3.1",
        payload=b"data",
        creation_ms=5_000,
        hop_limit=30,
        hop_count=2,
        previous_node="ipn:9.0",
    )


def _block_number(b: Bundle, t: int) -> int:
    blk = b.block_of_type(t)
    assert blk is not None
    return blk.number


def _encrypt(b: Bundle, targets: list[int]) -> Bundle:
    """A BCB-AES-GCM over ``targets`` whose ciphertext is not a valid hop count."""
    hop = _block_number(b, BlockType.HOP_COUNT)
    for i in range(256):  # deterministic: the first IV that garbles the hop count
        iv = bytes([i]) * 12
        out = add_bcb_aes_gcm(b, key=KEY, source=IpnEid(1, 0), targets=targets, iv=iv)
        data = out.block_by_number(hop)
        assert data is not None
        try:
            decode_hop_count_untrusted(data.data)
        except DecodeError:
            return out
    raise AssertionError("no IV garbled the hop count")  # pragma: no cover


def test_encrypted_hop_count_decodes_and_reads_as_absent() -> None:
    b = _plain()
    hop = _block_number(b, BlockType.HOP_COUNT)
    sealed = _encrypt(b, [hop, 1])
    got = decode_bundle_untrusted(encode_bundle(sealed))
    assert got == sealed
    assert bcb_targets(got.blocks) == {hop, 1}
    assert got.is_encrypted(hop)
    assert not got.is_encrypted(_block_number(b, BlockType.PREVIOUS_NODE))
    assert got.hop_count is None
    assert got.previous_node == IpnEid(9, 0)
    plain, results = verify_and_decrypt(got, [KEY])
    # One BCB per target (RFC 9173 4.3.1: an IV each).
    assert [r.verified for r in results] == [True, True]
    assert plain.hop_count == HopCount(30, 2)
    assert plain == b


def test_without_a_bcb_a_malformed_hop_count_is_still_refused() -> None:
    b = _plain()
    sealed = _encrypt(b, [_block_number(b, BlockType.HOP_COUNT)])
    bcb = sealed.block_of_type(BlockType.BCB)
    stripped = Bundle(sealed.primary, tuple(x for x in sealed.blocks if x is not bcb))
    with pytest.raises(DecodeError, match="field data"):
        decode_bundle_untrusted(encode_bundle(stripped))


def test_a_bcb_over_another_block_exempts_nothing_else() -> None:
    b = _plain()
    sealed = _encrypt(b, [_block_number(b, BlockType.HOP_COUNT)])
    bcb = sealed.block_of_type(BlockType.BCB)
    assert bcb is not None
    # Re-point the BCB at the payload only: the garbled hop count is exposed.
    data = bytearray(bcb.data)
    assert data[0] == 0x81  # one target
    data[1] = 1
    moved = Bundle(
        sealed.primary,
        tuple(
            CanonicalBlock(x.type_code, x.number, x.flags, CrcType.NONE, bytes(data))
            if x is bcb
            else x
            for x in sealed.blocks
        ),
    )
    with pytest.raises(DecodeError):
        decode_bundle_untrusted(encode_bundle(moved))


def test_forwarding_leaves_encrypted_blocks_alone_and_they_still_verify() -> None:
    b = _plain()
    targets = [
        _block_number(b, BlockType.HOP_COUNT),
        _block_number(b, BlockType.PREVIOUS_NODE),
        1,
    ]
    sealed = decode_bundle_untrusted(encode_bundle(_encrypt(b, targets)))
    fwd = update_for_forwarding(sealed, node=IpnEid(4, 0), dwell_ms=10)
    assert fwd == sealed  # nothing it may touch
    plain, _ = verify_and_decrypt(decode_bundle_untrusted(encode_bundle(fwd)), [KEY])
    assert plain == b


def test_unreadable_bcb_targets_count_as_none() -> None:
    junk = CanonicalBlock(BlockType.BCB, 7, crc_type=CrcType.NONE, data=b"\xff\x00")
    assert bcb_targets([junk]) == frozenset()
