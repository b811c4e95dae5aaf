"""encode_bundle_parts: the buffers a sender gathers are encode_bundle's
bytes, byte for byte (RFC 9171 4.1), and a large payload is the block's own
object, never a copy (issue 18, the send path of large bundles)."""

from __future__ import annotations

import pytest

from dcis.dtn.bpv7 import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.bundle import (
    GATHER_PAYLOAD_BYTES,
    encode_bundle_parts,
    stored_payload_crc,
)
from dcis.dtn.bpv7.canonical import CanonicalBlock, encode_block_parts
from dcis.dtn.bpv7.crc import crc32c
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.flags import CrcType
from dcis.dtn.bpv7.processing import update_for_forwarding
from dcis.dtn.errors import DecodeError

_SIZES = (0, 1000, GATHER_PAYLOAD_BYTES - 1, GATHER_PAYLOAD_BYTES, 64_000, 1_000_000)


@pytest.mark.parametrize("size", _SIZES)
@pytest.mark.parametrize("payload_crc", list(CrcType))
@pytest.mark.parametrize("block_crc", list(CrcType))
def test_parts_join_to_encode_bundle(
    size: int, payload_crc: CrcType, block_crc: CrcType
) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=payload,
        creation_ms=1_000_000,
        sequence=7,
        crc_type=payload_crc,
        block_crc_type=block_crc,
        payload_crc_type=payload_crc,
        previous_node="ipn:9.0",
        bundle_age_ms=300 if size % 2 else None,
        hop_limit=30,
        hop_count=2,
        extra_blocks=[CanonicalBlock(200, 9, crc_type=block_crc, data=b"opaque")],
    )
    for bundle in (b, update_for_forwarding(b, node=IpnEid(3, 0), dwell_ms=25)):
        parts = encode_bundle_parts(bundle)
        wire = encode_bundle(bundle)
        assert b"".join(parts) == wire
        assert decode_bundle_untrusted(b"".join(parts)) == bundle
        if size >= GATHER_PAYLOAD_BYTES:
            # head, the payload object itself, then its CRC and the break
            assert len(parts) == 3
            assert parts[1] is bundle.payload
            crc_len = {CrcType.NONE: 0, CrcType.CRC16: 3, CrcType.CRC32C: 5}
            assert len(parts[2]) == crc_len[payload_crc] + 1
            assert parts[2][-1] == 0xFF
        else:
            assert parts == (wire,)


def test_a_damaged_payload_crc_would_be_caught_by_the_next_hop() -> None:
    # The tail carries the CRC computed over the payload actually sent: a
    # flipped payload byte between the parts fails the receiver's check.
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=bytes(64_000),
        creation_ms=1_000_000,
        crc_type=CrcType.CRC32C,
    )
    head, payload, tail = encode_bundle_parts(b)
    bad = bytearray(payload)
    bad[12_345] ^= 1
    with pytest.raises(DecodeError):
        decode_bundle_untrusted(head + bytes(bad) + tail)


def _non_canonical(b: Bundle) -> bytes:
    """``b`` encoded with its payload's length in a longer CBOR form than
    the shortest (RFC 8949 allows it; a decoder accepts it), CRC32C over
    that head: the bytes another implementation might send."""
    wire = encode_bundle(b)
    n = len(b.payload)
    assert 0x100 <= n < 0x10000
    short = bytes((0x86, 1, 1, 0, 2, 0x59, n >> 8, n & 0xFF))
    long = bytes((0x86, 1, 1, 0, 2, 0x5A)) + n.to_bytes(4, "big")
    at = len(wire) - 1 - 5 - n - len(short)
    assert wire[at : at + len(short)] == short
    crc = crc32c(b"\x44\0\0\0\0", crc32c(b.payload, crc32c(long)))
    return wire[:at] + long + b.payload + b"\x44" + crc.to_bytes(4, "big") + b"\xff"


@pytest.mark.parametrize("crc_type", list(CrcType))
def test_the_stored_payload_crc_is_the_one_encoding_computes(crc_type: CrcType) -> None:
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=bytes(range(200)) * 320,
        creation_ms=1_000_000,
        crc_type=crc_type,
        hop_limit=5,
    )
    stored = encode_bundle(b)
    crc = stored_payload_crc(b.payload_block, stored)
    own = encode_block_parts(b.payload_block)
    assert crc == (own[2] if crc_type else None)
    # The same field from the parts the bundle was stored as.
    assert stored_payload_crc(b.payload_block, encode_bundle_parts(b)) == crc
    out = update_for_forwarding(b, node=IpnEid(3, 0), dwell_ms=1)
    assert b"".join(encode_bundle_parts(out, payload_crc=crc)) == encode_bundle(out)


def test_a_payload_head_sent_in_a_longer_form_gives_no_crc_to_reuse() -> None:
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=bytes(range(250)) * 256,
        creation_ms=1_000_000,
        crc_type=CrcType.CRC32C,
    )
    received = _non_canonical(b)
    got = decode_bundle_untrusted(received)  # valid: CRC over the long head
    assert got == b
    assert stored_payload_crc(got.payload_block, received) is None
    # ... and one cut short or not ending in a break gives none either.
    assert stored_payload_crc(got.payload_block, received[:100]) is None
    assert stored_payload_crc(got.payload_block, received[:-1] + b"\0") is None
