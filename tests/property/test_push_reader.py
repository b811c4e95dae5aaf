"""PushReader (the clients' app API reader that streams large payloads into a
sink) against the plain MessageReader: same messages for any message mix and
any cutting of the stream; on hostile bytes, only DecodeError, and the same
verdict as the plain reader. Thresholds are a few bytes here, so the streamed
path runs on small examples."""

from __future__ import annotations

import itertools
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.appapi.wire import MessageReader, encode_message
from dcis.dtn.client.push_reader import FileSink, MemorySink, PushReader, SpooledPayload
from dcis.dtn.errors import DecodeError

TEXT = st.text(max_size=6)
UINT = st.integers(0, 2**40)

BUNDLE = st.fixed_dictionaries(
    {
        "type": st.just("bundle"),
        "endpoint": TEXT,
        "source": TEXT,
        "payload": st.binary(max_size=300),
        "creation_ms": UINT,
        "sequence": UINT,
        "bundle_key": TEXT,
    },
    # Extra keys, nested values too: the walk must skip them.
    optional={
        "x": st.lists(st.integers() | TEXT | st.binary(max_size=40), max_size=3),
        "y": st.dictionaries(TEXT, st.integers(), max_size=2),
        "z": st.binary(max_size=200),
    },
)
OTHER = st.fixed_dictionaries(
    {"type": st.just("ok"), "id": UINT}
) | st.fixed_dictionaries({"type": st.just("error"), "id": UINT, "message": TEXT})


