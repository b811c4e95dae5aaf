"""Bundle encode/decode by example: fields, CRCs, rejections naming where."""

from __future__ import annotations

import pytest

from dcis.dtn.bpv7 import (
    DTN_NONE,
    BlockFlags,
    BlockType,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    CrcType,
    DtnEid,
    HopCount,
    IpnEid,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.errors import DecodeError, InvalidArgument


def sample(**kw: object) -> Bundle:
    args: dict[str, object] = {
        "source": "ipn:1.2",
        "destination": "dtn://ground/inbox",
        "payload": b"hello",
        "creation_ms": 750_000_000_000,
        "sequence": 3,
        "previous_node": "ipn:7.0",
        "bundle_age_ms": 1234,
        "hop_limit": 30,
        "hop_count": 2,
    }
    args.update(kw)
    return make_bundle(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("crc", list(CrcType))
def test_round_trip_keeps_every_field(crc: CrcType) -> None:
    b = sample(crc_type=crc, block_crc_type=crc)
    d = decode_bundle_untrusted(encode_bundle(b))
    assert d == b
    assert d.primary.source == IpnEid(1, 2)
    assert d.primary.destination == DtnEid("//ground/inbox")
    assert d.primary.report_to == DTN_NONE
    assert d.primary.creation.time_ms == 750_000_000_000
    assert d.primary.creation.sequence == 3
    assert d.previous_node == IpnEid(7, 0)
    assert d.bundle_age_ms == 1234
    assert d.hop_count == HopCount(30, 2)
    assert d.payload == b"hello"
    assert d.bundle_key == "ipn:1.2|750000000000|3"
    assert not d.is_fragment
    assert not d.is_admin_record


def test_output_is_indefinite_outer_array_with_definite_blocks() -> None:
    raw = encode_bundle(sample())
    assert raw[0] == 0x9F
    assert raw[-1] == 0xFF
    assert 0x88 <= raw[1] <= 0x8B  # primary block: definite array of 8..11


def test_memoryview_and_bytearray_input_decode_the_same() -> None:
    raw = encode_bundle(sample(payload=bytes(range(256)) * 10))
    assert decode_bundle_untrusted(memoryview(raw)) == decode_bundle_untrusted(raw)
    assert decode_bundle_untrusted(bytearray(raw)) == decode_bundle_untrusted(raw)
    assert type(decode_bundle_untrusted(memoryview(raw)).payload) is bytes


@pytest.mark.parametrize("crc", [CrcType.CRC16, CrcType.CRC32C])
def test_flipped_payload_bit_is_a_crc_error_naming_block_1(crc: CrcType) -> None:
    raw = bytearray(encode_bundle(sample(payload=b"x" * 100, crc_type=crc)))
    i = bytes(raw).index(b"x" * 100)
    raw[i + 50] ^= 0x01
    with pytest.raises(
        DecodeError, match=r"block 1 \(type 1\), field crc: CRC mismatch"
    ):
        decode_bundle_untrusted(bytes(raw))


def test_primary_crc_error_names_primary() -> None:
    raw = bytearray(encode_bundle(sample()))
    i = bytes(raw).index(b"ground")
    raw[i] = ord("G")  # still a valid EID: only the CRC can tell
    with pytest.raises(DecodeError, match="primary block, field crc: CRC mismatch"):
        decode_bundle_untrusted(bytes(raw))


def test_huge_length_is_rejected_before_allocation() -> None:
    raw = encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"",
            creation_ms=1,
            crc_type=CrcType.NONE,
        )
    )
    # payload block: 85 01 01 00 00 40 ff -> claim a 2**63-byte payload
    assert raw.endswith(b"\x85\x01\x01\x00\x00\x40\xff")
    hostile = raw[:-2] + b"\x5b\x80\x00\x00\x00\x00\x00\x00\x00" + b"\xff"
    with pytest.raises(
        DecodeError,
        match=r"block 1 \(type 1\), field data: length 9223372036854775808 exceeds",
    ):
        decode_bundle_untrusted(hostile)


def test_definite_outer_array_is_rejected() -> None:
    raw = encode_bundle(sample())
    with pytest.raises(DecodeError, match="indefinite-length"):
        decode_bundle_untrusted(b"\x82" + raw[1:-1])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty input"),
        (b"\x9f", "truncated"),
        (b"\x00", "not a bundle"),
    ],
)
def test_garbage_is_named(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_bundle_untrusted(data)


def test_trailing_bytes_rejected() -> None:
    with pytest.raises(DecodeError, match="1 bytes after the end"):
        decode_bundle_untrusted(encode_bundle(sample()) + b"\x00")


def test_unknown_block_kept_byte_for_byte() -> None:
    odd = CanonicalBlock(
        200,
        9,
        BlockFlags.MUST_REPLICATE | BlockFlags(0x40),
        CrcType.CRC16,
        b"\xde\xad\xbe\xef",
    )
    b = sample(extra_blocks=[odd])
    raw = encode_bundle(b)
    d = decode_bundle_untrusted(raw)
    assert d.block_by_number(9) == odd
    assert encode_bundle(d) == raw


def test_bundle_invariants() -> None:
    p = sample().primary
    with pytest.raises(InvalidArgument, match="last block"):
        Bundle(p, (CanonicalBlock(7, 2, data=b"\x00"),))
    with pytest.raises(InvalidArgument, match="unique"):
        Bundle(
            p,
            (CanonicalBlock(7, 1, data=b"\x00"), CanonicalBlock(BlockType.PAYLOAD, 1)),
        )
    with pytest.raises(InvalidArgument, match="payload block must have number 1"):
        CanonicalBlock(BlockType.PAYLOAD, 2)


def test_zero_creation_time_gets_bundle_age() -> None:
    b = make_bundle(
        source="ipn:1.1", destination="ipn:2.1", payload=b"p", creation_ms=0
    )
    assert b.bundle_age_ms == 0


def test_fragment_flag_requires_offsets() -> None:
    with pytest.raises(InvalidArgument, match="IS_FRAGMENT"):
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"p",
            creation_ms=1,
            flags=BundleFlags.IS_FRAGMENT,
        )


# [7, 0, 0, ipn:1.2, ipn:2.1, dtn:none, [0, 0], 1000000]: a primary block without CRC
PRIMARY_NO_CRC = "88070000820282010282028202018201008200001a000f4240"


@pytest.mark.parametrize(
    ("hostile", "message"),
    [
        # payload block claiming a 2**63-byte payload
        (
            bytes.fromhex("9f" + PRIMARY_NO_CRC + "8501010000" + "5b8000000000000000")
            + b"\x00" * 16,
            r"block 1 \(type 1\), field data: length 9223372036854775808 exceeds",
        ),
        # destination EID text claiming 2**32-1 bytes
        (
            bytes.fromhex("9f8807000082017affffffff") + b"/" * 16,
            "primary block, field destination: length 4294967295 exceeds",
        ),
        # an array head claiming 2**64-1 elements where the primary block goes
        (
            bytes.fromhex("9f9bffffffffffffffff") + b"\x00" * 16,
            "primary block, field array: primary block must have 8 to 11 elements",
        ),
        # an unknown extension block (type 192) claiming 1 MB of data
        (
            bytes.fromhex("9f" + PRIMARY_NO_CRC + "8518c00200005a00100000")
            + b"\x00" * 16,
            r"block 2 \(type 192\), field data: length 1048576 exceeds",
        ),
    ],
)
def test_hostile_lengths_allocate_nothing_big(hostile: bytes, message: str) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=message):
            decode_bundle_untrusted(hostile)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
