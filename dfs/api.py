"""The ``dfs`` library API: put, get, ls, stat, rm against a node's object
store, blocking (:class:`Dfs`) or under trio (:class:`TrioDfs`).

Both talk to the node's service 18 over its app API: the client registers
an endpoint ``ipn:N.<random>`` and exchanges the bundles of
:mod:`dcis.dfs.core.appwire` with ``ipn:N.18`` (spec/dfs.md, "Local
applications"). The request logic is shared (:class:`_Exchange`); only the
waiting differs.

    with Dfs.connect("/run/dtn-node-1.sock") as fs:
        fs.put("images/0001.png", Path("0001.png"))  # read 1 MiB at a time
        data = fs.get("images/0001.png")
        with open("copy.png", "wb") as f:
            fs.get_into("images/0001.png", f)  # written piece by piece
        for entry in fs.ls("images/"):
            print(entry["name"], entry["size"])
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import trio

from dcis.dfs.core import appwire, errors
from dcis.dfs.core.service import SERVICE, AccessDenied, Busy
from dcis.dtn.client import Client
from dcis.dtn.client.common import ReceivedBundle
from dcis.dtn.client.trio_client import TrioClient, open_trio_client

PART_BYTES = 1 << 20
"""Bytes of object data per request bundle of a put."""

Progress = Callable[[str, int, int], None]
"""``progress(what, done, total)``: ``what`` is ``"bytes"`` (sent or got) or
``"shares"`` (placed or fetched)."""

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]


class SyncTransport(Protocol):
    """What :class:`Dfs` needs of an app API client (``dcis.dtn.client.Client``)."""

    def register(self, endpoint: str) -> str: ...

    def send(
        self,
        destination: str,
        payload: bytes,
        *,
        source: str | None = None,
        lifetime_ms: int | None = None,
    ) -> str: ...

    def receive(self, timeout_s: float | None = None) -> ReceivedBundle | None: ...

    def status(self) -> dict[str, Any]: ...


_KINDS: dict[str, type[errors.DfsError]] = {
    "NotFound": errors.NotFound,
    "InvalidArgument": errors.InvalidArgument,
    "PlacementError": errors.PlacementError,
    "Unrecoverable": errors.Unrecoverable,
    "StoreFull": errors.StoreFull,
    "AccessDenied": AccessDenied,
    "Busy": Busy,
}


def _error(kind: str, message: str) -> errors.DfsError:
    return _KINDS.get(kind, errors.DfsError)(message)


def _read_parts(f: IO[bytes], size: int, *, close: bool) -> Iterator[bytes]:
    """``size`` bytes of ``f``, PART_BYTES at a time (closes ``f`` at the
    end when ``close``)."""
    try:
        left = size
        while left > 0:
            part = f.read(min(PART_BYTES, left))
            if not part:
                raise errors.InvalidArgument(
                    f"the file ended {left} bytes early (it shrank while read)"
                )
            left -= len(part)
            yield part
    finally:
        if close:
            f.close()


def _read_path(path: Path, size: int) -> Iterator[bytes]:
    """``size`` bytes of the file at ``path``, PART_BYTES at a time."""
    with path.open("rb") as f:
        yield from _read_parts(f, size, close=False)


def _sized_parts(data: Source) -> tuple[int, Iterator[bytes | memoryview]]:
    """The object's size and its bytes as pieces of at most PART_BYTES: a
    regular file (by path or open) is read piece by piece, never whole; a
    pipe or other stream without a size is read whole first."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        return len(view), (
            view[at : at + PART_BYTES] for at in range(0, len(view), PART_BYTES)
        )
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        size = path.stat().st_size
        return size, _read_path(path, size)
    try:
        st = os.fstat(data.fileno())
        regular = stat.S_ISREG(st.st_mode)
        size = st.st_size - data.tell() if regular else 0
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        regular = False
    if not regular:
        whole = data.read()
        return _sized_parts(whole)
    return size, _read_parts(data, size, close=False)


