"""The link emulator: its decisions (LinkModel) and the relay on real sockets."""

from __future__ import annotations

import random
import socket
import time

import pytest
import trio

from dtn.routing.contact import Contact, Range
from dtn.routing.plan import ContactPlan
from tests.runtime.conftest import poll_until
from tools.emulator import Emulator, LinkModel


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
