"""LTP segment codec: SDNV vectors, every segment type, RFC 5326 layouts."""

from __future__ import annotations

import pytest

from dcis.dtn.cl.ltp.sdnv import MAX_SDNV, decode_sdnv_untrusted, encode_sdnv
from dcis.dtn.cl.ltp.segment import (
    CancelAckSegment,
    CancelReason,
    CancelSegment,
    DataSegment,
    Extension,
    ReceptionClaim,
    ReportAckSegment,
    ReportSegment,
    SegmentType,
    SessionId,
    decode_segment_untrusted,
    encode_segment,
)
from dcis.dtn.errors import DecodeError, InvalidArgument

# RFC 6256 section 2.1 (and RFC 5050 section 4.1): 0xABC -> 95 3C,
# 0x1234 -> A4 34, 0x4234 -> 81 84 34, 0x7F -> 7F.
SDNV_VECTORS = [
    (0x0, "00"),
    (0x7F, "7f"),
    (0x80, "8100"),
    (0xABC, "953c"),
    (0x1234, "a434"),
    (0x4234, "818434"),
    (0x3FFF, "ff7f"),
    (0x4000, "818000"),
    (MAX_SDNV, "81ffffffffffffffff7f"),
]


@pytest.mark.parametrize(("value", "hexed"), SDNV_VECTORS)
def test_sdnv_vectors(value: int, hexed: str) -> None:
    assert encode_sdnv(value).hex() == hexed
    assert decode_sdnv_untrusted(bytes.fromhex(hexed), 0) == (value, len(hexed) // 2)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x80",
        b"\xff\xff",
        b"\x80" * 10 + b"\x01",  # eleven bytes
        bytes.fromhex("82808080808080808000"),  # 2**64
    ],
)
def test_sdnv_hostile(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_sdnv_untrusted(raw, 0)


def test_sdnv_non_minimal_accepted() -> None:
    # RFC 6256 lets a decoder accept leading 0x80 bytes.
    assert decode_sdnv_untrusted(b"\x80\x80\x05", 0) == (5, 3)


@pytest.mark.parametrize("value", [-1, MAX_SDNV + 1])
def test_sdnv_out_of_range(value: int) -> None:
    with pytest.raises(InvalidArgument):
        encode_sdnv(value)


SID = SessionId(0x1234, 7)


def test_red_checkpoint_layout() -> None:
    # RFC 5326 section 3: control byte (version 0, type 2 = EORP checkpoint),
    # session originator 0x1234 (A4 34), session number 7, extension counts
    # (none), then client service 1, offset 0, length 3, checkpoint serial
    # 0xABC (95 3C), report serial 0, and the data.
    seg = DataSegment(
        session=SID,
        type=SegmentType.RED_EORP,
        client_service=1,
        offset=0,
        data=b"abc",
        checkpoint_serial=0xABC,
        report_serial=0,
    )
    wire = encode_segment(seg)
    assert (
        wire.hex()
        == "02"
        + "a434"
        + "07"
        + "00"
        + "01"
        + "00"
        + "03"
        + "953c"
        + "00"
        + b"abc".hex()
    )
    assert decode_segment_untrusted(wire) == seg


def test_report_layout_claim_offsets_relative_to_lower_bound() -> None:
    seg = ReportSegment(
        session=SID,
        report_serial=5,
        checkpoint_serial=9,
        upper_bound=1000,
        lower_bound=200,
        claims=(ReceptionClaim(0, 100), ReceptionClaim(300, 500)),
    )
    wire = encode_segment(seg)
    # 08 | sid | 00 | rs 5 | cp 9 | upper 1000 (87 68) | lower 200 (81 48) | 2 claims
    assert (
        wire.hex()
        == "08a4340700"
        + "05"
        + "09"
        + "8768"
        + "8148"
        + "02"
        + "00"
        + "64"
        + "822c"
        + "8374"
    )
    assert seg.absolute_claims() == [(200, 300), (500, 1000)]
    assert decode_segment_untrusted(wire) == seg


def every_segment() -> list[object]:
    ext = (Extension(1, b"\x00\x01"), Extension(255, b""))
    out: list[object] = []
    for t in SegmentType:
        if t.is_data:
            cp = 3 if t.is_checkpoint else None
            out.append(
                DataSegment(
                    session=SID,
                    type=t,
                    client_service=1,
                    offset=1000,
                    data=b"x" * 300,
                    checkpoint_serial=cp,
                    report_serial=None if cp is None else 2,
                    header_extensions=ext,
                    trailer_extensions=ext[:1],
                )
            )
    out.append(
        ReportSegment(
            session=SID,
            report_serial=1,
            checkpoint_serial=0,
            upper_bound=10,
            lower_bound=0,
            claims=(ReceptionClaim(0, 10),),
            trailer_extensions=ext,
        )
    )
    out.append(ReportAckSegment(session=SID, report_serial=1, header_extensions=ext))
    for frm in (True, False):
        out.append(
            CancelSegment(session=SID, from_sender=frm, reason=CancelReason.RLEXC)
        )
        out.append(CancelAckSegment(session=SID, to_sender=frm))
    out.append(CancelSegment(session=SID, from_sender=True, reason=200))
    return out


@pytest.mark.parametrize("seg", every_segment(), ids=lambda s: type(s).__name__)
def test_every_type_round_trips(seg: object) -> None:
    wire = encode_segment(seg)  # type: ignore[arg-type]
    assert decode_segment_untrusted(wire) == seg
    assert encode_segment(decode_segment_untrusted(wire)) == wire


def test_every_type_code_covered() -> None:
    codes = {encode_segment(s)[0] for s in every_segment()}  # type: ignore[arg-type]
    assert codes == {int(t) for t in SegmentType}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"\x10\x01\x01\x00", "version 1"),
        (b"\x05\x01\x01\x00", "reserved type 5"),
        (b"\x0a\x01\x01\x00", "reserved type 10"),
        (b"\x00\x01\x01\x00\x01\x00\x05ab", "data shorter than its length"),
        (b"\x00\x01\x01\x00\x01\x00\x00", "zero-length data"),
        (b"\x09\x01\x01\x00\x01\x00", "trailing byte"),
        (b"\x09\x01\x01\x00\x00", "report serial 0"),
        (b"\x08\x01\x01\x00\x01\x00\x05\x00\x7f", "claim count beyond the bytes"),
        (b"\x08\x01\x01\x00\x01\x00\x05\x00\x01\x04\x05", "claim beyond upper bound"),
        (b"\x08\x01\x01\x00\x01\x00\x05\x06\x00", "lower bound above upper"),
        (b"\x0c\x01\x01\x00", "cancel without reason"),
        (b"\x0d\x01\x01\x10", "header extension missing"),
        (b"\x0d\x01\x01\x10\x01\x05ab", "extension value truncated"),
        (b"\x01\x01\x01\x00\x01\x00\x01\x00\x00a", "checkpoint serial 0"),
    ],
)
def test_malformed_segments_give_decode_error(raw: bytes, why: str) -> None:
    with pytest.raises(DecodeError):
        decode_segment_untrusted(raw)
