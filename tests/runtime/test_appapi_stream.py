"""Streamed app API sends (issue 18): ``send_file`` on both clients.

The payload goes from a file (also with ``dcis send FILE``) to the node's socket in pieces (the trio
client: 1 MiB ``readinto`` a reused buffer; the sync client:
``socket.sendfile``), never built whole in the client, and the node stores
and delivers exactly the file's bytes. A file that ends early breaks only
that connection.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.client import Client, ClientError, open_trio_client
from dcis.dtn.runtime import NodeConfig, open_node
from dcis.tools.cli import main as dcis
from tests.fakes.fakenet import FakeNet
from tests.runtime.conftest import free_udp_ports


class _ChunkedOnly(io.BytesIO):
    """A payload source that records the largest piece asked of it and
    fails if anyone reads it whole."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = 0

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        self.largest = max(self.largest, len(b))
        return super().readinto(b)

    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("the payload was read whole")


def _config(tmp: Path, port: int, sync: str) -> NodeConfig:
    return NodeConfig(
        node=1,
        listen=("127.0.0.1", port),
        app_socket=str(tmp / "n1.sock"),
        store_path=str(tmp / "n1.db"),
        store_synchronous=sync,
    )


async def test_trio_send_file_streams_in_pieces_and_delivers_the_bytes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNet()
    big = os.urandom(3 * (1 << 20) + 5)
    src = _ChunkedOnly(big)
    async with open_node(
        _config(tmp_path, net.free_port(), "NORMAL"), udp_socket=net.socket
    ):
        sock = str(tmp_path / "n1.sock")
        async with open_trio_client(sock) as rx, open_trio_client(sock) as tx:
            await rx.register("ipn:1.5")
            k1 = await tx.send_file("ipn:1.5", src, size=len(big), source="ipn:1.2")
            k2 = await tx.send_file("ipn:1.5", _ChunkedOnly(b"tiny"), size=4)
            k3 = await tx.send("ipn:1.5", b"after the streams")
            with trio.fail_after(60):
                got = [await rx.receive() for _ in range(3)]
    assert [g.bundle_key for g in got] == [k1, k2, k3]
    assert got[0].payload == big
    assert got[0].source == "ipn:1.2"
    assert got[1].payload == b"tiny"
    assert got[2].payload == b"after the streams"
    assert 0 < src.largest <= 1 << 20


