"""A hostile peer's segments into an LTP engine: never an exception, every
bound held, every session eventually closed."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.cl.ltp import EngineConfig, LtpEngine, SessionConfig, SpanConfig
from dcis.dtn.cl.ltp.segment import (
    CancelAckSegment,
    CancelReason,
    CancelSegment,
    DataSegment,
    ReceptionClaim,
    ReportAckSegment,
    ReportSegment,
    Segment,
    SegmentType,
    SessionId,
    encode_segment,
)

ME, PEER, STRANGER = 1, 2, 3
CFG = EngineConfig(
    max_sessions=4,
    max_receive_sessions=3,
    max_block_bytes=20_000,
    max_buffered_bytes=30_000,
)

session_ids = st.builds(
    SessionId, st.sampled_from([ME, PEER, PEER, PEER, STRANGER]), st.integers(1, 3)
)
# Mostly offsets that can make whole blocks; sometimes past max_block_bytes.
small = st.sampled_from([0, 0, 100, 200, 300]) | st.integers(0, 25_000)


@st.composite
def hostile_segments(draw: st.DrawFn) -> Segment:
    sid = draw(session_ids)
    kind = draw(st.sampled_from(list(SegmentType)))
    if kind.is_data:
        cp = draw(st.integers(1, 50)) if kind.is_checkpoint else None
        return DataSegment(
            session=sid,
            type=kind,
            client_service=draw(st.sampled_from([1, 1, 1, 7])),
            offset=draw(small),
            data=draw(st.binary(min_size=1, max_size=300)),
            checkpoint_serial=cp,
            report_serial=draw(st.integers(0, 50)) if cp is not None else None,
        )
    if kind is SegmentType.REPORT:
        lower = draw(small)
        claims = tuple(
            ReceptionClaim(o, n)
            for o, n in draw(
                st.lists(
                    st.tuples(st.integers(0, 500), st.integers(1, 500)), max_size=4
                )
            )
        )
        upper = lower + max((c.offset + c.length for c in claims), default=0)
        return ReportSegment(
            session=sid,
            report_serial=draw(st.integers(1, 50)),
            checkpoint_serial=draw(st.integers(0, 50)),
            upper_bound=upper + draw(st.integers(0, 100)),
            lower_bound=lower,
            claims=claims,
        )
    if kind is SegmentType.REPORT_ACK:
        return ReportAckSegment(session=sid, report_serial=draw(st.integers(1, 50)))
    if kind in (SegmentType.CANCEL_FROM_SENDER, SegmentType.CANCEL_FROM_RECEIVER):
        return CancelSegment(
            session=sid,
            from_sender=kind is SegmentType.CANCEL_FROM_SENDER,
            reason=draw(st.sampled_from(list(CancelReason))),
        )
    return CancelAckSegment(
        session=sid, to_sender=kind is SegmentType.CANCEL_ACK_TO_SENDER
    )


@given(
    st.lists(
        st.one_of(
            hostile_segments().map(encode_segment),
            hostile_segments().map(encode_segment),
            hostile_segments().map(encode_segment),
            st.binary(max_size=40),
            st.integers(1, 5_000),  # time passes
            st.booleans(),  # link up / down
            st.integers(1, 12_000).map(lambda n: ("send", n)),
        ),
        max_size=80,
    )
)
def test_hostile_peer_never_breaks_the_engine(steps: list[object]) -> None:
    e = LtpEngine(ME, config=CFG, rng=random.Random(0))
    e.add_span(
        SpanConfig(
            engine_id=PEER,
            mtu_bytes=512,
            session=SessionConfig(owlt_ms=10, margin_ms=20, max_retries=2),
        )
    )
    now = 0
    token = 0
    for step in steps:
        if isinstance(step, bytes):
            e.on_datagram(step, now)
        elif isinstance(step, bool):
            e.set_link(PEER, step, now)
        elif isinstance(step, int):
            now += step
            e.on_tick(now)
        else:
            assert isinstance(step, tuple)
            if e.can_send():
                token += 1
                e.send_block(
                    PEER, bytes(step[1]), red_len=step[1], token=token, now=now
                )
        assert e.sessions_out <= CFG.max_sessions
        assert e.sessions_in <= CFG.max_receive_sessions
        assert e.buffered_bytes <= CFG.max_buffered_bytes
    # With the link up and time passing, every session closes by itself.
    e.set_link(PEER, True, now)
    for _ in range(200):
        d = e.next_deadline()
        if d is None:
            break
        now = max(now, int(d) + 1)
        e.on_tick(now)
    assert e.sessions_out == 0
    assert e.sessions_in == 0
    assert e.buffered_bytes == 0
