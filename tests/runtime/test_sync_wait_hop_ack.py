"""A hop ACK for a bundle received while a FULL-store sync waits for the
MTCP senders (``Node._mtcp_settle``): that sync covers only the commits
made before its wait -- it leaves the bundle's payload unwritten -- so the
ACK waits for the next sync, which writes it. Persist before acknowledging
(spec/agent.md; spec/performance.md, "Ninth round: the 64 KB path").

Node 2 has a UDP neighbour, node 1, played with a plain socket, and an
MTCP neighbour, node 3, whose connection never opens: the sender holds
the bundle forwarded to it, so each sync with late payloads waits the
real ``_mtcp_settle`` for it. The clock is trio's MockClock without
autojump: that wait lasts until the test jumps the clock past
``_MTCP_SETTLE_S`` (the fsync thread runs in real time meanwhile)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.cl.udp import (
    AckMode,
    AckSegment,
    decode_datagram_untrusted,
    encode_data_segment,
)
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime import node as node_mod
from dcis.dtn.runtime.node import Node
from tests.runtime.conftest import free_udp_ports
from tests.runtime.test_ack_at_delivery import _ack, _no_ack_yet, _peer

FORWARDED = bytes([3]) * 20_000  # to node 3: held by its MTCP sender
IN_WAIT = bytes([5]) * 20_000  # to ipn:2.5, nobody there: it stays


def _config(tmp: Path, peer_port: int) -> NodeConfig:
    (port,) = free_udp_ports(1)
    return NodeConfig(
        node=2,
        listen=("127.0.0.1", port),
        store_path=str(tmp / "n2.db"),
        store_synchronous="FULL",
        neighbours=(
            NeighbourConfig(node=1, address=("127.0.0.1", peer_port), ack=AckMode.ON),
            NeighbourConfig(node=3, address=("127.0.0.1", 9), cla="mtcp"),
        ),
    )


def _on_disk(cfg: NodeConfig, payload: bytes) -> bool:
    seg = Path(cfg.store_path + ".segments")
    return any(payload in p.read_bytes() for p in seg.glob("*.seg"))


async def _send(
    sock: socket.socket, node: Node, token: int, dest: str, data: bytes
) -> None:
    bundle = make_bundle(
        source="ipn:1.1",
        destination=dest,
        payload=data,
        creation_ms=node.now_ms(),
        lifetime_ms=3_600_000,
    )
    assert node.config.listen is not None
    sock.sendto(
        encode_data_segment(sender=1, token=token, bundle=encode_bundle(bundle)),
        node.config.listen,
    )
    # Loopback delivers at once: handled before all tasks block again.
    await trio.testing.wait_all_tasks_blocked()


async def test_a_bundle_received_during_the_wait_is_written_before_its_hop_ack(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def black_hole(*args: object, **kw: object) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(trio, "open_tcp_stream", black_hole)
    # Whether IN_WAIT's payload is in its segment file at the moment each
    # ACK datagram naming its token (8) leaves node 2.
    on_disk_at_ack: list[bool] = []
    try_send = Node._try_send

    def spy(self: Node, data: object, addr: tuple[str, int]) -> bool:
        if isinstance(data, bytes):
            seg = decode_datagram_untrusted(data)
            if isinstance(seg, AckSegment) and 8 in seg.tokens:
                on_disk_at_ack.append(_on_disk(self.config, IN_WAIT))
        return try_send(self, data, addr)  # type: ignore[arg-type]

    monkeypatch.setattr(Node, "_try_send", spy)
    sock = _peer()
    cfg = _config(tmp_path, sock.getsockname()[1])
    async with open_node(cfg) as n2:
        # Forwarded to node 3: its ACK waits for a sync, which waits for
        # the MTCP sender (it never reports: until the clock passes
        # _MTCP_SETTLE_S).
        await _send(sock, n2, 7, "ipn:3.1", FORWARDED)
        assert n2.status()["counters"]["received"] == 1
        assert n2.counters["store_syncs"] == 0  # in the wait
        # Received and stored during that wait.
        await _send(sock, n2, 8, "ipn:2.5", IN_WAIT)
        assert n2.status()["counters"]["received"] == 2
        assert n2.status()["stored"] == 2
        assert _no_ack_yet(sock)
        mock_clock.jump(node_mod._MTCP_SETTLE_S)
        acked: set[int] = set()
        with trio.fail_after(30):  # virtual: never fires without a jump
            while 8 not in acked:
                acked.update(await _ack(sock))
        # main's old order (the generation read after the wait, the mark
        # before it): [False] -- acknowledged after the first sync, which
        # left its payload unwritten.
        assert on_disk_at_ack == [True]
        assert acked == {7, 8}
        assert n2.counters["store_syncs"] >= 2
        assert n2.status()["stored"] == 2  # node 3 never connected
    sock.close()
