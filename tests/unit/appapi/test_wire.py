"""App API framing and validation (spec/appapi.md)."""

from __future__ import annotations

import contextlib
from unittest import mock

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.crypto.cbor_guard import loads_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dtn.appapi import wire
from dcis.dtn.appapi.wire import (
    MessageReader,
    _dumps_flat_map,
    _loads_flat_map,
    decode_message_untrusted,
    encode_bundle_message_parts,
    encode_delivered,
    encode_key_reply,
    encode_message,
    encode_message_parts,
    encode_send_head,
)
from dcis.dtn.cl.mtcp import encode_mtcp_frame
from dcis.dtn.errors import DecodeError, InvalidArgument

MESSAGES = [
    {"type": "register", "id": 1, "endpoint": "ipn:5.3"},
    {
        "type": "send",
        "id": 2,
        "destination": "ipn:7.1",
        "payload": b"\x00" * 100,
        "lifetime_ms": 1000,
    },
    {"type": "delivered", "bundle_key": "ipn:7.1|1|0"},
    {"type": "status", "id": 3},
    {"type": "ok", "id": 3, "status": {"node": 5}},
    {"type": "error", "id": 4, "message": "no"},
    {
        "type": "bundle",
        "endpoint": "ipn:5.3",
        "source": "ipn:7.1",
        "payload": b"hi",
        "creation_ms": 5,
        "sequence": 0,
        "bundle_key": "k",
    },
]


def test_messages_round_trip_through_a_byte_at_a_time_stream() -> None:
    stream = b"".join(encode_message(m) for m in MESSAGES)
    reader = MessageReader()
    out = []
    for i in range(len(stream)):
        out += reader.feed(stream[i : i + 1])
    assert out == MESSAGES


def test_encode_rejects_unknown_type() -> None:
    with pytest.raises(InvalidArgument):
        encode_message({"type": "nope"})


@pytest.mark.parametrize(
    "msg",
    [
        [1, 2],
        {"type": "send", "id": 1, "destination": "ipn:1.1"},  # payload missing
        {"type": "send", "id": 1, "destination": "ipn:1.1", "payload": "text"},
        {"type": "send", "id": True, "destination": "ipn:1.1", "payload": b""},
        {
            "type": "send",
            "id": 1,
            "destination": "ipn:1.1",
            "payload": b"",
            "lifetime_ms": "x",
        },
        {"type": "launch", "id": 1},
        {"id": 1},
    ],
)
def test_invalid_messages_raise_decode_error(msg: object) -> None:
    with pytest.raises(DecodeError):
        MessageReader().feed(encode_mtcp_frame(cbor2.dumps(msg)))


def test_oversized_frame_is_refused() -> None:
    with pytest.raises(DecodeError):
        MessageReader(max_message_bytes=100).feed(b"\x59\x10\x00")


@given(st.binary(max_size=200))
def test_hostile_bodies_decode_or_raise_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message_untrusted(raw)


_VALUES = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.binary(max_size=600), max_size=3),
)


@given(
    kind=st.sampled_from(sorted({str(m["type"]) for m in MESSAGES})),
    extra=st.dictionaries(st.text(max_size=12), _VALUES, max_size=30),
    payload=st.binary(min_size=0, max_size=3000) | st.integers(0, 300_000).map(bytes),
)
def test_encode_message_is_byte_identical_to_cbor2(
    kind: str, extra: dict[str, object], payload: bytes
) -> None:
    # The fast path splices large byte values in; the result must be the
    # very bytes cbor2 writes (issue 18: no behaviour change, fewer copies).
    msg: dict[str, object] = {**extra, "type": kind, "payload": payload}
    assert encode_message(msg) == encode_mtcp_frame(cbor2.dumps(msg))


@given(
    kind=st.sampled_from(sorted({str(m["type"]) for m in MESSAGES})),
    extra=st.dictionaries(st.text(max_size=12), _VALUES, max_size=30),
    payload=st.binary(min_size=0, max_size=3000) | st.integers(0, 300_000).map(bytes),
    large=st.sampled_from([16 * 1024, 128 * 1024]),
)
def test_message_parts_join_to_the_frame_and_pass_large_payloads_by_reference(
    kind: str, extra: dict[str, object], payload: bytes, large: int
) -> None:
    # The node's and the trio client's writers hand the parts to the socket
    # one by one: a large payload must be the caller's own object (no copy).
    msg: dict[str, object] = {**extra, "type": kind, "payload": payload}
    parts = encode_message_parts(msg, large=large)
    assert b"".join(parts) == encode_mtcp_frame(cbor2.dumps(msg))
    big = len(payload) >= large and len(msg) < 24
    assert any(p is payload for p in parts) == big


