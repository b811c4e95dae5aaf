"""A contact plan edited while the node runs: contacts added and removed."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from pathlib import Path

import trio
import trio.testing

from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.runtime import open_node
from tests.fakes.fakenet import FakeNet
from tests.runtime.conftest import poll_until, write_plan
from tests.runtime.test_embedded import chain

REPO = Path(__file__).resolve().parents[2]


def _in_contact(node: object) -> bool:
    return bool(node.status()["neighbours"]["2"]["in_contact"])  # type: ignore[attr-defined]


async def test_an_edited_plan_opens_and_closes_contacts_while_running(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNet()
    c1, c2 = chain(tmp_path, 2, net)
    plan = write_plan(
        tmp_path / "p.ionrc",
        ["a contact +1000 +2000 1 2 1000000", "a contact +1000 +2000 2 1 1000000"],
    )
    c1 = dataclasses.replace(c1, plan=str(plan))
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
    ):
        await n1.send("ipn:2.5", b"wait for the contact", source="ipn:1.1")
        assert not _in_contact(n1)
        assert n1.status()["stored"] == 1
        # Edited in place: the node notices the new modification time.
        write_plan(
            plan,
            ["a contact +0 +2000 1 2 1000000", "a contact +0 +2000 2 1 1000000"],
        )
        os.utime(plan, ns=(1, 1))  # a changed stamp even on a coarse clock
        await poll_until(lambda: _in_contact(n1), timeout_s=30)
        await poll_until(lambda: n2.status()["stored"] == 1, timeout_s=30)
        await poll_until(lambda: n1.status()["stored"] == 0, timeout_s=30)
        # The contact removed again: it closes now.
        write_plan(plan, ["a contact +1000 +2000 1 2 1000000"])
        assert n1.reload_plan()
        assert not _in_contact(n1)
        # A broken file leaves the running plan alone.
        plan.write_text("a contact banana\n", encoding="utf-8")
        assert not n1.reload_plan()
        assert len(n1.plan.contacts) == 1


async def test_a_same_size_plan_renamed_into_place_is_reloaded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Same size and the same modification time as the file it replaces:
    # only the new inode tells the watcher.
    net = FakeNet()
    c1, c2 = chain(tmp_path, 2, net)
    plan = write_plan(tmp_path / "p.ionrc", ["a contact +1000 +2000 1 2 1000000"])
    c1 = dataclasses.replace(c1, plan=str(plan))
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket),
    ):
        assert not _in_contact(n1)
        st = plan.stat()
        new = write_plan(
            tmp_path / "p.ionrc.new", ["a contact +0000 +2000 1 2 1000000"]
        )
        os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert new.stat().st_size == st.st_size
        os.replace(new, plan)
        await poll_until(lambda: _in_contact(n1), timeout_s=30)


async def test_sighup_reloads_the_plan_of_a_daemon(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.ionrc", ["a contact +1000 +2000 1 2 1000000"])
    sock = tmp_path / "n1.sock"
    cfg = tmp_path / "n1.toml"
    cfg.write_text(
        f'node = 1\nlisten = "127.0.0.1:0"\napp_socket = "{sock}"\nplan = "{plan}"\n'
        '[[neighbours]]\nnode = 2\naddress = "127.0.0.1:9"\n',
        encoding="utf-8",
    )
    log = tmp_path / "n1.log"
    with log.open("wb") as err:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "dcis.tools.dtn_node", "--config", str(cfg)],
            cwd=REPO,
            stderr=err,
        )
    try:
        # Listening, not merely bound: the socket file appears at bind(), a
        # moment before listen(); a connect in between is refused.
        with trio.fail_after(30):
            while True:
                try:
                    async with open_trio_client(str(sock)) as c:
                        await c.ping()
                    break
                except ClientError:
                    await trio.sleep(0.05)

        async def in_contact() -> bool:
            async with open_trio_client(str(sock)) as c:
                return bool((await c.status())["neighbours"]["2"]["in_contact"])

        assert not await in_contact()
        # Same size and a stamp the watcher has not seen: only SIGHUP tells.
        st = plan.stat()
        write_plan(plan, ["a contact +0000 +2000 1 2 1000000"])
        os.utime(plan, ns=(st.st_atime_ns, st.st_mtime_ns))
        proc.send_signal(signal.SIGHUP)
        for _ in range(600):  # >= 30 s
            if await in_contact():
                break
            await trio.sleep(0.05)
        assert await in_contact()
    finally:
        proc.terminate()
        with trio.fail_after(30):
            await proc.wait()
    assert proc.returncode == 0
    assert '"plan_reloaded"' in log.read_text()
