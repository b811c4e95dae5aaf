"""UDP CL PART and NEED segments (spec/udpcl.md): a bundle larger than a
datagram cut into PART segments and put together again, their MACs, and
the malformed ones refused.

The fast decoder's agreement with the general CBOR path on every input is
tests/property/test_udp_codec_fast.py."""

from __future__ import annotations

import random
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.cl import udp
from dcis.dtn.cl.udp import (
    DCIS_TAG,
    MAX_NEED_RANGES,
    MAX_TRANSFER_BYTES,
    NeedSegment,
    PartSegment,
    decode_datagram_untrusted,
    encode_need_segment,
    encode_part_segments,
    mac_ok,
    need_mac,
    part_mac,
)
from dcis.dtn.errors import DecodeError, InvalidArgument
from tests.unit.cl.udp_bundles import bundle_parts

KEY = bytes(range(32))


def _decode_all(
    parts: list[tuple[udp.Buffers, int, int]],
) -> list[PartSegment]:
    segs = []
    for bufs, start, end in parts:
        seg = decode_datagram_untrusted(b"".join(bufs))
        assert isinstance(seg, PartSegment)
        assert (seg.offset, seg.end) == (start, end)
        segs.append(seg)
    return segs


@pytest.mark.parametrize("size", [100, 20_000, 64_000])
@pytest.mark.parametrize("chunk_bytes", [1_000, 7_777, 65_000])
@pytest.mark.parametrize("key", [None, KEY])
def test_parts_round_trip_from_bytes_and_from_buffers(
    size: int, chunk_bytes: int, key: bytes | None
) -> None:
    buffers = bundle_parts(size)
    whole = b"".join(buffers)
    made = {
        kind: encode_part_segments(
            sender=3,
            token=2**63 + 5,
            bundle=bundle,
            chunk_bytes=chunk_bytes,
            mac_key=key,
            receiver=4,
        )
        for kind, bundle in (("bytes", whole), ("buffers", buffers))
    }
    # The same datagrams either way (the buffers' payload not copied).
    assert [b"".join(d) for d, _, _ in made["bytes"]] == [
        b"".join(d) for d, _, _ in made["buffers"]
    ]
    segs = _decode_all(made["buffers"])
    assert len(segs) == -(-len(whole) // chunk_bytes)
    assert [s.offset for s in segs] == list(range(0, len(whole), chunk_bytes))
    assert all(s.sender == 3 and s.token == 2**63 + 5 for s in segs)
    assert all(s.total == len(whole) for s in segs)
    assert all(0 < len(s.chunk) <= chunk_bytes for s in segs)
    assert b"".join(bytes(s.chunk) for s in segs) == whole
    for s in segs:
        assert (s.mac is None) == (key is None)
        if key is not None:
            want = part_mac(
                key,
                sender=3,
                receiver=4,
                token=s.token,
                offset=s.offset,
                total=s.total,
                chunk=s.chunk,
            )
            assert mac_ok(want, s.mac)


def test_part_chunks_are_views_of_the_bundle_not_copies() -> None:
    buffers = bundle_parts(64_000)
    assert len(buffers) == 3
    payload = buffers[1]
    # One chunk covering the whole bundle: the payload object itself.
    ((whole_dgram, _, _),) = encode_part_segments(
        sender=1, token=2, bundle=buffers, chunk_bytes=10**6
    )
    assert any(b is payload for b in whole_dgram)
    # Smaller chunks: views into the payload object.
    for dgram, _, _ in encode_part_segments(
        sender=1, token=2, bundle=buffers, chunk_bytes=10_000
    ):
        views = [b for b in dgram if isinstance(b, memoryview)]
        assert views
        assert all(v.obj in buffers for v in views)


@given(
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=6),
    chunk_bytes=st.integers(1, 40),
    key=st.none() | st.just(KEY),
)
def test_parts_of_any_buffers_join_to_the_bundle(
    lengths: list[int], chunk_bytes: int, key: bytes | None
) -> None:
    # Buffers of any lengths (empty ones too) cut at any chunk size.
    rng = random.Random(sum(lengths) + chunk_bytes)
    buffers = tuple(rng.randbytes(n) for n in lengths)
    buffers = (b"\x9f" + buffers[0], *buffers[1:])
    whole = b"".join(buffers)
    from_buffers = encode_part_segments(
        sender=1, token=2, bundle=buffers, chunk_bytes=chunk_bytes, mac_key=key
    )
    from_bytes = encode_part_segments(
        sender=1, token=2, bundle=whole, chunk_bytes=chunk_bytes, mac_key=key
    )
    assert [b"".join(d) for d, _, _ in from_buffers] == [
        b"".join(d) for d, _, _ in from_bytes
    ]
    segs = _decode_all(from_buffers)
    assert b"".join(bytes(s.chunk) for s in segs) == whole
    ends = [s.end for s in segs]
    assert ends == [*range(chunk_bytes, len(whole), chunk_bytes), len(whole)]


