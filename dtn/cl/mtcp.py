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
from dcis.dtn.pieces import Pieces

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


LARGE_FRAME_BYTES = 128 * 1024
"""A frame at least this long is gathered as a list of pieces while it comes
in, not appended to one growing buffer (see :attr:`MtcpDecoder.large_frame_left`)."""


class MtcpDecoder:
    """Incremental MTCP stream decoder.

    ``feed(data)`` returns the bundles completed by ``data``. A frame that is
    not a definite-length byte string, or announces more than
    ``max_bundle_bytes``, raises :class:`DecodeError`; the stream cannot be
    resynchronised after that, so the driver closes the connection.

    Theory of operation: a frame read whole is handed over from the read
    itself; a small frame that spans reads is gathered in one buffer; a
    large one (``large_frame_bytes`` or more) as a list of pieces, joined
    once at its end. While a large frame is in progress,
    :attr:`large_frame_left` says how many of its bytes are still due: a
    driver can read up to that many straight into a new ``bytes`` object
    (``os.read(fd, n)``, ``sock.recv(n)``) and feed it, and the decoder keeps
    that object as it is -- the bytes are copied once, by the final join, or
    not at all if one read brought the whole frame. Memory held is at most
    the bytes received of the frame in progress (plus a small overhead per
    piece of at least :data:`dcis.dtn.pieces.MIN_PIECE` bytes), never the announced length:
    nothing is allocated ahead for a frame a peer only announces.
    """

    def __init__(
        self,
        *,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        large_frame_bytes: int = LARGE_FRAME_BYTES,
    ) -> None:
        if max_bundle_bytes < 1:
            raise InvalidArgument("max_bundle_bytes must be >= 1")
        if large_frame_bytes < 1:
            raise InvalidArgument("large_frame_bytes must be >= 1")
        self.max_bundle_bytes = max_bundle_bytes
        self.large_frame_bytes = large_frame_bytes
        self._buf = bytearray()
        self._need: int | None = None  # payload length of the frame being read
        # The large frame in progress: its pieces and their total length.
        self._parts: Pieces | None = None
        self._after_large = False  # the last frame completed was large

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as a bundle."""
        parts = self._parts
        return len(self._buf) + (parts.held if parts is not None else 0)

    @property
    def large_frame_left(self) -> int:
        """Bytes still due of the large frame in progress (0 if there is
        none): ``feed`` keeps a ``bytes`` object of at most this many bytes as
        it is, without copying it."""
        if self._parts is None or self._need is None:
            return 0
        return self._need - self._parts.held

    @property
    def next_read_bytes(self) -> int:
        """How many bytes a driver should read next into a new ``bytes``
        object and feed as they are (0: read any amount, into any buffer).

        While a large frame is in progress: :attr:`large_frame_left`. Right
        after a large frame: the next frame's head alone (its first byte,
        then the rest of it), so that the frame after it, if large too, can
        arrive in one read of its own and be returned without any copy. A
        small frame ends this until the next large one."""
        left = self.large_frame_left
        if left or not self._after_large or self._need is not None:
            return left
        buf = self._buf
        if not buf:
            return 1
        info = buf[0] & 0x1F
        hlen = 1 + (1 << (info - 24)) if 24 <= info <= 27 else 1
        return max(0, hlen - len(buf))

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
        appended whole, then copied out a second time). ``data`` of type
        ``bytes`` that only continues a large frame (at most
        :attr:`large_frame_left` bytes) is kept as it is: a frame gathered
        from such reads is copied once, when its pieces are joined."""
        out: list[T] = []
        if self._parts is not None and type(data) is bytes:
            left = self.large_frame_left
            if 0 < len(data) <= left:
                self._parts.add(data)
                if len(data) == left:
                    out.append(convert(self._join()))
                return out
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        buf = self._buf
        while pos < end:
            need = self._need
            if self._parts is not None:
                assert need is not None
                take = min(need - self._parts.held, end - pos)
                self._parts.add(view[pos : pos + take])
                pos += take
                if self._parts.held == need:
                    out.append(convert(self._join()))
                continue
            if not buf:
                break
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
                if self._need is not None and self._need >= self.large_frame_bytes:
                    self._parts = Pieces()
                    if buf:
                        self._parts.add(bytes(buf))
                        buf.clear()
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
            self._after_large = False
        if pos < end:
            pos = self._frames(view, pos, out, convert)
            if self._need is not None and self._need >= self.large_frame_bytes:
                self._parts = Pieces()  # a large frame begun (perhaps just its head)
                if pos < end:
                    self._parts.add(view[pos:])
            elif pos < end:
                buf += view[pos:]
        return out

    def _join(self) -> bytes:
        """The large frame now complete, as one ``bytes`` (the decoder is
        then between frames)."""
        parts = self._parts
        assert parts is not None
        self._parts = None
        self._need = None
        self._after_large = True
        return parts.join()

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
            self._after_large = self._need >= self.large_frame_bytes
            pos += self._need
            self._need = None
        return pos
