"""App API frames read by a client, large payloads streamed into a sink (issue 18).

Theory of operation. The app API frames each message as one CBOR byte string
holding a CBOR map (spec/appapi.md; :mod:`dcis.dtn.appapi.wire`). The plain
:class:`~dcis.dtn.appapi.wire.MessageReader` buffers a whole frame, copies it
out and lets cbor2 copy the payload again -- three copies of a 1 MB bundle in
Python, each a fresh 1 MB allocation, and the whole payload held in memory
at once. :class:`PushReader` reads a frame of at least ``stream_frame_bytes``
incrementally instead:

1. the bytes up to the first map value that is a definite byte string of at
   least ``stream_value_bytes`` under a text key (a pushed bundle's
   ``payload``) are buffered and walked item by item (heads only; nothing is
   decoded);
2. that value's bytes go to a *sink* as they arrive -- by default
   :class:`MemorySink`, the pieces joined once at the end (a driver that
   reads the rest of the value straight into new ``bytes`` objects, up to
   :attr:`PushReader.value_left` at a time, has them kept without a copy:
   a value that arrives in one such read is never copied in Python), or
   whatever ``sink_factory`` opens (:class:`FileSink`: written to a file
   with ``os.write`` from the received buffer, never held whole);
3. the rest of the frame is buffered; at its end the map is decoded and
   validated exactly as the plain reader would, with an empty byte string in
   the payload's place, which is then replaced by the sink's result.

A frame whose start cannot be walked that way (not a map, indefinite
lengths, nesting deeper than :data:`_MAX_DEPTH`, an array, map or tag before
the value not received whole when the walk reaches it, no large value within
:data:`_MAX_PREFIX` bytes) is buffered whole and decoded like the plain reader does. A stream error
(bad head, a frame over ``max_message_bytes``, a value longer than its
frame, a malformed or invalid message, a map with a repeated key) raises
:class:`~dcis.dtn.errors.DecodeError` once; the sink of the frame is
aborted (a file sink removes its file) and the reader is then unusable.
Sans-I/O apart from the sink: ``feed`` takes what ``recv`` returned.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import Any, Protocol

from dcis.crypto.cbor_guard import loads_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dtn.appapi.wire import MAX_MESSAGE_BYTES, decode_message_untrusted
from dcis.dtn.errors import DecodeError, InvalidArgument
from dcis.dtn.pieces import Pieces

__all__ = ["FileSink", "MemorySink", "PayloadSink", "PushReader", "SpooledPayload"]

_MAX_DEPTH = 8
"""Nesting walked before the value to stream; deeper frames are buffered."""

_STEP = 4096
"""Bytes of a large frame's start buffered per walk."""

_MAX_PREFIX = 64 * 1024
"""A large frame whose value to stream does not start within this many
bytes is buffered whole (the walk restarts the item it stopped in at each
step, so an unbounded prefix would cost quadratic time)."""


class PayloadSink(Protocol):
    """Where a streamed value's bytes go, in order, exactly as announced."""

    def write(self, data: memoryview) -> None:
        """Take the next bytes (the view is only valid during the call)."""

    def finish(self) -> object:
        """All bytes written: the value to put in the message."""

    def abort(self) -> None:
        """The frame failed: drop what was written."""


class MemorySink:
    """The value in memory, kept as the pieces it arrived in and joined once
    at the end. A piece handed over as ``bytes`` (:meth:`take`: a reader
    that read the value's bytes straight into a new object) is kept as it
    is, so a value read in one piece is never copied in Python; nothing is
    allocated ahead for the announced ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pieces = Pieces()

    @property
    def held(self) -> int:
        """Bytes received so far."""
        return self._pieces.held

    def write(self, data: memoryview) -> None:
        """Keep a copy of ``data``."""
        self._pieces.add(data)

    def take(self, data: bytes) -> None:
        """Keep ``data`` itself (no copy, unless it is short)."""
        self._pieces.add(data)

    def finish(self) -> bytes:
        """The value as bytes."""
        return self._pieces.join()

    def abort(self) -> None:
        """Drop the pieces."""
        self._pieces = Pieces()


class SpooledPayload:
    """A payload written to a file: its ``path`` and ``size`` in bytes."""

    __slots__ = ("path", "size")

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size

    def __repr__(self) -> str:
        return f"SpooledPayload({self.path!r}, {self.size})"


class FileSink:
    """The value written to a new file in ``directory`` (mode 0600) as it
    arrives, then fsynced (unless ``fsync`` is False: the caller does it,
    e.g. on a worker thread); :meth:`finish` returns a
    :class:`SpooledPayload`. Raises :class:`OSError` if the file cannot be
    created or written."""

    def __init__(self, directory: str, size: int, *, fsync: bool = True) -> None:
        self._fsync = fsync
        fd, self.path = tempfile.mkstemp(
            prefix="bundle-", suffix=".payload", dir=directory
        )
        self._fd: int | None = fd
        self.size = size

    def write(self, data: memoryview) -> None:
        """Write ``data`` to the file."""
        assert self._fd is not None
        while data:
            n = os.write(self._fd, data)
            data = data[n:]

    def finish(self) -> SpooledPayload:
        """Close (fsynced) the file; its path and size."""
        fd, self._fd = self._fd, None
        assert fd is not None
        try:
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return SpooledPayload(self.path, self.size)

    def abort(self) -> None:
        """Close and remove the file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