def test_need_round_trip_with_and_without_mac() -> None:
    ranges = (
        (0, 1),
        (1, 2),
        (100, 2**20),
        (MAX_TRANSFER_BYTES - 1, MAX_TRANSFER_BYTES),
    )
    raw = encode_need_segment(sender=5, token=2**64 - 1, ranges=ranges)
    assert decode_datagram_untrusted(raw) == NeedSegment(5, 2**64 - 1, ranges)
    tag = need_mac(KEY, sender=5, receiver=6, token=9, ranges=ranges)
    raw = encode_need_segment(sender=5, token=9, ranges=list(ranges), mac=tag)
    seg = decode_datagram_untrusted(raw)
    assert seg == NeedSegment(5, 9, ranges, tag)
    most = tuple((2 * i, 2 * i + 1) for i in range(MAX_NEED_RANGES))
    raw = encode_need_segment(sender=5, token=9, ranges=most)
    assert decode_datagram_untrusted(raw) == NeedSegment(5, 9, most)


def _part_fields(seg: PartSegment, receiver: int = 4) -> dict[str, Any]:
    return {
        "sender": seg.sender,
        "receiver": receiver,
        "token": seg.token,
        "offset": seg.offset,
        "total": seg.total,
        "chunk": seg.chunk,
    }


def test_part_mac_covers_every_field() -> None:
    bundle = b"\x9f" + bytes(range(200))
    parts = encode_part_segments(
        sender=3, token=77, bundle=bundle, chunk_bytes=64, mac_key=KEY, receiver=4
    )
    seg = _decode_all(parts)[1]
    fields = _part_fields(seg)
    assert mac_ok(part_mac(KEY, **fields), seg.mac)
    flipped = bytearray(seg.chunk)
    flipped[10] ^= 0x01
    for name, other in (
        ("chunk", bytes(flipped)),
        ("offset", seg.offset ^ 0x01),
        ("total", seg.total ^ 0x100),
        ("token", seg.token ^ 0x40),
        ("sender", 5),
        ("receiver", 5),
    ):
        assert not mac_ok(part_mac(KEY, **{**fields, name: other}), seg.mac), name
    assert not mac_ok(part_mac(bytes(32), **fields), seg.mac)
    assert not mac_ok(part_mac(KEY, **fields), None)
    # A PART's MAC is not a DATA segment's over the same bytes.
    data = udp.data_mac(KEY, sender=3, receiver=4, token=77, bundle=seg.chunk)
    assert data != seg.mac