@given(
    destination=st.text(max_size=40),
    source=st.none() | st.text(max_size=40),
    lifetime_ms=st.none() | st.integers(0, 2**64 - 1),
    mid=st.integers(0, 2**64 - 1),
    payload=st.binary(max_size=2000) | st.integers(0, 300_000).map(bytes),
)
def test_a_streamed_send_head_plus_its_payload_is_the_whole_send_frame(
    destination: str,
    source: str | None,
    lifetime_ms: int | None,
    mid: int,
    payload: bytes,
) -> None:
    msg: dict[str, object] = {"type": "send", "id": mid, "destination": destination}
    if source is not None:
        msg["source"] = source
    if lifetime_ms is not None:
        msg["lifetime_ms"] = lifetime_ms
    frame = encode_send_head(msg, len(payload)) + payload
    assert frame == encode_mtcp_frame(cbor2.dumps({**msg, "payload": payload}))
    assert MessageReader().feed(frame) == [{**msg, "payload": payload}]


def test_a_streamed_send_head_refuses_what_it_cannot_frame() -> None:
    send = {"type": "send", "id": 1, "destination": "ipn:2.1"}
    with pytest.raises(InvalidArgument):
        encode_send_head({**send, "payload": b"x"}, 1)
    with pytest.raises(InvalidArgument):
        encode_send_head({"type": "status", "id": 1}, 1)
    with pytest.raises(InvalidArgument):
        encode_send_head(send, -1)
    with pytest.raises(InvalidArgument, match="exceeds"):
        encode_send_head(send, 1000, max_message_bytes=1000)


_FLAT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=40),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.booleans(),
    st.none(),
)


def _general(raw: bytes) -> object:
    """What the general path (cbor_guard + cbor2) makes of ``raw``: the
    value, or DecodeError's class when it refuses it."""
    try:
        return loads_untrusted(raw)
    except CborDecodeError:
        return CborDecodeError


@given(
    msg=st.dictionaries(st.text(max_size=30), _FLAT, max_size=25),
    cut=st.integers(0, 400),
    flip=st.tuples(st.integers(0, 400), st.integers(1, 255)),
    mode=st.sampled_from(["whole", "truncated", "flipped", "trailing"]),
)
def test_the_flat_map_decoder_agrees_with_the_general_path(
    msg: dict[str, object], cut: int, flip: tuple[int, int], mode: str
) -> None:
    # The fast decoder of flat messages returns exactly what cbor_guard +
    # cbor2 return, or None (then the general path decides): never a
    # different value for the same bytes, whole or damaged.
    raw = cbor2.dumps(msg)
    if mode == "truncated":
        raw = raw[: cut % (len(raw) + 1)]
    elif mode == "flipped":
        at = flip[0] % len(raw)
        raw = raw[:at] + bytes([raw[at] ^ flip[1]]) + raw[at + 1 :]
    elif mode == "trailing":
        raw += b"\x00"
    fast = _loads_flat_map(raw)
    if fast is not None:
        assert fast == _general(raw)
    elif mode == "whole":
        # keys of at most 30 characters: shorter than 256 bytes
        assert len(msg) >= 24, "a flat map took the general path"
    if mode == "whole":
        assert decode_or_none(raw) == msg