SinkFactory = Callable[[int], PayloadSink]


class _Incomplete(Exception):
    """The buffered bytes end inside an item."""


class _Unwalkable(Exception):
    """Something the walk does not handle: buffer the frame whole."""


def _head(buf: bytes | bytearray, pos: int) -> tuple[int, int, int]:
    """``(major, argument, end of head)`` of the CBOR head at ``pos``."""
    if pos >= len(buf):
        raise _Incomplete
    first = buf[pos]
    info = first & 0x1F
    if info < 24:
        return first >> 5, info, pos + 1
    if info > 27:
        raise _Unwalkable  # indefinite lengths, reserved values
    n = 1 << (info - 24)
    if pos + 1 + n > len(buf):
        raise _Incomplete
    return first >> 5, int.from_bytes(buf[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def _item_end(buf: bytes | bytearray, pos: int, depth: int = 0) -> int:
    """Where the complete CBOR item at ``pos`` ends."""
    if depth > _MAX_DEPTH:
        raise _Unwalkable
    major, arg, pos = _head(buf, pos)
    if major in (2, 3):
        if pos + arg > len(buf):
            raise _Incomplete
        return pos + arg
    if major == 4:
        for _ in range(arg):
            pos = _item_end(buf, pos, depth + 1)
        return pos
    if major == 5:
        for _ in range(2 * arg):
            pos = _item_end(buf, pos, depth + 1)
        return pos
    if major == 6:
        return _item_end(buf, pos, depth + 1)
    return pos  # 0, 1, 7: the head is the item


# Stages of a large frame.
_PRE, _VALUE, _POST, _WHOLE = range(4)


class PushReader:
    """Split a stream into validated app API messages, streaming each large
    byte-string value into a sink (see the module docstring).

    ``sink_factory(size)`` opens the sink of a value of ``size`` bytes
    (default :class:`MemorySink`); it may be replaced between ``feed``
    calls and applies to values that start after that. A sink that raises
    :class:`OSError` fails the stream like bad input
    (:class:`~dcis.dtn.errors.DecodeError`)."""

    def __init__(
        self,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        stream_frame_bytes: int = 128 * 1024,
        stream_value_bytes: int = 64 * 1024,
        sink_factory: SinkFactory = MemorySink,
    ) -> None:
        if stream_value_bytes < 1:
            raise InvalidArgument("stream_value_bytes must be >= 1")
        self.max_message_bytes = max_message_bytes
        self.stream_frame_bytes = stream_frame_bytes
        self.stream_value_bytes = stream_value_bytes
        self.sink_factory = sink_factory
        self._head = bytearray()  # a frame head received in part
        self._left = 0  # bytes of the current frame not yet consumed (0: none)
        self._large = False
        self._stage = _PRE
        self._buf = bytearray()  # small frame, or the large frame's prefix
        self._post = bytearray()  # the large frame after the value
        self._sink: PayloadSink | None = None
        self._take: Callable[[bytes], None] | None = None  # the sink's take
        self._value_left = 0
        self._value_start = 0  # where the value's head starts in _buf
        self._key_span = (0, 0)
        self._entries = 0  # entries of the large frame's map
        self._walk_pos = 0  # next item to walk in _buf
        self._walked = 0  # items walked (keys and values)
        self._broken = False
        self.last_large = False
        """Whether the last message completed came in a large frame (a
        client may then expect another: see :meth:`value_offset`)."""

    @property
    def buffered_bytes(self) -> int:
        """Bytes of a message received in part and held in memory (a value
        streamed into a :class:`MemorySink` counts, one streamed into a
        file does not)."""
        held = getattr(self._sink, "held", 0)
        return len(self._head) + len(self._buf) + len(self._post) + held

    @property
    def value_left(self) -> int:
        """Bytes still due of a streamed value whose sink keeps ``bytes``
        pieces as they are (``take``; 0 if there is none): ``feed`` of a
        ``bytes`` object of at most this many bytes hands it to the sink
        without a copy."""
        if self._stage != _VALUE or self._broken or self._take is None:
            return 0
        return self._value_left

    def value_offset(self, ahead: bytes) -> int:
        """Given ``ahead``, the next bytes of the stream (peeked, not fed):
        how many of them to feed so that the next byte is the first of a
        value the reader will stream into a sink that takes ``bytes`` pieces
        (the rest of a message first, then a large frame's head, its keys
        and the value's head); 0 when ``ahead`` shows no such value, or the
        reader is inside a frame other than at its end. A client that feeds
        exactly that many bytes can then read the whole value as one object
        (:attr:`value_left`), which becomes the message's value as it is.
        Only a hint: the bytes fed are checked as any others."""
        if self._broken or self._head or self._stage == _VALUE:
            return 0
        if self._left and not (self._large and self._stage == _POST):
            return 0
        skip = self._left
        if not hasattr(self.sink_factory, "take"):
            return 0  # the factory is not a class of sinks that take pieces
        try:
            major, length, pos = _head(ahead, skip)
            if (
                major != 2
                or length < self.stream_frame_bytes
                or length > self.max_message_bytes
            ):
                return 0
            major, entries, pos = _head(ahead, pos)
            if major != 5:
                return 0
            key_major = -1
            for i in range(2 * entries):
                if i % 2:
                    major, n, hend = _head(ahead, pos)
                    if major == 2 and n >= self.stream_value_bytes and key_major == 3:
                        return hend
                else:
                    key_major = ahead[pos] >> 5
                pos = _item_end(ahead, pos)
        except (_Incomplete, _Unwalkable, IndexError):
            return 0
        return 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
        """Consume stream bytes; return the messages completed. Raises only
        :class:`DecodeError` (then the reader is unusable)."""
        if self._broken:
            raise DecodeError("the stream failed before", where="appapi frame")
        try:
            if type(data) is bytes and 0 < len(data) <= self.value_left:
                return self._take_value(data)
            return self._feed(memoryview(data).cast("B"))
        except DecodeError:
            self._fail()
            raise
        except OSError as exc:
            self._fail()
            raise DecodeError(
                f"cannot store a payload: {exc}", where="appapi frame"
            ) from exc

    def _take_value(self, data: bytes) -> list[dict[str, Any]]:
        """``data`` continues the streamed value: to its sink as it is."""
        assert self._take is not None
        self._take(data)
        n = len(data)
        self._value_left -= n
        self._left -= n
        if not self._value_left:
            self._stage = _POST
        return [self._finish()] if not self._left else []

    def close(self) -> None:
        """The stream ended, or is given up: abort the sink of a value in
        progress (a :class:`FileSink` removes its partial file). The reader
        is unusable afterwards; closing again does nothing."""
        self._fail()

    def _fail(self) -> None:
        self._broken = True
        self._take = None
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.abort()

    def _feed(self, view: memoryview) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        pos, end = 0, len(view)
        while pos < end:
            if not self._left:
                pos, length = self._frame_head(view, pos)
                if not length:
                    continue  # a head received in part
                self._left = length
                if not self._large and end - pos >= self._left:
                    stop = pos + self._left
                    self._left = 0
                    # A whole small frame in view: decoded from the read
                    # itself (its values copied out once).
                    out.append(decode_message_untrusted(view[pos:stop]))
                    self.last_large = False
                    pos = stop
                    continue
            take = min(self._left, end - pos)
            piece = view[pos : pos + take]
            pos += take
            self._left -= take
            if not self._large:
                self._buf += piece
            else:
                self._large_bytes(piece)
            if not self._left:
                out.append(self._finish())
        return out

    def _frame_head(self, view: memoryview, pos: int) -> tuple[int, int]:
        """Read (the rest of) a frame head from ``view[pos:]``: the new
        position and the frame's length (0: the head is not complete)."""
        head = self._head
        if not head:
            # A whole head in view (nearly always): read it in place.
            first = view[pos]
            info = first & 0x1F
            hlen = 1 if info < 24 else 1 + (1 << (info - 24)) if info <= 27 else 0
            if first >> 5 == 2 and hlen and pos + hlen <= len(view):
                length = (
                    info
                    if hlen == 1
                    else int.from_bytes(view[pos + 1 : pos + hlen], "big")
                )
                return pos + hlen, self._start_frame(length)
        while pos < len(view):
            head.append(view[pos])
            pos += 1
            first = head[0]
            if first >> 5 != 2:
                raise DecodeError(
                    f"expected a CBOR byte string, got initial byte 0x{first:02x}",
                    where="appapi frame",
                )
            info = first & 0x1F
            if info > 27:
                raise DecodeError(
                    f"unsupported byte string length encoding {info}",
                    where="appapi frame",
                )
            hlen = 1 if info < 24 else 1 + (1 << (info - 24))
            if len(head) < hlen:
                continue
            length = info if info < 24 else int.from_bytes(head[1:hlen], "big")
            head.clear()
            return pos, self._start_frame(length)
        return pos, 0

    def _start_frame(self, length: int) -> int:
        """A frame of ``length`` bytes begins: checked, its stage set."""
        if length > self.max_message_bytes:
            raise DecodeError(
                f"frame of {length} bytes exceeds the {self.max_message_bytes}-byte limit",
                where="appapi frame",
            )
        if length == 0:
            raise DecodeError("empty message", where="appapi message")
        self._large = length >= self.stream_frame_bytes
        self._stage = _PRE
        self._walk_pos = self._walked = 0
        return length

    # -- large frames

    def _large_bytes(self, piece: memoryview) -> None:
        while piece:
            if self._stage == _VALUE:
                n = min(self._value_left, len(piece))
                assert self._sink is not None
                self._sink.write(piece[:n])
                self._value_left -= n
                piece = piece[n:]
                if not self._value_left:
                    self._stage = _POST
                continue
            if self._stage == _POST:
                self._post += piece
                return
            if self._stage == _WHOLE:
                self._buf += piece
                return
            # The keys before the value are a few hundred bytes: buffer and
            # walk a small step at a time, so that the value's bytes in
            # the same piece go to the sink without a copy here first.
            old = len(self._buf)
            self._buf += piece[:_STEP]
            if old >= _MAX_PREFIX:
                self._stage = _WHOLE
                piece = piece[_STEP:]
                continue
            # Frame bytes not in the buffer yet: the rest of this piece
            # and what is still to come.
            hend = self._walk(max(0, len(piece) - _STEP) + self._left)
            if hend is None:
                piece = piece[_STEP:]
            else:
                piece = piece[hend - old :]
                del self._buf[self._value_start :]

    def _walk(self, unbuffered: int) -> int | None:
        """Walk the prefix (``unbuffered``: bytes of the frame after it);
        at a large value open its sink, switch to ``_VALUE`` and return
        where the value's head ends (its bytes follow); None if the prefix
        is not complete yet, or not walkable (then ``_WHOLE``). Raises
        :class:`DecodeError` for a value longer than the rest of its frame
        (before any sink is opened: nothing is allocated for it)."""
        buf = self._buf
        try:
            if self._walked == 0 and self._walk_pos == 0:
                major, n, self._walk_pos = _head(buf, 0)
                if major != 5:
                    raise _Unwalkable
                self._entries = n
            while self._walked < 2 * self._entries:
                start = self._walk_pos
                if self._walked % 2 == 1:
                    major, n, hend = _head(buf, start)
                    key_major = buf[self._key_span[0]] >> 5
                    if major == 2 and n >= self.stream_value_bytes and key_major == 3:
                        if n > len(buf) - hend + unbuffered:
                            raise DecodeError(
                                f"a value of {n} bytes overruns its frame",
                                where="appapi frame",
                            )
                        return self._open_value(start, hend, n)
                else:
                    self._key_span = (start, start)
                try:
                    end = _item_end(buf, start)
                except _Incomplete:
                    if start < len(buf) and buf[start] >> 5 in (4, 5, 6):
                        # An array, map or tag not all received yet: walked
                        # again from its start at every read, it would cost
                        # quadratic time (a client trickling it, a byte per
                        # read); the frame is buffered whole instead.
                        raise _Unwalkable from None
                    raise
                if self._walked % 2 == 0:
                    self._key_span = (start, end)
                self._walk_pos = end
                self._walked += 1
            raise _Unwalkable  # no large value: decode the frame whole
        except _Incomplete:
            return None
        except _Unwalkable:
            self._stage = _WHOLE
            return None

    def _open_value(self, start: int, hend: int, n: int) -> int:
        self._value_start = start
        self._value_left = n
        self._sink = self.sink_factory(n)
        self._take = getattr(self._sink, "take", None)
        self._stage = _VALUE
        return hend

    def _finish(self) -> dict[str, Any]:
        """The frame is complete: decode and validate it."""
        self.last_large = self._large
        if not self._large or self._stage in (_PRE, _WHOLE):
            body = bytes(self._buf)
            self._buf.clear()
            return decode_message_untrusted(body)
        assert self._stage == _POST
        assert self._sink is not None
        body = bytes(self._buf) + b"\x40" + bytes(self._post)
        key_bytes = bytes(self._buf[self._key_span[0] : self._key_span[1]])
        self._buf.clear()
        self._post.clear()
        msg = decode_message_untrusted(body)
        try:
            key = loads_untrusted(key_bytes, what="appapi message")
        except CborDecodeError as exc:
            raise DecodeError(str(exc), where="appapi message") from None
        if not isinstance(key, str) or len(msg) != self._entries or msg.get(key) != b"":
            raise DecodeError("a map key appears twice", where="appapi message")
        sink, self._sink = self._sink, None
        self._take = None
        msg[key] = sink.finish()
        return msg