def test_need_mac_covers_every_range_bound() -> None:
    ranges = ((0, 10), (20, 300))
    fields: dict[str, Any] = {"sender": 5, "receiver": 6, "token": 9}
    tag = need_mac(KEY, ranges=ranges, **fields)
    for other in (((0, 10),), ((0, 10), (20, 301)), ((1, 10), (20, 300))):
        assert not mac_ok(need_mac(KEY, ranges=other, **fields), tag)
    for name in fields:
        changed = {**fields, name: fields[name] + 1}
        assert not mac_ok(need_mac(KEY, ranges=ranges, **changed), tag), name


def _authentic(seg: object, part_or_need: str) -> bool:
    """Whether ``seg`` carries the MAC of its own fields (sent 3 -> 4)."""
    if part_or_need == "part":
        if not isinstance(seg, PartSegment):
            return False
        return mac_ok(part_mac(KEY, **_part_fields(seg)), seg.mac)
    if not isinstance(seg, NeedSegment):
        return False
    want = need_mac(
        KEY, sender=seg.sender, receiver=4, token=seg.token, ranges=seg.ranges
    )
    return mac_ok(want, seg.mac)


@pytest.mark.parametrize("part_or_need", ["part", "need"])
def test_every_flipped_bit_is_refused_or_fails_the_mac(part_or_need: str) -> None:
    if part_or_need == "part":
        ((bufs, _, _),) = encode_part_segments(
            sender=3,
            token=2**40 + 1,
            bundle=b"\x9f" + bytes(range(40)),
            chunk_bytes=10**6,
            mac_key=KEY,
            receiver=4,
        )
        raw = b"".join(bufs)
    else:
        ranges = ((0, 10), (300, 70_000))
        tag = need_mac(KEY, sender=3, receiver=4, token=2**40 + 1, ranges=ranges)
        raw = encode_need_segment(sender=3, token=2**40 + 1, ranges=ranges, mac=tag)
    original = decode_datagram_untrusted(raw)
    assert _authentic(original, part_or_need)
    for i in range(len(raw)):
        for bit in range(8):
            mangled = bytearray(raw)
            mangled[i] ^= 1 << bit
            try:
                seg = decode_datagram_untrusted(bytes(mangled))
            except DecodeError:
                continue
            assert not _authentic(seg, part_or_need), (i, bit)


def _tagged(body: list[Any]) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(DCIS_TAG, body))


BAD_SEGMENTS = {
    "part chunk past its total": _tagged([2, 1, 2, 10, 12, b"abc"]),
    "part at 0 past its total": _tagged([2, 1, 2, 0, 2, b"\x9fbc"]),
    "part at 0 not starting a bundle": _tagged([2, 1, 2, 0, 100, b"abc"]),
    "part empty chunk": _tagged([2, 1, 2, 5, 100, b""]),
    "part total over the limit": _tagged(
        [2, 1, 2, MAX_TRANSFER_BYTES, MAX_TRANSFER_BYTES + 1, b"a"]
    ),
    "part offset over the limit": _tagged(
        [2, 1, 2, MAX_TRANSFER_BYTES + 1, 2**64 - 1, b"a"]
    ),
    "part negative offset": _tagged([2, 1, 2, -1, 100, b"a"]),
    "part chunk not bytes": _tagged([2, 1, 2, 5, 100, "abc"]),
    "part short MAC": _tagged([2, 1, 2, 5, 100, b"abc", b"\x00" * 15]),
    "part field missing": _tagged([2, 1, 2, 100, b"\x9fabc"]),
    "part sender over MAX_NODE": _tagged([2, 2**63, 2, 0, 100, b"\x9fa"]),
    "part trailing bytes": _tagged([2, 1, 2, 0, 100, b"\x9fa"]) + b"\x00",
    "part with MAC, trailing bytes": _tagged([2, 1, 2, 5, 100, b"a", bytes(16)])
    + b"\x00",
    "need trailing bytes": _tagged([3, 1, 2, [0, 5]]) + b"\x00",
    "need no ranges": _tagged([3, 1, 2, []]),
    "need odd bound count": _tagged([3, 1, 2, [0, 5, 9]]),
    "need empty range": _tagged([3, 1, 2, [5, 5]]),
    "need reversed range": _tagged([3, 1, 2, [6, 5]]),
    "need not ascending": _tagged([3, 1, 2, [10, 20, 0, 5]]),
    "need overlapping": _tagged([3, 1, 2, [0, 10, 9, 20]]),
    "need bound over the limit": _tagged([3, 1, 2, [0, MAX_TRANSFER_BYTES + 1]]),
    "need too many ranges": _tagged([3, 1, 2, list(range(2 * MAX_NEED_RANGES + 2))]),
    "need ranges not a list": _tagged([3, 1, 2, 5]),
    "need negative bound": _tagged([3, 1, 2, [-1, 5]]),
}


