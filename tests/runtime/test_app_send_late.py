"""An app's ``send`` on a FULL (group-commit) node: its reply waits for the
sync, so the daemon lets the store write the payload at that sync
(``write_later``) -- never for the node's own bundles (``Node.send``, the
services), whose callers may say "sent" before it. The reply still comes
only once the bytes are on disk (spec/performance.md, "Eighth round: late
writes at node 1")."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from dcis.dtn.agent.store import BundleStore, StoredBundle, Wire
from dcis.dtn.client import TrioClient, open_trio_client
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime import node as node_mod
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.runtime.conftest import app_node_config, poll_until


async def test_app_sends_are_written_at_the_sync_the_node_s_own_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    later: dict[str, bool] = {}
    put = SqliteStore.put

    def spy(self: SqliteStore, record: StoredBundle, data: Wire, **kw: Any) -> None:
        later[record.key] = bool(kw.get("write_later"))
        put(self, record, data, **kw)

    monkeypatch.setattr(SqliteStore, "put", spy)
    cfg = app_node_config(tmp_path, store_synchronous="FULL")
    big = bytes(range(256)) * 200  # in a segment file, not the index
    async with open_node(cfg) as node, open_trio_client(str(cfg.app_socket)) as app:
        with trio.fail_after(20):
            by_app = await app.send("ipn:2.1", big)  # held: no route to node 2
            own = await node.send("ipn:2.1", big, source="ipn:1.0")
        assert later.pop(by_app) is True
        # The node's own (and any a service sent meanwhile): at once.
        assert later.pop(own) is False
        assert not any(later.values())
        # Answered after the sync that wrote it: its bytes are in the file.
        assert node.agent is not None
        store = node.agent.store
        assert isinstance(store, SqliteStore)
        stored = store.get(by_app)
        assert stored is not None
        segs = sorted((tmp_path / "n1.db.segments").glob("*.seg"))
        assert stored in b"".join(p.read_bytes() for p in segs)


def _mtcp_node(tmp_path: Path, port: int) -> NodeConfig:
    return app_node_config(
        tmp_path,
        store_synchronous="FULL",
        neighbours=(NeighbourConfig(node=2, address=("127.0.0.1", port), cla="mtcp"),),
    )


def _segments(tmp_path: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in sorted((tmp_path / "n1.db.segments").glob("*.seg"))
    )


async def test_app_bundles_forwarded_over_mtcp_before_the_sync_are_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sync due for the sends' replies first lets the MTCP sender hand
    # the bundles to the socket and report them (at most _MTCP_SETTLE_S;
    # made long here so that a slow machine cannot make this a race): they
    # leave the store, and their payloads are never written.
    monkeypatch.setattr(node_mod, "_MTCP_SETTLE_S", 60.0)
    got = bytearray()

    async def peer(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            got.extend(chunk)

    payloads = [bytes([i]) * 30_000 + bytes(range(256)) * 100 for i in range(1, 4)]
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, peer, 0, host="127.0.0.1")
        )
        cfg = _mtcp_node(tmp_path, listener.socket.getsockname()[1])
        async with (
            open_node(cfg) as node,
            open_trio_client(str(cfg.app_socket)) as app,
        ):
            with trio.fail_after(20):
                for p in payloads:
                    nursery.start_soon(app.send, "ipn:2.1", p)
                await poll_until(lambda: node.status()["stored"] == 0, timeout_s=20)
                await poll_until(lambda: all(p in got for p in payloads), timeout_s=20)
            assert node.counters["store_syncs"] >= 1
            raw = _segments(tmp_path)
            assert not any(p[:30_000] in raw for p in payloads)
        nursery.cancel_scope.cancel()


async def test_a_peer_that_does_not_answer_does_not_hold_up_the_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The MTCP sender never gets its connection (a peer behind a black
    # hole): each sync gives up waiting for it after _MTCP_SETTLE_S (the
    # first; later ones not at all while it reports nothing), writes the
    # payloads and answers.
    monkeypatch.setattr(node_mod, "_MTCP_SETTLE_S", 0.05)

    _peer_never_connects(monkeypatch)
    payloads = [bytes([i]) * 40_000 for i in range(1, 4)]
    cfg = _mtcp_node(tmp_path, 9)
    async with (
        open_node(cfg) as node,
        open_trio_client(str(cfg.app_socket)) as app,
    ):
        with trio.fail_after(20):
            for p in payloads:  # one at a time: a sync each
                await app.send("ipn:2.1", p)
        raw = _segments(tmp_path)
        assert all(p in raw for p in payloads)
        assert node.status()["stored"] == 3


async def test_the_reply_to_an_app_send_comes_after_its_late_write(
    tmp_path: Path,
) -> None:
    # The reply is the app's promise that the bundle survives a power cut:
    # when it comes, the held payload is in the segment file (no forwarding
    # here: the bundle stays, so the sync must have written it).
    cfg = app_node_config(tmp_path, store_synchronous="FULL")
    big = bytes(range(256)) * 200
    async with open_node(cfg) as node, open_trio_client(str(cfg.app_socket)) as app:
        with trio.fail_after(20):
            key = await app.send("ipn:2.1", big)
        on_disk = _segments(tmp_path)
        assert node.agent is not None
        stored = node.agent.store.get(key)
        assert stored is not None
        assert bytes(stored) in on_disk


def _peer_never_connects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MTCP connect waits forever: nothing leaves the node."""

    async def black_hole(*args: object, **kw: object) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(trio, "open_tcp_stream", black_hole)


