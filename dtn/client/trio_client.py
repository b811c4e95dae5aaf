"""trio app API client: requests may be issued concurrently from many tasks."""

from __future__ import annotations

import contextlib
import io
import math
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

from dcis.dtn.appapi.wire import (
    encode_delivered,
    encode_message_parts,
    encode_send_head,
)
from dcis.dtn.client.common import (
    MAX_PIECE_BYTES,
    SNDBUF_BYTES,
    ClientError,
    ReceivedBundle,
    SpooledBundle,
    bytes_left,
    fsync_path,
    received_from_message,
    send_head_fields,
    send_request,
    spool,
    unspool,
)
from dcis.dtn.client.gather import send_buffers
from dcis.dtn.client.push_reader import FileSink, PushReader
from dcis.dtn.errors import DecodeError, InvalidArgument

_CHUNK = 1 << 20
"""Bytes read from a streamed file at a time."""

_READ_BYTES = 256 * 1024
"""The reader's reused buffer: many replies or pushed bundles per read; the
most of a large payload that goes through it (and is copied) before the
rest is read straight into the payload's pieces."""

_PEEK_BYTES = 4096
"""Bytes looked at (``MSG_PEEK``) after a large payload to find where the
next one starts (``PushReader.value_offset``)."""

_SMALL_READ_BYTES = 64 * 1024
"""A read right after a large payload: the next message is likely large too,
and what of its payload a read brings through the buffer is copied."""

_BY_REFERENCE_BYTES = 16 * 1024
"""A payload at least this long is queued as its own buffer (not copied
into its message's frame); the writer gathers buffers."""

_CONFIRM_BATCH = 32
"""Confirmations (``delivered``) held back while more received bundles wait
in the client: at most this many, then they go out together."""


class _FileBody:
    """The streamed payload of a queued ``send``: ``size`` bytes of ``file``."""

    def __init__(self, file: io.BufferedIOBase, size: int) -> None:
        self.file = file
        self.size = size


class _Pending:
    """A request waiting for its reply (``reply`` None when the connection
    ended first). Lighter than a memory channel per request: one event."""

    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: dict[str, Any] | None = None


