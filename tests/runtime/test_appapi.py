"""The app API server in a running node, the clients, and the dcis commands on top."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcis.dtn.agent.store import StoreError
from dcis.dtn.appapi.wire import encode_message
from dcis.dtn.client import Client, ClientError, TrioClient, open_trio_client
from dcis.dtn.client.push_reader import PushReader
from dcis.dtn.node import IdleService, Inbound, Send, ServiceContext
from dcis.dtn.runtime import NeighbourConfig, Node, NodeConfig, open_node
from dcis.dtn.runtime import node as rnode
from dcis.tools.cli import main as dcis
from tests.fakes.fakenet import FakeNet
from tests.runtime.conftest import free_udp_ports, poll_until


def pair(tmp: Path, net: FakeNet | None = None) -> tuple[NodeConfig, NodeConfig]:
    """Nodes 1 and 2 with app sockets; on ``net`` (virtual time: SQLite
    without the fsync thread) or on real UDP ports."""
    p1, p2 = (net.free_port(), net.free_port()) if net else free_udp_ports(2)
    sync = "NORMAL" if net else "FULL"
    c1 = NodeConfig(
        node=1,
        listen=("127.0.0.1", p1),
        app_socket=str(tmp / "n1.sock"),
        store_path=str(tmp / "n1.db"),
        store_synchronous=sync,
        neighbours=(NeighbourConfig(node=2, address=("127.0.0.1", p2)),),
    )
    c2 = NodeConfig(
        node=2,
        listen=("127.0.0.1", p2),
        app_socket=str(tmp / "n2.sock"),
        store_path=str(tmp / "n2.db"),
        store_synchronous=sync,
        neighbours=(NeighbourConfig(node=1, address=("127.0.0.1", p1)),),
    )
    return c1, c2


async def _in_one_write(
    app_socket: Path, frames: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Write ``frames`` to the app socket at once (the node reads them in
    one read) and return a reply for each."""
    stream = await trio.open_unix_socket(str(app_socket))
    async with stream:
        await stream.send_all(b"".join(encode_message(f) for f in frames))
        reader = PushReader(max_message_bytes=1 << 20)
        got: list[dict[str, Any]] = []
        with trio.fail_after(30):
            while len(got) < len(frames):
                got += reader.feed(await stream.receive_some(1 << 16))
    return got


