"""A guard in front of cbor2's C decoder for untrusted bytes (RFC 8949).

Theory of operation
-------------------
cbor2 5.8's C decoder (the version our test peer pyd3tn pins) leaks the
exception it raises on some malformed items -- an invalid UTF-8 text string,
a bad datetime or MIME tag -- together with its traceback, and so every
frame of the caller's stack that was live at that moment: a UDP reader lost
~15 KiB per junk datagram that way, for good. cbor2 6.3 no longer leaks, but
we cannot require it while pyd3tn pins 5.8.

So untrusted CBOR is first walked here, iteratively, in Python: one
well-formed item with no trailing bytes, arrays and maps nested at most
``max_depth`` deep, every text string valid UTF-8, no indefinite-length
strings, no tags but the ones the caller names (bignums by default), no reserved or malformed
simple values. Only input that passes is handed to cbor2, whose error paths
are then out of reach. The walk reads each head once and never allocates in
proportion to a claimed length (a length is checked against the remaining
input first), so hostile input costs at most its own size.
"""

from __future__ import annotations

from collections.abc import Collection

import cbor2

from dcis.crypto.errors import DecodeError

_INDEFINITE = -1
DEFAULT_MAX_DEPTH = 32

BIGNUM_TAGS = (2, 3)
"""Tags accepted unless a caller says otherwise: bignums (RFC 8949 section
3.4.3) are integers, left for the caller's range checks (cbor2's bignum
errors do not leak)."""


def check_untrusted(
    data: bytes | bytearray | memoryview,
    *,
    allowed_tags: Collection[int] = BIGNUM_TAGS,
    max_depth: int = DEFAULT_MAX_DEPTH,
    what: str = "CBOR",
) -> None:
    """Raise :class:`DecodeError` unless ``data`` is exactly one well-formed
    CBOR item that :func:`loads_untrusted` may hand to cbor2 (see the module
    docstring for the rules)."""
    mv = memoryview(data).cast("B")
    n = len(mv)
    pos = 0
    # Items still to read in each open container (-1: indefinite, ends at a
    # break); the bottom entry is the one top-level item.
    stack = [1]
    while stack:
        top = stack[-1]
        if top == 0:
            stack.pop()
            continue
        if pos >= n:
            raise DecodeError("truncated item", where=what)
        ib = mv[pos]
        pos += 1
        if ib == 0xFF:
            if top != _INDEFINITE:
                raise DecodeError("break outside an indefinite container", where=what)
            stack.pop()
            continue
        if top != _INDEFINITE:
            stack[-1] = top - 1
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            arg = ai
        elif ai < 28:
            size = 1 << (ai - 24)
            if pos + size > n:
                raise DecodeError("truncated head", where=what)
            arg = int.from_bytes(mv[pos : pos + size], "big")
            pos += size
        elif ai == 31 and major in (4, 5):
            arg = _INDEFINITE
        else:
            raise DecodeError(
                f"additional information {ai} not accepted for major type {major}",
                where=what,
            )
        if major <= 1:
            continue
        if major in (2, 3):
            if arg > n - pos:
                raise DecodeError("string longer than the input", where=what)
            if major == 3:
                try:
                    str(mv[pos : pos + arg], "utf-8")
                except UnicodeDecodeError:
                    raise DecodeError(
                        "text string is not valid UTF-8", where=what
                    ) from None
            pos += arg
            continue
        if major in (4, 5):
            if len(stack) > max_depth:
                raise DecodeError(f"nested deeper than {max_depth}", where=what)
            if arg == _INDEFINITE:
                stack.append(_INDEFINITE)
            else:
                # Every element takes at least one byte: a count beyond the
                # input is a lie, refused before anything is allocated.
                count = arg if major == 4 else 2 * arg
                if count > n - pos:
                    raise DecodeError("container longer than the input", where=what)
                stack.append(count)
            continue
        if major == 6:
            if arg not in allowed_tags:
                raise DecodeError(f"tag {arg} not accepted", where=what)
            if len(stack) > max_depth:
                raise DecodeError(f"nested deeper than {max_depth}", where=what)
            stack.append(1)
            continue
        # major 7: simple values and floats. A one-byte simple value below 32
        # is not well-formed (RFC 8949 section 3.3).
        if ai == 24 and arg < 32:
            raise DecodeError(f"simple value {arg} in two bytes", where=what)
    if pos != n:
        raise DecodeError(f"{n - pos} trailing bytes", where=what)


def loads_untrusted(
    data: bytes | bytearray | memoryview,
    *,
    allowed_tags: Collection[int] = BIGNUM_TAGS,
    max_depth: int = DEFAULT_MAX_DEPTH,
    what: str = "CBOR",
) -> object:
    """Decode exactly one CBOR item from untrusted ``data`` with cbor2, after
    :func:`check_untrusted`. Raises only :class:`DecodeError` (a map with an
    unhashable key, say, is one too)."""
    check_untrusted(data, allowed_tags=allowed_tags, max_depth=max_depth, what=what)
    error: str | None = None
    try:
        return cbor2.loads(data)
    except Exception as exc:  # a map key cbor2 cannot hash, ...
        error = f"{type(exc).__name__}: {exc}"
    raise DecodeError(f"malformed CBOR ({error})", where=what)
