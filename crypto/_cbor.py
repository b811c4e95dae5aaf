"""Strict CBOR helpers for untrusted input (RFC 8949).

cbor2 raises a zoo of exception types on hostile bytes (and decodes tags into
Python objects); every decoder here funnels them into :class:`DecodeError`
and insists on exactly one data item with no trailing bytes.
"""

from __future__ import annotations

from dcis.crypto import cbor_guard
from dcis.crypto.errors import DecodeError


def loads_untrusted(data: bytes | bytearray | memoryview, *, what: str) -> object:
    """Decode exactly one CBOR item from ``data``; raise only DecodeError.

    Guarded (:mod:`dcis.crypto.cbor_guard`): no tags but bignums, valid UTF-8, bounded
    nesting, no trailing bytes."""
    if not data:
        raise DecodeError("empty input", where=what)
    return cbor_guard.loads_untrusted(data, what=what)


def expect_array(item: object, length: int, *, what: str) -> list[object]:
    """Return ``item`` as a list of exactly ``length`` elements or raise DecodeError."""
    if not isinstance(item, list):
        raise DecodeError(f"expected an array, got {type(item).__name__}", where=what)
    if len(item) != length:
        raise DecodeError(f"expected {length} elements, got {len(item)}", where=what)
    return item


def expect_uint(item: object, *, what: str) -> int:
    """Return ``item`` as a non-negative int (not bool) or raise DecodeError."""
    if not isinstance(item, int) or isinstance(item, bool) or item < 0:
        raise DecodeError(f"expected an unsigned integer, got {item!r:.40}", where=what)
    if item >= 1 << 64:
        raise DecodeError("integer exceeds 64 bits", where=what)
    return item


def expect_bytes(item: object, *, what: str, length: int | None = None) -> bytes:
    """Return ``item`` as bytes (optionally of an exact length) or raise DecodeError."""
    if not isinstance(item, bytes):
        raise DecodeError(
            f"expected a byte string, got {type(item).__name__}", where=what
        )
    if length is not None and len(item) != length:
        raise DecodeError(f"expected {length} bytes, got {len(item)}", where=what)
    return item


def expect_text(item: object, *, what: str) -> str:
    """Return ``item`` as str or raise DecodeError."""
    if not isinstance(item, str):
        raise DecodeError(
            f"expected a text string, got {type(item).__name__}", where=what
        )
    return item
