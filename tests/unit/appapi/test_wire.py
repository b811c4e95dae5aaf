"""App API framing and validation (spec/appapi.md)."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtn.appapi.wire import MessageReader, decode_message_untrusted, encode_message
from dtn.cl.mtcp import encode_mtcp_frame
from dtn.errors import DecodeError, InvalidArgument

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
