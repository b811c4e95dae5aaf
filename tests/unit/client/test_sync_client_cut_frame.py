"""The sync client after a send cut short (a timeout, or any socket error,
part-way through a request's frame): the connection is closed, never left
open with half a frame on it -- the next request's bytes would otherwise
complete the cut frame, and the node would store a bundle whose payload is
part one request, part the next.

A plain listening socket plays the node; the socket error is injected into
the client's ``sendmsg`` after part of the frame went out. No real waits: the
listener's timeout only guards against a hang."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.client import Client, ClientError


class _CutsShort:
    """The client's socket, whose ``sendmsg`` sends part of the first buffer
    and then fails as a timed-out send does."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def sendmsg(self, bufs: list[Any]) -> int:
        self._sock.sendall(memoryview(bufs[0])[:10])
        raise TimeoutError("timed out")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_send_cut_short_closes_the_connection(tmp_path: Path) -> None:
    path = str(tmp_path / "node.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        client = Client(path, timeout_s=5)
        node, _ = listener.accept()
        with node, client:
            node.settimeout(5)  # a guard: the test fails rather than hangs
            real = client._sock
            client._sock = _CutsShort(real)  # type: ignore[assignment]
            with pytest.raises(ClientError):
                client.send("ipn:1.1", b"x" * 100_000)
            client._sock = real
            with pytest.raises(ClientError):
                client.send("ipn:1.1", b"y" * 100_000)
            got = b""
            while chunk := node.recv(1 << 16):
                got += chunk
            # Ten bytes of the first frame, then the end of the stream:
            # nothing of the second request.
            assert len(got) == 10
