"""A late write that fails at a sync (the disk says ENOSPC although the
statvfs gate saw room): the daemon stays up, the bundle is refused -- no
hop ACK for it, the app's send answered "store full" -- and once space
returns the sender's next copy is stored, acknowledged and delivered
(spec/agent.md, "A late write that fails").

Node 1 is played with a plain UDP socket (the test sees exactly which ACKs
come); the clock is trio's MockClock without autojump, as in
test_ack_at_delivery (the fsync thread runs in real time meanwhile)."""

from __future__ import annotations

import errno
import os
import random
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.cl.udp import encode_data_segment
from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.runtime import NodeConfig, open_node
from dcis.dtn.runtime.ack_hold import HOLD_S
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.runtime.test_ack_at_delivery import (
    PAYLOAD,
    _ack,
    _config,
    _held,
    _no_ack_yet,
    _peer,
    _send,
    _sync,
    _written,
)


def _full_disk_for(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[bool]:
    """Every segment write of ``payload`` fails with ENOSPC while the
    returned flag is set (the disk filled up behind the gate's back)."""
    real = os.pwritev
    full = [True]

    def pwritev(fd: int, bufs: list[memoryview], off: int) -> int:
        if full[0] and payload in b"".join(bytes(b) for b in bufs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, bufs, off)

    monkeypatch.setattr(os, "pwritev", pwritev)
    return full


def _full_disk_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[bool], socket.socket, NodeConfig]:
    """A full disk for PAYLOAD, node 1's socket and node 2's config."""
    full = _full_disk_for(monkeypatch, PAYLOAD)
    sock = _peer()
    return full, sock, _config(tmp_path, sock.getsockname()[1])