@pytest.mark.parametrize("raw", BAD_SEGMENTS.values(), ids=BAD_SEGMENTS.keys())
def test_malformed_part_and_need_are_refused(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_datagram_untrusted(raw)
    with pytest.raises(DecodeError):
        udp._decode_segment_general(raw)


def test_limits_are_inclusive() -> None:
    top = _tagged([2, 1, 2, MAX_TRANSFER_BYTES - 1, MAX_TRANSFER_BYTES, b"a"])
    seg = decode_datagram_untrusted(top)
    assert isinstance(seg, PartSegment)
    assert seg.end == seg.total == MAX_TRANSFER_BYTES
    touching = _tagged([3, 1, 2, [0, 5, 5, 9]])
    assert decode_datagram_untrusted(touching) == NeedSegment(1, 2, ((0, 5), (5, 9)))


@pytest.mark.parametrize(
    "ranges",
    [
        [],
        [(5, 5)],
        [(6, 5)],
        [(10, 20), (0, 5)],
        [(0, 10), (9, 20)],
        [(0, MAX_TRANSFER_BYTES + 1)],
        [(2 * i, 2 * i + 1) for i in range(MAX_NEED_RANGES + 1)],
    ],
)
def test_need_encoder_refuses_bad_ranges(ranges: list[tuple[int, int]]) -> None:
    with pytest.raises(InvalidArgument):
        encode_need_segment(sender=1, token=2, ranges=ranges)


def test_part_encoder_refuses_bad_arguments() -> None:
    for kw in (
        {"bundle": b""},
        {"bundle": ()},
        {"chunk_bytes": 0},
        {"sender": -1},
        {"token": 2**64},
        {"bundle": (memoryview(bytes(2**20)),) * 4096},  # MAX_TRANSFER_BYTES + 1
    ):
        args: dict[str, Any] = {
            "sender": 1,
            "token": 2,
            "bundle": b"\x9fabc",
            "chunk_bytes": 2,
            **kw,
        }
        with pytest.raises(InvalidArgument):
            encode_part_segments(**args)
    with pytest.raises(InvalidArgument):
        encode_need_segment(sender=2**64, token=2, ranges=[(0, 1)])


def test_a_need_with_too_many_bounds_is_refused_on_its_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A datagram full of one-byte bounds: refused on their count, as an ACK
    # with too many tokens is, not after reading each one on both paths
    # (an unauthenticated datagram's cost bounded by MAX_NEED_RANGES, not
    # by its size: 48 ms to refuse a 64 KB one before, 13 ms after, as an
    # ACK of that size takes).
    n = 60_000
    raw = udp.DCIS_PREFIX + b"\x84\x03\x01\x02\x99" + n.to_bytes(2, "big")
    raw += bytes([5]) * n
    reads = 0

    def counting(f: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            nonlocal reads
            reads += 1
            return f(*args)

        return wrapper

    monkeypatch.setattr(udp, "_arg_at", counting(udp._arg_at))
    monkeypatch.setattr(udp, "_uint", counting(udp._uint))
    with pytest.raises(DecodeError):
        decode_datagram_untrusted(raw)
    assert reads < 4 * MAX_NEED_RANGES