async def test_trio_client_send_receive_status_and_errors(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNet()
    c1, c2 = pair(tmp_path, net)
    async with (
        open_node(c1, udp_socket=net.socket),
        open_node(c2, udp_socket=net.socket) as n2,
    ):
        async with (
            open_trio_client(str(tmp_path / "n1.sock")) as a,
            open_trio_client(str(tmp_path / "n2.sock")) as b,
        ):
            # A second registration of an endpoint takes it over (a client
            # reconnecting before the node noticed its old connection closed).
            async with open_trio_client(str(tmp_path / "n2.sock")) as old:
                assert await old.register("ipn:2.3") == "ipn:2.3"
                assert await b.register("ipn:2.3") == "ipn:2.3"
            keys = [
                await a.send("ipn:2.3", bytes([i]) * 10, source="ipn:1.4")
                for i in range(3)
            ]
            with trio.fail_after(30):
                got = [await b.receive() for _ in keys]
            assert [g.bundle_key for g in got] == keys
            assert [g.payload for g in got] == [bytes([i]) * 10 for i in range(3)]
            with pytest.raises(ClientError):
                await a.send("not-an-eid", b"x")
            with pytest.raises(ClientError, match="not on node 1"):
                await a.send("ipn:2.3", b"x", source="ipn:9.1")
            st = await b.status()
            assert st["node"] == 2
            assert st["endpoints"] == ["ipn:2.3"]
            assert await a.ping() >= 0.0
        # Confirmed deliveries leave the store.
        await poll_until(
            lambda: n2.status()["counters"]["delivered"] >= 3, timeout_s=30
        )
        assert n2.status()["stored"] == 0


async def test_bundles_wait_in_the_store_until_an_app_registers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNet()
    c1, c2 = pair(tmp_path, net)
    async with (
        open_node(c1, udp_socket=net.socket),
        open_node(c2, udp_socket=net.socket) as n2,
    ):
        async with open_trio_client(str(tmp_path / "n1.sock")) as a:
            await a.send("ipn:2.8", b"early")
        await poll_until(lambda: n2.status()["stored"] >= 1, timeout_s=30)
        async with open_trio_client(str(tmp_path / "n2.sock")) as b:
            await b.register("ipn:2.8")
            with trio.fail_after(30):
                got = await b.receive()
        assert got.payload == b"early"


async def test_sync_client_and_dcis_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c1, c2 = pair(tmp_path)
    s1, s2 = str(tmp_path / "n1.sock"), str(tmp_path / "n2.sock")
    async with open_node(c1), open_node(c2):

        def sync_part() -> None:
            with Client(s2) as rx:
                rx.register("ipn:2.1")
                with Client(s1) as tx:
                    key = tx.send("ipn:2.1", b"sync hello")
                b = rx.receive(timeout_s=30)
                assert b is not None
                assert (b.payload, b.bundle_key) == (b"sync hello", key)
                assert rx.receive(timeout_s=0.1) is None

            assert (
                dcis(["send", "ipn:2.9", "--payload", "from the cli", "--socket", s1])
                == 0
            )
            assert (
                dcis(
                    [
                        "recv",
                        "ipn:2.9",
                        "--json",
                        "--count",
                        "1",
                        "--timeout",
                        "30",
                        "--socket",
                        s2,
                    ]
                )
                == 0
            )
            assert (
                dcis(["ping", "2", "--count", "2", "--interval", "0", "--socket", s1])
                == 0
            )
            assert dcis(["status", "--json", "--socket", s1]) == 0
            assert dcis(["status", "--socket", str(tmp_path / "nope.sock")]) == 2

        await trio.to_thread.run_sync(sync_part)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("ipn:1.0|")  # the key dcis send printed
    got = json.loads(lines[1])
    assert got["payload"] == "from the cli"
    assert got["bundle_key"] == lines[0]
    assert "2 sent, 2 received, 0% loss" in out
    status = json.loads(out[out.index("{\n") :])
    assert status["node"] == 1
    assert status["neighbours"]["2"]["peer"] == "dcis"
    assert err.strip().startswith("error: cannot reach the node")


async def _stored_at_2(tmp_path: Path, n2: Node, count: int, payload: bytes) -> None:
    """Send ``count`` bundles of ``payload`` from node 1 to ipn:2.6 (nobody
    registered) and wait until node 2 holds them."""
    async with open_trio_client(str(tmp_path / "n1.sock")) as a:
        for _ in range(count):
            await a.send("ipn:2.6", payload)
    await poll_until(lambda: n2.status()["stored"] == count, timeout_s=30)


async def _raw_registered(path: Path) -> socket.socket:
    """A bare app API connection that registered ipn:2.6, returned once the
    node pushed its first byte: proof that the node processed the register
    and is mid-push (no sleep: under load the node may not have read the
    request yet)."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        raw.connect(str(path))
        raw.sendall(
            encode_message({"type": "register", "id": 1, "endpoint": "ipn:2.6"})
        )
        raw.settimeout(30)
        assert await trio.to_thread.run_sync(raw.recv, 1)
    except BaseException:
        raw.close()
        raise
    return raw


async def test_a_client_vanishing_mid_push_does_not_hurt_the_node(
    tmp_path: Path,
) -> None:
    c1, c2 = pair(tmp_path)
    async with open_node(c1), open_node(c2) as n2:
        await _stored_at_2(tmp_path, n2, 40, b"z" * 60_000)
        # Register, then drop the connection without reading ~2.4 MB of pushes.
        raw = await _raw_registered(tmp_path / "n2.sock")
        raw.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        raw.close()  # unread data: the node's next write fails
        async with open_trio_client(str(tmp_path / "n2.sock")) as b:
            await b.register("ipn:2.6")
            with trio.fail_after(30):
                got = {(await b.receive()).bundle_key for _ in range(40)}
        assert len(got) == 40
        await poll_until(lambda: n2.status()["stored"] == 0, timeout_s=30)


async def test_a_stale_registration_does_not_strand_what_the_live_client_confirms(
    tmp_path: Path,
) -> None:
    # Under load the node may read a vanished client's "register" only after
    # a live client registered the same endpoint: the stale one takes the
    # endpoint over, yet the bundles the live client already got and confirms
    # must leave the store.
    c1, c2 = pair(tmp_path)
    async with open_node(c1), open_node(c2) as n2:
        await _stored_at_2(tmp_path, n2, 10, b"y" * 1000)
        async with open_trio_client(str(tmp_path / "n2.sock")) as b:
            await b.register("ipn:2.6")  # the 10 pushes precede the reply
            # A bare connection takes the endpoint over; its first pushed
            # byte proves the node processed the takeover.
            (await _raw_registered(tmp_path / "n2.sock")).close()
            with trio.fail_after(30):
                got = {(await b.receive()).bundle_key for _ in range(10)}
        assert len(got) == 10
        await poll_until(lambda: n2.status()["stored"] == 0, timeout_s=30)


async def test_sends_in_one_read_are_answered_in_order(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Node 1 takes a run of sends read at once with one agent call
    # (NodeCore.send_many); each is still answered in its turn, a bad one
    # with its own error, a request of another kind in between as it came.
    net = FakeNet()
    c1, _ = pair(tmp_path, net)
    frames = [
        {"type": "send", "id": 1, "destination": "ipn:2.1", "payload": b"a"},
        {"type": "send", "id": 2, "destination": "ipn:2.1", "payload": b"b",
         "source": "ipn:9.1"},
        {"type": "ping", "id": 3},
        {"type": "send", "id": 4, "destination": "not-an-eid", "payload": b"c"},
        {"type": "send", "id": 5, "destination": "ipn:2.1", "payload": b"d",
         "source": "ipn:1.7"},  # a node service's
        {"type": "send", "id": 6, "destination": "ipn:2.1", "payload": b"e" * 500,
         "source": "ipn:1.42"},
    ]  # fmt: skip
    async with open_node(c1, udp_socket=net.socket) as n1:
        got = await _in_one_write(tmp_path / "n1.sock", frames)
        assert [(m["id"], m["type"]) for m in got] == [
            (1, "ok"),
            (2, "error"),
            (3, "ok"),
            (4, "error"),
            (5, "error"),
            (6, "ok"),
        ]
        assert "not on node 1" in got[1]["message"]
        assert "belongs to a node service" in got[4]["message"]
        stored = {b.key for b in n1.agent.store.records()} if n1.agent else set()
        assert stored == {got[0]["bundle_key"], got[5]["bundle_key"]}


class _Keeper(IdleService):
    """Service 30: keeps the last payload it got in its durable state."""

    service = 30

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self.ctx = ctx
        return []

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        self.ctx.state.put("last", inbound.payload)
        return []


_SENDS = [
    {"type": "send", "id": 1, "destination": "ipn:2.1", "payload": b"a"},
    {"type": "send", "id": 2, "destination": "ipn:1.30", "payload": b"b"},
    {"type": "send", "id": 3, "destination": "ipn:2.1", "payload": b"c"},
]
"""Three sends read at once: the second to node 1's ``_Keeper`` service."""


def _broken_disk(service: int, key: str, value: bytes) -> None:
    """A ``service_put`` whose commit fails (the disk)."""
    raise StoreError("disk I/O error")


@contextlib.asynccontextmanager
async def _keeper_pair(tmp_path: Path) -> AsyncIterator[tuple[Node, TrioClient]]:
    """Node 1 (with ``_Keeper``) and node 2 on a FakeNet, and an app on
    node 2 registered at ``ipn:2.1``."""
    net = FakeNet()
    c1, c2 = pair(tmp_path, net)
    async with (
        open_node(c1, udp_socket=net.socket, services=lambda n, i: [_Keeper()]) as n1,
        open_node(c2, udp_socket=net.socket),
        open_trio_client(str(tmp_path / "n2.sock")) as b,
    ):
        await b.register("ipn:2.1")
        yield n1, b


async def test_sends_stored_before_a_failure_are_answered_ok(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A run of sends read at once, one of them to a node service whose state
    # commit then fails (the disk): every bundle of the run was stored
    # before that failure, so each is answered "ok" with its key -- an
    # error would make the app send it again (a duplicate) -- and the ones
    # for node 2 get there.
    async with _keeper_pair(tmp_path) as (n1, b):
        assert n1.agent is not None
        monkeypatch.setattr(n1.agent.store, "service_put", _broken_disk)
        got = await _in_one_write(tmp_path / "n1.sock", _SENDS)
        assert [(m["id"], m["type"]) for m in got] == [(1, "ok"), (2, "ok"), (3, "ok")]
        # The one for the service is still held for it (never confirmed).
        assert n1.agent.store.record(got[1]["bundle_key"]) is not None
        with trio.fail_after(30):
            arrived = {(await b.receive()).payload for _ in range(2)}
        assert arrived == {b"a", b"c"}


async def test_a_failed_service_commit_does_not_stall_the_link(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As above, with a link window of 2: the failure after the sends must not
    # leave the two stored bundles counted in flight with no transmission
    # (a recover inside the read's transaction whose actions were lost did:
    # the window stayed full and a later send never left node 1).
    monkeypatch.setattr(rnode, "DAEMON_WINDOW", 2)
    async with (
        _keeper_pair(tmp_path) as (n1, b),
        open_trio_client(str(tmp_path / "n1.sock")) as a,
    ):
        assert n1.agent is not None
        real = n1.agent.store.service_put
        monkeypatch.setattr(n1.agent.store, "service_put", _broken_disk)
        await _in_one_write(tmp_path / "n1.sock", _SENDS)
        with trio.fail_after(30):
            assert {(await b.receive()).payload for _ in range(2)} == {b"a", b"c"}
        monkeypatch.setattr(n1.agent.store, "service_put", real)  # disk healed
        await a.send("ipn:2.1", b"e")
        with trio.fail_after(600):  # virtual seconds
            assert (await b.receive()).payload == b"e"


async def test_a_refused_source_is_refused_each_time_in_one_read(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # _app_sends checks each source once per read: only one that passed
    # is taken again unchecked; a refused one is refused at every send.
    net = FakeNet()
    c1, _ = pair(tmp_path, net)
    sources = ["ipn:1.7", "ipn:9.1", "ipn:1.42", "ipn:1.7", "ipn:9.1", "ipn:1.42"]
    frames = [
        {"type": "send", "id": i, "destination": "ipn:2.1", "payload": b"x",
         "source": s}
        for i, s in enumerate(sources)
    ]  # fmt: skip
    async with open_node(c1, udp_socket=net.socket) as n1:
        got = await _in_one_write(tmp_path / "n1.sock", frames)
        assert [m["type"] for m in got] == ["error", "error", "ok"] * 2
        stored = {b.key for b in n1.agent.store.records()} if n1.agent else set()
        assert stored == {got[2]["bundle_key"], got[5]["bundle_key"]}
