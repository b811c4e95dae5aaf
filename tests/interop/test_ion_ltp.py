"""LTP segments recorded from a live ION node (ION 4.1.3, ltpcli/ltpclo over
udplsi/udplso), replayed through our LTP convergence layer.

tests/vectors/ion_ltp_segments.hex holds every segment of two runs between
ION engine 1 (node 1) and our dtn-node, engine 2 (node 2), both directions.
What we must do with them:

- decode every segment exactly and re-encode it byte for byte;
- as receiver (ION's blocks): cut each block into its bundles -- one per
  block, or three when ION aggregated them -- hand them to the agent, hold
  the report until they are stored, then send the very report ION
  acknowledged, and close the session on ION's report acknowledgement;
- as sender (our blocks): given the session number and checkpoint serial
  drawn in that run, send the very segments ION received (cut to the
  512-byte segment size), answer ION's report with the acknowledgement ION
  got, and complete the bundles' transmissions.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from dcis.dtn.bpv7 import decode_bundle_untrusted
from dcis.dtn.cl.ltp.aggregate import split_block_untrusted
from dcis.dtn.cl.ltp.link import LtpCl, LtpConfig, LtpNeighbour
from dcis.dtn.cl.ltp.segment import (
    DataSegment,
    ReportAckSegment,
    ReportSegment,
    Segment,
    SessionId,
    decode_segment_untrusted,
    encode_segment,
)
from tests.interop.ion_vectors import direction, load

pytestmark = pytest.mark.interop

V = load("ion_ltp_segments.hex")
ION_ADDR = ("127.0.0.1", 47113)
NOW = 1_000_000


class ScriptedRng(random.Random):
    """``randrange`` returns the given values first (the session number and
    serials the live run drew), then falls back to a seeded generator."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self.values = list(values)

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        if self.values:
            return self.values.pop(0)
        return super().randrange(start, stop, step)


def sessions() -> dict[tuple[str, SessionId], list[tuple[str, bytes, Segment]]]:
    """Segments grouped by (run, session), in capture order."""
    out: dict[tuple[str, SessionId], list[tuple[str, bytes, Segment]]] = defaultdict(
        list
    )
    for name, data in V.items():
        seg = decode_segment_untrusted(data)
        out[(name.split("-")[0], seg.session)].append((name, data, seg))
    return dict(out)


S = sessions()
BIG = bytes(97 + i % 26 for i in range(2000))  # big.txt of the ltp1 run
# (run, ION session number) -> the payloads of its block, in block order:
# ION aggregates the bundles that reach ltpclo within its 1-s time limit.
ION_PAYLOADS = {
    ("ltp1", 1): [b"ION LTP bundle 1"],
    ("ltp1", 2): [b"ION LTP bundle 2", b"ION LTP bundle 3"],
    ("ltp1", 3): [BIG],
    ("ltp2", 1): [b"ION aggregated bundle %d" % i for i in (3, 1, 2)],
}
ION_SESSIONS = [k for k in S if k[1].originator == 1]
OUR_SESSIONS = [k for k in S if k[1].originator == 2]


def make_cl(
    rng_values: list[int], *, green: bool = False, owlt_s: float = 1.0
) -> LtpCl:
    cl = LtpCl(
        node=2,
        config=LtpConfig(engine_id=2),
        neighbours=[
            LtpNeighbour(
                node=1,
                address=ION_ADDR,
                engine_id=1,
                ltp_mtu_bytes=512,
                ltp_aggregate=True,
                ltp_green=green,
            )
        ],
        rng=ScriptedRng(rng_values),
    )
    cl.contact(1, True, NOW, owlt_s=owlt_s)
    return cl


def test_the_capture_has_what_the_file_says() -> None:
    assert len(V) == 35
    assert len(ION_SESSIONS) == 4
    assert len(OUR_SESSIONS) == 5
    for key, segs in S.items():
        # Every session ends with the report acknowledgement: all succeeded.
        assert isinstance(segs[-1][2], ReportAckSegment), key


@pytest.mark.parametrize("name", list(V))
def test_every_segment_reencodes_byte_for_byte(name: str) -> None:
    assert encode_segment(decode_segment_untrusted(V[name])) == V[name]


