"""Blocking app API client."""

from __future__ import annotations

import io
import socket
import time
from collections import deque
from types import TracebackType
from typing import Any

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
    received_from_message,
    send_head_fields,
    send_request,
    spool,
    unspool,
)
from dcis.dtn.client.push_reader import FileSink, MemorySink, PushReader
from dcis.dtn.errors import DecodeError, InvalidArgument

_READ_BYTES = 256 * 1024
"""The reader's reused buffer (see ``dcis.dtn.client.trio_client``)."""

_PEEK_BYTES = 4096
"""Bytes looked at after a large payload (``PushReader.value_offset``)."""

_SMALL_READ_BYTES = 64 * 1024
"""A read right after a large payload: the next message is likely large
too, and what of its payload a read brings through the buffer is copied."""

_BY_REFERENCE_BYTES = 16 * 1024
"""A payload at least this long is written from the caller's object, not
joined into its request's frame."""


class Client:
    """A blocking connection to a node's app API socket ``path``.

    ``timeout_s`` bounds each request's wait for its reply. Raises
    :class:`ClientError` if the socket cannot be reached.
    """

    def __init__(self, path: str, *, timeout_s: float = 10.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A 1 MB request in one write (see trio_client.SNDBUF_BYTES).
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
            self._sock.settimeout(timeout_s)
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise ClientError(
                f"cannot reach the node at {path}: {exc.strerror or exc}"
            ) from exc
        # Large payloads are kept as the pieces they were read in (most
        # often one, never copied), or during receive_file written into a
        # file as they arrive (dcis.dtn.client.push_reader).
        self._reader = PushReader()
        self._buf = memoryview(bytearray(_READ_BYTES))
        self._next_id = 1
        self._bundles: deque[ReceivedBundle | SpooledBundle] = deque()
        self._replies: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (registrations end with it); a payload
        being written into a file by ``receive_file`` is removed."""
        self._sock.close()
        self._reader.close()

    def _read_more(self, deadline: float | None) -> None:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self._sock.settimeout(left)
        else:
            self._sock.settimeout(None)
        try:
            # The rest of a large payload straight into new bytes objects the
            # reader keeps as they are; the rest through the reused buffer.
            reader = self._reader
            left = reader.value_left
            chunk: bytes | memoryview
            if left:
                chunk = self._sock.recv(min(left, MAX_PIECE_BYTES))
            else:
                size = _READ_BYTES
                if reader.last_large:
                    # Up to the next large payload exactly, so that it can
                    # come in one read of its own (see trio_client).
                    ahead = self._sock.recv(_PEEK_BYTES, socket.MSG_PEEK)
                    size = reader.value_offset(ahead) or _SMALL_READ_BYTES
                chunk = self._buf[: self._sock.recv_into(self._buf[:size])]
        except TimeoutError:
            raise
        except OSError as exc:
            self._reader.close()  # a partial payload file is removed
            raise ClientError(f"connection to the node failed: {exc}") from exc
        if not chunk:
            self._reader.close()
            raise ClientError("the node closed the connection")
        try:
            msgs = self._reader.feed(chunk)
        except DecodeError as exc:
            raise ClientError(f"bad message from the node: {exc}") from exc
        for m in msgs:
            if m["type"] == "bundle":
                self._bundles.append(received_from_message(m))
            else:
                self._replies[m["id"]] = m

    def _request(
        self, msg: dict[str, Any], body: tuple[io.BufferedIOBase, int] | None = None
    ) -> dict[str, Any]:
        mid = self._next_id
        self._next_id += 1
        msg["id"] = mid
        try:
            if body is None:
                self._send_parts(encode_message_parts(msg, large=_BY_REFERENCE_BYTES))
            else:
                self._send_streamed(msg, *body)
        except OSError as exc:
            # A frame may be cut short (a timeout part-way): the stream
            # cannot be resumed -- the next request would complete it.
            self.close()
            raise ClientError(f"connection to the node failed: {exc}") from exc
        deadline = time.monotonic() + self.timeout_s
        while mid not in self._replies:
            try:
                self._read_more(deadline)
            except TimeoutError:
                raise ClientError(
                    f"no reply to {msg['type']} within {self.timeout_s} s"
                ) from None
        reply = self._replies.pop(mid)
        if reply["type"] == "error":
            raise ClientError(reply["message"])
        return reply

    def register(self, endpoint: str) -> str:
        """Receive the bundles of ``endpoint`` on this connection; returns its canonical name."""
        return str(
            self._request({"type": "register", "endpoint": endpoint})["endpoint"]
        )

    def unregister(self, endpoint: str) -> None:
        """Stop receiving for ``endpoint`` (later bundles wait in the node's store)."""
        self._request({"type": "unregister", "endpoint": endpoint})

    def send(
        self,
        destination: str,
        payload: bytes,
        *,
        source: str | None = None,
        lifetime_ms: int | None = None,
    ) -> str:
        """Send a bundle; returns its key once the node holds it durably."""
        return str(
            self._request(send_request(destination, payload, source, lifetime_ms))[
                "bundle_key"
            ]
        )

    def send_file(
        self,
        destination: str,
        file: io.BufferedIOBase,
        *,
        size: int | None = None,
        source: str | None = None,
        lifetime_ms: int | None = None,
    ) -> str:
        """Send the next ``size`` bytes of ``file`` (default: to its end) as
        one bundle's payload, streamed: the payload is never held in this
        process whole (``socket.sendfile``: the kernel copies a regular
        file's pages to the socket). Returns the bundle key once the node
        holds it durably. Raises :class:`ClientError`; if the file ends
        early the connection is closed (its frame cannot be completed)."""
        n = bytes_left(file, size)
        return str(
            self._request(
                send_head_fields(destination, source, lifetime_ms), (file, n)
            )["bundle_key"]
        )

    def _send_parts(self, parts: list[bytes]) -> None:
        """Write a frame's buffers gathered (a large payload is not joined
        into a copy of the frame). Raises :class:`OSError`."""
        self._sock.settimeout(self.timeout_s)
        if len(parts) == 1:
            self._sock.sendall(parts[0])
            return
        bufs: list[bytes | memoryview] = list(parts)
        while bufs:
            n = self._sock.sendmsg(bufs)
            while n:
                if n >= len(bufs[0]):
                    n -= len(bufs.pop(0))
                else:
                    bufs[0] = memoryview(bufs[0])[n:]
                    n = 0
            while bufs and not bufs[0]:
                bufs.pop(0)

    def _send_streamed(
        self, msg: dict[str, Any], file: io.BufferedIOBase, n: int
    ) -> None:
        try:
            head = encode_send_head(msg, n)
        except InvalidArgument as exc:
            raise ClientError(str(exc)) from exc
        self._sock.settimeout(self.timeout_s)
        try:
            self._sock.sendall(head)
            sent = self._sock.sendfile(file, file.tell(), n) if n else 0
        except OSError:
            self.close()  # a frame cut short: the stream cannot be resumed
            raise
        if sent != n:
            self.close()
            raise ClientError(
                f"the file ended after {sent} of {n} bytes: connection closed"
            )

    def receive(self, timeout_s: float | None = None) -> ReceivedBundle | None:
        """Next bundle for a registered endpoint (confirmed to the node as
        delivered), or None after ``timeout_s`` (None: wait forever)."""
        b = self._next_bundle(timeout_s)
        if b is None:
            return None
        if isinstance(b, SpooledBundle):
            b = unspool(b)  # spooled by an earlier receive_file's read
        self._confirm(b.bundle_key)
        return b

    def receive_file(
        self, directory: str, timeout_s: float | None = None
    ) -> SpooledBundle | None:
        """Next bundle for a registered endpoint with its payload in a new
        file in ``directory``, or None after ``timeout_s``. A large payload
        (a frame of 128 KiB or more) is written to the file as it arrives,
        never held in this process whole; the file is fsynced before the
        node is told the bundle was delivered, so a crash of this process
        never loses it. Raises :class:`ClientError` (a file that cannot be
        written ends the connection: the node keeps the bundle)."""
        self._reader.sink_factory = lambda n: FileSink(directory, n)
        try:
            b = self._next_bundle(timeout_s)
        finally:
            self._reader.sink_factory = MemorySink
        if b is None:
            return None
        if not isinstance(b, SpooledBundle):
            b = spool(b, directory)  # read in memory before this call
        self._confirm(b.bundle_key)
        return b

    def _next_bundle(
        self, timeout_s: float | None
    ) -> ReceivedBundle | SpooledBundle | None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._bundles:
            try:
                self._read_more(deadline)
            except TimeoutError:
                return None
        return self._bundles.popleft()

    def _confirm(self, bundle_key: str) -> None:
        try:
            self._sock.sendall(encode_delivered(bundle_key))
        except OSError as exc:
            self.close()  # the frame may be cut short (see _request)
            raise ClientError(f"connection to the node failed: {exc}") from exc

    def status(self) -> dict[str, Any]:
        """The node's status map (counters, neighbours, store)."""
        status = self._request({"type": "status"})["status"]
        assert isinstance(status, dict)
        return status

    def bundles(self, limit: int = 1000) -> dict[str, Any]:
        """What the node stores: ``{"total": N, "bundles": [{key,
        destination, state, size, received_ms, expiry_ms, from}, ...]}``."""
        reply = self._request({"type": "bundles", "limit": limit})
        return {"total": reply["total"], "bundles": reply["bundles"]}

    def service_request(self, service: int, requests: list[bytes]) -> list[bytes]:
        """Hand ``requests`` to the local service numbered ``service``
        without bundles (the app API's ``service_request``); its replies,
        one per request, once the node holds their effects durably. Raises
        :class:`ClientError` when the node or the service does not answer
        local requests, or refuses these."""
        reply = self._request(
            {"type": "service_request", "service": service, "requests": requests}
        )
        replies = reply.get("replies")
        if type(replies) is not list or len(replies) != len(requests):
            raise ClientError("service_request reply without one reply per request")
        if not all(type(r) is bytes for r in replies):
            raise ClientError("service_request reply that is not byte strings")
        return replies

    def set_resources(self, **fields: Any) -> dict[str, Any]:
        """Advertise the node's resources (see ``Node.set_resources``):
        any of ``store_free_bytes``, ``store_total_bytes``, ``cpu_load``,
        ``battery_pct``, ``sunlit``, ``temperature_c``. Returns every field
        as now advertised; raises :class:`ClientError` for a bad value."""
        reply = self._request({"type": "set_resources", **fields})
        res = reply["resources"]
        assert isinstance(res, dict)
        return res

    def ping(self) -> float:
        """Round trip to the local node, in seconds."""
        t0 = time.perf_counter()
        self._request({"type": "ping"})
        return time.perf_counter() - t0
