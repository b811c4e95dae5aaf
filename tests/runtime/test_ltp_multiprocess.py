"""Two ``dtn-node`` daemons speaking LTP through the link emulator with 5%
loss and 1 s one-way light time (real processes and sockets; slow; no timing
assertions)."""

from __future__ import annotations

import contextlib
import hashlib
import random
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.storage.plan_files import load_plan
from dcis.tools.emulator import Emulator, LinkModel
from tests.runtime.conftest import free_udp_ports, write_plan

pytestmark = pytest.mark.slow

_REPO = Path(__file__).resolve().parents[2]
RATE = 25_000_000  # bytes/s, both directions


@contextlib.asynccontextmanager
async def ltp_pair(tmp: Path, *, aggregate: bool) -> AsyncIterator[tuple[str, str]]:
    """Nodes 1 and 2 joined by LTP through the emulator; yields app sockets."""
    plan = write_plan(
        tmp / "plan.ionrc",
        [
            f"a contact +0 +100000 1 2 {RATE}",
            f"a contact +0 +100000 2 1 {RATE}",
            "a range +0 +100000 1 2 1",
        ],
    )
    epoch = time.time()
    ports = free_udp_ports(2)
    addrs = {1: ("127.0.0.1", ports[0]), 2: ("127.0.0.1", ports[1])}
    emu = Emulator(
        LinkModel(load_plan(str(plan)), loss=0.05, rng=random.Random(16)),
        addrs,
        epoch,
        plan_poll_s=0,
    )
    relay = emu.bind()
    sockets = {}
    for me, other in ((1, 2), (2, 1)):
        h, p = relay[(me, other)]
        sockets[me] = str(tmp / f"n{me}.sock")
        (tmp / f"n{me}.toml").write_text(
            "\n".join(
                [
                    f"node = {me}",
                    f'listen = "127.0.0.1:{ports[me - 1]}"',
                    f'app_socket = "{sockets[me]}"',
                    f'plan = "{plan}"',
                    f"plan_epoch_unix_s = {epoch}",
                    "[store]",
                    f'path = "{tmp / f"n{me}.db"}"',
                    'synchronous = "NORMAL"',
                    "[limits]",  # a 100 MB bundle through the app API
                    "app_max_message_bytes = 134217728",
                    "max_buffered_bytes = 268435456",
                    "[ltp]",
                    f"engine_id = {me + 10}",
                    "margin_ms = 1000",
                    "max_retries = 20",
                    "[[neighbours]]",
                    f"node = {other}",
                    f'address = "{h}:{p}"',
                    'cla = "ltp"',
                    f"engine_id = {other + 10}",
                    "ltp_mtu_bytes = 60000",
                    f"ltp_aggregate = {'true' if aggregate else 'false'}",
                ]
            )
            + "\n",
            encoding="utf-8",
        )
    procs = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(emu.serve)
            for me in (1, 2):
                log = (tmp / f"n{me}.log").open("ab")
                procs.append(
                    await trio.lowlevel.open_process(
                        [
                            sys.executable,
                            "-m",
                            "dcis.tools.dtn_node",
                            "--config",
                            str(tmp / f"n{me}.toml"),
                        ],
                        stdout=log,
                        stderr=log,
                        cwd=_REPO,
                    )
                )
                log.close()
            for me in (1, 2):
                with trio.fail_after(30):
                    while True:
                        try:
                            async with open_trio_client(sockets[me]) as c:
                                await c.ping()
                            break
                        except ClientError:
                            await trio.sleep(0.05)
            yield sockets[1], sockets[2]
            nursery.cancel_scope.cancel()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            with trio.move_on_after(10) as scope:
                scope.shield = True
                await proc.wait()
            if proc.poll() is None:
                proc.kill()
        emu.close()


async def wait_until_store_empty(client: Any, timeout_s: float) -> None:
    """Poll the sender's status until its store is empty: bundles leave it
    only once the next hop acknowledged their block's red part."""
    for _ in range(int(timeout_s / 0.2)):
        if not (await client.status())["stored"]:
            return
        await trio.sleep(0.2)
    raise AssertionError("bundles still stored at the sender")


async def test_a_100_mb_bundle_arrives_intact(tmp_path: Path) -> None:
    payload = random.Random(1).randbytes(100 * 1000 * 1000)
    digest = hashlib.sha256(payload).hexdigest()
    async with (
        ltp_pair(tmp_path, aggregate=False) as (s1, s2),
        open_trio_client(s2) as rx,
        open_trio_client(s1) as tx,
    ):
        await rx.register("ipn:2.5")
        with trio.fail_after(600):
            await tx.send("ipn:2.5", payload, source="ipn:1.1")
            del payload
            got = await rx.receive()
        assert len(got.payload) == 100 * 1000 * 1000
        assert hashlib.sha256(got.payload).hexdigest() == digest
        await wait_until_store_empty(tx, 120)


async def test_a_stream_of_1000_bundles_of_64_kb_arrives_exactly_once(
    tmp_path: Path,
) -> None:
    n = 1000
    async with (
        ltp_pair(tmp_path, aggregate=True) as (s1, s2),
        open_trio_client(s2) as rx,
        open_trio_client(s1) as tx,
    ):
        await rx.register("ipn:2.5")
        seen: list[int] = []
        with trio.fail_after(600):
            for i in range(n):
                await tx.send(
                    "ipn:2.5", i.to_bytes(4, "big") * 16_000, source="ipn:1.1"
                )
            while len(seen) < n:
                got = await rx.receive()
                i = int.from_bytes(got.payload[:4], "big")
                assert got.payload == i.to_bytes(4, "big") * 16_000
                seen.append(i)
        assert sorted(seen) == list(range(n))
        # Nothing more comes: every bundle arrived exactly once.
        with trio.move_on_after(3):
            extra = await rx.receive()
            pytest.fail(f"bundle {extra.payload[:4].hex()} delivered twice")
        await wait_until_store_empty(tx, 120)