@pytest.mark.parametrize("key", ION_SESSIONS, ids=str)
def test_ion_block_is_received_reported_as_ion_expects_and_closed(
    key: tuple[str, SessionId],
) -> None:
    segs = S[key]
    ion_data = [(d, s) for n, d, s in segs if isinstance(s, DataSegment)]
    ((_, our_rs_bytes, our_rs),) = [
        (n, d, s) for n, d, s in segs if isinstance(s, ReportSegment)
    ]
    ((ra_name, ra_bytes, _),) = [
        (n, d, s) for n, d, s in segs if isinstance(s, ReportAckSegment)
    ]
    assert direction(ra_name) == "ion>dcis"
    assert isinstance(our_rs, ReportSegment)
    # The run drew: our first session number (unused here), the report serial.
    cl = make_cl([12345, our_rs.report_serial])
    received = []
    for data, _ in ion_data:
        res = cl.on_datagram(data, NOW)
        assert res.sends == []  # persist before acknowledging: report held
        received += res.received
    bundles = [decode_bundle_untrusted(b) for _, b, _ in received]
    assert all(nb == 1 for nb, _, _ in received)
    block = b"".join(s.data for _, s in ion_data if isinstance(s, DataSegment))
    assert b"".join(b for _, b, _ in received) == block
    payloads = [b.payload for b in bundles]
    assert payloads == ION_PAYLOADS[(key[0], key[1].number)]
    sends = []
    for _, _, token in received:
        assert token is not None
        sends += cl.on_stored(token, NOW + 1).sends
    assert sends == [(ION_ADDR, our_rs_bytes)]  # the report ION acknowledged
    assert cl.engine.sessions_in == 1
    res = cl.on_datagram(ra_bytes, NOW + 2)
    assert res.sends == []
    assert cl.engine.sessions_in == 0
    assert cl.engine.counters.junk == 0


def test_ion_blocks_split_into_the_bundles_ion_aggregated() -> None:
    for key in ION_SESSIONS:
        block = b"".join(s.data for _, _, s in S[key] if isinstance(s, DataSegment))
        bundles, err = split_block_untrusted(block)
        assert err is None
        payloads = [decode_bundle_untrusted(b).payload for b in bundles]
        assert payloads == ION_PAYLOADS[(key[0], key[1].number)]


@pytest.mark.parametrize("key", OUR_SESSIONS, ids=str)
def test_our_block_goes_out_as_ion_received_it_and_completes(
    key: tuple[str, SessionId],
) -> None:
    segs = S[key]
    ours = [(d, s) for n, d, s in segs if isinstance(s, DataSegment)]
    ((rs_name, rs_bytes, _),) = [
        (n, d, s) for n, d, s in segs if isinstance(s, ReportSegment)
    ]
    ((_, ra_bytes, _),) = [
        (n, d, s) for n, d, s in segs if isinstance(s, ReportAckSegment)
    ]
    assert direction(rs_name) == "ion>dcis"
    first = ours[0][1]
    assert isinstance(first, DataSegment)
    last = ours[-1][1]
    assert isinstance(last, DataSegment)
    assert last.checkpoint_serial is not None
    # The run drew: the session number, then the first checkpoint serial.
    cl = make_cl([key[1].number, last.checkpoint_serial])
    block = b"".join(s.data for _, s in ours if isinstance(s, DataSegment))
    bundles, err = split_block_untrusted(block)
    assert err is None
    sends = []
    for tx, b in enumerate(bundles, 1):
        sends += cl.transmit(1, tx, b, NOW).sends
    # ltp_aggregate: the block leaves when the aggregation time is up.
    assert sends == []
    sends = cl.on_tick(NOW + cl.config.aggregate_ms).sends
    assert sends == [(ION_ADDR, d) for d, _ in ours]  # byte for byte
    res = cl.on_datagram(rs_bytes, NOW + 100)
    assert res.sends == [(ION_ADDR, ra_bytes)]
    assert sorted(res.done) == [(tx, True) for tx in range(1, len(bundles) + 1)]
    assert cl.engine.sessions_out == 0
    if key[0] == "ltp2":
        assert [decode_bundle_untrusted(b).payload for b in bundles] == [
            b"DCiS aggregated"
        ] * 3


# --- with loss: tests/vectors/ion_ltp_loss.hex ---------------------------------

L = load("ion_ltp_loss.hex")


