"""Two ``dtn-node`` daemons over TCPCLv4 on loopback, with and without TLS: 1,000
bundles through the app API, and one 100 MB bundle that enters daemon 1 by MTCP,
crosses TCPCLv4 whole (no fragmentation) and leaves daemon 2 by MTCP.

Real processes and sockets; no timing assertions (issue 17, "Done when")."""

from __future__ import annotations

import hashlib
import socket
import sys
import time
from pathlib import Path

import pytest
import trio

from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.bpv7.fragment import reassemble
from dcis.dtn.cl.mtcp import MtcpDecoder, encode_mtcp_frame
from dcis.dtn.client import open_trio_client
from dcis.dtn.client.common import ClientError
from dcis.dtn.time import dtn_time_from_unix
from tests.runtime.tls_certs import make_ca_and_nodes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def free_tcp_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def write_configs(tmp: Path, tls: bool) -> tuple[list[Path], dict[str, int]]:
    t1, t2, m1, m3 = free_tcp_ports(4)
    ports = {"tcpcl1": t1, "tcpcl2": t2, "mtcp1": m1, "mtcp3": m3}
    epoch = time.time() - 5
    (tmp / "plan.ionrc").write_text(
        "a contact +0 +86400 1 2 1000000000\n"
        "a contact +0 +86400 2 1 1000000000\n"
        "a contact +0 +86400 2 3 1000000000\n"
    )
    if tls:
        make_ca_and_nodes(tmp / "pki", [1, 2])
    paths = []
    for n, mine, other in ((1, t1, t2), (2, t2, t1)):
        lines = [
            f"node = {n}",
            'listen = "127.0.0.1:0"',
            f'app_socket = "{tmp}/n{n}.sock"',
            'plan = "plan.ionrc"',
            f"plan_epoch_unix_s = {epoch}",
            f'tcpcl_listen = "127.0.0.1:{mine}"',
            'log_level = "info"',
        ]
        if n == 1:
            lines.append(f'mtcp_listen = "127.0.0.1:{m1}"')
        lines += ["[store]", f'path = "n{n}.db"', "limit_bytes = 1000000000"]
        lines += ["[limits]", "mtcp_max_frame_bytes = 200000000"]
        if tls:
            lines += [
                "[tcpcl]",
                f'tls_cert = "pki/node{n}.pem"',
                f'tls_key = "pki/node{n}.key"',
                'tls_ca = "pki/ca.pem"',
                "require_tls = true",
            ]
        lines += [
            "[[neighbours]]",
            f"node = {3 - n}",
            f'address = "127.0.0.1:{other}"',
            'cla = "tcpcl"',
        ]
        if n == 2:
            lines += [
                "[[neighbours]]",
                "node = 3",
                f'address = "127.0.0.1:{m3}"',
                'cla = "mtcp"',
            ]
        p = tmp / f"n{n}.toml"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths, ports


async def start(cfg: Path, sock: Path, log: Path) -> trio.Process:
    with log.open("ab") as f:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "dcis.tools.dtn_node", "--config", str(cfg)],
            stdout=f,
            stderr=f,
            cwd=REPO,
        )
    with trio.move_on_after(30):
        while proc.poll() is None:
            try:
                async with open_trio_client(str(sock)) as c:
                    await c.ping()
                return proc
            except ClientError:
                await trio.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"daemon did not start (see {log})")


async def stop(proc: trio.Process) -> None:
    if proc.poll() is None:
        proc.terminate()
    with trio.move_on_after(10):
        await proc.wait()
        return
    proc.kill()
    await proc.wait()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_two_daemons_exchange_1000_bundles_and_one_of_100_mb(
    tmp_path: Path, tls: bool
) -> None:
    (c1, c2), ports = write_configs(tmp_path, tls)
    big_payload = hashlib.sha256(b"seed").digest() * (100 * 1024 * 1024 // 32)
    got_big: list[bytes] = []
    sink_done = trio.Event()

    async def mtcp_sink(task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(ports["mtcp3"], host="127.0.0.1")
        task_status.started()
        stream = await listeners[0].accept()
        dec = MtcpDecoder(max_bundle_bytes=200 * 1024 * 1024)
        have = 0
        async with stream:
            # daemon 2's MTCP hop is bound only by the MTCP frame limit (200 MB
            # here): the bundle leaves it whole, as the TCPCL hop carried it
            while have < len(big_payload):
                chunk = await stream.receive_some(1 << 20)
                if not chunk:
                    return
                for raw in dec.feed(chunk):
                    got_big.append(raw)
                    have += len(decode_bundle_untrusted(raw).payload)
        sink_done.set()
        for ln in listeners:
            await ln.aclose()

    procs: list[trio.Process] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(mtcp_sink)
            procs.append(await start(c1, tmp_path / "n1.sock", tmp_path / "n1.log"))
            procs.append(await start(c2, tmp_path / "n2.sock", tmp_path / "n2.log"))
            n = 1000
            async with (
                open_trio_client(str(tmp_path / "n1.sock")) as cl1,
                open_trio_client(str(tmp_path / "n2.sock")) as cl2,
            ):
                await cl1.register("ipn:1.5")
                await cl2.register("ipn:2.5")
                # An exchange: 1,000 bundles each way at once, over the one
                # session per pair (or two, when both sides dialled first).
                with trio.fail_after(300):
                    for i in range(n):
                        await cl1.send(
                            "ipn:2.5", b"%06d" % i + bytes(i % 500), source="ipn:1.1"
                        )
                        await cl2.send(
                            "ipn:1.5", b"B%05d" % i + bytes(i % 300), source="ipn:2.1"
                        )
                    seen = set()
                    for _ in range(n):
                        b = await cl2.receive()
                        seen.add(b.payload)
                    back = set()
                    for _ in range(n):
                        b = await cl1.receive()
                        back.add(b.payload)
                assert seen == {b"%06d" % i + bytes(i % 500) for i in range(n)}
                assert back == {b"B%05d" % i + bytes(i % 300) for i in range(n)}
                # one 100 MB bundle: in by MTCP at daemon 1, whole over TCPCLv4, out by MTCP at daemon 2
                now = dtn_time_from_unix(time.time())
                big = make_bundle(
                    source="ipn:9.1",
                    destination="ipn:3.1",
                    payload=big_payload,
                    creation_ms=now,
                    sequence=1,
                    lifetime_ms=3_600_000,
                )
                raw = encode_bundle(big)
                with trio.fail_after(600):
                    s = await trio.open_tcp_stream("127.0.0.1", ports["mtcp1"])
                    async with s:
                        await s.send_all(encode_mtcp_frame(raw))
                    await sink_done.wait()
                st1 = await cl1.status()
                st2 = await cl2.status()
            nursery.cancel_scope.cancel()
    finally:
        for p in procs:
            await stop(p)
    assert len(got_big) == 1  # never fragmented on stream links (issue 18)
    whole = reassemble([decode_bundle_untrusted(r) for r in got_big])
    assert whole.payload == big_payload
    assert whole.primary.source == big.primary.source
    c = st1["counters"]
    assert c["tcpcl_bundles_out"] >= n + 1
    assert st2["counters"]["tcpcl_bundles_in"] >= n + 1
    assert c["fragmented"] == 0  # TCPCLv4 carried the 100 MB bundle whole
    assert st2["counters"]["fragmented"] == 0  # nor the MTCP hop after it (issue 18)
    log1 = (tmp_path / "n1.log").read_text()
    assert ('"tls": true' in log1) is tls
