"""The embedding API: two and three in-process nodes.

Most run over tests/fakes' FakeNet under trio's MockClock (no real UDP, no
real time); the group-commit tests at the end use real sockets and threads,
since what they check is the disk."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.agent.entries import DAEMON_HOT_MAX_BYTES
from dcis.dtn.cl.udp import AckMode
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime.config import Limits
from tests.fakes.fakenet import FakeNet
from tests.runtime.conftest import free_udp_ports, poll_until


@pytest.fixture
def net() -> FakeNet:
    """A loss-free fake network (tests add faults where they need them)."""
    return FakeNet(seed=0)


def chain(tmp: Path, n: int, net: FakeNet | None = None) -> list[NodeConfig]:
    """Nodes 1..n in a line, always-on neighbours, stores on disk; ports on
    ``net`` when given, else free real ones."""
    ports = [net.free_port() for _ in range(n)] if net else free_udp_ports(n)
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
                # On a fake net the clock is virtual: no fsync thread (its
                # real-time wait would let the clock jump past ACK timers).
                store_synchronous="NORMAL" if net else "FULL",
                neighbours=tuple(nbs),
            )
        )
    return out


async def test_bundle_crosses_two_nodes_and_leaves_the_senders_store(
    tmp_path: Path, net: FakeNet, autojump_clock: trio.testing.MockClock
) -> None:
    c1, c2 = chain(tmp_path, 2, net)
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
    ):
        async with n2.endpoint("ipn:2.5") as inbox:
            with trio.fail_after(30):
                key = await n1.send("ipn:2.5", b"hello", source="ipn:1.1")
                got = await inbox.receive()
        assert got.payload == b"hello"
        assert got.source == "ipn:1.1"
        assert got.bundle_key == key
        assert n1.agent is not None
        agent = n1.agent
        await poll_until(lambda: agent.stored == 0, timeout_s=30)
        st = n1.status()
        assert st["neighbours"]["2"]["acked"] >= 1
        assert n2.status()["counters"]["delivered"] == 1


async def test_the_echo_service_answers(
    tmp_path: Path, net: FakeNet, autojump_clock: trio.testing.MockClock
) -> None:
    c1, c2, c3 = chain(tmp_path, 3, net)
    # Node 2's echo endpoint sends the payload back to its source.
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket),
        open_node(c3, udp_socket=net.socket),
    ):
        async with n1.endpoint("ipn:1.9") as inbox:
            with trio.fail_after(30):
                await n1.send("ipn:2.7", b"ping", source="ipn:1.9")
                got = await inbox.receive()
        assert got.payload == b"ping"
        assert got.source == "ipn:2.7"


async def test_bundles_larger_than_the_mtu_are_fragmented_and_reassembled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Fragments are duplicated, delayed and reordered on the way.
    net = FakeNet(seed=5, dupe=0.2, delay=0.3, max_delay_s=0.2)
    # (UDP transfers off: a bundle over the MTU is fragmented, not sent in
    # PART segments -- tests/runtime/test_udp_whole.py has those.)
    c1, c2 = (
        dataclasses.replace(c, mtu_bytes=1000, limits=Limits(udp_max_transfer_bytes=0))
        for c in chain(tmp_path, 2, net)
    )
    payload = bytes(range(256)) * 40  # 10,240 bytes: about 11 fragments
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
        n2.endpoint("ipn:2.1") as inbox,
    ):
        await n1.send("ipn:2.1", payload, source="ipn:1.1")
        with trio.fail_after(30):
            got = await inbox.receive()
    assert got.payload == payload
    assert n1.status()["counters"]["fragmented"] >= 1
    assert n2.status()["counters"]["reassembled"] == 1
    assert n1.status()["neighbours"]["2"]["sent_datagrams"] >= 10


@pytest.mark.parametrize("mode", [AckMode.AUTO, AckMode.NONE])
async def test_a_plain_udp_cl_peer_interoperates_with_bare_bundles(
    tmp_path: Path, mode: AckMode, net: FakeNet, autojump_clock: trio.testing.MockClock
) -> None:
    """What ION's UDP CL does: bare bundles, no acknowledgement, both ways.
    The peer sends from an ephemeral port (as ION and HDTN do): it is still
    recognised by its IP address (``auto`` marks it legacy)."""
    from pyd3tn.bundle7 import Bundle, serialize_bundle7

    peer = net.socket()
    peer.bind(("127.0.0.1", 0))
    out = net.socket()
    out.bind(("127.0.0.1", 0))
    port = net.free_port()
    nb = NeighbourConfig(node=9, address=peer.getsockname(), ack=mode)
    cfg = NodeConfig(
        node=1,
        listen=("127.0.0.1", port),
        store_path=str(tmp_path / "n1.db"),
        neighbours=(nb,),
    )
    try:
        async with (
            open_node(cfg, udp_socket=net.socket) as node,
            node.endpoint("ipn:1.2") as inbox,
        ):
            # The peer sends a bare bundle: delivered, and the peer is marked legacy.
            out.sendto(
                serialize_bundle7("ipn:9.1", "ipn:1.2", b"from ion"),
                ("127.0.0.1", port),
            )
            with trio.fail_after(30):
                got = await inbox.receive()
            assert got.payload == b"from ion"
            if mode is AckMode.AUTO:
                assert node.status()["neighbours"]["9"]["peer"] == "legacy"
            # Our bundles now go to it bare, best effort, and leave our store at once.
            await node.send("ipn:9.5", b"to ion", source="ipn:1.1")
            with trio.fail_after(10):
                await peer.wait_readable()
            data, _ = peer.recvfrom(65535)
            assert data[0] == 0x9F
            assert Bundle.parse(data).payload_block.data == b"to ion"
            await poll_until(lambda: node.status()["stored"] == 0, timeout_s=30)
    finally:
        peer.close()
        out.close()


async def test_echo_endpoints_do_not_answer_each_other(
    tmp_path: Path, net: FakeNet, autojump_clock: trio.testing.MockClock
) -> None:
    c1, c2 = chain(tmp_path, 2, net)
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
    ):
        await n1.send("ipn:2.7", b"loop?", source="ipn:1.7")
        await poll_until(
            lambda: n2.status()["counters"]["delivered"] == 1, timeout_s=30
        )
        await trio.sleep(60)
        assert n2.status()["counters"]["sent"] == 0
        assert n1.status()["counters"]["received"] == 0


async def test_forged_sender_numbers_do_not_grow_memory(
    tmp_path: Path, net: FakeNet, autojump_clock: trio.testing.MockClock
) -> None:
    from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
    from dcis.dtn.cl.udp import encode_data_segment
    from dcis.dtn.time import dtn_time_from_unix

    (c1,) = chain(tmp_path, 1, net)
    bundle = encode_bundle(
        make_bundle(
            source="ipn:9.1",
            destination="ipn:1.3",
            payload=b"x",
            creation_ms=dtn_time_from_unix(time.time()),
            lifetime_ms=10**7,
        )
    )
    tx = net.socket()
    tx.bind(("127.0.0.1", 0))
    async with open_node(c1, udp_socket=net.socket) as n1:

        async def drained(upto: int) -> None:
            await poll_until(
                lambda: n1.status()["counters"]["datagrams_in"] >= upto,
                timeout_s=30,
                interval_s=0.005,
            )

        for sender in range(100, 3100):
            tx.sendto(
                encode_data_segment(sender=sender, token=sender, bundle=bundle),
                c1.listen,
            )
            if sender % 100 == 99:
                # Let the node drain its socket (the fake's receive queue
                # is bounded like a real one).
                await drained(sender - 99)
        await drained(3000)
        assert len(n1._ack_addr) <= 1024
        # One bundle stored, the rest duplicates (each acknowledged).
        assert n1.status()["stored"] == 1
        assert n1.status()["counters"]["duplicates"] >= 2800
    ack, _ = tx.recvfrom(65535)
    assert ack.startswith(b"\xd9\xdc\x15")
    tx.close()


def hold_syncs(store: object, gate: threading.Event) -> list[float]:
    """Make ``store``'s group-commit fsyncs wait (on the worker thread)
    until ``gate`` is set: commits done, nothing yet on disk. Returns the
    list of the ``time.perf_counter()`` moments held syncs began to wait."""
    real = store.begin_sync  # type: ignore[attr-defined]
    waited_from: list[float] = []

    def gated(**kw: object) -> Callable[[], None]:
        fn = real(**kw)

        def run() -> None:
            waited_from.append(time.perf_counter())
            gate.wait(30)
            fn()

        return run

    store.begin_sync = gated  # type: ignore[attr-defined]
    return waited_from


async def test_the_hop_ack_waits_for_the_fsync_of_the_receivers_store(
    tmp_path: Path,
) -> None:
    # Group commit: node 2 commits on the event loop and fsyncs on a worker
    # thread; the ACK that lets node 1 forget the bundle must wait for it.
    c1, c2 = chain(tmp_path, 2)
    gate = threading.Event()
    async with open_node(c1) as n1, open_node(c2) as n2:
        assert n1.agent is not None
        assert n2.agent is not None
        waited_from = hold_syncs(n2.agent.store, gate)
        try:
            async with n2.endpoint("ipn:2.5") as inbox:
                with trio.fail_after(30):
                    await n1.send("ipn:2.5", b"durable", source="ipn:1.1")
                    got = await inbox.receive()
                assert got.payload == b"durable"
                # Until a sync of node 2's is held at the gate (or an ACK
                # came); an ACK sent without waiting for it would then be in
                # node 1's socket, read once every task of both is blocked.
                await poll_until(
                    lambda: (
                        bool(waited_from) or n1.status()["neighbours"]["2"]["acked"] > 0
                    ),
                    timeout_s=30,
                )
                await trio.testing.wait_all_tasks_blocked()
                # Stored and even delivered at node 2, but not yet on its disk.
                assert n1.status()["neighbours"]["2"]["acked"] == 0
                assert n1.agent.stored == 1
                released = time.perf_counter()
                gate.set()
                agent = n1.agent
                await poll_until(lambda: agent.stored == 0, timeout_s=30)
                assert n1.status()["neighbours"]["2"]["acked"] >= 1
                counters = n2.status()["counters"]
                assert counters["store_syncs"] >= 1
                # The held sync is timed: its fsync time includes the time
                # it was held (from its wait to the gate), its wall time
                # that and the hand-offs.
                assert waited_from
                held_us = (released - waited_from[0]) * 1e6
                assert counters["store_fsync_us"] >= int(held_us)
                assert counters["store_sync_us"] >= counters["store_fsync_us"]
        finally:
            gate.set()


async def test_send_returns_only_once_the_bundle_is_on_disk(tmp_path: Path) -> None:
    (c1,) = chain(tmp_path, 1)
    # The daemon keeps more decoded copies than an agent's default (at 48
    # sends of 64 KB in flight, node 1 queues more than 4 MiB); the bound is
    # limits.decoded_cache_bytes.
    assert c1.limits.decoded_cache_bytes == DAEMON_HOT_MAX_BYTES
    c1 = dataclasses.replace(
        c1, limits=dataclasses.replace(c1.limits, decoded_cache_bytes=8 << 20)
    )
    gate = threading.Event()
    async with open_node(c1) as n1:
        assert n1.agent is not None
        assert n1.agent.config.keep_decoded_bytes == 8 << 20
        hold_syncs(n1.agent.store, gate)
        returned = trio.Event()

        async def send() -> None:
            await n1.send("ipn:7.1", b"x" * 5000, source="ipn:1.1")
            returned.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await trio.sleep(0.5)
                assert not returned.is_set()  # committed, not yet fsynced
                gate.set()
                with trio.fail_after(30):
                    await returned.wait()
        finally:
            gate.set()


async def test_an_idle_node_removes_segments_emptied_after_a_restart(
    tmp_path: Path,
) -> None:
    # Node 1 stores large bundles while node 2 is down, restarts (its old
    # segment is closed for good), then forwards them all. Nothing is left
    # to acknowledge, yet the emptied segment must go (no 64 MiB leak).
    c1, c2 = chain(tmp_path, 2)
    seg_dir = Path(c1.store_path + ".segments")
    async with open_node(c1) as n1:
        for i in range(3):
            with trio.fail_after(30):
                await n1.send("ipn:2.1", bytes([i]) * 30_000, source="ipn:1.1")
    assert sorted(os.listdir(seg_dir)) == ["00000001.seg"]
    async with open_node(c1) as n1, open_node(c2) as n2:
        assert n1.agent is not None
        agent = n1.agent
        async with n2.endpoint("ipn:2.1") as inbox:
            with trio.fail_after(30):
                got = sorted([(await inbox.receive()).payload for _ in range(3)])
        assert got == [bytes([i]) * 30_000 for i in range(3)]
        await poll_until(lambda: agent.stored == 0, timeout_s=30)
        await poll_until(lambda: not (seg_dir / "00000001.seg").exists(), timeout_s=10)
