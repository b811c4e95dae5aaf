"""The trio client confirms a burst of received bundles in a few writes,
not one each: a confirmation waits while more received bundles wait in the
client (at most ``_CONFIRM_BATCH``), and goes out at once when none does.

A plain listening socket plays the node. No real waits: timeouts only guard
against a hang."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from dcis.dtn.appapi.wire import MessageReader, encode_message
from dcis.dtn.client import open_trio_client
from dcis.dtn.client import trio_client as tc


def _push(i: int) -> bytes:
    return encode_message(
        {
            "type": "bundle",
            "endpoint": "ipn:1.5",
            "source": "ipn:2.1",
            "payload": bytes([i]) * 100,
            "creation_ms": 1,
            "sequence": i,
            "bundle_key": f"k{i}",
        }
    )


async def _confirmed(node: Any, reader: MessageReader, n: int) -> list[str]:
    got: list[str] = []
    with trio.fail_after(10):
        while len(got) < n:
            chunk = await node.recv(65536)
            assert chunk
            got += [m["bundle_key"] for m in reader.feed(chunk)]
    return got


async def test_a_burst_is_confirmed_in_a_few_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = tc.send_buffers

    async def counted(stream: trio.SocketStream, parts: list[bytes]) -> None:
        writes.append(len(parts))
        await real(stream, parts)

    monkeypatch.setattr(tc, "send_buffers", counted)
    path = str(tmp_path / "node.sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        await listener.bind(path)
        listener.listen(1)
        async with open_trio_client(path) as client:
            node, _ = await listener.accept()
            with node:
                reader = MessageReader()
                await node.send(b"".join(_push(i) for i in range(40)))
                with trio.fail_after(10):
                    for i in range(40):
                        assert (await client.receive()).bundle_key == f"k{i}"
                assert await _confirmed(node, reader, 40) == [
                    f"k{i}" for i in range(40)
                ]
                # 32 held back while the rest waited, then the last 8 once
                # nothing did: two writes (one a bundle before).
                assert writes == [32, 8]
                # Caught up: a lone bundle is confirmed at once.
                await node.send(_push(40))
                with trio.fail_after(10):
                    await client.receive()
                assert await _confirmed(node, reader, 1) == ["k40"]
                assert writes[2:] == [1]


async def _listen(tmp_path: Path) -> tuple[Any, str]:
    path = str(tmp_path / "node.sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(1)
    return listener, path


async def test_held_confirmations_go_out_at_the_close(tmp_path: Path) -> None:
    # Two of five received, three still waiting: the two confirmations are
    # held back, and the close sends them (else the node pushes them again
    # to the next registration).
    listener, path = await _listen(tmp_path)
    with listener:
        async with open_trio_client(path) as client:
            node, _ = await listener.accept()
            await node.send(b"".join(_push(i) for i in range(5)))
            with trio.fail_after(10):
                assert (await client.receive()).bundle_key == "k0"
                assert (await client.receive()).bundle_key == "k1"
        reader = MessageReader()
        got: list[dict[str, Any]] = []
        with node, trio.fail_after(10):
            while chunk := await node.recv(65536):
                got += reader.feed(chunk)
    assert [(m["type"], m["bundle_key"]) for m in got] == [
        ("delivered", "k0"),
        ("delivered", "k1"),
    ]


async def test_held_confirmations_go_out_before_the_next_request(
    tmp_path: Path,
) -> None:
    listener, path = await _listen(tmp_path)
    with listener:
        async with open_trio_client(path) as client:
            node, _ = await listener.accept()
            with node:
                await node.send(b"".join(_push(i) for i in range(3)))
                with trio.fail_after(10):
                    assert (await client.receive()).bundle_key == "k0"
                reader = MessageReader()
                got: list[dict[str, Any]] = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.ping)
                    with trio.fail_after(10):
                        while len(got) < 2:
                            got += reader.feed(await node.recv(65536))
                    nursery.cancel_scope.cancel()
                assert [m["type"] for m in got] == ["delivered", "ping"]
                assert got[0]["bundle_key"] == "k0"
