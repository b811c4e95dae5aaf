"""Self-Delimiting Numeric Values (RFC 6256; RFC 5326 section 3 uses them for
every integer of an LTP segment).

Theory of operation
-------------------
An SDNV is a big-endian sequence of 7-bit groups; every byte but the last has
its high bit set. We accept values up to :data:`MAX_SDNV` (2**64 - 1), the
largest any LTP field needs (ION and HDTN use 64-bit integers too), and at most
:data:`MAX_SDNV_BYTES` bytes, so a hostile run of ``0x80`` bytes is rejected
after ten bytes instead of growing a big integer. Leading ``0x80`` bytes
(a non-minimal encoding) are accepted, as RFC 6256 section 2.1 allows a
decoder to.
"""

from __future__ import annotations

from dcis.dtn.errors import DecodeError, InvalidArgument

MAX_SDNV = 2**64 - 1
"""Largest value encoded or accepted."""

MAX_SDNV_BYTES = 10
"""ceil(64 / 7): the longest minimal encoding of a 64-bit value."""


def encode_sdnv(value: int) -> bytes:
    """Minimal SDNV encoding of ``value`` (0 <= value <= :data:`MAX_SDNV`).

    Raises :class:`InvalidArgument` for a value out of range.
    """
    if not 0 <= value <= MAX_SDNV:
        raise InvalidArgument(f"SDNV value out of range: {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray((value & 0x7F,))
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.reverse()
    return bytes(out)


def decode_sdnv_untrusted(
    data: bytes | memoryview, pos: int, what: str = "sdnv"
) -> tuple[int, int]:
    """Decode the SDNV at ``data[pos:]``; returns ``(value, next_pos)``.

    Raises only :class:`DecodeError` (truncated, longer than
    :data:`MAX_SDNV_BYTES`, or above :data:`MAX_SDNV`); ``what`` names the field.
    """
    value = 0
    end = min(len(data), pos + MAX_SDNV_BYTES)
    i = pos
    while i < end:
        b = data[i]
        value = (value << 7) | (b & 0x7F)
        i += 1
        if not b & 0x80:
            if value > MAX_SDNV:
                raise DecodeError(f"{what} exceeds 64 bits", where="ltp sdnv")
            return value, i
    if end - pos >= MAX_SDNV_BYTES:
        raise DecodeError(
            f"{what} longer than {MAX_SDNV_BYTES} bytes", where="ltp sdnv"
        )
    raise DecodeError(f"{what} truncated", where="ltp sdnv")
