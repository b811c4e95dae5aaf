"""UDP CL framing and link state (spec/udpcl.md)."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.cl.udp import (
    DCIS_PREFIX,
    AckBatcher,
    AckMode,
    AckSegment,
    BareBundle,
    DataSegment,
    Pacer,
    PeerKind,
    PeerSwitched,
    Reachability,
    SendDatagram,
    TxDone,
    UdpLink,
    ack_mac,
    data_mac,
    decode_datagram_untrusted,
    encode_ack_segment,
    encode_data_segment,
    mac_ok,
)
from dcis.dtn.errors import DecodeError, InvalidArgument

BUNDLE = (
    b"\x9f\x89\x07\x00\x01\x82\x02\x82\x02\x01\xff"  # shape only: starts like a bundle
)


def test_bare_bundle_is_passed_through_unchanged() -> None:
    assert decode_datagram_untrusted(BUNDLE) == BareBundle(BUNDLE)


def test_data_segment_round_trip_and_prefix() -> None:
    raw = encode_data_segment(sender=7, token=2**40, bundle=BUNDLE)
    assert raw.startswith(DCIS_PREFIX)
    assert raw[0] != 0x9F
    assert decode_datagram_untrusted(raw) == DataSegment(
        sender=7, token=2**40, bundle=BUNDLE
    )


def test_ack_segment_round_trip() -> None:
    raw = encode_ack_segment(sender=3, tokens=[1, 2, 2**64 - 1])
    assert decode_datagram_untrusted(raw) == AckSegment(
        sender=3, tokens=(1, 2, 2**64 - 1)
    )


def test_encoders_reject_bad_integers() -> None:
    with pytest.raises(InvalidArgument):
        encode_data_segment(sender=-1, token=0, bundle=BUNDLE)
    with pytest.raises(InvalidArgument):
        encode_ack_segment(sender=1, tokens=list(range(600)))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"xyz",
        b"\x00" * 10,
        DCIS_PREFIX,  # tag with nothing after it
        DCIS_PREFIX + b"\x80",  # empty array
        DCIS_PREFIX + b"\x84\x00\x01\x02\x43abc",  # DATA not carrying a bundle
        DCIS_PREFIX + b"\x83\x01\x01\x81\x20",  # ACK with a negative token
        DCIS_PREFIX + b"\x82\x05\x01",  # unknown kind
        DCIS_PREFIX + b"\x84\xf5\x01\x02\x41\x9f",  # kind is a bool, not 0
    ],
)
def test_junk_raises_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_datagram_untrusted(raw)


@given(st.binary(max_size=200))
def test_hostile_bytes_give_a_datagram_or_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_datagram_untrusted(raw)


@given(st.binary(max_size=100))
def test_hostile_bytes_after_dcis_prefix(tail: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_datagram_untrusted(DCIS_PREFIX + tail)


def _link(**kw: object) -> UdpLink:
    args: dict[str, object] = {"ack_timeout_s": 1.0, "max_tries": 3, **kw}
    return UdpLink(local_node=1, neighbor=2, **args)  # type: ignore[arg-type]


def test_acked_transmission_completes_ok() -> None:
    link = _link()
    (out,) = link.transmit(10, BUNDLE, now_s=0.0)
    assert isinstance(out, SendDatagram)
    seg = decode_datagram_untrusted(out.data)
    assert isinstance(seg, DataSegment)
    assert seg.sender == 1
    assert link.in_flight == 1
    assert link.on_ack((seg.token,), now_s=0.1) == [TxDone(10, True)]
    assert link.in_flight == 0
    assert link.peer is PeerKind.DCIS
    # A duplicate ACK is counted, not reported twice.
    assert link.on_ack((seg.token,), now_s=0.2) == []
    assert link.counters.stale_acks == 1


def test_retransmits_with_exponential_backoff_then_fails() -> None:
    link = _link(ack_mode=AckMode.ON)
    (first,) = link.transmit(5, BUNDLE, now_s=0.0)
    assert link.next_deadline() == pytest.approx(1.0)
    assert link.on_timer(0.5) == []
    assert link.on_timer(1.0) == [first]  # same datagram, same token
    assert link.next_deadline() == pytest.approx(3.0)  # 1 + 2
    assert link.on_timer(2.0) == []
    assert link.on_timer(3.0) == [first]
    assert link.next_deadline() == pytest.approx(7.0)  # 3 + 4
    out = link.on_timer(7.0)
    assert len(out) == 1
    assert isinstance(out[0], TxDone)
    assert not out[0].ok
    assert link.next_deadline() is None
    assert link.counters.retransmits == 2


def test_on_reports_unreachable_and_backs_off_across_transmissions() -> None:
    link = _link(ack_mode=AckMode.ON, max_tries=1, unreachable_after=2)
    link.transmit(1, BUNDLE, now_s=0.0)
    assert [o for o in link.on_timer(1.0) if isinstance(o, Reachability)] == []
    link.transmit(2, BUNDLE, now_s=1.0)
    assert link.next_deadline() == pytest.approx(2.0)
    out = link.on_timer(2.0)
    assert Reachability(False, 2) in out
    assert not link.reachable
    assert not link.best_effort  # silence never means "legacy"
    (d,) = link.transmit(3, BUNDLE, now_s=3.0)
    assert link.next_deadline() == pytest.approx(7.0)  # unreachable: x4
    assert isinstance(d, SendDatagram)
    seg = decode_datagram_untrusted(d.data)
    assert isinstance(seg, DataSegment)
    assert link.on_ack((seg.token,), now_s=4.0) == [Reachability(True), TxDone(3, True)]
    assert link.reachable


def test_backoff_is_capped() -> None:
    link = _link(ack_mode=AckMode.ON, max_tries=40, max_rto_s=10.0)
    link.transmit(1, BUNDLE, now_s=0.0)
    t = 0.0
    for _ in range(20):
        d = link.next_deadline()
        assert d is not None
        assert d - t <= 10.0 + 1e-9
        t = d
        link.on_timer(t)


def test_tokens_are_unpredictable_not_counting() -> None:
    import random

    link = _link(rng=random.Random(7))
    tokens = []
    for i in range(50):
        (d,) = link.transmit(i, BUNDLE, now_s=0.0)
        seg = decode_datagram_untrusted(d.data)  # type: ignore[union-attr]
        assert isinstance(seg, DataSegment)
        tokens.append(seg.token)
    assert len(set(tokens)) == 50
    # No token is its predecessor plus a small step.
    assert all(not 0 < b - a < 2**32 for a, b in itertools.pairwise(tokens))


def test_a_forged_ack_for_an_unknown_token_completes_nothing() -> None:
    link = _link()
    (d,) = link.transmit(1, BUNDLE, now_s=0.0)
    seg = decode_datagram_untrusted(d.data)  # type: ignore[union-attr]
    assert isinstance(seg, DataSegment)
    assert link.on_ack((seg.token + 1,), now_s=0.1) == []
    assert link.in_flight == 1


def test_auto_switches_on_a_bare_bundle_but_never_counts_in_flight_as_delivered() -> (
    None
):
    link = _link(ack_mode=AckMode.AUTO)
    link.transmit(1, BUNDLE, now_s=0.0)
    out = link.on_heard_bare(now_s=0.1)
    assert out == [
        PeerSwitched(PeerKind.LEGACY, "bare bundle before any DCiS segment"),
        TxDone(1, False, "peer switched to best effort"),
    ]
    assert link.best_effort
    assert link.transmit(2, BUNDLE, now_s=0.2) == [
        SendDatagram(BUNDLE),
        TxDone(2, True, "best effort"),
    ]
    # A DCiS segment from it later switches it back.
    assert link.on_heard_dcis() == [
        PeerSwitched(PeerKind.DCIS, "DCiS segment received")
    ]
    assert not link.best_effort


def test_auto_never_falls_back_on_silence() -> None:
    link = _link(ack_mode=AckMode.AUTO)
    for i in range(5):
        link.transmit(i, BUNDLE, now_s=0.0)
    for t in range(1, 200):
        out = link.on_timer(float(t))
        assert all(not (isinstance(o, TxDone) and o.ok) for o in out)
    assert link.peer is PeerKind.UNKNOWN
    assert not link.best_effort


def test_on_is_the_default_and_ignores_bare_bundles() -> None:
    link = UdpLink(local_node=1, neighbor=2)
    assert link.ack_mode is AckMode.ON
    link.transmit(1, BUNDLE, now_s=0.0)
    assert link.on_heard_bare(now_s=0.1) == []
    assert link.in_flight == 1


@pytest.mark.parametrize("mode", [AckMode.NONE, AckMode.OFF])
def test_none_never_sends_a_dcis_segment(mode: AckMode) -> None:
    link = _link(ack_mode=mode)
    for i in range(5):
        out = link.transmit(i, BUNDLE, now_s=float(i))
        assert out == [SendDatagram(BUNDLE), TxDone(i, True, "best effort")]
    assert link.on_heard_bare(now_s=9.0) == []
    assert link.on_timer(100.0) == []


def test_mac_round_trip_and_forgery() -> None:
    key = bytes(range(32))
    link = _link(mac_key=key)
    (d,) = link.transmit(1, BUNDLE, now_s=0.0)
    seg = decode_datagram_untrusted(d.data)  # type: ignore[union-attr]
    assert isinstance(seg, DataSegment)
    want = data_mac(key, sender=1, receiver=2, token=seg.token, bundle=BUNDLE)
    assert mac_ok(want, seg.mac)
    assert not mac_ok(
        data_mac(bytes(32), sender=1, receiver=2, token=seg.token, bundle=BUNDLE),
        seg.mac,
    )
    assert not mac_ok(
        data_mac(key, sender=1, receiver=3, token=seg.token, bundle=BUNDLE), seg.mac
    )
    b = AckBatcher(local_node=2)
    b.add(1, seg.token)
    ((_, raw),) = b.flush(lambda n: key if n == 1 else None)
    ack = decode_datagram_untrusted(raw)
    assert isinstance(ack, AckSegment)
    assert mac_ok(ack_mac(key, sender=2, receiver=1, tokens=ack.tokens), ack.mac)
    assert not mac_ok(
        ack_mac(key, sender=2, receiver=1, tokens=(seg.token + 1,)), ack.mac
    )
    assert not mac_ok(want, None)


def test_sender_numbers_beyond_int64_are_refused_at_decode() -> None:
    raw = encode_data_segment(sender=2**63, token=1, bundle=BUNDLE)
    with pytest.raises(DecodeError):
        decode_datagram_untrusted(raw)
    raw = encode_ack_segment(sender=2**64 - 1, tokens=[1])
    with pytest.raises(DecodeError):
        decode_datagram_untrusted(raw)


def test_off_mode_is_best_effort() -> None:
    link = _link(ack_mode=AckMode.OFF)
    assert link.transmit(9, BUNDLE, now_s=0.0) == [
        SendDatagram(BUNDLE),
        TxDone(9, True, "best effort"),
    ]


def test_bundle_over_mtu_is_refused() -> None:
    link = _link(mtu_bytes=100)
    (out,) = link.transmit(1, b"\x9f" + b"\x00" * 200, now_s=0.0)
    assert isinstance(out, TxDone)
    assert not out.ok


def test_close_fails_everything_in_flight() -> None:
    link = _link()
    link.transmit(1, BUNDLE, now_s=0.0)
    link.transmit(2, BUNDLE, now_s=0.0)
    assert link.close() == [
        TxDone(1, False, "contact ended"),
        TxDone(2, False, "contact ended"),
    ]
    assert link.in_flight == 0


def test_ack_batcher_splits_large_batches() -> None:
    b = AckBatcher(local_node=4)
    for t in range(600):
        b.add(2, t)
    b.add(3, 99)
    out = b.flush()
    assert not b
    decoded = [(n, decode_datagram_untrusted(d)) for n, d in out]
    assert [n for n, _ in decoded] == [2, 2, 3]
    tokens = [
        t for _, seg in decoded[:2] if isinstance(seg, AckSegment) for t in seg.tokens
    ]
    assert tokens == list(range(600))


def test_pacer_holds_to_rate() -> None:
    p = Pacer(rate_bytes_s=1000.0, burst_bytes=1000.0)
    assert p.delay_s(1000, now_s=0.0) == 0.0  # the initial burst
    assert p.delay_s(500, now_s=0.0) == pytest.approx(0.5)
    assert p.delay_s(500, now_s=0.5) == 0.0
    sent, t = 0, 0.5
    while t < 10.5:
        d = p.delay_s(100, now_s=t)
        if d == 0.0:
            sent += 100
        else:
            t += d
    assert sent == pytest.approx(10_000, abs=200)


def test_unpaced_when_rate_unknown() -> None:
    assert Pacer(rate_bytes_s=0.0).delay_s(10**6, now_s=0.0) == 0.0
    assert Pacer(rate_bytes_s=float("inf")).delay_s(10**6, now_s=0.0) == 0.0


def test_time_in_the_drivers_queue_does_not_count_towards_the_ack_timeout() -> None:
    link = _link()
    (out,) = link.transmit(1, BUNDLE, now_s=0.0)
    assert isinstance(out, SendDatagram)
    assert out.token is not None
    link.hold(out.token)  # paced: still queued
    assert link.next_deadline() is None
    assert link.on_timer(5.0) == []
    link.on_sent(out.token, now_s=5.0)
    assert link.next_deadline() == pytest.approx(6.0)
    assert link.on_timer(5.9) == []
    assert link.on_timer(6.0) == [out]