@dataclass
class _Exchange:
    """One request's state: the payloads to send and what the replies say."""

    node: int
    req: int
    progress: Progress | None = None
    result: dict[str, Any] | None = None
    sink: Callable[[int, bytes], None] | None = None
    """Takes each piece of a get (offset, bytes) instead of ``pieces``."""
    pieces: dict[int, bytes] = field(default_factory=dict)
    got_bytes: int = 0
    placed: int = 0

    def on_reply(self, msg: appwire.AppMessage) -> bool:
        """Take a reply; True when the request has ended. Raises its error."""
        if isinstance(msg, appwire.Error):
            raise _error(msg.kind, msg.message)
        if isinstance(msg, appwire.Data):
            if self.sink is not None:
                self.sink(msg.offset, msg.data)
            else:
                self.pieces[msg.offset] = msg.data
            self.got_bytes += len(msg.data)
            if self.progress is not None:
                self.progress("bytes", self.got_bytes, -1)
            return False
        if isinstance(msg, appwire.Progress):
            self.placed = msg.placed
            if self.progress is not None:
                self.progress("shares", msg.placed, msg.n)
            return False
        if isinstance(msg, appwire.Ok):
            self.result = msg.result
            return True
        return False

    def assembled(self) -> bytes:
        """The got object from its pieces."""
        assert self.result is not None
        size = int(self.result["size"])
        out = bytearray(size)
        for offset, data in self.pieces.items():
            out[offset : offset + len(data)] = data
        if self.got_bytes != size:
            raise errors.DecodeError(f"got {self.got_bytes} of {size} bytes")
        return bytes(out)


def _put_payloads(
    req: int,
    name: str,
    size: int,
    parts: Iterator[bytes | memoryview],
    k: int | None,
    n: int | None,
) -> Iterator[tuple[bytes, int]]:
    """The put's request bundles, each with the object bytes sent so far:
    one piece of the source in memory at a time."""
    yield appwire.encode_app(appwire.PutBegin(req, name, size, k, n)), 0
    off = 0
    for piece in parts:
        part = bytes(piece)
        yield appwire.encode_app(appwire.PutPart(req, off, part)), off + len(part)
        off += len(part)