class TrioClient:
    """A connection to a node's app API; create with :func:`open_trio_client`."""

    def __init__(self, stream: trio.SocketStream, spool_dir: str | None = None) -> None:
        self._stream = stream
        self._spool_dir = spool_dir
        self._next_id = 1
        self._waiting: dict[int, _Pending] = {}
        self._bundles_send, self._bundles = trio.open_memory_channel[
            ReceivedBundle | SpooledBundle
        ](math.inf)
        self._out: list[bytes | _FileBody] = []
        # Frames of "delivered" confirmations not yet handed to the writer
        # (receive: while more bundles wait here, up to _CONFIRM_BATCH).
        self._confirms: list[bytes] = []
        # Bundles pushed by the node and not yet taken by the application:
        # the channel's count, kept here (its statistics() builds an object,
        # ~1.4 us, for every bundle confirmed).
        self._pushed = 0
        self._out_ready = trio.Event()
        self._broken: BaseException | None = None
        self._writing = False

    async def _reader(self) -> None:
        # A pushed bundle's large payload is kept as the pieces it was read
        # in (most often one, never copied: dcis.dtn.client.push_reader),
        # or with a spool directory written into a file there as it arrives
        # (fsynced by receive_file on a worker thread, not here on the
        # event loop).
        spool_dir = self._spool_dir
        reader = (
            PushReader()
            if spool_dir is None
            else PushReader(sink_factory=lambda n: FileSink(spool_dir, n, fsync=False))
        )
        sock = self._stream.socket
        buf = memoryview(bytearray(_READ_BYTES))
        try:
            while True:
                # The rest of a large payload is read as it is into new
                # bytes objects the reader keeps (no copy in Python); the
                # rest into one reused buffer, which the reader copies from.
                left = reader.value_left
                if left:
                    chunk: bytes | memoryview = await sock.recv(
                        min(left, MAX_PIECE_BYTES)
                    )
                else:
                    size = _READ_BYTES
                    if reader.last_large:
                        # The next message is likely large too: read up to
                        # its payload exactly, so that the payload can come
                        # in one read of its own (then it is not copied).
                        ahead = await sock.recv(_PEEK_BYTES, socket.MSG_PEEK)
                        size = reader.value_offset(ahead) or _SMALL_READ_BYTES
                    chunk = buf[: await sock.recv_into(buf[:size])]
                if not chunk:
                    break
                for m in reader.feed(chunk):
                    if m["type"] == "bundle":
                        self._bundles_send.send_nowait(received_from_message(m))
                        self._pushed += 1
                    else:
                        pending = self._waiting.pop(m["id"], None)
                        if pending is not None:
                            pending.reply = m
                            pending.event.set()
        except (
            DecodeError,
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            pass
        finally:
            reader.close()  # a partial payload file is removed
            self._bundles_send.close()
            self._end_waiting()

    def _end_waiting(self) -> None:
        """Wake every request still waiting: no reply will come."""
        for pending in self._waiting.values():
            pending.event.set()

    async def _writer(self) -> None:
        # Requests from many tasks are coalesced into one write.
        while True:
            await self._out_ready.wait()
            self._out_ready = trio.Event()
            items, self._out = self._out, []
            self._writing = True
            try:
                await self._write(items)
            except (
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                OSError,
                ClientError,
            ) as exc:
                # A frame may be cut short: the stream cannot be resumed.
                self._broken = exc
                self._end_waiting()
                await self._stream.aclose()
                return
            finally:
                self._writing = False

    async def _write(self, items: list[bytes | _FileBody]) -> None:
        # Buffers are gathered by sendmsg, never joined: a payload queued
        # by reference (16 KiB or more) is not copied in this process.
        run: list[bytes] = []
        for item in items:
            if isinstance(item, bytes):
                run.append(item)
                continue
            if run:
                await self._gather(run)
                run = []
            await self._stream_file(item)
        if run:
            await self._gather(run)

    async def _gather(self, parts: list[bytes]) -> None:
        await send_buffers(self._stream, parts)

    async def _stream_file(self, body: _FileBody) -> None:
        # One preallocated buffer, filled by readinto (a file on disk: on a
        # worker thread, so a slow disk never blocks the event loop) and sent
        # from a memoryview.
        buf = bytearray(min(_CHUNK, body.size))
        view = memoryview(buf)
        left = body.size
        try:
            on_disk = body.file.fileno() >= 0
        except (OSError, ValueError):
            on_disk = False  # an in-memory file: its reads never block
        while left:
            piece = view[: min(left, len(buf))]
            if on_disk:
                n = await trio.to_thread.run_sync(body.file.readinto, piece)
            else:
                n = body.file.readinto(piece)
            if not n:
                raise ClientError(
                    f"the file ended {left} bytes early: connection closed"
                )
            await self._stream.send_all(view[:n])
            left -= n

    async def _drain(self) -> None:
        # On close: let the writer send what tasks queued (e.g. the last
        # "delivered" confirmations), for at most ~5 s.
        if self._confirms and self._broken is None:
            self._out += self._confirms
            self._confirms = []
            self._out_ready.set()
        for _ in range(5000):
            if self._broken is not None or (not self._out and not self._writing):
                return
            await trio.sleep(0.001)

    def _queue(self, msg: dict[str, Any], body: _FileBody | None = None) -> None:
        """Queue ``msg`` (and a streamed ``body``) for the writer."""
        if self._broken is not None:
            raise ClientError(f"connection to the node failed: {self._broken}")
        if self._confirms:
            # Held-back confirmations go first, with this request.
            self._out += self._confirms
            self._confirms = []
        if body is None:
            self._out += encode_message_parts(msg, large=_BY_REFERENCE_BYTES)
        else:
            try:
                self._out.append(encode_send_head(msg, body.size))
            except InvalidArgument as exc:
                raise ClientError(str(exc)) from exc
            self._out.append(body)
        self._out_ready.set()

    async def _request(
        self, msg: dict[str, Any], body: _FileBody | None = None
    ) -> dict[str, Any]:
        mid = self._next_id
        self._next_id += 1
        msg["id"] = mid
        pending = self._waiting[mid] = _Pending()
        try:
            self._queue(msg, body)
        except ClientError:
            del self._waiting[mid]
            raise
        try:
            await pending.event.wait()  # the checkpoint of this call
        finally:
            self._waiting.pop(mid, None)
        reply = pending.reply
        if reply is None:
            raise ClientError("the node closed the connection")
        if reply["type"] == "error":
            raise ClientError(reply["message"])
        return reply

    async def register(self, endpoint: str) -> str:
        """Receive the bundles of ``endpoint``; returns its canonical name."""
        return str(
            (await self._request({"type": "register", "endpoint": endpoint}))[
                "endpoint"
            ]
        )

    async def send(
        self,
        destination: str,
        payload: bytes,
        *,
        source: str | None = None,
        lifetime_ms: int | None = None,
    ) -> str:
        """Send a bundle; returns its key once the node holds it durably."""
        return str(
            (
                await self._request(
                    send_request(destination, payload, source, lifetime_ms)
                )
            )["bundle_key"]
        )

    async def send_file(
        self,
        destination: str,
        file: io.BufferedIOBase,
        *,
        size: int | None = None,
        source: str | None = None,
        lifetime_ms: int | None = None,
    ) -> str:
        """Send the next ``size`` bytes of ``file`` (default: to its end) as
        one bundle's payload, streamed in 1 MiB pieces: the payload is never
        held in this process whole. Returns the bundle key once the node
        holds it durably. The file must not be read by anyone else until
        this returns. Raises :class:`ClientError`; if the file ends early the
        connection is closed (its frame cannot be completed)."""
        body = _FileBody(file, bytes_left(file, size))
        reply = await self._request(
            send_head_fields(destination, source, lifetime_ms), body
        )
        return str(reply["bundle_key"])

    async def receive(self) -> ReceivedBundle:
        """Next bundle for a registered endpoint (confirmed as delivered).
        Raises :class:`ClientError` when the connection ends."""
        b = await self._next_bundle()
        if isinstance(b, SpooledBundle):  # read into memory after all
            b = await trio.to_thread.run_sync(unspool, b)
        # _next_bundle above was this call's checkpoint
        self._confirm(b.bundle_key)
        return b

    def _confirm(self, bundle_key: str) -> None:
        """Tell the node the bundle was delivered: at once when no other
        received bundle waits here (the application is caught up), else
        with the next ones -- one write for a burst, not one each (a
        ``sendmsg`` and a wake-up of the node per bundle were ~10% of a
        receiving application's CPU at 1 KB). Held back at most until
        :data:`_CONFIRM_BATCH` are waiting, the next request, the next
        :meth:`receive` that finds nothing waiting, or the close: an
        application that stops receiving with bundles waiting here may get
        the last few of those it received again after a crash, never fewer."""
        if self._broken is not None:
            raise ClientError(f"connection to the node failed: {self._broken}")
        self._confirms.append(encode_delivered(bundle_key))
        if len(self._confirms) >= _CONFIRM_BATCH or not self._pushed:
            self._out += self._confirms
            self._confirms = []
            self._out_ready.set()

    async def receive_file(self) -> SpooledBundle:
        """Next bundle for a registered endpoint with its payload in a new
        file of the client's ``spool_dir`` (see :func:`open_trio_client`): a
        large payload (a frame of 128 KiB or more) was written there as it
        arrived, never held in this process whole; a small one is written
        now. The file is fsynced (on a worker thread) before the node is told
        the bundle was delivered. Raises :class:`ClientError` when the
        connection ends or the client has no spool directory."""
        if self._spool_dir is None:
            raise ClientError("receive_file needs open_trio_client(..., spool_dir=...)")
        b = await self._next_bundle()
        if isinstance(b, SpooledBundle):
            await trio.to_thread.run_sync(fsync_path, b.path)
        else:
            b = await trio.to_thread.run_sync(spool, b, self._spool_dir)
        self._queue({"type": "delivered", "bundle_key": b.bundle_key})
        return b

    async def _next_bundle(self) -> ReceivedBundle | SpooledBundle:
        try:
            b = await self._bundles.receive()
        except trio.EndOfChannel:
            raise ClientError("the node closed the connection") from None
        self._pushed -= 1
        return b

    async def status(self) -> dict[str, Any]:
        """The node's status map."""
        status = (await self._request({"type": "status"}))["status"]
        assert isinstance(status, dict)
        return status

    async def service_request(self, service: int, requests: list[bytes]) -> list[bytes]:
        """Hand ``requests`` to the local service numbered ``service``
        without bundles (the app API's ``service_request``); its replies,
        one per request, once the node holds their effects durably. Raises
        :class:`ClientError` when the node or the service does not answer
        local requests, or refuses these."""
        reply = await self._request(
            {"type": "service_request", "service": service, "requests": requests}
        )
        replies = reply.get("replies")
        if type(replies) is not list or len(replies) != len(requests):
            raise ClientError("service_request reply without one reply per request")
        if not all(type(r) is bytes for r in replies):
            raise ClientError("service_request reply that is not byte strings")
        return replies

    async def set_resources(self, **fields: Any) -> dict[str, Any]:
        """Advertise the node's resources (see ``Node.set_resources``):
        any of ``store_free_bytes``, ``store_total_bytes``, ``cpu_load``,
        ``battery_pct``, ``sunlit``, ``temperature_c``. Returns every field
        as now advertised; raises :class:`ClientError` for a bad value."""
        reply = await self._request({"type": "set_resources", **fields})
        res = reply["resources"]
        assert isinstance(res, dict)
        return res

    async def ping(self) -> float:
        """Round trip to the local node, in seconds."""
        t0 = time.perf_counter()
        await self._request({"type": "ping"})
        return time.perf_counter() - t0


@contextlib.asynccontextmanager
async def open_trio_client(
    path: str, *, spool_dir: str | None = None
) -> AsyncIterator[TrioClient]:
    """Connect to the app API socket at ``path``. With ``spool_dir``, large
    pushed payloads are written into files there as they arrive (for
    :meth:`TrioClient.receive_file`). Raises :class:`ClientError`."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
    try:
        await sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ClientError(
            f"cannot reach the node at {path}: {exc.strerror or exc}"
        ) from exc
    stream = trio.SocketStream(sock)
    client = TrioClient(stream, spool_dir)
    try:
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(client._reader)
            nursery.start_soon(client._writer)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client._drain()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader task never raises: a lone error is the caller's own
        # (e.g. ClientError); hand it back as it was raised.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
