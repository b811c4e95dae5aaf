"""Block CRCs: CRC-16/X.25 and CRC-32C (RFC 9171 section 4.2.1).

https://www.rfc-editor.org/rfc/rfc9171#section-4.2.1

The CRC covers the block's whole CBOR encoding with the CRC field's *value*
(the content of its byte string) set to zeros, and is carried big-endian.
Both functions take any buffer (``bytes``, ``memoryview``) and an ``initial``
value so that a block can be checked piece by piece without copying its
payload. The C/Rust back ends were chosen by measurement
(``bench/crc_candidates.py``): pure Python costs ~100 ms per MB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import fastcrc

from dcis.dtn.bpv7.flags import CrcType

Buffer = bytes | bytearray | memoryview

# CRC-16/X.25 is "ibm_sdlc" in the CRC catalogue (poly 0x1021, reflected,
# init/xorout 0xFFFF): check value 0x906E.
_crc16_sdlc = fastcrc.crc16.ibm_sdlc
_crc32c_fn = (
    fastcrc.crc32.iscsi
)  # CRC-32C is 'iscsi' in the catalogue: check 0xE3069283

# The raw C/Rust functions, for hot paths: f(data) or f(data, previous_crc) -> int.
crc32c_raw: Final[Callable[..., int]] = _crc32c_fn
crc16_raw: Final[Callable[..., int]] = _crc16_sdlc

CRC_LENGTH: Final[dict[CrcType, int]] = {
    CrcType.NONE: 0,
    CrcType.CRC16: 2,
    CrcType.CRC32C: 4,
}
_ZEROS: Final = bytes(4)


def crc16_x25(data: Buffer, initial: int | None = None) -> int:
    """CRC-16/X.25 of ``data``; pass a previous result as ``initial`` to extend it."""
    if initial is None:
        return int(_crc16_sdlc(data))
    return int(_crc16_sdlc(data, initial))


def crc32c(data: Buffer, initial: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``; pass a previous result as ``initial`` to extend it."""
    return int(_crc32c_fn(data, initial))


def block_crc(crc_type: CrcType, parts: tuple[Buffer, ...] | list[Buffer]) -> bytes:
    """The CRC value (big-endian bytes) over ``parts`` followed by the zeroed CRC field.

    ``parts`` is the block's encoding up to and including the CRC byte-string
    head. Returns ``b""`` for :attr:`CrcType.NONE`.
    """
    if crc_type == CrcType.CRC32C:
        c = 0
        for p in parts:
            c = _crc32c_fn(p, c)
        return int(_crc32c_fn(_ZEROS, c)).to_bytes(4, "big")
    if crc_type == CrcType.CRC16:
        c16: int | None = None
        for p in parts:
            c16 = _crc16_sdlc(p) if c16 is None else _crc16_sdlc(p, c16)
        c16 = _crc16_sdlc(_ZEROS[:2]) if c16 is None else _crc16_sdlc(_ZEROS[:2], c16)
        return int(c16).to_bytes(2, "big")
    return b""