def _loss(n: int) -> tuple[str, bytes, Segment]:
    ((name, data),) = [(k, v) for k, v in L.items() if k.startswith(f"loss-{n:02d} ")]
    return name, data, decode_segment_untrusted(data)


def test_loss_capture_reencodes_byte_for_byte() -> None:
    assert len(L) == 22
    for data in L.values():
        assert encode_segment(decode_segment_untrusted(data)) == data


def _sends_until_quiet(
    cl: LtpCl, first: list[tuple[tuple[str, int], bytes]], at: int
) -> list[bytes]:
    """What ``cl`` sends now and at its deadlines up to ``at`` (the deferred
    report of a checkpoint that arrives after a gap)."""
    out = [d for _, d in first]
    while (d := cl.next_deadline()) is not None and d <= at:
        out += [b for _, b in cl.on_tick(int(d)).sends]
    return out


def test_ion_block_with_a_lost_segment_is_reported_and_completed_as_ion_expects() -> (
    None
):
    rs1 = _loss(6)[2]
    assert isinstance(rs1, ReportSegment)
    cl = make_cl([12345, rs1.report_serial])
    sends = []
    for n in (1, 3, 4, 5):  # 02 was dropped by the relay
        sends += cl.on_datagram(_loss(n)[1], NOW).sends
    # A checkpoint after a gap: the report waits report_delay_ms (reordering),
    # then claims around the gap -- exactly the report ION answered.
    got = _sends_until_quiet(cl, sends, NOW + cl.config.report_delay_ms)
    assert got == [_loss(6)[1]]
    assert len(rs1.claims) == 2
    assert cl.on_datagram(_loss(7)[1], NOW + 60).sends == []  # ION's RA
    received = []
    for n in (8, 9):  # ION resends the gap, then a new checkpoint
        res = cl.on_datagram(_loss(n)[1], NOW + 70)
        assert res.sends == []  # whole now: held until the bundle is stored
        received += res.received
    ((node, bundle, token),) = received
    assert node == 1
    assert decode_bundle_untrusted(bundle).payload == bytes(
        97 + i % 26 for i in range(2000)
    )
    assert token is not None
    assert cl.on_stored(token, NOW + 80).sends == [(ION_ADDR, _loss(10)[1])]
    assert cl.on_datagram(_loss(11)[1], NOW + 90).sends == []
    assert cl.engine.sessions_in == 0


def test_our_block_with_lost_segments_is_resent_as_ion_asked_and_completes() -> None:
    ours = [_loss(n) for n in range(12, 17)]
    last = ours[-1][2]
    assert isinstance(last, DataSegment)
    assert last.checkpoint_serial is not None
    cl = make_cl([last.session.number, last.checkpoint_serial])
    block = b"".join(s.data for _, _, s in ours if isinstance(s, DataSegment))
    ((bundle,), err) = split_block_untrusted(block)
    assert err is None
    assert cl.transmit(1, 1, bundle, NOW).sends == []
    sent = [d for _, d in cl.on_tick(NOW + cl.config.aggregate_ms).sends]
    assert sent == [d for _, d, _ in ours]  # 13 and 15 were then lost
    # ION's report with the two gaps: we acknowledge it and resend exactly
    # the missing bytes, the last piece as a new checkpoint.
    res = cl.on_datagram(_loss(17)[1], NOW + 200)
    assert [d for _, d in res.sends] == [_loss(n)[1] for n in (18, 19, 20)]
    assert res.done == []
    res = cl.on_datagram(_loss(21)[1], NOW + 300)
    assert [d for _, d in res.sends] == [_loss(22)[1]]
    assert res.done == [(1, True)]
    assert cl.engine.sessions_out == 0


# --- all green: tests/vectors/ion_ltp_green.hex ---------------------------------

G = load("ion_ltp_green.hex")


def _green(first: int, last: int) -> list[bytes]:
    return [v for k, v in G.items() if first <= int(k.split()[0].split("-")[1]) <= last]


