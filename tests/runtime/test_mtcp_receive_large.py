"""A node receiving large bundles over MTCP (issue 18): the rest of a large
frame is read straight into new bytes objects and joined once
(``MtcpDecoder.large_frame_left``, ``Node._read_piece``); bundles of any size,
cut anywhere by the stream, arrive intact, and nothing stays accounted as
buffered once they are in.

A plain socket in a thread plays the MTCP peer. Real sockets on loopback;
no timing assertions."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import trio

from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.cl.mtcp import encode_mtcp_frame
from dcis.dtn.runtime import NodeConfig, open_node
from dcis.dtn.runtime.node import Node
from tests.runtime.conftest import poll_until


def _payload(n: int, tag: bytes) -> bytes:
    seed = hashlib.sha256(tag).digest()
    return (seed * (n // len(seed) + 1))[:n]


async def test_large_bundles_cut_anywhere_arrive_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pieces: list[int] = []
    real = Node._read_piece

    async def counted(self: Node, stream: trio.SocketStream, left: int) -> bytes:
        data = await real(self, stream, left)
        pieces.append(len(data))
        return data

    monkeypatch.setattr(Node, "_read_piece", counted)
    cfg = NodeConfig(
        node=5, mtcp_listen=("127.0.0.1", 0), store_path=str(tmp_path / "n5.db")
    )
    payloads = [
        _payload(1_500_000, b"a"),
        b"small",
        _payload(300_001, b"b"),
        _payload(200_000, b"c"),
    ]
    stream = b"".join(
        encode_mtcp_frame(
            encode_bundle(
                make_bundle(
                    destination="ipn:5.3",
                    source="ipn:9.1",
                    payload=p,
                    creation_ms=0,  # no clock: a bundle age block, never expired here
                    sequence=i,
                    lifetime_ms=3_600_000,
                )
            )
        )
        for i, p in enumerate(payloads)
    )
    async with open_node(cfg) as node, node.endpoint("ipn:5.3") as inbox:
        assert node.mtcp_address is not None
        host, port = node.mtcp_address

        def peer() -> None:
            # Writes of odd sizes, heads cut too: the node's reads land
            # anywhere in a frame.
            with socket.create_connection((host, port), timeout=30) as s:
                pos, step = 0, 1
                while pos < len(stream):
                    s.sendall(stream[pos : pos + step])
                    pos += step
                    step = step * 7 % 200_003 + 1

        await trio.to_thread.run_sync(peer)
        with trio.fail_after(60):
            got = [await inbox.receive() for _ in payloads]
        assert sorted(g.payload for g in got) == sorted(payloads)
        assert node.status()["counters"]["buffered_bytes"] == 0
    # The first frame (1.5 MB) is longer than one read into the node's
    # buffer (1 MiB): its rest came as pieces.
    assert pieces


async def test_a_frame_that_stalls_midway_is_read_and_accounted(tmp_path: Path) -> None:
    # A peer that stops half-way through a large frame: what it sent is
    # read (as pieces of the frame) and counted as buffered, the bundle
    # arrives once the rest comes, and nothing stays counted.
    cfg = NodeConfig(
        node=5, mtcp_listen=("127.0.0.1", 0), store_path=str(tmp_path / "n5.db")
    )
    payload = _payload(900_000, b"d")
    frame = encode_mtcp_frame(
        encode_bundle(
            make_bundle(
                destination="ipn:5.3",
                source="ipn:9.1",
                payload=payload,
                creation_ms=0,
                lifetime_ms=3_600_000,
            )
        )
    )
    half = 300_000
    async with open_node(cfg) as node, node.endpoint("ipn:5.3") as inbox:
        assert node.mtcp_address is not None
        conn = socket.create_connection(node.mtcp_address, timeout=30)

        def counted() -> int:
            return int(node.status()["counters"]["buffered_bytes"])

        try:
            # The frame's start: the node then reads the rest as pieces.
            await trio.to_thread.run_sync(conn.sendall, frame[:10_000])
            await poll_until(lambda: counted() >= 10_000 - 5, timeout_s=30)
            await trio.to_thread.run_sync(conn.sendall, frame[10_000:half])
            await poll_until(lambda: counted() >= half - 5, timeout_s=30)
            await trio.to_thread.run_sync(conn.sendall, frame[half:])
            with trio.fail_after(30):
                got = await inbox.receive()
        finally:
            conn.close()
        assert got.payload == payload
        assert counted() == 0
