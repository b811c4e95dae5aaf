"""MTCP framing (draft-ietf-dtn-mtcpcl), checked against pyd3tn's MTCP socket."""

from __future__ import annotations

import contextlib
import socket
import threading
import tracemalloc

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.cl.mtcp import MtcpDecoder, encode_mtcp_frame
from dcis.dtn.errors import DecodeError


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536, 200_000])
def test_frame_is_a_cbor_byte_string(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    frame = encode_mtcp_frame(data)
    assert frame == cbor2.dumps(data)
    assert MtcpDecoder().feed(frame) == [data]


@given(
    st.lists(st.binary(max_size=300), max_size=8),
    st.integers(min_value=1, max_value=50),
)
def test_decoder_handles_any_chunking(bundles: list[bytes], chunk: int) -> None:
    stream = b"".join(encode_mtcp_frame(b) for b in bundles)
    dec = MtcpDecoder()
    out: list[bytes] = []
    for i in range(0, len(stream), chunk):
        out += dec.feed(stream[i : i + chunk])
    assert out == bundles
    assert dec.buffered_bytes == 0


@pytest.mark.parametrize("raw", [b"\x9f", b"\x5f\x41a\xff", b"\x5c", b"\x00"])
def test_non_byte_string_frames_are_rejected(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        MtcpDecoder().feed(raw)


def test_oversized_frame_is_rejected_before_buffering() -> None:
    dec = MtcpDecoder(max_bundle_bytes=1000)
    with pytest.raises(DecodeError, match="exceeds"):
        dec.feed(b"\x5a\x00\x10\x00\x00")


@given(st.binary(max_size=200))
def test_hostile_stream_gives_bundles_or_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        MtcpDecoder(max_bundle_bytes=10_000).feed(raw)


@pytest.mark.interop
def test_pyd3tn_mtcp_socket_reads_our_frames_and_we_read_its() -> None:
    from pyd3tn.mtcp import MTCPSocket

    a, b = socket.socketpair()
    with a, b:
        peer = MTCPSocket(b, timeout=5)
        payloads = [b"\x9f" + bytes(n) for n in (0, 30, 300, 70_000)]
        a.settimeout(5)

        # Writers run in threads: socketpair buffers are smaller than 70 KB.
        def write_ours() -> None:
            for p in payloads:
                a.sendall(encode_mtcp_frame(p))

        writer = threading.Thread(target=write_ours)
        writer.start()
        assert [peer.recv_bundle() for _ in payloads] == payloads
        writer.join(5)

        def write_theirs() -> None:
            for p in payloads:
                peer.send_bundle(p)

        writer = threading.Thread(target=write_theirs)
        writer.start()
        dec = MtcpDecoder()
        got: list[bytes] = []
        while len(got) < len(payloads):
            got += dec.feed(a.recv(65536))
        writer.join(5)
        assert got == payloads


@given(
    st.lists(
        st.integers(0, 300) | st.sampled_from([255, 256, 65_535, 65_536, 70_000]),
        max_size=6,
    ),
    st.lists(st.integers(0, 400_000), max_size=12),
)
def test_the_buffer_holds_only_the_frame_in_progress(
    sizes: list[int], cuts: list[int]
) -> None:
    # Any split of the stream, heads cut too (1, 2, 3 and 5-byte heads):
    # the bundles come out in order, and after each read the decoder holds
    # exactly the received bytes of the frame in progress (its head while
    # incomplete, then its payload) -- never the rest of a read.
    bundles = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    frames = [encode_mtcp_frame(b) for b in bundles]
    stream = b"".join(frames)
    starts = [0]
    for f in frames:
        starts.append(starts[-1] + len(f))
    points = sorted({c % (len(stream) + 1) for c in cuts} | {len(stream)})
    dec = MtcpDecoder()
    out: list[bytes] = []
    prev = 0
    for at in points:
        out += dec.feed(stream[prev:at])
        prev = at
        i = max(k for k in range(len(starts)) if starts[k] <= at)
        got = at - starts[i] if i < len(frames) else 0
        hlen = len(frames[i]) - len(bundles[i]) if i < len(frames) else 0
        assert dec.buffered_bytes == (got if got < hlen else got - hlen)
    assert out == bundles


def test_a_read_that_finishes_a_frame_is_not_buffered_whole() -> None:
    # 20 bundles of 50 KB in one read that starts by finishing a frame begun
    # in the previous read: the frames after the first are copied once, out
    # of the read (the decoder used to append the whole read to its buffer
    # first: a second copy of every bundle in it).
    bundles = [bytes([i]) * 50_000 for i in range(21)]
    stream = b"".join(encode_mtcp_frame(b) for b in bundles)
    dec = MtcpDecoder()
    assert dec.feed(stream[:10]) == []
    rest = stream[10:]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = dec.feed(rest)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert out == bundles
    # the bundles returned, the first frame's buffer, a little slack
    assert peak <= sum(len(b) for b in bundles) + 50_000 + 16_384


@given(
    st.lists(st.binary(max_size=300), max_size=8),
    st.lists(st.integers(0, 3000), max_size=6),
)
def test_frames_read_whole_are_handed_over_as_views_of_the_read(
    bundles: list[bytes], cuts: list[int]
) -> None:
    # feed_frames passes a frame read whole as a view of the read (the app
    # API decodes messages from it without copying the frame first), a
    # frame gathered over reads as bytes; the frames are those feed returns.
    stream = b"".join(encode_mtcp_frame(b) for b in bundles)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {len(stream)})
    dec, plain = MtcpDecoder(), MtcpDecoder()
    got: list[tuple[type, bytes]] = []
    want: list[bytes] = []
    prev = 0
    for at in points:
        read = bytearray(stream[prev:at])
        got += dec.feed_frames(read, lambda f: (type(f), bytes(f)))
        want += plain.feed(stream[prev:at])
        prev = at
    assert [b for _, b in got] == want == bundles
    if len(points) == 1:
        assert all(t is memoryview for t, _ in got)
    assert all(t in (memoryview, bytes) for t, _ in got)


def _driven(
    dec: MtcpDecoder, stream: bytes, cuts: list[int], direct: list[bool]
) -> tuple[list[bytes], list[int]]:
    """Feed ``stream`` as a driver does: at each cut, when the decoder asks
    for an exact read (``next_read_bytes``: the rest of a large frame, or
    the head after one) and ``direct`` says so, a new ``bytes`` object of at
    most that many bytes (a read straight into a new object), else a view
    of a reused buffer; returns the bundles and, after each feed, how
    many bytes the decoder said it held."""
    out: list[bytes] = []
    held: list[int] = []
    pos = 0
    points = sorted({c % (len(stream) + 1) for c in cuts} | {len(stream)})
    i = 0
    while pos < len(stream):
        at = points[i] if i < len(points) else len(stream)
        if at <= pos:
            i += 1
            continue
        left = dec.next_read_bytes
        assert left >= dec.large_frame_left
        if left and direct[i % len(direct)]:
            piece = stream[pos : min(at, pos + left)]
            out += dec.feed(piece)
            pos += len(piece)
        else:
            scratch = bytearray(stream[pos:at])  # a reused buffer
            out += dec.feed(memoryview(scratch))
            scratch[:] = b"\xee" * len(scratch)  # overwritten by the next read
            pos = at
        held.append(dec.buffered_bytes)
    return out, held


@given(
    st.lists(st.integers(0, 700), max_size=6),
    st.lists(st.integers(0, 10_000), max_size=14),
    st.lists(st.booleans(), min_size=1, max_size=5),
    st.integers(1, 400),
)
def test_any_split_with_large_frames_read_as_pieces_gives_the_same_bundles(
    sizes: list[int], cuts: list[int], direct: list[bool], large: int
) -> None:
    # The large-frame path (pieces kept as they are, joined at the end) on
    # small frames: the same bundles as feeding the whole stream at once,
    # whatever the split points and whichever reads come as bytes pieces; the
    # decoder never reports more held bytes than the frame in progress has
    # received, and nothing once the stream ends on a frame boundary.
    bundles = [bytes([i % 251, 7]) * (n // 2) for i, n in enumerate(sizes)]
    stream = b"".join(encode_mtcp_frame(b) for b in bundles)
    dec = MtcpDecoder(large_frame_bytes=large)
    out, held = _driven(dec, stream, cuts, direct)
    assert out == bundles == MtcpDecoder().feed(stream)
    assert all(h <= max(sizes, default=0) + 9 for h in held)
    assert dec.buffered_bytes == 0
    assert dec.large_frame_left == 0


def test_a_large_frame_read_in_one_piece_is_not_copied() -> None:
    bundle = bytes(range(256)) * 1000
    frame = encode_mtcp_frame(bundle)
    head, rest = frame[:5], frame[5:]
    dec = MtcpDecoder()
    assert dec.feed(head) == []
    assert dec.large_frame_left == len(bundle)
    (got,) = dec.feed(rest)
    assert got is rest  # kept as it is: no copy in Python
    assert dec.buffered_bytes == 0


def test_a_large_frame_in_pieces_is_joined_once() -> None:
    bundle = bytes(range(256)) * 1000
    frame = encode_mtcp_frame(bundle)
    dec = MtcpDecoder()
    out = dec.feed(memoryview(bytearray(frame[:70_000])))
    pieces = [frame[70_000:150_000], frame[150_000:]]
    for p in pieces:
        assert len(p) <= dec.large_frame_left
        out += dec.feed(p)
    assert out == [bundle]


def test_a_trickled_large_frame_holds_about_what_was_received() -> None:
    # A peer that announces a 16 MiB frame and then sends it a byte at a
    # time, each byte read as its own bytes object: the decoder holds
    # about the bytes received (short pieces are joined as they come), not
    # the announced length and not an object per byte.
    dec = MtcpDecoder(max_bundle_bytes=16 << 20)
    assert dec.feed(b"\x5a" + (16 << 20).to_bytes(4, "big")) == []
    assert dec.large_frame_left == 16 << 20
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            dec.feed(bytes([i & 0xFF]))
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert dec.buffered_bytes == 20_000
    assert held <= 2 * 20_000 + 16_384


def test_large_frames_read_as_the_decoder_asks_are_never_copied() -> None:
    # A driver that reads exactly next_read_bytes (the head after a large
    # frame, then the frame) into new bytes objects gets a large bundle back
    # as the very object it read: no copy in Python. A small frame in
    # between goes back to ordinary reads (0).
    big1, big2, small, big3 = (
        bytes([i]) * n for i, n in enumerate([200_000, 300_000, 50, 150_000])
    )
    dec = MtcpDecoder()
    assert dec.feed(memoryview(bytearray(encode_mtcp_frame(big1)))) == [big1]
    asked: list[int] = []

    def read(data: bytes) -> list[bytes]:
        asked.append(dec.next_read_bytes)
        return dec.feed(data)

    f2 = encode_mtcp_frame(big2)
    assert read(f2[:1]) == read(f2[1:5]) == []
    body = f2[5:]
    (got,) = read(body)
    assert got is body
    f3 = encode_mtcp_frame(small)
    assert read(f3[:1]) == read(f3[1:2]) == []
    assert read(f3[2:]) == [small]
    f4 = encode_mtcp_frame(big3)
    assert dec.next_read_bytes == 0  # after a small frame: ordinary reads
    assert dec.feed(memoryview(bytearray(f4[:1000]))) == []
    rest = f4[1000:]
    assert dec.next_read_bytes == len(rest)
    assert dec.feed(rest) == [big3]
    assert asked == [1, 4, 300_000, 1, 1, 0]