async def test_trio_send_file_reads_a_file_on_disk_from_its_position(
    tmp_path: Path,
) -> None:
    # Real time: the file is read on a worker thread, during which a mock
    # clock would race ahead of the node's timers.
    (port,) = free_udp_ports(1)
    data = os.urandom(1_500_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(b"0123456789" + data)
    async with open_node(_config(tmp_path, port, "FULL")):
        sock = str(tmp_path / "n1.sock")
        async with open_trio_client(sock) as rx, open_trio_client(sock) as tx:
            await rx.register("ipn:1.5")
            with path.open("rb") as f:
                f.seek(10)  # from the file's position to its end
                key = await tx.send_file("ipn:1.5", f)
            with trio.fail_after(60):
                got = await rx.receive()
    assert (got.bundle_key, got.payload) == (key, data)


async def test_a_file_that_ends_early_breaks_only_its_connection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNet()
    async with open_node(
        _config(tmp_path, net.free_port(), "NORMAL"), udp_socket=net.socket
    ) as node:
        sock = str(tmp_path / "n1.sock")
        async with open_trio_client(sock) as tx:
            short = io.BytesIO(b"short")
            with trio.fail_after(60), pytest.raises(ClientError):
                await tx.send_file("ipn:1.5", short, size=100)
            with pytest.raises(ClientError, match="failed"):
                await tx.ping()  # the connection is gone
        async with open_trio_client(sock) as again:
            assert await again.ping() >= 0.0
        assert node.status()["stored"] == 0


async def test_sync_send_file_uses_sendfile_and_delivers_the_bytes(
    tmp_path: Path,
) -> None:
    (port,) = free_udp_ports(1)
    payload = os.urandom(2 * (1 << 20) + 3)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    async with open_node(_config(tmp_path, port, "FULL")):
        sock = str(tmp_path / "n1.sock")

        def sync_part() -> None:
            with Client(sock, timeout_s=30) as rx, Client(sock, timeout_s=30) as tx:
                rx.register("ipn:1.6")
                with path.open("rb") as f:
                    key = tx.send_file("ipn:1.6", f)
                    assert f.tell() == len(payload)
                with path.open("rb") as f, pytest.raises(ClientError, match="ended"):
                    tx.send_file("ipn:1.6", f, size=len(payload) + 1)
                b = rx.receive(timeout_s=30)
                assert b is not None
                assert (b.bundle_key, b.payload) == (key, payload)
                # dcis send FILE streams the file the same way.
                assert dcis(["send", "ipn:1.6", str(path), "--socket", sock]) == 0
                b = rx.receive(timeout_s=30)
                assert b is not None
                assert b.payload == payload

        await trio.to_thread.run_sync(sync_part)


async def test_sync_receive_file_streams_payloads_into_files(tmp_path: Path) -> None:
    (port,) = free_udp_ports(1)
    big = os.urandom(3 * (1 << 20) + 11)
    small = b"tiny payload"
    spool_dir = tmp_path / "in"
    spool_dir.mkdir()
    async with open_node(_config(tmp_path, port, "FULL")) as node:
        sock = str(tmp_path / "n1.sock")

        def sync_part() -> None:
            with Client(sock, timeout_s=30) as rx, Client(sock, timeout_s=30) as tx:
                rx.register("ipn:1.9")
                keys = [tx.send("ipn:1.9", p) for p in (big, small, big)]
                got = []
                for _ in range(2):
                    b = rx.receive_file(str(spool_dir), timeout_s=30)
                    assert b is not None
                    got.append(b)
                    assert os.stat(b.path).st_mode & 0o777 == 0o600
                # The last one through receive(): in memory, as before.
                last = rx.receive(timeout_s=30)
                assert last is not None
                assert [b.bundle_key for b in got] + [last.bundle_key] == keys
                assert [Path(b.path).read_bytes() for b in got] == [big, small]
                assert [b.size for b in got] == [len(big), len(small)]
                assert last.payload == big
                # Spooled files are the caller's; nothing else is left over.
                assert sorted(spool_dir.iterdir()) == sorted(Path(b.path) for b in got)
                assert rx.receive(timeout_s=0.2) is None
                # The node handles a connection's messages in order: once this
                # request is answered, the "delivered" confirmations sent
                # before it have been applied.
                assert rx.status()["stored"] == 0

        await trio.to_thread.run_sync(sync_part)
        assert node.status()["stored"] == 0


async def test_trio_receive_file_streams_payloads_into_the_spool_dir(
    tmp_path: Path,
) -> None:
    # Real time: receive_file fsyncs on a worker thread, and an autojump
    # clock would jump past every deadline while the loop waits for it.
    net = FakeNet()
    big = os.urandom(2 * (1 << 20) + 3)
    spool_dir = tmp_path / "in"
    spool_dir.mkdir()
    async with open_node(
        _config(tmp_path, net.free_port(), "NORMAL"), udp_socket=net.socket
    ):
        sock = str(tmp_path / "n1.sock")
        async with (
            open_trio_client(sock, spool_dir=str(spool_dir)) as rx,
            open_trio_client(sock) as tx,
        ):
            await rx.register("ipn:1.9")
            keys = [await tx.send("ipn:1.9", p) for p in (big, b"small", big)]
            with trio.fail_after(60):
                files = [await rx.receive_file() for _ in range(2)]
                last = await rx.receive()  # spooled on arrival, read back
            with pytest.raises(ClientError, match="spool_dir"):
                await tx.receive_file()
    assert [b.bundle_key for b in files] + [last.bundle_key] == keys
    assert [await trio.Path(b.path).read_bytes() for b in files] == [big, b"small"]
    assert [b.size for b in files] == [len(big), 5]
    assert last.payload == big
    left = sorted(await trio.Path(spool_dir).iterdir())
    assert left == sorted(trio.Path(b.path) for b in files)


async def test_large_payloads_by_send_arrive_intact_on_both_clients(
    tmp_path: Path,
) -> None:
    # send() of large payloads: the sync client gathers the payload with
    # sendmsg (not joined into its frame), the trio client passes it by
    # reference; both clients read the rest of a pushed payload straight
    # into new bytes objects. Mixed sizes, so reads change between the
    # reused buffer and direct reads.
    (port,) = free_udp_ports(1)
    sizes = [700_000, 10, 2 * (1 << 20) + 1, 70_000, 300_000]
    payloads = [os.urandom(n) for n in sizes]
    async with open_node(_config(tmp_path, port, "NORMAL")):
        sock = str(tmp_path / "n1.sock")

        def sync_part() -> list[bytes]:
            with Client(sock, timeout_s=30) as rx, Client(sock, timeout_s=30) as tx:
                rx.register("ipn:1.5")
                for p in payloads:
                    tx.send("ipn:1.5", p)
                got = [rx.receive(timeout_s=30) for _ in payloads]
            return [b.payload for b in got if b is not None]

        assert await trio.to_thread.run_sync(sync_part) == payloads
        async with open_trio_client(sock) as rx, open_trio_client(sock) as tx:
            await rx.register("ipn:1.6")
            for p in payloads:
                await tx.send("ipn:1.6", p)
            with trio.fail_after(60):
                got = [await rx.receive() for _ in payloads]
        assert [g.payload for g in got] == payloads