@contextlib.asynccontextmanager
async def _node_app_nursery(
    tmp_path: Path,
) -> AsyncIterator[tuple[node_mod.Node, TrioClient, trio.Nursery, BundleStore]]:
    """An MTCP node (9 its peer), an app connected to it, a nursery, and
    the node's store."""
    cfg = _mtcp_node(tmp_path, 9)
    async with (
        open_node(cfg) as node,
        open_trio_client(str(cfg.app_socket)) as app,
        trio.open_nursery() as nursery,
    ):
        assert node.agent is not None
        yield node, app, nursery, node.agent.store


async def test_sends_stored_while_a_sync_waits_for_the_senders_wait_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sync covers the commits made before it waits for the MTCP senders:
    # a send stored during that wait is answered after the next sync, and
    # this one leaves its payload held (its bundle has that wait to leave
    # in). The peer never connects here, so nothing leaves: the next sync
    # writes it, and only then is it answered.
    _peer_never_connects(monkeypatch)
    first, second = bytes([1]) * 40_000, bytes([2]) * 40_000
    replies: dict[str, str] = {}
    # Whether the second payload is in its segment file at the moment the
    # node hands its reply to the connection's writer (after the sync that
    # released it, before any later one can write it: whatever the order
    # the client then reads the replies in).
    on_disk_at_reply: list[bool] = []
    second_key: list[str] = []
    put = node_mod._Outbox.put

    def spy(self: node_mod._Outbox, parts: list[bytes]) -> bool:
        if second_key and any(second_key[0].encode() in p for p in parts):
            on_disk_at_reply.append(second in _segments(tmp_path))
        return put(self, parts)

    monkeypatch.setattr(node_mod._Outbox, "put", spy)
    release = trio.Event()
    waits = 0
    async with _node_app_nursery(tmp_path) as (node, app, nursery, store):

        async def send_second() -> None:
            replies["second"] = await app.send("ipn:2.1", second)

        async def settle(self: node_mod.Node) -> None:
            # Stands in for the wait for the senders: the second send comes
            # during the first sync's; the next sync's waits for the test.
            nonlocal waits
            waits += 1
            if waits == 1:
                before = {r.key for r in store.records()}
                nursery.start_soon(send_second)
                await poll_until(lambda: node.status()["stored"] == 2, timeout_s=20)
                second_key.extend({r.key for r in store.records()} - before)
            elif waits == 2:
                await release.wait()

        monkeypatch.setattr(node_mod.Node, "_mtcp_settle", settle)
        with trio.fail_after(20):
            await app.send("ipn:2.1", first)
            raw = _segments(tmp_path)
            assert first in raw
            assert second not in raw  # main: written by the first sync
            release.set()
            await poll_until(lambda: "second" in replies, timeout_s=20)
        assert replies["second"] == second_key[0]
        # The generation read after the wait (the mark before it): [False]
        # -- answered after the first sync, its payload left unwritten.
        assert on_disk_at_reply == [True]
        assert waits == 2
        assert node.status()["stored"] == 2


async def test_an_ack_released_by_a_sync_has_its_payload_written_even_if_stored_in_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hop ACK held for its bundle's confirmation goes after the first sync
    # past its bound, whenever the bundle was stored -- here during that
    # sync's wait for the MTCP senders (a duplicate makes every held ACK due
    # at once): that sync must write the payload, mark or not. (The test
    # holds the ACK itself; a real one names a received bundle.)
    _peer_never_connects(monkeypatch)
    first, second = bytes([1]) * 40_000, bytes([2]) * 40_000
    on_disk_at_ack: list[bool] = []
    waits = 0
    async with _node_app_nursery(tmp_path) as (node, app, nursery, store):

        async def settle(self: node_mod.Node) -> None:
            nonlocal waits
            waits += 1
            if waits == 1:
                before = {r.key for r in store.records()}
                nursery.start_soon(app.send, "ipn:2.1", second)
                await poll_until(lambda: node.status()["stored"] == 2, timeout_s=20)
                (key,) = {r.key for r in store.records()} - before

                def ack() -> None:
                    on_disk_at_ack.append(second in _segments(tmp_path))

                assert self._ack_hold.hold(key, len(second), ack, trio.current_time())
                self._ack_hold.expire_all()

        monkeypatch.setattr(node_mod.Node, "_mtcp_settle", settle)
        with trio.fail_after(20):
            await app.send("ipn:2.1", first)
            await poll_until(lambda: bool(on_disk_at_ack), timeout_s=20)
        assert on_disk_at_ack == [True]  # without the reset of the mark: False
        nursery.cancel_scope.cancel()
