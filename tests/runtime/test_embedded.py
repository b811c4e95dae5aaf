"""The embedding API over real UDP on loopback: two and three in-process nodes."""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from dtn.cl.udp import AckMode
from dtn.runtime import NeighbourConfig, NodeConfig, open_node
from tests.runtime.conftest import poll_until


def free_udp_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def chain(tmp: Path, n: int) -> list[NodeConfig]:
    """Nodes 1..n in a line, always-on neighbours, stores on disk."""
    ports = free_udp_ports(n)
    out = []
    for i in range(1, n + 1):
        nbs = [
            NeighbourConfig(node=j, address=("127.0.0.1", ports[j - 1]), ack=AckMode.ON)
            for j in (i - 1, i + 1)
            if 1 <= j <= n
        ]
        out.append(
            NodeConfig(
                node=i,
                listen=("127.0.0.1", ports[i - 1]),
                store_path=str(tmp / f"n{i}.db"),
                neighbours=tuple(nbs),
            )
        )
    return out


async def test_bundle_crosses_two_nodes_and_leaves_the_senders_store(
    tmp_path: Path,
) -> None:
    c1, c2 = chain(tmp_path, 2)
    async with open_node(c1) as n1, open_node(c2) as n2:
        async with n2.endpoint("ipn:2.5") as inbox:
            with trio.fail_after(10):
                key = await n1.send("ipn:2.5", b"hello", source="ipn:1.1")
                got = await inbox.receive()
        assert got.payload == b"hello"
        assert got.source == "ipn:1.1"
        assert got.bundle_key == key
        assert n1.agent is not None
        agent = n1.agent
        await poll_until(lambda: agent.stored == 0, timeout_s=10)
        st = n1.status()
        assert st["neighbours"]["2"]["acked"] >= 1
        assert n2.status()["counters"]["delivered"] == 1


async def test_the_echo_service_answers(
    tmp_path: Path,
) -> None:
    c1, c2, c3 = chain(tmp_path, 3)
    # Node 2's echo endpoint sends the payload back to its source.
    async with open_node(c1) as n1, open_node(c2), open_node(c3):
        async with n1.endpoint("ipn:1.9") as inbox:
            with trio.fail_after(10):
                await n1.send("ipn:2.7", b"ping", source="ipn:1.9")
                got = await inbox.receive()
        assert got.payload == b"ping"
        assert got.source == "ipn:2.7"
