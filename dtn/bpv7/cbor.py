"""The small subset of CBOR (RFC 8949) that BPv7 needs, encoded and decoded by hand.

RFC 9171 section 4.1: blocks are definite-length CBOR arrays inside one
indefinite-length array; integers use the shortest form (RFC 8949 4.2.1).

Why not a general CBOR library for decoding: we need (1) the byte offsets of
every block to verify CRCs over the raw input, (2) a length check against the
remaining input *before* any allocation, and (3) payload slices without extra
copies. A schema-driven reader over the input buffer gives all three, and has
no recursion to bound: the BPv7 schema nests at most three arrays deep.
"""

from __future__ import annotations

from typing import Final

from dcis.dtn.errors import DecodeError

MAJOR_UINT: Final = 0
MAJOR_BYTES: Final = 2
MAJOR_TEXT: Final = 3
MAJOR_ARRAY: Final = 4
INDEFINITE_ARRAY: Final = 0x9F
BREAK: Final = 0xFF

_HEADS: Final = tuple(tuple(bytes([(m << 5) | n]) for n in range(24)) for m in range(8))


def head(major: int, n: int) -> bytes:
    """The shortest CBOR head for major type ``major`` and argument ``n`` (0 <= n < 2**64)."""
    if n < 24:
        return _HEADS[major][n]
    if n < 0x100:
        return bytes(((major << 5) | 24, n))
    if n < 0x10000:
        return bytes(((major << 5) | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes(((major << 5) | 26,)) + n.to_bytes(4, "big")
    return bytes(((major << 5) | 27,)) + n.to_bytes(8, "big")


def uint(n: int) -> bytes:
    """Canonical CBOR encoding of an unsigned integer."""
    if n < 24:
        return _HEADS[0][n]
    return head(0, n)


def bstr(data: bytes) -> bytes:
    """Canonical CBOR byte string."""
    return head(2, len(data)) + data


def tstr(text: str) -> bytes:
    """Canonical CBOR text string."""
    raw = text.encode("utf-8")
    return head(3, len(raw)) + raw


_MAJOR_NAMES: Final = (
    "unsigned integer",
    "negative integer",
    "byte string",
    "text string",
    "array",
    "map",
    "tag",
    "simple/float",
)


def read_head(
    buf: bytes | memoryview, pos: int, end: int, where: str
) -> tuple[int, int, int]:
    """Read one CBOR head at ``pos``: returns ``(major, argument, new_pos)``.

    An indefinite length (additional info 31) returns argument ``-1``.
    Raises :class:`DecodeError` (naming ``where``) on truncation or reserved values.
    """
    if pos >= end:
        raise DecodeError("truncated: input ends before this item", where=where)
    ib = buf[pos]
    major = ib >> 5
    ai = ib & 0x1F
    if ai < 24:
        return major, ai, pos + 1
    if ai == 24:
        if pos + 2 > end:
            raise DecodeError("truncated: CBOR head needs 1 more byte", where=where)
        return major, buf[pos + 1], pos + 2
    if 25 <= ai <= 27:
        n = 1 << (ai - 24)
        if pos + 1 + n > end:
            raise DecodeError(f"truncated: CBOR head needs {n} more bytes", where=where)
        return major, int.from_bytes(buf[pos + 1 : pos + 1 + n], "big"), pos + 1 + n
    if ai == 31:
        return major, -1, pos + 1
    raise DecodeError(f"reserved CBOR additional information {ai}", where=where)


def read_uint(
    buf: bytes | memoryview, pos: int, end: int, where: str
) -> tuple[int, int]:
    """Read an unsigned integer; raises :class:`DecodeError` for any other item."""
    if pos < end:
        ib = buf[pos]
        if ib < 24:  # fast path: major 0, tiny value
            return ib, pos + 1
    major, value, pos = read_head(buf, pos, end, where)
    if major != MAJOR_UINT or value < 0:
        raise DecodeError(
            f"expected an unsigned integer, found a {_MAJOR_NAMES[major]}", where=where
        )
    return value, pos


def read_array_head(
    buf: bytes | memoryview, pos: int, end: int, where: str
) -> tuple[int, int]:
    """Read a definite-length array head; returns ``(count, new_pos)``."""
    major, value, pos = read_head(buf, pos, end, where)
    if major != MAJOR_ARRAY:
        raise DecodeError(
            f"expected an array, found a {_MAJOR_NAMES[major]}", where=where
        )
    if value < 0:
        raise DecodeError(
            "indefinite-length array not allowed here (RFC 9171 4.1)", where=where
        )
    return value, pos


def read_string_span(
    buf: bytes | memoryview, pos: int, end: int, major_wanted: int, where: str
) -> tuple[int, int]:
    """Read a definite-length byte/text string head; returns ``(start, stop)`` of its content.

    The declared length is checked against the remaining input before the
    caller slices (and so allocates) anything.
    """
    major, length, pos = read_head(buf, pos, end, where)
    if major != major_wanted:
        raise DecodeError(
            f"expected a {_MAJOR_NAMES[major_wanted]}, found a {_MAJOR_NAMES[major]}",
            where=where,
        )
    if length < 0:
        raise DecodeError(
            f"indefinite-length {_MAJOR_NAMES[major]} not allowed (RFC 9171 4.1)",
            where=where,
        )
    if length > end - pos:
        raise DecodeError(
            f"length {length} exceeds the {end - pos} bytes of input left", where=where
        )
    return pos, pos + length


def read_text(
    buf: bytes | memoryview, pos: int, end: int, where: str
) -> tuple[str, int]:
    """Read a definite-length UTF-8 text string."""
    start, stop = read_string_span(buf, pos, end, MAJOR_TEXT, where)
    try:
        return bytes(buf[start:stop]).decode("utf-8"), stop
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"text string is not valid UTF-8 ({exc.reason})", where=where
        ) from exc
