"""Property tests of the LTP codec: round trips and hostile bytes."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

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
    Segment,
    SegmentType,
    SessionId,
    decode_segment_untrusted,
    encode_segment,
)
from dcis.dtn.errors import DecodeError

u64 = st.integers(0, MAX_SDNV)
small = st.integers(0, 2**20)
sessions = st.builds(SessionId, u64, u64)
extensions = st.lists(
    st.builds(Extension, st.integers(0, 255), st.binary(max_size=20)), max_size=15
).map(tuple)


@st.composite
def data_segments(draw: st.DrawFn) -> DataSegment:
    t = draw(st.sampled_from([t for t in SegmentType if t.is_data]))
    cp = draw(st.integers(1, MAX_SDNV)) if t.is_checkpoint else None
    return DataSegment(
        session=draw(sessions),
        type=t,
        client_service=draw(u64),
        offset=draw(small),
        data=draw(st.binary(min_size=1, max_size=200)),
        checkpoint_serial=cp,
        report_serial=draw(u64) if cp is not None else None,
        header_extensions=draw(extensions),
        trailer_extensions=draw(extensions),
    )


@st.composite
def reports(draw: st.DrawFn) -> ReportSegment:
    lower = draw(small)
    points = sorted(draw(st.sets(st.integers(0, 10_000), max_size=20)))
    claims = tuple(
        ReceptionClaim(a, b - a)
        for a, b in zip(points[::2], points[1::2], strict=False)
    )
    upper = lower + (points[-1] if points else 0) + draw(st.integers(0, 100))
    return ReportSegment(
        session=draw(sessions),
        report_serial=draw(st.integers(1, MAX_SDNV)),
        checkpoint_serial=draw(u64),
        upper_bound=upper,
        lower_bound=lower,
        claims=claims,
        header_extensions=draw(extensions),
        trailer_extensions=draw(extensions),
    )


segments: st.SearchStrategy[Segment] = st.one_of(
    data_segments(),
    reports(),
    st.builds(
        ReportAckSegment,
        session=sessions,
        report_serial=st.integers(1, MAX_SDNV),
        header_extensions=extensions,
    ),
    st.builds(
        CancelSegment,
        session=sessions,
        from_sender=st.booleans(),
        reason=st.sampled_from(CancelReason) | st.integers(6, 255),
    ),
    st.builds(CancelAckSegment, session=sessions, to_sender=st.booleans()),
)


@given(u64)
def test_sdnv_round_trip(value: int) -> None:
    wire = encode_sdnv(value)
    assert decode_sdnv_untrusted(wire + b"\xff", 0) == (value, len(wire))


@given(segments)
def test_segment_round_trip(seg: Segment) -> None:
    wire = encode_segment(seg)
    assert decode_segment_untrusted(wire) == seg


@given(st.binary(max_size=300))
def test_hostile_bytes_give_a_segment_or_decode_error(raw: bytes) -> None:
    try:
        seg = decode_segment_untrusted(raw)
    except DecodeError:
        return
    # Whatever decodes re-encodes to a segment that decodes the same.
    assert decode_segment_untrusted(encode_segment(seg)) == seg


@given(segments, st.data())
def test_mutated_segments_give_a_segment_or_decode_error(
    seg: Segment, data: st.DataObject
) -> None:
    wire = bytearray(encode_segment(seg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    try:
        got = decode_segment_untrusted(bytes(wire[:cut]))
    except DecodeError:
        return
    assert encode_segment(got) == bytes(wire[:cut]) or got == decode_segment_untrusted(
        encode_segment(got)
    )


@given(st.integers(1, 15), st.sampled_from([b"\x08", b"\x00"]))
def test_huge_claimed_lengths_allocate_little(n: int, head: bytes) -> None:
    # Lengths and claim counts near 2**64 in a tiny datagram: rejected
    # without allocating anything like the claimed size.
    huge = encode_sdnv(MAX_SDNV - n)
    raw = (
        head
        + b"\x01\x01\x00"
        + (b"\x01" * 4 if head == b"\x08" else b"\x01\x00")
        + huge
    )
    tracemalloc.start()
    try:
        decode_segment_untrusted(raw)
    except DecodeError:
        pass
    else:
        raise AssertionError("accepted an impossible length")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * 1024
