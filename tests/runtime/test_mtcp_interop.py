"""MTCP both ways with pyd3tn's MTCP client and a pyd3tn MTCP socket as server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from tests.runtime.conftest import poll_until

pytestmark = pytest.mark.interop


async def test_pyd3tn_mtcp_client_sends_a_bundle_to_our_node(tmp_path: Path) -> None:
    from pyd3tn.bundle7 import serialize_bundle7
    from pyd3tn.mtcp import MTCPConnection

    cfg = NodeConfig(
        node=5, mtcp_listen=("127.0.0.1", 0), store_path=str(tmp_path / "n5.db")
    )
    async with open_node(cfg) as node, node.endpoint("ipn:5.3") as inbox:
        assert node.mtcp_address is not None
        host, port = node.mtcp_address
        payloads = [b"from pyd3tn", bytes(range(256)) * 100]

        def peer() -> None:
            with MTCPConnection(host, port, timeout=5) as conn:
                for p in payloads:
                    conn.send_bundle(serialize_bundle7("ipn:9.1", "ipn:5.3", p))

        await trio.to_thread.run_sync(peer)
        with trio.fail_after(30):
            got = [await inbox.receive() for _ in payloads]
        assert [g.payload for g in got] == payloads
        assert {g.source for g in got} == {"ipn:9.1"}


async def test_our_node_sends_bundles_to_a_pyd3tn_mtcp_server(tmp_path: Path) -> None:
    from pyd3tn.bundle7 import Bundle
    from pyd3tn.mtcp import MTCPSocket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    port = server.getsockname()[1]
    nb = NeighbourConfig(
        node=9, address=("127.0.0.1", port), cla="mtcp", always_on=True
    )
    cfg = NodeConfig(node=5, store_path=str(tmp_path / "n5.db"), neighbours=(nb,))
    received: list[object] = []

    def peer(count: int) -> None:
        conn, _ = server.accept()
        with MTCPSocket(conn, timeout=10) as s:
            for _ in range(count):
                received.append(Bundle.parse(s.recv_bundle()))

    try:
        async with open_node(cfg) as node, trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, peer, 2)
            await node.send("ipn:9.4", b"first", source="ipn:5.1")
            await node.send("ipn:9.4", b"second" * 1000, source="ipn:5.1")
    finally:
        server.close()
    assert [b.payload_block.data for b in received] == [b"first", b"second" * 1000]  # type: ignore[attr-defined]
    assert [str(b.primary_block.source) for b in received] == ["ipn:5.1"] * 2  # type: ignore[attr-defined]
    assert node.status()["counters"]["forwarded"] == 2


async def test_bundles_wait_while_the_mtcp_peer_is_unreachable(tmp_path: Path) -> None:
    from pyd3tn.bundle7 import Bundle
    from pyd3tn.mtcp import MTCPSocket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]  # bound, not listening yet: connections are refused
    nb = NeighbourConfig(
        node=9, address=("127.0.0.1", port), cla="mtcp", always_on=True
    )
    cfg = NodeConfig(node=5, store_path=str(tmp_path / "n5.db"), neighbours=(nb,))
    got: list[bytes] = []

    def peer() -> None:
        server.listen(1)
        server.settimeout(10)
        conn, _ = server.accept()
        with MTCPSocket(conn, timeout=10) as s:
            got.append(Bundle.parse(s.recv_bundle()).payload_block.data)

    try:
        async with open_node(cfg) as node:
            await node.send("ipn:9.4", b"patience", source="ipn:5.1")
            await poll_until(
                lambda: node.status()["counters"]["transmit_failed"] >= 1,
                timeout_s=30,
            )
            st = node.status()
            assert st["stored"] == 1
            await trio.to_thread.run_sync(
                peer
            )  # the agent retries after retry_delay_ms
            assert got == [b"patience"]
    finally:
        server.close()
