"""The ``ltp`` convergence layer in the runtime: in-process nodes over
tests/fakes' FakeNet under trio's MockClock where no thread or subprocess is
involved, else over real UDP on loopback (no timing assertions), and the
node.toml keys."""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from pathlib import Path

import pytest
import trio

from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.cl.ltp import BlockSent, LtpEngine, SendSegment, SpanConfig
from dcis.dtn.cl.ltp.segment import (
    DataSegment,
    Extension,
    decode_segment_untrusted,
    encode_segment,
)
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime.config import ConfigError, config_from_dict
from dcis.dtn.runtime.ltp import LtpConfig
from dcis.dtn.time import dtn_time_from_unix
from dcis.tools import cmd_status
from tests.fakes.fakenet import FakeNet
from tests.runtime.conftest import free_udp_ports, poll_until


def pair(
    tmp: Path, net: FakeNet | None = None, **nb_kw: object
) -> tuple[NodeConfig, NodeConfig]:
    """Nodes 1 and 2, LTP neighbours: ports on ``net`` when given (then no
    fsync thread: the clock is virtual), else free real ones."""
    p1, p2 = (net.free_port(), net.free_port()) if net else free_udp_ports(2)
    cfgs = []
    for me, other, port, oport in ((1, 2, p1, p2), (2, 1, p2, p1)):
        cfgs.append(
            NodeConfig(
                node=me,
                listen=("127.0.0.1", port),
                store_path=str(tmp / f"n{me}.db"),
                neighbours=(
                    NeighbourConfig(
                        node=other,
                        address=("127.0.0.1", oport),
                        cla="ltp",
                        engine_id=100 + other,
                        **nb_kw,  # type: ignore[arg-type]
                    ),
                ),
                ltp=LtpConfig(engine_id=100 + me, margin_ms=200),
                store_synchronous="NORMAL" if net else "FULL",
            )
        )
    return cfgs[0], cfgs[1]


async def test_a_large_bundle_crosses_in_one_block_and_leaves_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c1, c2 = pair(tmp_path, ltp_mtu_bytes=8000)
    sock = str(tmp_path / "n1.sock")
    c1 = dataclasses.replace(c1, app_socket=sock)
    payload = bytes(range(256)) * 12_000  # 3 MB: far above the datagram MTU
    async with open_node(c1) as n1, open_node(c2) as n2:
        async with n2.endpoint("ipn:2.5") as inbox:
            with trio.fail_after(60):
                key = await n1.send("ipn:2.5", payload, source="ipn:1.1")
                got = await inbox.receive()
        assert got.payload == payload
        assert got.bundle_key == key
        assert n1.agent is not None
        agent = n1.agent
        await poll_until(lambda: agent.stored == 0, timeout_s=30)
        st = n1.status()["neighbours"]["2"]
        assert st["cla"] == "ltp"
        assert st["engine_id"] == 102
        assert st["ltp_blocks_sent"] == 1
        assert n2.status()["neighbours"]["1"]["ltp_blocks_received"] == 1
        capsys.readouterr()
        # dcis status's renderer (tools/cmd_status.py), called directly.
        args = argparse.Namespace(socket=sock, config=None, node=None, json=False)
        assert await trio.to_thread.run_sync(cmd_status.run, args) == 0
    out = capsys.readouterr().out
    assert "neighbour 2: ltp" in out
    assert "engine=102" in out
    assert "blocks_sent=1" in out


@pytest.mark.parametrize("aggregate", [True, False])
async def test_many_bundles_arrive_exactly_once(
    tmp_path: Path, aggregate: bool, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNet(seed=0)
    c1, c2 = pair(tmp_path, net, ltp_aggregate=aggregate)
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
    ):
        async with n2.endpoint("ipn:2.5") as inbox:
            with trio.fail_after(60):
                for i in range(40):
                    await n1.send(
                        "ipn:2.5", i.to_bytes(2, "big") * 100, source="ipn:1.1"
                    )
                got = [await inbox.receive() for _ in range(40)]
        assert sorted(int.from_bytes(g.payload[:2], "big") for g in got) == list(
            range(40)
        )
        blocks = n2.status()["neighbours"]["1"]["ltp_blocks_received"]
        # Aggregated: several bundles share a block; else one block each.
        assert blocks < 40 if aggregate else blocks == 40


async def test_green_blocks_carry_bundles_best_effort(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNet(seed=0)
    c1, c2 = pair(tmp_path, net, ltp_green=True)
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
    ):
        async with n2.endpoint("ipn:2.5") as inbox:
            with trio.fail_after(60):
                await n1.send("ipn:2.5", b"green" * 1000, source="ipn:1.1")
                got = await inbox.receive()
        assert got.payload == b"green" * 1000
        assert n2.status()["neighbours"]["1"]["ltp_green_blocks_in"] == 1
        assert n1.status()["neighbours"]["2"]["ltp_segments_in"] == 0  # no reports