@pytest.mark.parametrize(
    ("first", "last", "payload"),
    [
        (1, 1, b"green from ION bpsendfile with class of service 0.1.0.1.0\n"),
        (2, 6, bytes(97 + i % 26 for i in range(2000))),
    ],
)
def test_ions_green_block_is_delivered_without_a_report(
    first: int, last: int, payload: bytes
) -> None:
    cl = make_cl([12345])
    received = []
    for data in _green(first, last):
        seg = decode_segment_untrusted(data)
        assert isinstance(seg, DataSegment)
        assert not seg.type.is_red
        assert encode_segment(seg) == data
        res = cl.on_datagram(data, NOW)
        assert res.sends == []  # green: nothing to acknowledge
        received += res.received
    ((node, bundle, token),) = received
    assert (node, token) == (1, None)  # no token: no report waits for a store
    assert decode_bundle_untrusted(bundle).payload == payload
    assert cl.engine.sessions_in == 0


@pytest.mark.parametrize(("first", "last"), [(7, 7), (8, 12)])
def test_our_green_block_goes_out_as_ion_received_it(first: int, last: int) -> None:
    ours = _green(first, last)
    segs = [decode_segment_untrusted(d) for d in ours]
    assert all(isinstance(s, DataSegment) and not s.type.is_red for s in segs)
    cl = make_cl([segs[0].session.number], green=True)
    block = b"".join(s.data for s in segs if isinstance(s, DataSegment))
    ((bundle,), err) = split_block_untrusted(block)
    assert err is None
    assert cl.transmit(1, 1, bundle, NOW).sends == []
    res = cl.on_tick(NOW + cl.config.aggregate_ms)
    assert [d for _, d in res.sends] == ours
    assert res.done == [(1, True)]  # all green: done once it all left
    assert cl.engine.sessions_out == 0


# --- lost reports: tests/vectors/ion_ltp_report_loss.hex ------------------------

R = load("ion_ltp_report_loss.hex")


def _rs(n: int) -> bytes:
    ((data,),) = [[v] for k, v in R.items() if k.startswith(f"rsloss-{n:02d} ")]
    return data


def _ticks(cl: LtpCl, start: int, until: int) -> list[bytes]:
    """Everything ``cl`` sends at its deadlines from ``start`` to ``until``."""
    out: list[bytes] = []
    while (d := cl.next_deadline()) is not None and d <= until:
        out += [b for _, b in cl.on_tick(max(start, int(d))).sends]
    return out


def test_our_lost_report_is_sent_again_and_ion_acknowledges_it() -> None:
    rs = decode_segment_untrusted(_rs(6))
    assert isinstance(rs, ReportSegment)
    # The live node had no contact plan: light time 0, timers = margin (1 s).
    cl = make_cl([12345, rs.report_serial], owlt_s=0.0)
    received = []
    for n in range(1, 6):
        received += cl.on_datagram(_rs(n), NOW).received
    ((_, _, token),) = received
    assert token is not None
    assert [d for _, d in cl.on_stored(token, NOW).sends] == [_rs(6)]  # lost
    # No RA within the report timer: the same report goes again.
    assert _ticks(cl, NOW, NOW + 1_000) == [_rs(7)]
    assert _rs(7) == _rs(6)
    assert cl.on_datagram(_rs(8), NOW + 1_014).sends == []
    assert cl.engine.sessions_in == 0


def test_ions_lost_report_our_checkpoints_again_then_ions_own_resend() -> None:
    ours = [decode_segment_untrusted(_rs(n)) for n in range(9, 14)]
    last = ours[-1]
    assert isinstance(last, DataSegment)
    assert last.checkpoint_serial is not None
    cl = make_cl([last.session.number, last.checkpoint_serial], owlt_s=0.0)
    block = b"".join(s.data for s in ours if isinstance(s, DataSegment))
    ((bundle,), err) = split_block_untrusted(block)
    assert err is None
    cl.transmit(1, 1, bundle, NOW)
    sent_at = NOW + cl.config.aggregate_ms
    assert [d for _, d in cl.on_tick(sent_at).sends] == [_rs(n) for n in range(9, 14)]
    # ION's report (14) is lost: our checkpoint goes again every second, the
    # same bytes each time, as ION saw them (15, 16, 17).
    again = _ticks(cl, sent_at, sent_at + 3_000)
    assert again == [_rs(15), _rs(16), _rs(17)]
    assert set(again) == {_rs(13)}
    # ION's own retransmitted report completes the session.
    res = cl.on_datagram(_rs(18), sent_at + 3_170)
    assert [d for _, d in res.sends] == [_rs(19)]
    assert res.done == [(1, True)]
    assert cl.engine.sessions_out == 0
