"""Hop ACKs at delivery (spec/udpcl.md, "Hop ACKs at delivery"): a bundle
received over UDP and pushed to an application has its ACK held until the
application confirms it -- then the ACK goes with no write of its payload
-- or until the hold's bound, after which a sync writes the payload and the
ACK follows it.

The test plays node 1 with a plain UDP socket (it sees exactly which ACKs
come when); node 2 is a running node with its FULL store and group-commit
thread. The clock is trio's MockClock without autojump: virtual time moves
only when the test jumps it, so the hold's bound passes exactly when the
test says (the fsync thread runs in real time meanwhile)."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel
import trio.testing

from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.cl.udp import (
    AckMode,
    AckSegment,
    decode_datagram_untrusted,
    encode_data_segment,
)
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, ReceivedBundle, open_node
from dcis.dtn.runtime.ack_hold import HOLD_S
from dcis.dtn.runtime.node import Node
from tests.runtime.conftest import free_udp_ports

PAYLOAD = random.Random(18).randbytes(20_000)  # over the inline limit


def _peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _config(tmp: Path, peer_port: int) -> NodeConfig:
    (port,) = free_udp_ports(1)
    return NodeConfig(
        node=2,
        listen=("127.0.0.1", port),
        store_path=str(tmp / "n2.db"),
        store_synchronous="FULL",
        neighbours=(
            NeighbourConfig(node=1, address=("127.0.0.1", peer_port), ack=AckMode.ON),
        ),
    )


def _written(cfg: NodeConfig) -> bool:
    """Whether the payload is in node 2's segment files (page cache
    included: a write, synced or not)."""
    seg = Path(cfg.store_path + ".segments")
    return any(PAYLOAD in p.read_bytes() for p in seg.glob("*.seg"))


async def _send(sock: socket.socket, node: Node, token: int) -> None:
    bundle = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.5",
        payload=PAYLOAD,
        creation_ms=node.now_ms(),
        lifetime_ms=3_600_000,
    )
    assert node.config.listen is not None
    sock.sendto(
        encode_data_segment(sender=1, token=token, bundle=encode_bundle(bundle)),
        node.config.listen,
    )
    # Loopback delivers at once: the node reads and handles it before all
    # tasks block again.
    await trio.testing.wait_all_tasks_blocked()


async def _sync(node: Node) -> None:
    """Make node 2 run a group-commit sync (an app send is answered after
    one) and wait for it."""
    await node.send("ipn:2.9", b"x", source="ipn:2.1")


async def _ack(sock: socket.socket) -> tuple[int, ...]:
    """The next ACK datagram's tokens (waits for it: real I/O)."""
    await trio.lowlevel.wait_readable(sock)
    seg = decode_datagram_untrusted(sock.recv(65535))
    assert isinstance(seg, AckSegment)
    return seg.tokens


