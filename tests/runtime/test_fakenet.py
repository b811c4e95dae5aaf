"""Whole nodes over tests/fakes' FakeNet under trio's MockClock: seeded drop,
duplication, delay and reordering; garbage datagrams; no real sockets for
the UDP convergence layer and no real time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.cl.udp import AckMode
from dcis.dtn.node import Service
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from examples.gossip_counter import SERVICE, GossipCounter
from tests.fakes.fakenet import FakeNet


def line(net: FakeNet, n: int, **kw: object) -> list[NodeConfig]:
    """Nodes 1..n in a line over ``net``, always-on neighbours, memory stores."""
    ports = [net.free_port() for _ in range(n)]
    out = []
    for i in range(1, n + 1):
        nbs = tuple(
            NeighbourConfig(node=j, address=("127.0.0.1", ports[j - 1]), ack=AckMode.ON)
            for j in (i - 1, i + 1)
            if 1 <= j <= n
        )
        out.append(
            NodeConfig(
                node=i,
                listen=("127.0.0.1", ports[i - 1]),
                neighbours=nbs,
                **kw,  # type: ignore[arg-type]
            )
        )
    return out


def test_fakenet_decisions_are_seeded() -> None:
    def run(seed: int) -> dict[str, int]:
        net = FakeNet(seed=seed, drop=0.3, dupe=0.1)
        a, b = net.socket(), net.socket()
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        for i in range(200):
            a.sendto(bytes([i]), b.getsockname())
        got = 0
        while True:
            try:
                b.recvfrom(10)
            except BlockingIOError:
                break
            got += 1
        return {**net.counts, "got": got}

    assert run(1) == run(1)
    assert run(1) != run(2)
    counts = run(1)
    assert 0 < counts["dropped"] < 200
    assert counts["got"] == counts["delivered"]


def test_fakenet_partition_and_unbound_addresses_drop() -> None:
    net = FakeNet()
    a, b = net.socket(), net.socket()
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    net.partition(a.getsockname()[1], b.getsockname()[1])
    a.sendto(b"x", b.getsockname())
    a.sendto(b"y", ("127.0.0.1", 1))
    with pytest.raises(BlockingIOError):
        b.recvfrom(10)
    net.heal()
    a.sendto(b"z", b.getsockname())
    assert b.recvfrom(10) == (b"z", a.getsockname())
    assert net.counts["dropped"] == 2


async def test_bundles_cross_three_nodes_exactly_once_under_loss_dupes_and_delay(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    net = FakeNet(seed=3, drop=0.2, dupe=0.1, delay=0.2, max_delay_s=0.4)
    plan = tmp_path / "line.ionrc"
    plan.write_text(
        "".join(
            f"a contact +0 +100000 {a} {b} 1000000\n"
            for a, b in ((1, 2), (2, 1), (2, 3), (3, 2))
        ),
        encoding="utf-8",
    )
    c1, c2, c3 = line(net, 3, max_tries=8, plan=str(plan))
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket),
        open_node(c3, udp_socket=net.socket) as n3,
        n3.endpoint("ipn:3.1") as inbox,
    ):
        keys = [
            await n1.send("ipn:3.1", b"%d" % i, source="ipn:1.1") for i in range(40)
        ]
        got = []
        with trio.fail_after(600):
            while len(got) < len(keys):
                got.append(await inbox.receive())
        await trio.sleep(60)  # nothing more comes
        assert n3.status()["counters"]["delivered"] == 40
    assert sorted(g.bundle_key for g in got) == sorted(keys)
    assert net.counts["dropped"] > 0
    assert net.counts["duped"] > 0
    assert net.counts["delayed"] > 0


async def test_garbage_datagrams_do_not_stop_the_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNet()
    c1, c2 = line(net, 2)
    good = encode_bundle(
        make_bundle(
            source="ipn:9.1",
            destination="ipn:2.1",
            payload=b"x",
            creation_ms=0,
            lifetime_ms=10**7,
        )
    )
    bad_crc = bytearray(good)
    bad_crc[-2] ^= 0xFF
    junk = [b"", b"xyz", good[: len(good) // 2], bytes(bad_crc), b"\xff" * 70_000]
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
    ):
        rogue = net.socket()
        rogue.bind(("127.0.0.1", 0))
        for j in junk:
            rogue.sendto(j, n2.udp_address)  # type: ignore[arg-type]
        async with n1.endpoint("ipn:1.9") as inbox:
            with trio.fail_after(30):
                await n1.send("ipn:2.7", b"ping", source="ipn:1.9")
                got = await inbox.receive()
        assert got.payload == b"ping"
        assert n2.status()["counters"]["junk"] >= 3


async def test_the_gossip_counter_converges_on_daemons_over_a_lossy_net(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNet(seed=8, drop=0.3, delay=0.2)
    services: dict[int, GossipCounter] = {}

    def factory(node: int, incarnation: int) -> Sequence[Service]:
        services[node] = GossipCounter(limit=4, period_ms=5_000)
        return [services[node]]

    configs = line(net, 3)
    async with (
        open_node(configs[0], udp_socket=net.socket, services=factory),
        open_node(configs[1], udp_socket=net.socket, services=factory),
        open_node(configs[2], udp_socket=net.socket, services=factory),
    ):
        with trio.fail_after(3600):
            while (  # noqa: ASYNC110 (the services are polled, as a reader would)
                not all(s.vector == {1: 4, 2: 4, 3: 4} for s in services.values())
                or len(services) < 3
            ):
                await trio.sleep(1)
    assert all(s.service == SERVICE for s in services.values())