def test_config_keys() -> None:
    cfg = config_from_dict(
        {
            "node": 2,
            "ltp": {"engine_id": 22, "max_sessions": 8},
            "neighbours": [
                {
                    "node": 3,
                    "address": "127.0.0.1:1113",
                    "cla": "ltp",
                    "engine_id": 33,
                    "ltp_mtu_bytes": 1500,
                    "ltp_aggregate": True,
                }
            ],
        }
    )
    assert cfg.ltp == LtpConfig(engine_id=22, max_sessions=8)
    nb = cfg.neighbours[0]
    assert (nb.cla, nb.engine_id, nb.ltp_mtu_bytes, nb.ltp_aggregate) == (
        "ltp",
        33,
        1500,
        True,
    )
    # An ltp neighbour alone gets the default engine settings.
    only_nb = config_from_dict(
        {"node": 2, "neighbours": [{"node": 3, "address": "h:1", "cla": "ltp"}]}
    )
    assert only_nb.ltp == LtpConfig()
    assert dataclasses.replace(only_nb.neighbours[0]).engine_id is None


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"ltp": {"max_sessions": 0}}, "ltp.max_sessions"),
        ({"ltp": {"bogus": 1}}, "ltp.bogus"),
        ({"ltp": {"engine_id": True}}, "ltp.engine_id"),
        ({"ltp": 3}, "ltp"),
        (
            {
                "neighbours": [
                    {"node": 3, "address": "h:1", "cla": "ltp", "ltp_mtu_bytes": 50}
                ]
            },
            "neighbours[0].ltp_mtu_bytes",
        ),
        (
            {
                "neighbours": [
                    {"node": 3, "address": "h:1", "cla": "ltp", "engine_id": 0}
                ]
            },
            "neighbours[0].engine_id",
        ),
        (
            {"neighbours": [{"node": 3, "address": "h:1", "ltp_aggregate": "yes"}]},
            "neighbours[0].ltp_aggregate",
        ),
    ],
)
def test_bad_config_names_the_key(doc: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict({"node": 2, **doc})


async def test_a_foreign_engine_block_of_several_bundles_is_accepted(
    tmp_path: Path,
) -> None:
    # A peer engine like ION's: its own engine id, several bundles back to
    # back in one block, a small MTU, unknown header extensions on its data.
    port_node, port_peer = free_udp_ports(2)
    cfg = NodeConfig(
        node=2,
        listen=("127.0.0.1", port_node),
        neighbours=(
            NeighbourConfig(
                node=1, address=("127.0.0.1", port_peer), cla="ltp", engine_id=77
            ),
        ),
        ltp=LtpConfig(engine_id=2),
    )
    bundles = [
        encode_bundle(
            make_bundle(
                source="ipn:1.1",
                destination="ipn:2.5",
                payload=bytes([i]) * (300 * i + 1),
                creation_ms=dtn_time_from_unix(time.time()),
                sequence=i,
            )
        )
        for i in range(3)
    ]
    peer = LtpEngine(77, rng=random.Random(7))
    peer.add_span(SpanConfig(engine_id=2, mtu_bytes=400))
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", port_peer))
    done: list[BlockSent] = []

    async def emit(outs: list[object]) -> None:
        for o in outs:
            if isinstance(o, SendSegment):
                seg = decode_segment_untrusted(o.data)
                if isinstance(seg, DataSegment):  # as ION might: an extension
                    seg = dataclasses.replace(
                        seg, header_extensions=(Extension(0x42, b"ion"),)
                    )
                await sock.sendto(encode_segment(seg), ("127.0.0.1", port_node))
            elif isinstance(o, BlockSent):
                done.append(o)

    def now() -> int:
        return int(trio.current_time() * 1000)

    with sock:
        async with open_node(cfg) as n2, n2.endpoint("ipn:2.5") as inbox:
            with trio.fail_after(60):
                await emit(
                    peer.send_block(
                        2,
                        b"".join(bundles),
                        red_len=sum(map(len, bundles)),
                        token=1,
                        now=now(),
                    )
                )
                while not done:
                    with trio.move_on_after(0.2):
                        data = await sock.recv(65_535)
                        await emit(peer.on_datagram(data, now()))
                    await emit(peer.on_tick(now()))
                got = sorted([(await inbox.receive()).payload for _ in bundles])
    assert done[0].ok
    assert got == sorted(bytes([i]) * (300 * i + 1) for i in range(3))


async def test_garbage_ltp_datagrams_are_counted_and_the_node_keeps_serving(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNet(seed=0)
    c1, c2 = pair(tmp_path, net)
    rng = random.Random(9)
    junk = [b"\x00", b"\x08\xff", b"\x0f" * 30, bytes([3]) + rng.randbytes(200)]
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
    ):
        rogue = net.socket()
        rogue.bind(("127.0.0.1", 0))
        for j in junk:
            rogue.sendto(j, c2.listen)
        async with n2.endpoint("ipn:2.5") as inbox:
            with trio.fail_after(60):
                await n1.send("ipn:2.5", b"still here", source="ipn:1.1")
                got = await inbox.receive()
        assert got.payload == b"still here"
        st = n2.status()["neighbours"]["1"]
        # Each is malformed, or names an engine that is not a neighbour.
        assert st["ltp_junk"] + st["ltp_unknown_engine"] == len(junk)
