"""The link emulator: its decisions (LinkModel) and the relay on real sockets."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.storage.plan_files import load_plan
from dcis.tools.emulator import Emulator, LinkModel
from tests.runtime.conftest import poll_until


def plan() -> ContactPlan:
    p = ContactPlan()
    p.add_contact(Contact(frm=1, to=2, start_s=10.0, end_s=20.0, rate_bytes_s=1000.0))
    p.add_contact(Contact(frm=2, to=1, start_s=0.0, end_s=100.0, rate_bytes_s=0.0))
    p.add_range(Range(frm=1, to=2, start_s=0.0, end_s=100.0, owlt_s=1.5))
    return p


def test_forwards_only_inside_the_window_with_light_time() -> None:
    m = LinkModel(plan())
    assert m.decide(1, 2, 100, at_s=9.99) is None
    assert m.decide(1, 2, 100, at_s=10.0) == pytest.approx(1.5)
    assert m.decide(1, 2, 100, at_s=20.0) is None
    assert m.decide(3, 1, 100, at_s=15.0) is None  # no such link
    assert m.stats[(1, 2)].dropped_down == 2
    assert m.stats[(1, 2)].forwarded == 1


def test_rate_cap_drops_what_exceeds_the_contact_rate() -> None:
    m = LinkModel(plan())
    # Bucket of max(rate, 64 KiB) bytes, refilled at 1,000 B/s.
    sent = sum(m.decide(1, 2, 1000, at_s=10.0) is not None for _ in range(100))
    assert sent == 65
    assert m.stats[(1, 2)].dropped_rate == 35
    assert (
        m.decide(1, 2, 1000, at_s=11.0) is not None
    )  # one second later: 1,000 more bytes
    assert m.decide(1, 2, 1000, at_s=11.0) is None


def test_loss_is_seeded_and_close_to_p() -> None:
    a = LinkModel(plan(), loss=0.3, rng=random.Random(7))
    b = LinkModel(plan(), loss=0.3, rng=random.Random(7))
    ra = [a.decide(2, 1, 10, at_s=1.0) for _ in range(2000)]
    rb = [b.decide(2, 1, 10, at_s=1.0) for _ in range(2000)]
    assert ra == rb
    assert 0.25 < ra.count(None) / 2000 < 0.35


async def test_relay_forwards_from_the_reverse_port_and_delays_by_light_time() -> None:
    rx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await rx.bind(("127.0.0.1", 0))
    p = ContactPlan()
    p.add_contact(Contact(frm=1, to=2, start_s=0.0, end_s=100.0, rate_bytes_s=0.0))
    p.add_contact(Contact(frm=2, to=1, start_s=50.0, end_s=100.0, rate_bytes_s=0.0))
    p.add_range(Range(frm=1, to=2, start_s=0.0, end_s=100.0, owlt_s=0.3))
    emu = Emulator(
        LinkModel(p), {2: rx.getsockname(), 1: ("127.0.0.1", 9)}, time.time()
    )
    ports = emu.bind()
    tx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(emu.serve)
        t0 = trio.current_time()
        await tx.sendto(b"hello", ports[(1, 2)])
        with trio.fail_after(30):
            data, src = await rx.recvfrom(100)
        assert data == b"hello"
        assert trio.current_time() - t0 >= 0.29
        # Sent from the port node 2 uses for node 1, so 2 knows who it is.
        assert src[:2] == ports[(2, 1)]
        # The reverse link is down until t=50: a reply is dropped.
        await rx.sendto(b"reply", ports[(2, 1)])
        await poll_until(lambda: emu.model.stats[(2, 1)].dropped_down > 0, timeout_s=30)
        assert emu.model.stats[(2, 1)].dropped_down == 1
        nursery.cancel_scope.cancel()
    emu.close()
    rx.close()
    tx.close()


def test_replace_plan_keeps_the_bucket_of_an_unchanged_contact() -> None:
    m = LinkModel(plan())
    sent = sum(m.decide(1, 2, 1000, at_s=10.0) is not None for _ in range(100))
    assert sent == 65  # bucket empty
    m.replace_plan(plan())  # equal contacts: the same bucket, still empty
    assert m.decide(1, 2, 1000, at_s=10.0) is None
    p = plan()
    p.add_contact(Contact(frm=1, to=3, start_s=0.0, end_s=5.0, rate_bytes_s=0.0))
    m.replace_plan(p)
    assert m.decide(1, 3, 10, at_s=1.0) == 0.0
    assert m.links == [(1, 2), (1, 3), (2, 1)]
    assert m.stats[(1, 2)].dropped_rate == 36  # statistics carry on


async def _relay_until_received(
    tx: trio.socket.SocketType,
    rx: trio.socket.SocketType,
    to: tuple[str, int],
    *,
    timeout_s: float,
) -> bytes:
    """Send a datagram to ``to`` every 0.1 s until ``rx`` gets one (bounded)."""
    with trio.fail_after(timeout_s):
        for i in range(int(timeout_s / 0.1) + 1):
            await tx.sendto(b"ping %d" % i, to)
            with trio.move_on_after(0.1):
                data, _ = await rx.recvfrom(100)
                return data
    raise AssertionError("nothing relayed")


def _udp() -> trio.socket.SocketType:
    return trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@contextlib.asynccontextmanager
async def _watching(path: Path, **kw: Any) -> AsyncIterator[Any]:
    """An emulator serving link 1 -> 2 (to a local receiver), watching
    ``path``; yields (emulator, its port for 1 -> 2, tx, rx, log lines)."""
    rx, tx = _udp(), _udp()
    await rx.bind(("127.0.0.1", 0))
    lines: list[str] = []
    emu = Emulator(
        LinkModel(load_plan(path)),
        {2: rx.getsockname(), 1: ("127.0.0.1", 9)},
        time.time(),
        plan_path=str(path),
        log=lines.append,
        **kw,
    )
    ports = emu.bind()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(emu.serve)
            yield emu, ports[(1, 2)], tx, rx, lines
            nursery.cancel_scope.cancel()
    finally:
        emu.close()
        rx.close()
        tx.close()


async def test_an_edited_plan_file_opens_a_link_that_was_down(tmp_path: Path) -> None:
    # The daemons reload an edited plan; the emulator must too, or it keeps
    # enforcing the old windows while the daemons route by the new ones.
    path = tmp_path / "plan.ionrc"
    path.write_text("a contact +3600 +7200 1 2 100000\n")
    async with _watching(path) as (emu, port, tx, rx, lines):
        for _ in range(5):
            await tx.sendto(b"early", port)
        await poll_until(
            lambda: emu.model.stats[(1, 2)].dropped_down == 5, timeout_s=10
        )
        t0 = trio.current_time()
        path.write_text("a contact +0 +7200 1 2 100000\n")  # up now
        data = await _relay_until_received(tx, rx, port, timeout_s=10)
        assert data.startswith(b"ping")
        assert trio.current_time() - t0 < 5  # polled every second
        assert emu.reloads == 1
        assert emu.reload_failures == 0
        assert "plan reloaded" in lines[0]
        assert "1 added, 1 removed" in lines[0]


async def test_a_bad_plan_edit_keeps_the_running_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.ionrc"
    path.write_text("a contact +0 +7200 1 2 100000\n")
    async with _watching(path, plan_poll_s=0.2) as (emu, port, tx, rx, lines):
        await _relay_until_received(tx, rx, port, timeout_s=10)
        # Line 2 is wrong; were it applied, the link would be down (line 1).
        path.write_text("a contact +3600 +7200 1 2 100000\na contact +0 +9 1 2 fast\n")
        await poll_until(lambda: emu.reload_failures == 1, timeout_s=10)
        assert len(lines) == 1, lines
        assert f"{path}:2:" in lines[0]
        assert "running plan stays" in lines[0]
        await _relay_until_received(tx, rx, port, timeout_s=10)
        assert emu.reloads == 0
        assert emu.model.stats[(1, 2)].dropped_down == 0


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP")
def test_standalone_emulator_reloads_on_sighup(tmp_path: Path) -> None:
    path = tmp_path / "plan.ionrc"
    path.write_text("a contact +3600 +7200 1 2 100000\n")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.1)
    cmd = [sys.executable, "-m", "dcis.tools.emulator", "--plan", str(path)]
    cmd += ["--node", f"2=127.0.0.1:{rx.getsockname()[1]}", "--node", "1=127.0.0.1:9"]
    cmd += ["--plan-poll", "0", "--duration", "60"]  # SIGHUP only
    proc = subprocess.Popen(
        cmd,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # "node A reaches node B at HOST:PORT", printed once SIGHUP is handled.
        to12: tuple[str, int] | None = None
        for _ in range(2):
            words = proc.stdout.readline().split()
            host, _, port = words[-1].rpartition(":")
            if words[1:5:3] == ["1", "2"]:
                to12 = (host, int(port))
        assert to12 is not None
        tx.sendto(b"early", to12)
        with pytest.raises(TimeoutError):
            rx.recvfrom(100)  # the link is down
        path.write_text("a contact +0 +7200 1 2 100000\n")
        proc.send_signal(signal.SIGHUP)
        got = None
        deadline = time.monotonic() + 10
        for i in range(100):
            tx.sendto(b"ping %d" % i, to12)
            try:
                got, _ = rx.recvfrom(100)
                break
            except TimeoutError:
                assert time.monotonic() < deadline
        assert got is not None
        assert got.startswith(b"ping")
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
        rx.close()
        tx.close()
    assert "plan reloaded" in err, err