def _shuffled(d: dict[str, Any], order: list[int]) -> dict[str, Any]:
    items = list(d.items())
    out = [items[i % len(items)] for i in order]
    seen: dict[str, Any] = {}
    for k, v in out + items:
        seen.setdefault(k, v)
    return seen


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    msgs = draw(st.lists(BUNDLE | OTHER, min_size=1, max_size=5))
    orders = [draw(st.lists(st.integers(0, 20), max_size=9)) for _ in msgs]
    data = b"".join(
        encode_message(_shuffled(m, o)) for m, o in zip(msgs, orders, strict=True)
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return data, cuts


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _run(reader: MessageReader | PushReader, pieces: list[bytes]) -> list[Any] | str:
    out: list[Any] = []
    try:
        for p in pieces:
            out += reader.feed(p)
    except DecodeError as exc:
        return f"error: {exc}"
    return out


def _small_push(**kw: Any) -> PushReader:
    return PushReader(stream_frame_bytes=48, stream_value_bytes=8, **kw)


@given(streams())
def test_same_messages_as_the_plain_reader(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    pieces = _pieces(data, cuts)
    expected = _run(MessageReader(), pieces)
    assert not isinstance(expected, str)
    push = _small_push()
    assert _run(push, pieces) == expected
    assert push.buffered_bytes == 0


@given(
    streams(),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    st.binary(max_size=30),
)
def test_hostile_bytes_get_the_plain_readers_verdict(
    case: tuple[bytes, list[int]], flips: list[tuple[int, int]], tail: bytes
) -> None:
    data, cuts = case
    raw = bytearray(data + tail)
    for at, value in flips:
        raw[at % len(raw)] = value
    pieces = _pieces(bytes(raw), [c for c in cuts if c <= len(raw)])
    expected = _run(MessageReader(), pieces)
    got = _run(_small_push(), pieces)
    if isinstance(got, str) and "twice" in got:
        # A repeated key: the plain reader takes the last value (cbor2);
        # a streamed frame refuses it.
        return
    if isinstance(expected, str):
        assert isinstance(got, str)
    else:
        assert got == expected


def test_a_large_payload_goes_to_the_sink_in_pieces_never_whole(tmp_path: Path) -> None:
    payload = os.urandom(3 * (1 << 20) + 7)
    frame = encode_message(
        {
            "type": "bundle",
            "endpoint": "ipn:2.1",
            "source": "ipn:1.1",
            "payload": payload,
            "creation_ms": 5,
            "sequence": 6,
            "bundle_key": "k",
        }
    )
    sinks: list[FileSink] = []

    def opener(n: int) -> FileSink:
        sinks.append(FileSink(str(tmp_path), n))
        return sinks[-1]

    reader = PushReader(sink_factory=opener)
    out: list[dict[str, Any]] = []
    most = 0
    for i in range(0, len(frame), 1 << 16):
        out += reader.feed(frame[i : i + (1 << 16)])
        most = max(most, reader.buffered_bytes)
    assert most < 8192  # the payload is never buffered in memory
    (msg,) = out
    spooled = msg["payload"]
    assert isinstance(spooled, SpooledPayload)
    assert spooled.size == len(payload)
    assert Path(spooled.path).read_bytes() == payload
    assert os.stat(spooled.path).st_mode & 0o777 == 0o600
    assert (msg["bundle_key"], msg["sequence"]) == ("k", 6)


def test_a_frame_that_fails_removes_its_file(tmp_path: Path) -> None:
    msg = {
        "type": "bundle",
        "endpoint": "e",
        "source": "s",
        "payload": b"p" * 300_000,
        "creation_ms": 1,
        "sequence": 2,
        "bundle_key": 3,  # not text: invalid, found at the frame's end
    }
    frame = encode_message(msg)
    reader = PushReader(sink_factory=lambda n: FileSink(str(tmp_path), n))
    reader.feed(frame[:200_000])
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(DecodeError):
        reader.feed(frame[200_000:])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DecodeError):
        reader.feed(b"")  # unusable after an error


def test_a_sink_that_cannot_write_is_a_decode_error(tmp_path: Path) -> None:
    frame = encode_message(
        {
            "type": "bundle",
            "endpoint": "e",
            "source": "s",
            "payload": b"p" * 300_000,
            "creation_ms": 1,
            "sequence": 2,
            "bundle_key": "k",
        }
    )
    reader = PushReader(sink_factory=lambda n: FileSink(str(tmp_path / "gone"), n))
    with pytest.raises(DecodeError, match="cannot store"):
        reader.feed(frame)


def _count_item_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the reader's item walks (``_item_end`` calls) in ``[0]``."""
    from dcis.dtn.client import push_reader

    visits = [0]
    real = push_reader._item_end

    def counted(buf: bytearray, pos: int, depth: int = 0) -> int:
        visits[0] += 1
        return real(buf, pos, depth)

    monkeypatch.setattr(push_reader, "_item_end", counted)
    return visits


def test_a_long_prefix_is_read_whole_in_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 200,000 small integers before the payload: past the walk's prefix
    # bound the frame is buffered whole, same messages as the plain reader.
    # Unbounded, each 4 KiB step walked the array again from its start
    # (~40 million item visits, 20 s).
    visits = _count_item_walks(monkeypatch)
    msg = {
        "type": "bundle",
        "a": list(range(200_000)),
        "endpoint": "e",
        "source": "s",
        "payload": b"p" * 300_000,
        "creation_ms": 1,
        "sequence": 2,
        "bundle_key": "k",
    }
    frame = encode_message(msg)
    pieces = [frame[i : i + 4096] for i in range(0, len(frame), 4096)]
    assert _run(PushReader(), pieces) == _run(MessageReader(), pieces) == [msg]
    assert visits[0] < 1_000_000


def test_a_trickled_prefix_is_walked_in_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The node reads app clients with this reader: a client that sends a
    # large frame's start a byte per read, an array before the payload, must
    # not make it walk the array again at every read (quadratic: ~2 million
    # item visits for these 2,000 bytes, ~1 s of the node's event loop; 64
    # KiB of them, minutes). Same message as the plain reader.
    visits = _count_item_walks(monkeypatch)
    msg = {
        "a": [0] * 3000,
        "type": "send",
        "id": 1,
        "destination": "ipn:1.1",
        "payload": b"p" * 200_000,
    }
    frame = encode_message(msg)
    trickled = 2000
    pieces = [frame[i : i + 1] for i in range(trickled)] + [frame[trickled:]]
    assert _run(PushReader(), pieces) == _run(MessageReader(), [frame]) == [msg]
    assert visits[0] < 10 * trickled


def test_a_value_longer_than_its_frame_opens_no_sink() -> None:
    # A 300 KB frame whose payload head claims 100 MB: refused before any
    # sink (a 100 MB buffer) is opened.
    body = bytearray(encode_message({"type": "bundle", "payload": b"p" * 300_000}))
    at = body.index(b"\x5a\x00\x04\x93\xe0")  # head of the 300,000-byte string
    body[at + 1 : at + 5] = (100_000_000).to_bytes(4, "big")
    opened: list[int] = []

    def opener(n: int) -> MemorySink:
        opened.append(n)
        return MemorySink(n)

    reader = PushReader(sink_factory=opener)
    with pytest.raises(DecodeError, match="overruns"):
        reader.feed(bytes(body))
    assert opened == []


def _driven(
    reader: PushReader, data: bytes, cuts: list[int], direct: list[bool]
) -> list[Any]:
    """Feed as the clients do: while a streamed value is due and ``direct``
    says so, a new bytes object of at most ``value_left`` bytes (a read
    straight into a new object); else, if ``value_offset`` of the next bytes
    (peeked) names a value, exactly the bytes up to it; else a view of a
    reused, then overwritten, buffer."""
    out: list[Any] = []
    bounds = sorted(set(cuts) | {len(data)})
    pos = i = 0
    while pos < len(data):
        at = bounds[min(i, len(bounds) - 1)]
        if at <= pos:
            i += 1
            continue
        left = reader.value_left
        if left and direct[i % len(direct)]:
            piece = data[pos : min(at, pos + left)]
            out += reader.feed(piece)
            pos += len(piece)
        elif (
            not left
            and direct[(i + 1) % len(direct)]
            and (k := reader.value_offset(data[pos : pos + 4096]))
        ):
            # Up to a large value exactly: the value is due next, whole.
            out += reader.feed(memoryview(bytearray(data[pos : pos + k])))
            pos += k
            assert reader.value_left > 0
        else:
            scratch = bytearray(data[pos:at])
            out += reader.feed(memoryview(scratch))
            scratch[:] = b"\xee" * len(scratch)
            pos = at
    return out


@given(streams(), st.lists(st.booleans(), min_size=1, max_size=4))
def test_values_read_as_bytes_pieces_give_the_same_messages(
    case: tuple[bytes, list[int]], direct: list[bool]
) -> None:
    # A client reads the rest of a streamed value straight into new bytes
    # objects (value_left at most) and the rest through a reused buffer:
    # the messages are the plain reader's for any split.
    data, cuts = case
    expected = _run(MessageReader(), _pieces(data, cuts))
    push = _small_push()
    assert _driven(push, data, cuts, direct) == expected
    assert push.buffered_bytes == 0
    assert push.value_left == 0


def test_a_payload_read_in_one_piece_is_the_piece_itself() -> None:
    payload = os.urandom(300_000)
    frame = encode_message(
        {
            "type": "bundle",
            "endpoint": "ipn:2.1",
            "source": "ipn:1.1",
            "payload": payload,
            "creation_ms": 5,
            "sequence": 6,
            "bundle_key": "k",
        }
    )
    at = frame.index(payload)
    reader = PushReader()
    assert reader.feed(frame[:at]) == []
    assert reader.value_left == len(payload)
    piece = frame[at : at + len(payload)]
    assert reader.feed(piece) == []
    assert reader.value_left == 0
    # In memory and counted (with the keys before it) until the frame ends.
    assert len(payload) <= reader.buffered_bytes < len(payload) + 200
    (msg,) = reader.feed(frame[at + len(payload) :])
    assert msg["payload"] is piece  # no copy in Python
    assert reader.buffered_bytes == 0


def test_a_file_sink_takes_no_pieces(tmp_path: Path) -> None:
    # value_left is only offered for sinks that keep bytes objects.
    frame = encode_message({"type": "bundle", "payload": b"p" * 300_000})
    reader = PushReader(sink_factory=lambda n: FileSink(str(tmp_path), n))
    reader.feed(frame[:100])
    assert reader.value_left == 0


def test_value_offset_points_at_the_next_large_payload() -> None:
    payloads = [os.urandom(300_000), os.urandom(200_000)]
    frames = [
        encode_message(
            {
                "type": "bundle",
                "endpoint": "ipn:2.1",
                "source": "ipn:1.1",
                "payload": p,
                "creation_ms": 5,
                "sequence": i,
                "bundle_key": f"k{i}",
            }
        )
        for i, p in enumerate(payloads)
    ]
    stream = b"".join(frames)
    reader = PushReader()
    at = stream.index(payloads[0])
    assert reader.value_offset(stream[:4096]) == at
    assert reader.value_offset(stream[: at - 1]) == 0  # not all of it in view
    assert reader.feed(stream[:at]) == []
    assert reader.value_offset(stream[at : at + 4096]) == 0  # inside the value
    assert reader.feed(stream[at : at + len(payloads[0])]) == []
    # At the end of a message (its last keys still due): past them, to the
    # next payload.
    pos = at + len(payloads[0])
    nxt = stream.index(payloads[1])
    assert reader.value_offset(stream[pos : pos + 4096]) == nxt - pos
    (first,) = reader.feed(stream[pos:nxt])
    assert first["payload"] == payloads[0]
    assert reader.last_large
    piece = stream[nxt : nxt + len(payloads[1])]
    assert reader.feed(piece) == []
    (second,) = reader.feed(stream[nxt + len(payloads[1]) :])
    assert second["payload"] is piece
    # Small frames, and sinks not known to take pieces: nothing to point at.
    small = encode_message({"type": "ok", "id": 1})
    assert PushReader().value_offset(small) == 0
    wrapped = PushReader(sink_factory=lambda n: MemorySink(n))
    assert wrapped.value_offset(stream[:4096]) == 0


def test_a_trickled_payload_holds_about_what_was_received() -> None:
    # A peer that announces a 16 MiB payload and sends it a byte at a time,
    # each byte handed over as its own bytes object (as a reader reading
    # straight into new objects gets them): the reader holds about the
    # bytes received, counted in buffered_bytes -- not the announced length
    # and not an object per byte.
    n = 16 << 20
    small = encode_message({"type": "send", "destination": "d", "payload": b"x" * 16})
    keys = small[2 : small.index(b"x" * 16) - 1]  # the map's start, to the payload
    body_len = len(keys) + 5 + n
    head = b"\x5a" + body_len.to_bytes(4, "big") + keys + b"\x5a" + n.to_bytes(4, "big")
    reader = PushReader(max_message_bytes=32 << 20)
    assert reader.feed(bytes(head)) == []
    assert reader.value_left == n
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            assert reader.feed(bytes([i & 0xFF])) == []
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert 20_000 <= reader.buffered_bytes < 20_000 + len(head)
    assert held <= 2 * 20_000 + 16_384