def _no_ack_yet(sock: socket.socket) -> bool:
    try:
        sock.recv(65535, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False


@contextlib.asynccontextmanager
async def _held(
    tmp: Path,
) -> AsyncIterator[tuple[socket.socket, NodeConfig, Node, Any]]:
    """Node 2 with a bundle from the peer socket (token 7) pushed to the
    app's ``ipn:2.5`` channel, not yet confirmed, and a sync run since: its
    payload unwritten, its ACK held. Yields (peer socket, config, node,
    channel)."""
    sock = _peer()
    cfg = _config(tmp, sock.getsockname()[1])
    async with open_node(cfg) as n2, n2.endpoint("ipn:2.5") as inbox:
        await _send(sock, n2, token=7)
        assert n2.status()["counters"]["received"] == 1
        await _sync(n2)
        assert n2.status()["counters"]["store_syncs"] >= 1
        assert _no_ack_yet(sock)  # main: the ACK came after that sync
        assert not _written(cfg)  # main: that sync wrote the payload
        yield sock, cfg, n2, inbox


async def test_a_bundle_confirmed_after_a_sync_is_acknowledged_unwritten(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with _held(tmp_path) as (sock, cfg, n2, inbox):
        got = await inbox.receive()  # confirms it
        assert got.payload == PAYLOAD
        with trio.fail_after(30):  # virtual: never fires without a jump
            assert await _ack(sock) == (7,)
        assert n2.status()["counters"]["acks_at_delivery"] == 1
        await _sync(n2)
        assert not _written(cfg)  # never written
        assert n2.status()["stored"] == 2  # only the two sends to ipn:2.9
    sock.close()


async def test_an_unconfirmed_bundle_is_written_and_acknowledged_at_the_bound(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with _held(tmp_path) as (sock, cfg, n2, _):
        # The app never confirms: at the bound a sync writes the payload,
        # then the ACK goes.
        mock_clock.jump(HOLD_S)
        assert await _ack(sock) == (7,)
        assert _written(cfg)
        assert n2.status()["counters"]["acks_at_delivery"] == 0
        assert n2.agent is not None
        assert len(n2.agent.store) == 2  # still held for the app
    # Closed and opened again: the bundle is there, whole.
    async with open_node(cfg) as n2, n2.endpoint("ipn:2.5") as inbox:
        got = await inbox.receive()
        assert got.payload == PAYLOAD
    sock.close()


async def test_a_duplicate_of_a_held_bundle_makes_its_payload_durable_first(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # The copy's ACK stands for the same bundle: it may not go before that
    # bundle is on disk (or confirmed), even though the bound has not come.
    async with _held(tmp_path) as (sock, cfg, n2, _):
        await _send(sock, n2, token=8)  # node 1 sent it again
        assert n2.status()["counters"]["duplicates"] == 1
        tokens: set[int] = set()
        while tokens != {7, 8}:
            tokens.update(await _ack(sock))
            # Whichever ACK comes first, the payload was written before it.
            assert _written(cfg)
    sock.close()


def _aged_copy(age_ms: int) -> bytes:
    # No clock at the source: the age block counts its lifetime.
    return encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.5",
            payload=PAYLOAD,
            creation_ms=0,
            lifetime_ms=60_000,
            bundle_age_ms=age_ms,
        )
    )


async def test_a_copy_stored_again_under_a_held_key_is_written_before_its_ack(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # The first copy's ACK is held; it expires before the hold ends and a
    # younger copy of the same bundle is stored again under the same key.
    # The syncs keep held payloads by key: without care the next one left
    # the new copy's bytes unwritten and sent its ACK after it.
    sock = _peer()
    cfg = _config(tmp_path, sock.getsockname()[1])
    async with open_node(cfg) as n2, n2.endpoint("ipn:2.5"):
        assert cfg.listen is not None
        sock.sendto(
            encode_data_segment(sender=1, token=7, bundle=_aged_copy(59_980)),
            cfg.listen,
        )
        await trio.testing.wait_all_tasks_blocked()
        assert n2.status()["counters"]["acks_held"] == 1
        mock_clock.jump(0.03)  # it expires; the hold (50 ms) goes on
        await trio.testing.wait_all_tasks_blocked()
        assert n2.status()["counters"]["expired"] == 1
        sock.sendto(
            encode_data_segment(sender=1, token=8, bundle=_aged_copy(0)), cfg.listen
        )
        await trio.testing.wait_all_tasks_blocked()
        assert n2.status()["counters"]["duplicates"] == 0  # stored anew
        await _sync(n2)
        tokens: set[int] = set()
        with trio.fail_after(5):  # virtual seconds
            while 8 not in tokens:
                tokens.update(await _ack(sock))
        assert _written(cfg), f"ACK {sorted(tokens)}: its payload is unwritten"
    sock.close()


async def test_a_tcpcl_copy_of_a_held_bundle_is_acknowledged_only_once_written(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # A TCPCL neighbour's copy of a bundle whose UDP ACK is held: its
    # XFER_ACK lets that neighbour delete its copy, so it may go only once
    # the bundle is on disk (TCPCL input names no bundle in an Ack).
    sock = _peer()
    cfg = _config(tmp_path, sock.getsockname()[1])
    async with open_node(cfg) as n2, n2.endpoint("ipn:2.5"):
        assert cfg.listen is not None
        wire = encode_bundle(
            make_bundle(
                source="ipn:1.1",
                destination="ipn:2.5",
                payload=PAYLOAD,
                creation_ms=n2.now_ms(),
                lifetime_ms=3_600_000,
            )
        )
        sock.sendto(encode_data_segment(sender=1, token=7, bundle=wire), cfg.listen)
        await trio.testing.wait_all_tasks_blocked()
        assert n2.status()["counters"]["acks_held"] == 1
        await _sync(n2)
        assert not _written(cfg)
        answers: list[bool] = []
        n2._tcpcl_receive(3, wire, answers.append)
        assert n2.status()["counters"]["duplicates"] == 1
        await _sync(n2)
        assert answers == [True]
        assert _written(cfg)
    sock.close()


async def test_the_hold_stays_under_a_quarter_of_the_ack_timeout(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # With a short UDP ACK timeout an ACK held the full 50 ms would make
    # node 1 resend every bundle: the hold ends at a quarter of it.
    sock = _peer()
    cfg = dataclasses.replace(
        _config(tmp_path, sock.getsockname()[1]), ack_timeout_s=0.08
    )
    async with open_node(cfg) as n2, n2.endpoint("ipn:2.5"):
        await _send(sock, n2, token=7)
        assert n2.status()["counters"]["acks_held"] == 1
        due = n2._ack_hold.due_at()
        assert due is not None
        assert due - trio.current_time() <= cfg.ack_timeout_s / 4
        mock_clock.jump(0.025)  # past 0.08 / 4, before HOLD_S
        assert await _ack(sock) == (7,)
        assert _written(cfg)
    sock.close()


async def _send_wire(
    sock: socket.socket, cfg: NodeConfig, token: int, wire: bytes
) -> None:
    assert cfg.listen is not None
    sock.sendto(encode_data_segment(sender=1, token=token, bundle=wire), cfg.listen)
    await trio.testing.wait_all_tasks_blocked()


async def _acks(sock: socket.socket, *tokens: int) -> None:
    """Wait for the ACKs of ``tokens`` (in any datagrams, any order)."""
    got: set[int] = set()
    with trio.fail_after(30):  # virtual: never fires without a jump
        while not got >= set(tokens):
            got.update(await _ack(sock))


async def _pushed(inbox: AsyncIterator[ReceivedBundle]) -> bytes:
    """The payload of the next bundle pushed to the app (and confirmed);
    fails, never waits, if none is: virtual time never ends a wait."""
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def take() -> None:
            got.append((await anext(inbox)).payload)
            nursery.cancel_scope.cancel()

        nursery.start_soon(take)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert got, "nothing pushed to the app"
    return got[0]


async def test_a_bundle_sent_again_is_acknowledged_again_and_delivered_once(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # Node 1 sends a bundle again when its ACK is late (held here) or lost:
    # the same bundle, a new token. Each copy is ACKed; the application
    # gets the bundle once -- while it is pushed and unconfirmed, after
    # its confirmation (its delivered mark), and after a restart.
    sock = _peer()
    cfg = _config(tmp_path, sock.getsockname()[1])

    def wire(n2: Node, payload: bytes, sequence: int) -> bytes:
        return encode_bundle(
            make_bundle(
                source="ipn:1.1",
                destination="ipn:2.5",
                payload=payload,
                creation_ms=n2.now_ms(),
                sequence=sequence,
                lifetime_ms=3_600_000,
            )
        )

    async with open_node(cfg) as n2, n2.endpoint("ipn:2.5") as inbox:
        copy = wire(n2, PAYLOAD, 0)
        await _send_wire(sock, cfg, 7, copy)
        assert n2.status()["counters"]["acks_held"] == 1
        # Again while it is pushed, unconfirmed, its ACK held.
        await _send_wire(sock, cfg, 8, copy)
        assert n2.status()["counters"]["duplicates"] == 1
        assert await _pushed(inbox) == PAYLOAD  # confirms it
        # After each copy, a bundle of its own: the app's next one (pushes
        # keep their order, so a copy pushed again would come first).
        await _send_wire(sock, cfg, 9, wire(n2, b"after 1", 1))
        assert await _pushed(inbox) == b"after 1"
        await _acks(sock, 7, 8, 9)
        # Again once confirmed and gone from the store (its ACK lost).
        await _send_wire(sock, cfg, 10, copy)
        assert n2.status()["counters"]["duplicates"] == 2
        await _send_wire(sock, cfg, 11, wire(n2, b"after 2", 2))
        assert await _pushed(inbox) == b"after 2"
        await _acks(sock, 10, 11)
    async with open_node(cfg) as n2, n2.endpoint("ipn:2.5") as inbox:
        # Again after a restart: its delivered mark is in the store.
        await _send_wire(sock, cfg, 12, copy)
        assert n2.status()["counters"]["duplicates"] == 1
        await _send_wire(sock, cfg, 13, wire(n2, b"after 3", 3))
        assert await _pushed(inbox) == b"after 3"
        await _acks(sock, 12, 13)
    sock.close()
