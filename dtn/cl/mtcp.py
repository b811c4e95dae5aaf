"""MTCP convergence layer framing (draft-ietf-dtn-mtcpcl-01, section 3).

Each bundle travels on the TCP stream as one CBOR byte string (major type 2,
definite length); there is no handshake, no acknowledgement and no keepalive.
µD3TN, dtn7 and DTNME speak it. :func:`encode_mtcp_frame` builds a frame;
:class:`MtcpDecoder` splits a received byte stream into bundles (sans-I/O:
the driver feeds whatever ``recv`` returned).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

from dcis.dtn.errors import DecodeError, InvalidArgument

T = TypeVar("T")

DEFAULT_MAX_BUNDLE_BYTES = 64 * 1024 * 1024


def bstr_head(n: int) -> bytes:
    """The CBOR head of a definite-length byte string of ``n`` bytes, in its
    shortest form (RFC 8949 section 4.2.1), as cbor2 writes it."""
    if n < 24:
        return bytes([0x40 | n])
    if n < 0x100:
        return bytes([0x58, n])
    if n < 0x10000:
        return b"\x59" + struct.pack(">H", n)
    if n < 0x100000000:
        return b"\x5a" + struct.pack(">I", n)
    raise InvalidArgument(f"bundle of {n} bytes is too large for MTCP framing")


def encode_mtcp_frame(bundle: bytes | bytearray | memoryview) -> bytes:
    """Return ``bundle`` wrapped as a CBOR byte string (RFC 8949 section 3.1)."""
    return bstr_head(len(bundle)) + bytes(bundle)


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
        """Consume stream bytes; return every bundle completed. Raises only DecodeError.

        Each bundle is copied once (see :meth:`feed_frames`)."""
        return self.feed_frames(data, bytes)

    def feed_frames(
        self,
        data: bytes | bytearray | memoryview,
        convert: Callable[[bytes | memoryview], T],
    ) -> list[T]:
        """Consume stream bytes; return ``convert(frame)`` of every frame
        completed, in order. A frame read whole from ``data`` is passed as a
        memoryview of ``data``, valid only during the call (``convert`` must
        copy what it keeps: ``bytes`` does); a frame gathered over several
        reads, as ``bytes``. Raises what ``convert`` raises, and DecodeError.

        Each bundle is copied once, out of ``data`` or out of the buffer of
        a frame that came in several pieces (never sliced then copied). The
        buffer only ever holds the frame in progress: a frame begun in an
        earlier read takes from ``data`` just the bytes it lacks, and the
        frames after it are read from ``data`` directly (a read that starts
        mid-frame -- most reads of a stream of 64 KB bundles -- is not
        appended whole, then copied out a second time)."""
        out: list[T] = []
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        buf = self._buf
        while buf and pos < end:
            need = self._need
            if need is None:
                # A frame head received in part (a head is at most 9 bytes).
                take = min(9 - len(buf), end - pos)
                buf += view[pos : pos + take]
                pos += take
                with memoryview(buf) as bview:
                    used = self._frames(bview, 0, out, lambda v: convert(bytes(v)))
                # Left: a head still in part, or (the head complete) the
                # start of its payload.
                del buf[:used]
                continue
            missing = need - len(buf)
            if end - pos < missing:
                buf += view[pos:]
                pos = end
                break
            buf += view[pos : pos + missing]
            pos += missing
            out.append(convert(bytes(buf)))
            buf.clear()
            self._need = None
        if pos < end:
            pos = self._frames(view, pos, out, convert)
            if pos < end:
                buf += view[pos:]
        return out

    def _frames(
        self,
        view: memoryview,
        pos: int,
        out: list[T],
        convert: Callable[[bytes | memoryview], T],
    ) -> int:
        """Append the bundles completed in ``view[pos:]`` to ``out`` (the
        partial frame state in ``self._need``); return where the unconsumed
        bytes start."""
        end = len(view)
        while pos < end:
            if self._need is None:
                first = view[pos]
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
                    if end - pos < hlen:
                        break
                    length = int.from_bytes(view[pos + 1 : pos + hlen], "big")
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
                pos += hlen
                self._need = length
            if end - pos < self._need:
                break
            out.append(convert(view[pos : pos + self._need]))
            pos += self._need
            self._need = None
        return pos