class Dfs:
    """Blocking object store client over a node's app API. ``timeout_s``
    bounds each call's wait for the node's answers."""

    def __init__(self, client: SyncTransport, *, timeout_s: float = 600.0) -> None:
        self._c = client
        self.timeout_s = timeout_s
        self.node = int(client.status()["node"])
        svc = int.from_bytes(os.urandom(4), "big") | 0x10000
        self.endpoint = client.register(f"ipn:{self.node}.{svc}")
        self._req = 0
        self._stash: dict[int, list[appwire.AppMessage]] = {}
        self._owned: Client | None = None

    @classmethod
    def connect(cls, socket_path: str, *, timeout_s: float = 600.0) -> Dfs:
        """Connect to the node whose app API socket is ``socket_path``."""
        client = Client(socket_path, timeout_s=30.0)
        fs = cls(client, timeout_s=timeout_s)
        fs._owned = client
        return fs

    def __enter__(self) -> Dfs:
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection this object opened (if any)."""
        if self._owned is not None:
            self._owned.close()

    def _send(self, payload: bytes) -> None:
        self._c.send(f"ipn:{self.node}.{SERVICE}", payload, source=self.endpoint)

    def _run(self, ex: _Exchange) -> _Exchange:
        for _ in self._steps(ex):
            pass
        return ex

    def _steps(self, ex: _Exchange) -> Iterator[None]:
        """Take replies for ``ex`` until it ends, yielding after each."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            msgs = self._stash.pop(ex.req, [])
            for at, msg in enumerate(msgs):
                if ex.on_reply(msg):
                    # Later replies (progress after the result) stay.
                    if at + 1 < len(msgs):
                        self._stash[ex.req] = msgs[at + 1 :]
                    return
                yield None
            left = deadline - time.monotonic()
            b = self._c.receive(timeout_s=max(0.0, left)) if left > 0 else None
            if b is None:
                raise TimeoutError(
                    f"no answer from node {self.node} in {self.timeout_s} s"
                )
            try:
                msg = appwire.decode_app_untrusted(b.payload)
            except errors.DecodeError:
                continue
            self._stash.setdefault(getattr(msg, "req", 0), []).append(msg)

    def _new(self, progress: Progress | None = None) -> _Exchange:
        self._req += 1
        return _Exchange(self.node, self._req, progress)

    def _poll_refusal(self, ex: _Exchange) -> None:
        """Take the replies already here (no wait); raise ``ex``'s error if
        the node has refused it."""
        while (b := self._c.receive(timeout_s=0.0)) is not None:
            try:
                msg = appwire.decode_app_untrusted(b.payload)
            except errors.DecodeError:
                continue
            self._stash.setdefault(getattr(msg, "req", 0), []).append(msg)
        for msg in self._stash.get(ex.req, []):
            if isinstance(msg, appwire.Error):
                del self._stash[ex.req]
                raise _error(msg.kind, msg.message)

    def _wait_placed(self, ex: _Exchange, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while ex.placed < n:
            for msg in self._stash.pop(ex.req, []):
                ex.on_reply(msg)
            left = deadline - time.monotonic()
            if ex.placed >= n or left <= 0:
                return
            b = self._c.receive(timeout_s=left)
            if b is None:
                return
            try:
                msg = appwire.decode_app_untrusted(b.payload)
            except errors.DecodeError:
                continue
            self._stash.setdefault(getattr(msg, "req", 0), []).append(msg)

    def _call(self, op: str, arg: str, progress: Progress | None = None) -> _Exchange:
        ex = self._new(progress)
        self._send(appwire.encode_app(appwire.Call(ex.req, op, arg)))
        return self._run(ex)

    def put(
        self,
        name: str,
        data: Source,
        *,
        k: int | None = None,
        n: int | None = None,
        progress: Progress | None = None,
        wait_placed_s: float = 0.0,
    ) -> dict[str, Any]:
        """Store ``data`` (bytes, a path or a binary file) as ``name``;
        returns once the manifest is in the node's log (``placed`` then says
        how many shares holders had confirmed). With ``wait_placed_s`` it
        then waits up to that long for all n confirmations (``placed``).
        A file is sent 1 MiB at a time, never read whole; the node encodes
        each chunk as it comes (a refused put fails before any data)."""
        size, parts = _sized_parts(data)
        ex = self._new(progress)
        for payload, sent in _put_payloads(ex.req, name, size, parts, k, n):
            self._send(payload)
            if progress is not None:
                progress("bytes", sent, size)
            # The node answers a part only when it refuses the put: stop
            # sending at once then.
            self._poll_refusal(ex)
        self._run(ex)
        assert ex.result is not None
        ex.placed = max(ex.placed, int(ex.result["placed"]))
        if wait_placed_s > 0:
            self._wait_placed(ex, int(ex.result["n"]), wait_placed_s)
        return {**ex.result, "placed": ex.placed}

    def get(self, name: str, *, progress: Progress | None = None) -> bytes:
        """The object's bytes. Raises NotFound, Unrecoverable, AccessDenied."""
        return self._call("get", name, progress).assembled()

    def get_into(
        self, name: str, out: IO[bytes], *, progress: Progress | None = None
    ) -> int:
        """Write the object into the seekable binary file ``out`` (from its
        current position), each piece at its place as it arrives: memory
        does not grow with the object. Returns the size."""
        base = out.tell()

        def sink(offset: int, data: bytes) -> None:
            out.seek(base + offset)
            out.write(data)

        ex = self._new(progress)
        ex.sink = sink
        self._send(appwire.encode_app(appwire.Call(ex.req, "get", name)))
        self._run(ex)
        assert ex.result is not None
        size = int(ex.result["size"])
        if ex.got_bytes != size:
            raise errors.DecodeError(f"got {ex.got_bytes} of {size} bytes")
        out.seek(base + size)
        out.truncate()
        return size

    def get_stream(
        self, name: str, *, progress: Progress | None = None
    ) -> Iterator[bytes]:
        """The object's bytes as in-order pieces, each yielded as soon as
        every byte before it has arrived (pieces come in any order)."""
        ex = self._new(progress)
        self._send(appwire.encode_app(appwire.Call(ex.req, "get", name)))
        at = 0
        for _ in self._steps(ex):
            while at in ex.pieces:
                piece = ex.pieces.pop(at)
                at += len(piece)
                yield piece
        while at in ex.pieces:
            piece = ex.pieces.pop(at)
            at += len(piece)
            yield piece
        assert ex.result is not None
        if at != int(ex.result["size"]):
            raise errors.DecodeError(f"got {at} of {ex.result['size']} bytes")

    def ls(self, prefix: str = "") -> list[dict[str, Any]]:
        """Objects whose name starts with ``prefix``."""
        result = self._call("ls", prefix).result
        assert result is not None
        return list(result["objects"])

    def stat(self, name: str) -> dict[str, Any]:
        """k, n, size, holders and each share's state."""
        result = self._call("stat", name).result
        assert result is not None
        return result

    def rm(self, name: str) -> dict[str, Any]:
        """Remove ``name`` (a tombstone; holders reclaim the shares)."""
        result = self._call("rm", name).result
        assert result is not None
        return result


class TrioDfs:
    """The same API under trio, over a :class:`dcis.dtn.client.trio_client.TrioClient`."""

    def __init__(
        self, client: TrioClient, node: int, endpoint: str, *, timeout_s: float
    ) -> None:
        self._c = client
        self.node = node
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._req = 0
        self._stash: dict[int, list[appwire.AppMessage]] = {}

    @classmethod
    async def create(cls, client: TrioClient, *, timeout_s: float = 600.0) -> TrioDfs:
        """Register an endpoint on ``client``'s node and return the API."""
        node = int((await client.status())["node"])
        svc = int.from_bytes(os.urandom(4), "big") | 0x10000
        endpoint = await client.register(f"ipn:{node}.{svc}")
        return cls(client, node, endpoint, timeout_s=timeout_s)

    async def _send(self, payload: bytes) -> None:
        await self._c.send(f"ipn:{self.node}.{SERVICE}", payload, source=self.endpoint)

    async def _run(self, ex: _Exchange) -> _Exchange:
        with trio.fail_after(self.timeout_s):
            while True:
                for msg in self._stash.pop(ex.req, []):
                    if ex.on_reply(msg):
                        return ex
                b = await self._c.receive()
                try:
                    msg = appwire.decode_app_untrusted(b.payload)
                except errors.DecodeError:
                    continue
                self._stash.setdefault(getattr(msg, "req", 0), []).append(msg)

    def _new(self, progress: Progress | None = None) -> _Exchange:
        self._req += 1
        return _Exchange(self.node, self._req, progress)

    async def _call(self, op: str, arg: str) -> _Exchange:
        ex = self._new()
        await self._send(appwire.encode_app(appwire.Call(ex.req, op, arg)))
        return await self._run(ex)

    async def put(
        self, name: str, data: Source, *, k: int | None = None, n: int | None = None
    ) -> dict[str, Any]:
        """See :meth:`Dfs.put`."""
        size, parts = _sized_parts(data)
        ex = self._new()
        for payload, _ in _put_payloads(ex.req, name, size, parts, k, n):
            await self._send(payload)
        await self._run(ex)
        assert ex.result is not None
        return ex.result

    async def get(self, name: str) -> bytes:
        """See :meth:`Dfs.get`."""
        return (await self._call("get", name)).assembled()

    async def ls(self, prefix: str = "") -> list[dict[str, Any]]:
        """See :meth:`Dfs.ls`."""
        result = (await self._call("ls", prefix)).result
        assert result is not None
        return list(result["objects"])

    async def stat(self, name: str) -> dict[str, Any]:
        """See :meth:`Dfs.stat`."""
        result = (await self._call("stat", name)).result
        assert result is not None
        return result

    async def rm(self, name: str) -> dict[str, Any]:
        """See :meth:`Dfs.rm`."""
        result = (await self._call("rm", name)).result
        assert result is not None
        return result


@contextlib.asynccontextmanager
async def open_dfs(
    socket_path: str, *, timeout_s: float = 600.0
) -> AsyncIterator[TrioDfs]:
    """``async with open_dfs(path) as fs:`` -- the trio API on a node."""
    async with open_trio_client(socket_path) as client:
        yield await TrioDfs.create(client, timeout_s=timeout_s)
