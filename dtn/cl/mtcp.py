"""MTCP convergence layer framing (draft-ietf-dtn-mtcpcl-01, section 3).

Each bundle travels on the TCP stream as one CBOR byte string (major type 2,
definite length); there is no handshake, no acknowledgement and no keepalive.
µD3TN, dtn7 and DTNME speak it. :func:`encode_mtcp_frame` builds a frame;
:class:`MtcpDecoder` splits a received byte stream into bundles (sans-I/O:
the driver feeds whatever ``recv`` returned).
"""

from __future__ import annotations

import struct

from dtn.errors import DecodeError, InvalidArgument

DEFAULT_MAX_BUNDLE_BYTES = 64 * 1024 * 1024


def encode_mtcp_frame(bundle: bytes | bytearray | memoryview) -> bytes:
    """Return ``bundle`` wrapped as a CBOR byte string (RFC 8949 section 3.1)."""
    n = len(bundle)
    if n < 24:
        head = bytes([0x40 | n])
    elif n < 0x100:
        head = bytes([0x58, n])
    elif n < 0x10000:
        head = b"\x59" + struct.pack(">H", n)
    elif n < 0x100000000:
        head = b"\x5a" + struct.pack(">I", n)
    else:
        raise InvalidArgument(f"bundle of {n} bytes is too large for MTCP framing")
    return head + bytes(bundle)


class MtcpDecoder:
    """Incremental MTCP stream decoder.

    ``feed(data)`` returns the bundles completed by ``data``. A frame that is
    not a definite-length byte string, or announces more than
    ``max_bundle_bytes``, raises :class:`DecodeError`; the stream cannot be
    resynchronised after that, so the driver closes the connection.
    """

    def __init__(self, *, max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> None:
        if max_bundle_bytes < 1:
            raise InvalidArgument("max_bundle_bytes must be >= 1")
        self.max_bundle_bytes = max_bundle_bytes
        self._buf = bytearray()
        self._need: int | None = None  # payload length of the frame being read

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as a bundle."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume stream bytes; return every bundle completed. Raises only DecodeError."""
        self._buf += data
        out: list[bytes] = []
        while True:
            if self._need is None:
                if not self._buf:
                    break
                first = self._buf[0]
                if first >> 5 != 2:
                    raise DecodeError(
                        f"expected a CBOR byte string, got initial byte 0x{first:02x}",
                        where="mtcp frame",
                    )
                info = first & 0x1F
                if info < 24:
                    hlen, length = 1, info
                elif info <= 27:
                    hlen = 1 + (1 << (info - 24))
                    if len(self._buf) < hlen:
                        break
                    length = int.from_bytes(self._buf[1:hlen], "big")
                else:
                    raise DecodeError(
                        f"unsupported byte string length encoding {info}",
                        where="mtcp frame",
                    )
                if length > self.max_bundle_bytes:
                    raise DecodeError(
                        f"frame of {length} bytes exceeds the {self.max_bundle_bytes}-byte limit",
                        where="mtcp frame",
                    )
                del self._buf[:hlen]
                self._need = length
            if len(self._buf) < self._need:
                break
            out.append(bytes(self._buf[: self._need]))
            del self._buf[: self._need]
            self._need = None
        return out