@given(
    msg=st.dictionaries(st.text(max_size=30), _FLAT, max_size=25),
    big=st.sampled_from([0, 20_000, 70_000]),
)
def test_a_message_decoded_from_a_view_keeps_nothing_of_the_buffer(
    msg: dict[str, object], big: int
) -> None:
    # The node and the clients decode a frame from their read buffer (a
    # memoryview): the same message as from bytes, values as bytes and str,
    # and the buffer free to be reused or resized at once.
    if big:  # a large frame is decoded from the view itself
        msg["payload"] = bytes(range(256)) * (big // 256)
    buf = bytearray(encode_message({**msg, "type": "status", "id": 1}))
    frames = MessageReader().feed(buf)
    frames += MessageReader().feed(memoryview(buf))
    buf[:] = b"\x00" * len(buf)  # the next read overwrites it
    buf += b"grows"  # and a bytearray with a view alive could not resize
    want = {**msg, "type": "status", "id": 1}
    assert frames == [want, want]
    for m in frames:
        assert not any(isinstance(v, memoryview) for v in m.values())


def decode_or_none(raw: bytes) -> object:
    fast = _loads_flat_map(raw)
    return fast if fast is not None else _general(raw)


@given(msg=st.dictionaries(st.text(max_size=30), _FLAT, max_size=25))
def test_the_flat_map_encoder_writes_cbor2s_bytes(msg: dict[str, object]) -> None:
    fast = _dumps_flat_map(msg)
    if len(msg) < 24 and all(
        not isinstance(v, int) or -(2**64) <= v < 2**64 for v in msg.values()
    ):
        assert fast == cbor2.dumps(msg)
    else:
        assert fast is None


@given(
    kind=st.sampled_from(sorted({str(m["type"]) for m in MESSAGES})),
    extra=st.dictionaries(
        st.text(max_size=12),
        _FLAT | st.integers(0, 3).map(lambda k: bytes(k * 9_000)),
        max_size=20,
    ),
    payload=st.binary(max_size=300) | st.integers(0, 70_000).map(bytes),
    large=st.sampled_from([1, 16 * 1024, 128 * 1024]),
)
def test_a_flat_message_with_large_values_is_encoded_without_cbor2(
    kind: str, extra: dict[str, object], payload: bytes, large: int
) -> None:
    # A flat map with large byte values (a send request of a 64 KB bundle)
    # is encoded here, not by one cbor2.dumps per value (~4 us each, ~85 us
    # a message): with cbor2 unusable the bytes are still cbor2's, and each
    # large value is passed on as the caller's own object.
    msg: dict[str, object] = {**extra, "type": kind, "payload": payload}
    want = encode_mtcp_frame(cbor2.dumps(msg))
    flat = len(msg) < 24 and all(
        not isinstance(v, int) or -(2**64) <= v < 2**64 for v in msg.values()
    )
    with contextlib.ExitStack() as stack:
        if flat:
            stack.enter_context(
                mock.patch.object(wire.cbor2, "dumps", side_effect=AssertionError)
            )
        parts = encode_message_parts(msg, large=large)
    assert b"".join(parts) == want
    big = [v for v in msg.values() if type(v) is bytes and len(v) >= large]
    assert sum(1 for p in parts if any(p is v for v in big)) == len(big)
    assert len(parts) <= 2 * len(big) + 1


@given(
    endpoint=st.text(max_size=40),
    source=st.text(max_size=40),
    payload=st.binary(max_size=3000) | st.integers(0, 300_000).map(bytes),
    creation_ms=st.integers(-(2**64), 2**65),
    sequence=st.integers(-5, 2**65),
    bundle_key=st.text(max_size=80),
    large=st.sampled_from([16 * 1024, 128 * 1024]),
)
def test_the_bundle_push_encoder_writes_the_messages_frame(
    endpoint: str,
    source: str,
    payload: bytes,
    creation_ms: int,
    sequence: int,
    bundle_key: str,
    large: int,
) -> None:
    fields = {
        "endpoint": endpoint,
        "source": source,
        "payload": payload,
        "creation_ms": creation_ms,
        "sequence": sequence,
        "bundle_key": bundle_key,
    }
    parts = encode_bundle_message_parts(**fields, large=large)  # type: ignore[arg-type]
    msg = {"type": "bundle", **fields}
    assert b"".join(parts) == encode_mtcp_frame(cbor2.dumps(msg))
    whole = 0 <= creation_ms < 2**64 and 0 <= sequence < 2**64
    by_reference = len(payload) >= (large if whole else 128 * 1024)
    assert any(p is payload for p in parts) == by_reference


@given(
    mid=st.integers(-5, 2**65),
    bundle_key=st.text(max_size=80),
)
def test_the_send_reply_encoder_writes_the_messages_frame(
    mid: int, bundle_key: str
) -> None:
    msg = {"type": "ok", "id": mid, "bundle_key": bundle_key}
    assert encode_key_reply(mid, bundle_key) == encode_mtcp_frame(cbor2.dumps(msg))


@given(bundle_key=st.text(max_size=300))
def test_the_confirmation_encoder_writes_the_messages_frame(bundle_key: str) -> None:
    msg = {"type": "delivered", "bundle_key": bundle_key}
    assert encode_delivered(bundle_key) == encode_mtcp_frame(cbor2.dumps(msg))
