"""A large payload being written into a file (``receive_file``) when the
connection ends part-way: the partial file is removed, never left in the
caller's directory looking like a received payload (the node still holds
the bundle: it was not confirmed).

A plain listening socket plays the node and closes half-way through a
pushed bundle's frame. No real waits: timeouts only guard against a hang."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from dcis.dtn.appapi.wire import encode_message
from dcis.dtn.client import Client, ClientError, open_trio_client


def _half_a_push() -> bytes:
    frame = encode_message(
        {
            "type": "bundle",
            "endpoint": "ipn:1.5",
            "source": "ipn:2.1",
            "payload": b"p" * 200_000,
            "creation_ms": 1,
            "sequence": 2,
            "bundle_key": "k",
        }
    )
    return frame[: len(frame) // 2]


def test_sync_receive_file_cut_short_leaves_no_file(tmp_path: Path) -> None:
    path = str(tmp_path / "node.sock")
    spool = tmp_path / "spool"
    spool.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        with Client(path, timeout_s=10) as client:
            node, _ = listener.accept()
            with node:
                node.sendall(_half_a_push())
            with pytest.raises(ClientError, match="closed"):
                client.receive_file(str(spool), timeout_s=10)
            assert list(spool.iterdir()) == []


async def test_trio_receive_file_cut_short_leaves_no_file(tmp_path: Path) -> None:
    path = str(tmp_path / "node.sock")
    spool = tmp_path / "spool"
    spool.mkdir()
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        await listener.bind(path)
        listener.listen(1)
        async with open_trio_client(path, spool_dir=str(spool)) as client:
            node, _ = await listener.accept()
            with node:
                await node.send(_half_a_push())
            with trio.fail_after(10), pytest.raises(ClientError):
                await client.receive_file()
            assert list(spool.iterdir()) == []
