"""The hand-written CBOR subset: shortest heads, and a reader that names what is wrong."""

from __future__ import annotations

import pytest

from dcis.dtn.bpv7 import cbor
from dcis.dtn.errors import DecodeError


@pytest.mark.parametrize(
    ("n", "hexs"),
    [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (2**32 - 1, "1affffffff"),
        (2**32, "1b0000000100000000"),
        (2**64 - 1, "1bffffffffffffffff"),
    ],
)
def test_uint_uses_the_shortest_head_rfc8949_4_2_1(n: int, hexs: str) -> None:
    raw = bytes.fromhex(hexs)
    assert cbor.uint(n) == raw
    assert cbor.read_uint(raw, 0, len(raw), "x") == (n, len(raw))


def test_strings_and_heads() -> None:
    assert cbor.bstr(b"ab") == b"\x42ab"
    assert cbor.tstr("é") == b"\x62\xc3\xa9"
    assert cbor.head(4, 1000) == b"\x99\x03\xe8"


def test_non_shortest_input_is_accepted() -> None:
    assert cbor.read_uint(b"\x18\x05", 0, 2, "x") == (5, 2)


@pytest.mark.parametrize(
    ("hexs", "message"),
    [
        ("", "truncated: input ends"),
        ("19ff", "truncated: CBOR head needs 2 more bytes"),
        ("1c", "reserved CBOR additional information 28"),
        ("20", "expected an unsigned integer, found a negative integer"),
        ("f5", "expected an unsigned integer, found a simple/float"),
    ],
)
def test_read_uint_errors(hexs: str, message: str) -> None:
    raw = bytes.fromhex(hexs)
    with pytest.raises(DecodeError, match=f"^here: {message}"):
        cbor.read_uint(raw, 0, len(raw), "here")


def test_string_length_checked_against_input_left() -> None:
    with pytest.raises(DecodeError, match="length 5 exceeds the 2 bytes of input left"):
        cbor.read_string_span(b"\x45ab", 0, 3, cbor.MAJOR_BYTES, "here")
    with pytest.raises(DecodeError, match="indefinite-length byte string"):
        cbor.read_string_span(b"\x5f\x41a\xff", 0, 4, cbor.MAJOR_BYTES, "here")
    with pytest.raises(DecodeError, match="indefinite-length array"):
        cbor.read_array_head(b"\x9f\xff", 0, 2, "here")
