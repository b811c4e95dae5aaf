"""UdpLink sending a bundle over the MTU whole, in PART segments (ack ``on``
peers, chunks of at least ``MIN_PART_CHUNK_BYTES``): one token for the
transfer, carried by the last datagram of each burst; a timeout resends the
last part only (a probe); a NEED resends the parts it names and the last
one, starts the tries over, and spends the transfer's budget of
``NEED_RESENDS_PER_PART`` resends per part -- then NEEDs are stale."""

from __future__ import annotations

import random
import sys
from types import FrameType

import pytest

from dcis.dtn.cl.udp import (
    MAX_NEED_RANGES,
    MIN_PART_CHUNK_BYTES,
    NEED_RESENDS_PER_PART,
    PART_OVERHEAD_BYTES,
    AckMode,
    LinkOutput,
    PartSegment,
    SendDatagram,
    TxDone,
    TxState,
    UdpLink,
    decode_datagram_untrusted,
    mac_ok,
    part_mac,
)
from dcis.dtn.cl.udp_parts import PartAssembler
from tests.unit.cl.udp_bundles import bundle_parts

MTU = MIN_PART_CHUNK_BYTES + PART_OVERHEAD_BYTES  # the smallest that sends PARTs
CHUNK = MTU - PART_OVERHEAD_BYTES  # 512 bytes of bundle per PART
KEY = bytes(range(32))
BIG = b"\x9f" + random.Random(1).randbytes(5 * CHUNK - 1)  # exactly five parts


def _link(**kw: object) -> UdpLink:
    args: dict[str, object] = {
        "ack_timeout_s": 1.0,
        "max_tries": 3,
        "mtu_bytes": MTU,
        "max_transfer_bytes": 10_000,
        "rng": random.Random(5),
        **kw,
    }
    return UdpLink(local_node=1, neighbor=2, **args)  # type: ignore[arg-type]


def _parts(outs: list[LinkOutput]) -> list[PartSegment]:
    segs = []
    for o in outs:
        assert isinstance(o, SendDatagram)
        assert o.size <= MTU
        seg = decode_datagram_untrusted(b"".join(o.data))
        assert isinstance(seg, PartSegment)
        segs.append(seg)
    return segs


def _start(link: UdpLink, bundle: bytes = BIG) -> tuple[int, list[SendDatagram]]:
    """Transmit ``bundle`` as tx 7: its token and its datagrams."""
    outs = link.transmit(7, bundle, now_s=0.0)
    sends = [o for o in outs if isinstance(o, SendDatagram)]
    assert len(sends) == len(outs)
    token = sends[-1].token
    assert token is not None
    return token, sends


@pytest.mark.parametrize("key", [None, KEY])
def test_a_bundle_over_the_mtu_goes_in_parts_the_last_with_the_token(
    key: bytes | None,
) -> None:
    link = _link(mac_key=key)
    token, sends = _start(link)
    assert len(sends) == 5
    assert [s.token for s in sends] == [None] * 4 + [token]
    segs = _parts(list(sends))
    assert [(s.offset, s.end) for s in segs] == [
        (i * CHUNK, (i + 1) * CHUNK) for i in range(5)
    ]
    assert all((s.sender, s.token, s.total) == (1, token, len(BIG)) for s in segs)
    assert b"".join(bytes(s.chunk) for s in segs) == BIG
    if key is not None:
        for s in segs:
            want = part_mac(
                key,
                sender=1,
                receiver=2,
                token=token,
                offset=s.offset,
                total=s.total,
                chunk=s.chunk,
            )
            assert mac_ok(want, s.mac)
    assert link.in_flight == 1
    assert link.state_of(token) is TxState.AWAITING_ACK
    assert link.tx_id_of(token) == 7
    assert link.next_deadline() == pytest.approx(1.0)
    assert (link.counters.transfers, link.counters.sent_datagrams) == (1, 5)
    assert link.on_ack((token,), now_s=0.5) == [TxDone(7, True)]
    assert link.in_flight == 0
    assert link.counters.acked == 1


