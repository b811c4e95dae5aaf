"""The app writers gather buffers with sendmsg (issue 18): every byte goes
out once and in order, also when the kernel takes only part of a call."""

from __future__ import annotations

import socket

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from dcis.dtn.client.trio_client import TrioClient
from dcis.dtn.runtime.node import _send_buffers


async def _through_a_small_buffer(parts: list[bytes], via_client: bool) -> bytes:
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    got = bytearray()
    total = sum(len(p) for p in parts)
    sa, sb = trio.SocketStream(a), trio.SocketStream(b)
    async with sa, sb, trio.open_nursery() as nursery:

        async def read() -> None:
            while len(got) < total:
                got.extend(await sb.receive_some(1000))  # small reads: partial sends

        nursery.start_soon(read)
        if via_client:
            await TrioClient(sa)._gather(parts)
        else:
            await _send_buffers(sa, parts)
    return bytes(got)


@settings(deadline=None)
@given(
    parts=st.lists(
        st.binary(max_size=200) | st.integers(0, 70_000).map(lambda n: b"x" * n),
        max_size=1500,
    ),
    via_client=st.booleans(),
)
def test_gathered_writes_deliver_every_byte_in_order(
    parts: list[bytes], via_client: bool
) -> None:
    # more than IOV_MAX (1024) buffers, empty ones, and buffers larger
    # than the socket buffer: sendmsg takes part of a call, the rest follows
    out = trio.run(_through_a_small_buffer, parts, via_client)
    assert out == b"".join(parts)


async def test_a_writer_to_a_closed_peer_gets_a_broken_resource() -> None:
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b.close()
    async with trio.SocketStream(a) as sa:
        with pytest.raises(trio.BrokenResourceError):
            await _send_buffers(sa, [b"x" * 100_000])