async def test_a_received_bundle_whose_late_write_fails_is_not_acknowledged(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full, sock, cfg = _full_disk_node(tmp_path, monkeypatch)
    async with open_node(cfg) as n2:
        # Nobody registered for ipn:2.5: the ACK waits for the sync, which
        # writes the payload -- and the disk refuses it.
        await _send(sock, n2, token=7)
        assert n2.status()["counters"]["received"] == 1
        await _sync(n2)  # main: the sync task raised, the node stopped
        counters = n2.status()["counters"]
        assert counters["store_syncs"] >= 1
        assert counters["late_writes_failed"] == 1
        assert _no_ack_yet(sock)  # refused: node 1 keeps it
        assert not _written(cfg)
        assert n2.status()["stored"] == 1  # only the _sync's own send
        # Space returns; node 1 sends it again (its ACK timed out).
        full[0] = False
        await _send(sock, n2, token=8)
        await _sync(n2)
        with trio.fail_after(30):  # virtual: never fires without a jump
            assert await _ack(sock) == (8,)
        assert _written(cfg)
        assert n2.status()["stored"] == 3
        async with n2.endpoint("ipn:2.5") as inbox:
            got = await inbox.receive()
        assert got.payload == PAYLOAD
    sock.close()
    # Reopened: no row without its payload, the acknowledged bundle there.
    s = SqliteStore(cfg.store_path)
    assert s.dropped_at_open == []
    assert s.corrupt_at_open == []
    assert all(s.get(r.key) is not None for r in s.records())
    s.close()


async def test_the_pieces_of_a_bundle_whose_late_write_fails_are_not_acknowledged(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pieces held in memory until their bundle is whole, which is then
    # written late: their ACKs name no bundle, and must not go either.
    full, sock, cfg = _full_disk_node(tmp_path, monkeypatch)
    async with open_node(cfg) as n2:
        assert n2.config.listen is not None
        whole = make_bundle(
            source="ipn:1.1",
            destination="ipn:2.5",
            payload=PAYLOAD,
            creation_ms=n2.now_ms(),
            lifetime_ms=3_600_000,
        )
        pieces = [encode_bundle(f) for f in fragment_bundle(whole, 8_000)]
        assert len(pieces) == 3

        async def send_pieces(first_token: int) -> None:
            for i, p in enumerate(pieces):
                sock.sendto(
                    encode_data_segment(sender=1, token=first_token + i, bundle=p),
                    n2.config.listen,
                )
            await trio.testing.wait_all_tasks_blocked()

        await send_pieces(1)
        assert n2.status()["counters"]["reassembled"] == 1
        await _sync(n2)
        assert n2.status()["counters"]["late_writes_failed"] == 1
        assert _no_ack_yet(sock)  # main: ACKed (1, 2, 3) -- a bundle not stored
        assert n2.status()["stored"] == 1  # only the _sync's own send
        full[0] = False
        await send_pieces(11)
        await _sync(n2)
        acked: set[int] = set()
        with trio.fail_after(30):  # virtual: never fires without a jump
            while len(acked) < 3:
                acked.update(await _ack(sock))
        assert acked == {11, 12, 13}
        assert _written(cfg)
        async with n2.endpoint("ipn:2.5") as inbox:
            got = await inbox.receive()
        assert got.payload == PAYLOAD
    sock.close()


async def test_a_held_ack_released_at_the_bound_is_not_sent_if_the_write_fails(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bundle is pushed to an app that never confirms it: its ACK is
    # held (the syncs meanwhile keep its payload unwritten). At the bound
    # the hold releases the ACK to go after the sync that writes the
    # payload -- and the disk refuses that write: the ACK is not sent.
    full = _full_disk_for(monkeypatch, PAYLOAD)
    async with _held(tmp_path) as (sock, cfg, n2, _):
        assert n2.status()["counters"]["late_writes_failed"] == 0
        mock_clock.jump(HOLD_S)  # the hold ends: its ACK is released
        await _sync(n2)  # ... to a sync whose late write fails
        assert n2.status()["counters"]["late_writes_failed"] == 1
        assert len(n2._ack_hold) == 0
        assert _no_ack_yet(sock), "ACK sent for a bundle refused at the sync"
        assert not _written(cfg)
        # Space returns: node 1 sends it again and is acknowledged.
        full[0] = False
        await _send(sock, n2, token=8)
        mock_clock.jump(HOLD_S)
        with trio.fail_after(30):  # virtual: never fires without a jump
            assert await _ack(sock) == (8,)
        assert _written(cfg)
    sock.close()


async def test_an_app_send_whose_late_write_fails_is_answered_store_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = random.Random(5).randbytes(20_000)  # in a segment file
    full = _full_disk_for(monkeypatch, big)
    cfg = NodeConfig(
        node=1,
        listen=("127.0.0.1", 0),
        app_socket=str(tmp_path / "n1.sock"),
        store_path=str(tmp_path / "n1.db"),
        store_synchronous="FULL",
    )
    async with open_node(cfg) as node, open_trio_client(str(cfg.app_socket)) as app:
        with trio.fail_after(20):
            # Two sends in one read: the refused one and one that is not.
            async with trio.open_nursery() as nursery:
                results: dict[str, object] = {}

                async def send(name: str, payload: bytes) -> None:
                    try:
                        results[name] = await app.send("ipn:2.1", payload)
                    except ClientError as exc:
                        results[name] = exc

                nursery.start_soon(send, "big", big)
                nursery.start_soon(send, "small", b"s" * 3000)
        refused = results["big"]
        assert isinstance(refused, ClientError)
        assert "store full" in str(refused)
        assert isinstance(results["small"], str)  # stored and answered
        assert node.status()["counters"]["late_writes_failed"] == 1
        assert node.status()["stored"] == 1
        # Space returns: the app's next try is stored, and written.
        full[0] = False
        with trio.fail_after(20):
            key = await app.send("ipn:2.1", big)
        assert node.agent is not None
        assert node.agent.store.get(key) is not None
        segs = sorted((tmp_path / "n1.db.segments").glob("*.seg"))
        assert big in b"".join(p.read_bytes() for p in segs)
        assert node.status()["stored"] == 2


async def test_an_app_send_a_failing_service_took_then_refused_is_forgotten_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service takes the bundle, its state commit fails (the bundle waits
    # unconfirmed), then the bundle's late write fails: NodeCore forgets it
    # too (no stale key waiting for the commit) and says the service took a
    # bundle its sender was told was refused.
    from dcis.dtn.agent.store import StoreError
    from tests.runtime.test_service_failures_runtime import Ticking

    big = random.Random(6).randbytes(20_000)
    full = _full_disk_for(monkeypatch, big)
    svc = Ticking()
    cfg = NodeConfig(
        node=1,
        listen=("127.0.0.1", 0),
        app_socket=str(tmp_path / "n1.sock"),
        store_path=str(tmp_path / "n1.db"),
        store_synchronous="FULL",
    )
    async with (
        open_node(cfg, services=lambda n, i: [svc]) as node,
        open_trio_client(str(cfg.app_socket)) as app,
    ):
        assert node.agent is not None
        store = node.agent.store
        real = store.service_put
        broken = [True]

        def put(service: int, key: str, value: bytes) -> None:
            if broken[0]:
                raise StoreError("disk I/O error")
            real(service, key, value)

        store.service_put = put
        with trio.fail_after(20), pytest.raises(ClientError, match="store full"):
            await app.send("ipn:1.30", big)
        assert svc.got == [big]
        assert node.core is not None
        slot = node.core._failing["ipn:1.30"]
        assert slot.unconfirmed == {}  # main of this branch: the refused key
        assert node.status()["counters"]["late_writes_failed"] == 1
        assert node.status()["stored"] == 0
        assert node.core.event_counts["service_failed"] == 2
        # The commit succeeds at last: nothing waits for the forgotten key.
        broken[0] = False
        full[0] = False
        at = node.core.next_deadline()
        assert at is not None
        node._apply(node.core.on_tick(at))  # its retry (the timer task's call)
        assert not node.core._failing
        assert store.service_get(30, "got") == big
        assert node.status()["counters"]["handler_errors"] == 0