def test_a_bundle_in_buffers_goes_as_the_same_parts_as_in_bytes() -> None:
    buffers = bundle_parts(40_000)
    assert len(buffers) == 3
    a = _link(mac_key=KEY, max_transfer_bytes=10**6).transmit(1, buffers, 0.0)
    whole = b"".join(buffers)
    b_ = _link(mac_key=KEY, max_transfer_bytes=10**6).transmit(1, whole, 0.0)
    assert len(a) == len(b_) == -(-len(whole) // CHUNK)
    for x, y in zip(a, b_, strict=True):
        assert isinstance(x, SendDatagram)
        assert isinstance(y, SendDatagram)
        assert b"".join(x.data) == b"".join(y.data)
        assert x.token == y.token
    assert b"".join(bytes(s.chunk) for s in _parts(a)) == whole


def test_sizes_at_the_edges() -> None:
    link = _link(max_transfer_bytes=3 * CHUNK)
    # At the MTU: one DATA segment, as before.
    (out,) = link.transmit(1, b"\x9f" * MTU, 0.0)
    assert isinstance(out, SendDatagram)
    assert link.counters.transfers == 0
    # One byte over: two parts.
    assert len(link.transmit(2, b"\x9f" * (MTU + 1), 0.0)) == 2
    # At max_transfer_bytes: three full parts; one byte more is refused.
    assert len(link.transmit(3, b"\x9f" * (3 * CHUNK), 0.0)) == 3
    (refused,) = link.transmit(4, b"\x9f" * (3 * CHUNK + 1), 0.0)
    assert isinstance(refused, TxDone)
    assert not refused.ok
    assert "exceeds" in refused.reason
    assert link.counters.transfers == 2
    assert link.counters.too_big == 1


@pytest.mark.parametrize(
    ("mode", "max_transfer"),
    [
        (AckMode.AUTO, 10_000),
        (AckMode.OFF, 10_000),
        (AckMode.NONE, 10_000),
        (AckMode.ON, 0),
        (AckMode.ON, len(BIG) - 1),
    ],
)
def test_over_the_mtu_is_refused_unless_on_and_within_max_transfer(
    mode: AckMode, max_transfer: int
) -> None:
    link = _link(ack_mode=mode, max_transfer_bytes=max_transfer)
    assert link.transmit(3, BIG, 0.0) == [
        TxDone(3, False, f"bundle of {len(BIG)} bytes exceeds the {MTU}-byte MTU")
    ]
    assert link.counters.too_big == 1
    assert link.in_flight == 0


@pytest.mark.parametrize("mtu", [64, MTU - 1])
def test_chunks_under_the_minimum_are_refused_not_sent(mtu: int) -> None:
    # The agent fragments instead: a receiver refuses smaller parts.
    link = _link(mtu_bytes=mtu)
    assert link.transmit(3, BIG, 0.0) == [
        TxDone(3, False, f"bundle of {len(BIG)} bytes exceeds the {mtu}-byte MTU")
    ]
    assert (link.counters.too_big, link.counters.transfers) == (1, 0)
    assert link.in_flight == 0


@pytest.mark.parametrize("reachable", [True, False])
def test_give_up_after_is_every_tries_timeout_while_unreachable(
    reachable: bool,
) -> None:
    # Base 2 s (light time 0.5 s each way); unreachable: x4 -> 8, 16, 32
    # capped at 20; plus the light time there and back.
    link = _link(owlt_s=0.5, max_rto_s=20.0)
    link.reachable = reachable
    assert link.give_up_after_s() == pytest.approx(8.0 + 16.0 + 20.0 + 1.0)
    # What the link does while unreachable: it fails that long after.
    link.reachable = False
    _start(link)
    now = 0.0
    while link.in_flight:
        d = link.next_deadline()
        assert d is not None
        now = d
        link.on_timer(now)
    assert now + 2 * link.owlt_s == pytest.approx(link.give_up_after_s())


def test_a_timeout_resends_the_last_part_only_and_counts_a_try() -> None:
    link = _link()
    _, sends = _start(link)
    last = sends[-1]
    assert link.on_timer(0.99) == []
    assert link.on_timer(1.0) == [last]  # a probe: same datagram, same token
    assert link.next_deadline() == pytest.approx(3.0)
    assert link.on_timer(3.0) == [last]
    assert link.next_deadline() == pytest.approx(7.0)
    assert link.on_timer(7.0) == [TxDone(7, False, "no ACK after 3 tries")]
    assert link.counters.retransmits == 2
    assert link.counters.timeouts == 1
    assert link.counters.sent_datagrams == 7
    assert link.in_flight == 0


@pytest.mark.parametrize(
    ("ranges", "want"),
    [
        (((0, 1),), [0, 4]),  # and the last part, which draws the next NEED
        (((CHUNK - 1, CHUNK + 1),), [0, 1, 4]),
        (((CHUNK, 2 * CHUNK),), [1, 4]),  # half-open: neither 0 nor 2
        (((0, 1), (3 * CHUNK, 3 * CHUNK + 1)), [0, 3, 4]),
        (((2 * CHUNK + 5, 2 * CHUNK + 6), (2 * CHUNK + 7, 10**6)), [2, 3, 4]),
        (((0, len(BIG)),), [0, 1, 2, 3, 4]),
        (((len(BIG) - 1, len(BIG)),), [4]),
    ],
)
def test_a_need_resends_exactly_the_parts_it_names_and_the_last(
    ranges: tuple[tuple[int, int], ...], want: list[int]
) -> None:
    link = _link()
    token, sends = _start(link)
    outs = link.on_need(token, ranges, now_s=0.5)
    assert [o.data for o in outs if isinstance(o, SendDatagram)] == [
        sends[i].data for i in want
    ]
    # The last one carries the token (for hold/on_sent), the others none.
    assert [o.token for o in outs if isinstance(o, SendDatagram)] == [None] * (
        len(want) - 1
    ) + [token]
    assert len(outs) == len(want)
    assert link.next_deadline() == pytest.approx(1.5)  # restarted, not doubled
    assert (link.counters.needs, link.counters.parts_resent) == (1, len(want))
    assert link.counters.retransmits == 0
    assert link.state_of(token) is TxState.AWAITING_ACK


def test_needs_are_served_within_a_budget_of_resent_parts_then_stale() -> None:
    link = _link()
    token, sends = _start(link)
    budget = NEED_RESENDS_PER_PART * 5
    everything = ((0, len(BIG)),)
    # More rounds than 2 * max_tries: the budget counts parts, not rounds.
    now = 0.0
    for _ in range(6):
        now += 0.5
        assert len(link.on_need(token, ((0, 1),), now)) == 2  # part 0 and 4
    budget -= 12
    assert budget == 3
    # A round over the budget is cut, the last part kept.
    now += 0.5
    outs = link.on_need(token, everything, now)
    assert [o.data for o in outs if isinstance(o, SendDatagram)] == [
        sends[i].data for i in (0, 1, 4)
    ]
    assert link.next_deadline() == pytest.approx(now + 1.0)
    assert (link.counters.needs, link.counters.parts_resent) == (7, 15)
    # Spent: a NEED sends nothing and leaves the timer as it was.
    assert link.on_need(token, everything, now + 0.5) == []
    assert link.on_need(token, ((0, 1),), now + 0.5) == []
    assert link.counters.stale_needs == 2
    assert link.next_deadline() == pytest.approx(now + 1.0)
    # The timeouts go on: the tries resend twice, then fail.
    now += 1.0
    assert link.on_timer(now) == [sends[-1]]
    now += 2.0
    assert link.on_timer(now) == [sends[-1]]
    now += 4.0
    assert link.on_timer(now) == [TxDone(7, False, "no ACK after 3 tries")]


def test_a_round_cut_to_one_part_sends_the_last() -> None:
    link = _link()
    token, sends = _start(link)
    for _ in range(7):  # 14 of the 15 parts of the budget
        link.on_need(token, ((0, 1),), 0.5)
    assert link.on_need(token, ((0, 1),), 0.5) == [SendDatagram(sends[-1].data, token)]
    assert link.on_need(token, ((0, 1),), 0.5) == []


def test_a_served_need_starts_the_tries_over() -> None:
    link = _link()
    token, sends = _start(link)
    assert link.on_timer(1.0) == [sends[-1]]
    assert link.on_timer(3.0) == [sends[-1]]  # try 3 of 3: next timeout fails
    link.on_need(token, ((0, 1),), now_s=3.5)
    assert link.next_deadline() == pytest.approx(4.5)  # try 1's timeout
    # Three tries again before it fails.
    assert link.on_timer(4.5) == [sends[-1]]
    assert link.next_deadline() == pytest.approx(6.5)
    assert link.on_timer(6.5) == [sends[-1]]
    assert link.on_timer(10.5) == [TxDone(7, False, "no ACK after 3 tries")]


def test_a_need_naming_no_part_of_the_transfer_is_stale() -> None:
    link = _link()
    token, _ = _start(link)
    assert link.on_need(token, ((len(BIG), len(BIG) + 100),), now_s=0.5) == []
    assert link.counters.stale_needs == 1
    assert link.counters.needs == 0
    assert link.next_deadline() == pytest.approx(1.0)  # not restarted
    # It spent none of the budget: three whole rounds are still served.
    for _ in range(3):
        assert len(link.on_need(token, ((0, len(BIG)),), now_s=0.6)) == 5
    assert link.on_need(token, ((0, 1),), now_s=0.6) == []


def test_a_need_past_a_short_last_part_is_stale() -> None:
    # The last part is half a chunk: bytes past ``total`` but within its
    # chunk-sized slot are no byte of the transfer either.
    link = _link()
    short = BIG[: 4 * CHUNK + CHUNK // 2]
    token, _ = _start(link, short)
    past = ((len(short), 5 * CHUNK), (5 * CHUNK + 1, 5 * CHUNK + 2))
    assert link.on_need(token, past, now_s=0.5) == []
    assert link.counters.stale_needs == 1


def _profiled_events(call: object) -> int:
    """Python and C calls (and returns) made running ``call()``."""
    events = 0

    def count(_frame: FrameType, _event: str, _arg: object) -> None:
        nonlocal events
        events += 1

    sys.setprofile(count)
    try:
        call()  # type: ignore[operator]
    finally:
        sys.setprofile(None)
    return events


def test_a_need_costs_its_ranges_not_the_parts_times_the_ranges() -> None:
    n = 4000
    link = _link(max_transfer_bytes=n * CHUNK)
    token, _ = _start(link, b"\x9f" * (n * CHUNK))
    stale = tuple((n * CHUNK + 2 * i, n * CHUNK + 2 * i + 1) for i in range(64))
    cost = _profiled_events(lambda: link.on_need(token, stale, 0.5))
    assert link.counters.stale_needs == 1
    assert cost < 10 * MAX_NEED_RANGES, cost  # scanning the parts: ~10**4
    # Served: the ranges and the parts resent.
    some = tuple((i * CHUNK, i * CHUNK + 1) for i in range(0, 128, 2))
    cost = _profiled_events(lambda: link.on_need(token, some, 0.5))
    assert link.counters.parts_resent == 65
    assert cost < 30 * 65, cost  # about 9 a part sent; scanning: > 2 * n


def test_a_first_burst_losing_many_parts_completes_without_further_loss() -> None:
    # (Review A.) Each NEED lists at most MAX_NEED_RANGES gaps, and the
    # receiver answers only a part ending at ``total``: a round must resend
    # the last part, or the next gaps wait for a timeout's probe, one try
    # each, and the transfer fails with nothing lost after its first burst.
    max_tries = 2
    gaps = MAX_NEED_RANGES * max_tries + 1  # 129 single-part gaps
    nparts = 2 * gaps + 1  # parts 1, 3, ..., 2*gaps-1 lost; the last arrives
    big = b"\x9f" + random.Random(3).randbytes(nparts * CHUNK - 1)
    link = _link(max_tries=max_tries, max_transfer_bytes=len(big))
    rx = PartAssembler(
        max_transfer_bytes=len(big), max_partial_bytes=len(big), idle_timeout_s=60
    )
    done: list[TxDone] = []
    got: list[bytes] = []

    def feed(outs: list[LinkOutput], now: float, first_burst: bool) -> None:
        todo = list(outs)
        index = 0
        while todo:
            o = todo.pop(0)
            if isinstance(o, TxDone):
                done.append(o)
                continue
            assert isinstance(o, SendDatagram)
            if first_burst and index % 2 and index < nparts - 1:
                index += 1
                continue  # lost in the first burst only
            index += 1
            seg = decode_datagram_untrusted(b"".join(o.data))
            assert isinstance(seg, PartSegment)
            r = rx.on_part(seg, now)
            if r.whole is not None:
                got.append(bytes(r.whole))
                todo += link.on_ack((seg.token,), now)
            elif r.need:
                todo += link.on_need(seg.token, r.need, now)

    feed(link.transmit(7, big, 0.0), 0.0, first_burst=True)
    while not done:
        now = link.next_deadline()
        assert now is not None
        feed(link.on_timer(now), now, first_burst=False)
    assert got == [big]
    assert done == [TxDone(7, True)]
    assert link.counters.retransmits == 0  # NEED rounds only, no probe


def test_a_need_for_an_unknown_token_or_a_data_segment_changes_nothing() -> None:
    link = _link()
    token, _ = _start(link)
    (small,) = link.transmit(8, b"\x9f" * 50, 0.0)  # one DATA segment
    assert isinstance(small, SendDatagram)
    assert small.token is not None
    deadline = link.next_deadline()
    assert link.on_need(token ^ 1, ((0, 10),), now_s=0.5) == []
    assert link.on_need(small.token, ((0, 10),), now_s=0.5) == []
    assert link.counters.stale_needs == 2
    assert link.counters.needs == 0
    assert link.next_deadline() == deadline
    assert link.in_flight == 2
    # Nor for a transfer that has finished.
    link.on_ack((token,), now_s=0.6)
    assert link.on_need(token, ((0, 10),), now_s=0.7) == []
    assert link.counters.stale_needs == 3


def test_a_held_transfer_waits_for_its_last_part_to_leave() -> None:
    link = _link()
    token, sends = _start(link)
    link.hold(token)  # the driver queued the last part (pacing)
    assert link.state_of(token) is TxState.QUEUED
    assert link.next_deadline() is None
    assert link.on_timer(100.0) == []
    # A NEED while queued: the parts on their way may be what it misses.
    assert link.on_need(token, ((0, 1),), now_s=100.0) == []
    assert link.state_of(token) is TxState.QUEUED
    link.on_sent(token, now_s=100.0)
    assert link.next_deadline() == pytest.approx(101.0)
    assert link.on_timer(101.0) == [sends[-1]]
    # A NEED's burst is held and sent by the same token.
    first, again = link.on_need(token, ((0, 1),), now_s=101.5)
    assert isinstance(first, SendDatagram)
    assert first.token is None
    assert isinstance(again, SendDatagram)
    assert again.token == token
    link.hold(token)
    assert link.next_deadline() is None
    link.on_sent(token, now_s=110.0)
    assert link.next_deadline() == pytest.approx(111.0)  # tries over: rto 1 s


def test_close_fails_a_transfer_in_flight() -> None:
    link = _link()
    a, _ = _start(link)
    b = link.transmit(8, BIG, 0.0)[-1]
    assert isinstance(b, SendDatagram)
    assert b.token is not None
    link.hold(b.token)
    assert link.close() == [
        TxDone(7, False, "contact ended"),
        TxDone(8, False, "contact ended"),
    ]
    assert link.in_flight == 0
    assert link.on_need(a, ((0, 1),), now_s=1.0) == []


def test_a_transfer_past_the_codecs_limit_is_refused_not_raised() -> None:
    # max_transfer_bytes above what a PART can announce (2**32 - 1): a
    # bundle that big is refused as too big, like any other over the limit.
    link = _link(max_transfer_bytes=2**40)
    bundle = (memoryview(b"\x9f" + bytes(2**20 - 1)),) + (
        memoryview(bytes(2**20)),
    ) * 4095  # 4 GiB, one 1 MiB buffer repeated
    (out,) = link.transmit(1, bundle, 0.0)
    assert isinstance(out, TxDone)
    assert not out.ok
    assert link.counters.too_big == 1
