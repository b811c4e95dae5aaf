"""Gathered writes to an app API stream: the node's app writer and the trio
client both queue frames and large payloads as separate buffers and write
them with ``sendmsg``, never joining them (no payload copied in Python)."""

from __future__ import annotations

from collections.abc import Sequence

import trio

__all__ = ["IOV_MAX", "send_buffers"]

IOV_MAX = 1024
"""Buffers per ``sendmsg`` (Linux's IOV_MAX)."""


async def send_buffers(
    stream: trio.SocketStream, parts: Sequence[bytes | memoryview]
) -> None:
    """Write ``parts`` in order, gathered by ``sendmsg`` (up to
    :data:`IOV_MAX` buffers a call); a buffer cut short goes on from a
    memoryview of its rest. Raises :class:`trio.BrokenResourceError` when
    the peer is gone. Only one task may write to ``stream`` at a time."""
    sock = stream.socket
    bufs: list[bytes | memoryview] = [p for p in parts if p]
    i = 0
    while i < len(bufs):
        try:
            n = await sock.sendmsg(bufs[i : i + IOV_MAX])
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        while n:
            b = bufs[i]
            if n >= len(b):
                n -= len(b)
                i += 1
            else:
                bufs[i] = memoryview(b)[n:]
                n = 0
