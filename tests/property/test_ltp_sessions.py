"""LTP session machines: an h2-style sweep of every (state, input) pair, and
simulated sessions under seeded loss, duplication, reordering and outages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from dcis.dtn.cl.ltp import EngineConfig, SessionConfig
from dcis.dtn.cl.ltp.common import (
    Delivered,
    Event,
    Finished,
    Input,
    SendControl,
    SendData,
)
from dcis.dtn.cl.ltp.receiver import (
    RECEIVER_TRANSITIONS,
    ReceiverSession,
    ReceiverState,
)
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
)
from dcis.dtn.cl.ltp.sender import SENDER_TRANSITIONS, SenderSession, SenderState
from tests.property.ltp_harness import LinkModel, Pair

SID = SessionId(1, 99)
CFG = SessionConfig(owlt_ms=100, margin_ms=50, max_retries=3)
BLOCK = bytes(range(200)) * 10  # 2,000 bytes, 1,500 red
RED = 1500


def segment_for(t: SegmentType) -> Segment:
    """A plausible segment of type ``t`` for session SID."""
    if t.is_data:
        if t.is_red:
            start, end = (0, 500) if not t.is_eorp else (1000, RED)
        else:
            start, end = (RED, 1800) if not t.is_eob else (1800, len(BLOCK))
        if t is SegmentType.RED_EORP_EOB:
            start, end = 1000, len(BLOCK)
        return DataSegment(
            session=SID,
            type=t,
            client_service=1,
            offset=start,
            data=BLOCK[start:end],
            checkpoint_serial=7 if t.is_checkpoint else None,
            report_serial=0 if t.is_checkpoint else None,
        )
    if t is SegmentType.REPORT:
        return ReportSegment(
            session=SID,
            report_serial=5,
            checkpoint_serial=7,
            upper_bound=RED,
            lower_bound=0,
            claims=(ReceptionClaim(0, 500),),
        )
    if t is SegmentType.REPORT_ACK:
        return ReportAckSegment(session=SID, report_serial=5)
    if t in (SegmentType.CANCEL_FROM_SENDER, SegmentType.CANCEL_FROM_RECEIVER):
        return CancelSegment(
            session=SID,
            from_sender=t is SegmentType.CANCEL_FROM_SENDER,
            reason=CancelReason.USR_CNCLD,
        )
    return CancelAckSegment(
        session=SID, to_sender=t is SegmentType.CANCEL_ACK_TO_SENDER
    )


def sender_in(state: SenderState) -> SenderSession:
    s = SenderSession(
        session=SID,
        block=BLOCK,
        red_len=RED,
        client_service=1,
        config=CFG,
        first_checkpoint_serial=7,
    )
    s.start()
    if state is SenderState.SENDING:
        s.on_sent(s.piece(0, RED, 7, 0), 0)
        return s
    s.on_sent(s.piece(0, RED, 7, 0), 0)
    s.on_sent(s.piece(RED, len(BLOCK), None, 0), 0)
    if state is SenderState.CANCELLING:
        s.handle(Event.CANCEL, None, 0)
    elif state is SenderState.CLOSED:
        s.handle(
            SegmentType.CANCEL_FROM_RECEIVER,
            segment_for(SegmentType.CANCEL_FROM_RECEIVER),
            0,
        )
    assert s.state is state
    return s


def receiver_in(state: ReceiverState, hold: bool = False) -> ReceiverSession:
    r = ReceiverSession(
        session=SID, config=CFG, first_report_serial=5, max_claims=20, now=0, hold=hold
    )
    r.handle(SegmentType.RED, segment_for(SegmentType.RED), 0)
    if state is ReceiverState.DELIVERED:
        for a, b in ((500, 1000), (1000, RED)):
            t = SegmentType.RED if b < RED else SegmentType.RED_EORP
            seg = DataSegment(
                session=SID,
                type=t,
                client_service=1,
                offset=a,
                data=BLOCK[a:b],
                checkpoint_serial=8 if t.is_checkpoint else None,
                report_serial=0 if t.is_checkpoint else None,
            )
            r.handle(t, seg, 0)
    elif state is ReceiverState.CANCELLING:
        r.handle(Event.CANCEL, None, 0)
    elif state is ReceiverState.CLOSED:
        r.handle(
            SegmentType.CANCEL_FROM_SENDER,
            segment_for(SegmentType.CANCEL_FROM_SENDER),
            0,
        )
    assert r.state is state
    return r


INPUTS: list[Input] = [*SegmentType, *Event]


def test_tables_cover_every_pair() -> None:
    assert set(SENDER_TRANSITIONS) == {(s, i) for s in SenderState for i in INPUTS}
    assert set(RECEIVER_TRANSITIONS) == {(s, i) for s in ReceiverState for i in INPUTS}
    for name in SENDER_TRANSITIONS.values():
        assert callable(getattr(SenderSession, name))
    for name in RECEIVER_TRANSITIONS.values():
        assert callable(getattr(ReceiverSession, name))


@pytest.mark.parametrize("state", list(SenderState))
@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.name)
def test_sender_every_state_and_input(state: SenderState, inp: Input) -> None:
    s = sender_in(state)
    seg = segment_for(inp) if isinstance(inp, SegmentType) else None
    key = 7 if inp is Event.CHECKPOINT_TIMER else 0
    before = s.violations
    effects = s.handle(inp, seg, 10, key)
    assert isinstance(s.state, SenderState)
    # A closed session never comes back to life.
    if state is SenderState.CLOSED:
        assert s.state is SenderState.CLOSED
        assert not any(isinstance(e, (SendData, Finished)) for e in effects)
    # Segments meaningless to a block sender change nothing but a counter.
    if isinstance(inp, SegmentType) and (
        inp.is_data
        or inp
        in (
            SegmentType.REPORT_ACK,
            SegmentType.CANCEL_FROM_SENDER,
            SegmentType.CANCEL_ACK_TO_RECEIVER,
        )
    ):
        assert effects == []
        assert s.violations == before + 1
        assert s.state is state
    # A report is always acknowledged.
    if inp is SegmentType.REPORT:
        assert any(
            isinstance(e, SendControl) and isinstance(e.segment, ReportAckSegment)
            for e in effects
        )
    # A cancel from the receiver is always acknowledged and ends the session.
    if inp is SegmentType.CANCEL_FROM_RECEIVER:
        assert s.state is SenderState.CLOSED
        assert any(
            isinstance(e, SendControl) and isinstance(e.segment, CancelAckSegment)
            for e in effects
        )
    if state in (SenderState.SENDING, SenderState.WAITING) and inp is Event.CANCEL:
        assert s.state is SenderState.CANCELLING
        assert next(e for e in effects if isinstance(e, Finished)).ok is False
    for e in effects:
        assert isinstance(e, (SendControl, SendData, Finished))


@pytest.mark.parametrize("hold", [False, True])
@pytest.mark.parametrize("state", list(ReceiverState))
@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.name)
def test_receiver_every_state_and_input(
    state: ReceiverState, inp: Input, hold: bool
) -> None:
    r = receiver_in(state, hold)
    if inp is Event.REPORT_TIMER and state in (ReceiverState.RECEIVING,):
        # a report outstanding: answer a checkpoint first
        r.handle(SegmentType.RED_CHECKPOINT, segment_for(SegmentType.RED_CHECKPOINT), 0)
    seg = segment_for(inp) if isinstance(inp, SegmentType) else None
    delivered_before = r.delivered
    before = r.violations
    effects = r.handle(inp, seg, 10, 0)
    assert isinstance(r.state, ReceiverState)
    if state is ReceiverState.CLOSED:
        assert r.state is ReceiverState.CLOSED
        assert not any(isinstance(e, (Delivered, Finished)) for e in effects)
    # Delivered at most once, and only whole.
    ds = [e for e in effects if isinstance(e, Delivered)]
    if delivered_before:
        assert ds == []
    for d in ds:
        assert d.data == BLOCK[:RED] if d.red else d.data == BLOCK
    if inp in (
        SegmentType.REPORT,
        SegmentType.CANCEL_FROM_RECEIVER,
        SegmentType.CANCEL_ACK_TO_SENDER,
    ):
        assert effects == []
        assert r.violations == before + 1
        assert r.state is state
    if inp is SegmentType.CANCEL_FROM_SENDER:
        assert r.state is ReceiverState.CLOSED
        assert any(
            isinstance(e, SendControl) and isinstance(e.segment, CancelAckSegment)
            for e in effects
        )
    if (
        state is ReceiverState.RECEIVING
        and inp.__class__ is SegmentType
        and inp.is_checkpoint
    ):
        assert any(
            isinstance(e, SendControl) and isinstance(e.segment, ReportSegment)
            for e in effects
        )
    # Holding: nothing claims the whole red part before the client accepts.
    if hold and not r.accepted:
        assert not any(
            isinstance(e, SendControl)
            and isinstance(e.segment, ReportSegment)
            and e.segment.absolute_claims() == [(0, RED)]
            for e in effects
        )
    if hold and state is ReceiverState.DELIVERED and inp is Event.ACCEPT:
        assert r.accepted
    if hold and state is ReceiverState.DELIVERED and inp is Event.REFUSE:
        assert r.state is ReceiverState.CANCELLING
    for e in effects:
        assert isinstance(e, (SendControl, Delivered, Finished))


# ---------------------------------------------------------------- simulated sessions


@st.composite
def links(draw: st.DrawFn) -> LinkModel:
    outages = []
    t = 0
    for _ in range(draw(st.integers(0, 3))):
        t += draw(st.integers(0, 3000))
        length = draw(st.integers(1, 4000))
        outages.append((t, t + length))
        t += length
    return LinkModel(
        owlt_ms=draw(st.integers(0, 1000)),
        loss=draw(st.sampled_from([0.0, 0.01, 0.05, 0.2, 0.4])),
        dup=draw(st.sampled_from([0.0, 0.05, 0.3])),
        jitter_ms=draw(st.sampled_from([0, 5, 300])),
        outages=outages,
    )


def check_outcome(p: Pair, blocks: dict[int, tuple[bytes, int]]) -> None:
    # Every block finished exactly once: acknowledged or cleanly cancelled.
    assert sorted(s.token for s in p.sent) == sorted(blocks)
    ok = {s.token: s.ok for s in p.sent}
    by_prefix = {b[:4]: t for t, (b, _) in blocks.items()}
    seen: list[int] = []
    for r in p.received:
        token = by_prefix[r.data[:4]]
        block, red_len = blocks[token]
        assert r.data == (block[:red_len] if r.red else block)
        seen.append(token)
    # Never a double delivery.
    assert len(seen) == len(set(seen))
    for token, (_, red_len) in blocks.items():
        if red_len and ok[token]:
            assert token in seen, "acknowledged but never delivered"
    # Never a hang: every session on both sides closed.
    assert p.idle()


@given(
    link=links(),
    seed=st.integers(0, 2**32),
    sizes=st.lists(st.integers(4, 6000), min_size=1, max_size=5),
    colours=st.data(),
)
def test_simulated_sessions_deliver_or_cancel_cleanly(
    link: LinkModel, seed: int, sizes: list[int], colours: st.DataObject
) -> None:
    p = Pair(
        link,
        seed=seed,
        mtu=300,
        rate_bytes_s=colours.draw(st.sampled_from([0.0, 50_000.0])),
        session=SessionConfig(owlt_ms=link.owlt_ms, margin_ms=100, max_retries=6),
    )
    blocks: dict[int, tuple[bytes, int]] = {}
    for token, n in enumerate(sizes):
        block = token.to_bytes(4, "big") + bytes(
            (token * 7 + i) % 251 for i in range(n - 4)
        )
        red = colours.draw(st.sampled_from([n, 0, max(4, n // 2)]))
        blocks[token] = (block, red)
        p.send(block, red_len=red, token=token)
    p.run(100_000_000)
    check_outcome(p, blocks)


def test_lossless_link_delivers_everything_exactly_once() -> None:
    p = Pair(LinkModel(owlt_ms=1000), seed=1, mtu=1400, rate_bytes_s=1e6)
    blocks = {t: (t.to_bytes(4, "big") + bytes(100_000), 100_004) for t in range(10)}
    for t, (b, red) in blocks.items():
        p.send(b, red_len=red, token=t)
    p.run(10**9)
    check_outcome(p, blocks)
    assert all(s.ok for s in p.sent)
    assert p.engines[1].counters.retransmitted_bytes == 0


def test_outage_suspends_timers_instead_of_giving_up() -> None:
    # A 10-minute outage right after sending: with timers running the sender
    # would exhaust its retries (3 x 2.1 s); suspended, it finishes after.
    link = LinkModel(owlt_ms=1000, outages=[(500, 600_500)])
    p = Pair(
        link,
        seed=2,
        mtu=1400,
        rate_bytes_s=1e5,
        session=SessionConfig(owlt_ms=1000, margin_ms=100, max_retries=3),
    )
    p.send(b"\x00\x00\x00\x01" + bytes(200_000), token=1)
    p.run(10**9)
    assert [s.ok for s in p.sent] == [True]
    assert len(p.received) == 1
    assert p.now > 600_500


def test_sessions_and_buffers_are_bounded() -> None:
    cfg = EngineConfig(max_sessions=2, max_receive_sessions=1, max_buffered_bytes=5_000)
    p = Pair(LinkModel(owlt_ms=10), seed=3, mtu=500, config=cfg)
    p.send(b"\x00\x00\x00\x01" + bytes(3000), token=1)
    p.send(b"\x00\x00\x00\x02" + bytes(3000), token=2)
    with pytest.raises(Exception, match="sessions open"):
        p.send(b"\x00\x00\x00\x03", token=3)
    p.run(10**8)
    # The receiver takes one session at a time: the other is refused and
    # comes back as not ok, for the caller to try again.
    assert sorted(s.ok for s in p.sent) == [False, True]
    assert p.engines[2].counters.refused_sessions >= 1
    big = Pair(LinkModel(owlt_ms=10), seed=4, mtu=500, config=cfg)
    big.send(b"\x00\x00\x00\x01" + bytes(9000), token=1)
    big.run(10**8)
    assert [s.ok for s in big.sent] == [False]
    assert big.received == []
    assert big.engines[2].buffered_bytes == 0


class LtpLinkMachine(RuleBasedStateMachine):
    """Blocks sent while the link drops, duplicates and goes down at random;
    at the end the link heals and everything finishes exactly once."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(
            LinkModel(owlt_ms=200, loss=0.1, dup=0.1, jitter_ms=50),
            seed=7,
            mtu=400,
            rate_bytes_s=100_000.0,
            session=SessionConfig(owlt_ms=200, margin_ms=100, max_retries=8),
        )
        self.blocks: dict[int, tuple[bytes, int]] = {}

    @precondition(lambda self: self.pair.engines[1].can_send())
    @rule(n=st.integers(4, 5000), red=st.sampled_from(["all", "none", "half"]))
    def send(self, n: int, red: str) -> None:
        token = len(self.blocks)
        block = token.to_bytes(4, "big") + bytes(
            (token + i) % 256 for i in range(n - 4)
        )
        red_len = {"all": n, "none": 0, "half": max(4, n // 2)}[red]
        self.blocks[token] = (block, red_len)
        self.pair.send(block, red_len=red_len, token=token)

    @rule(ms=st.integers(1, 3000))
    def advance(self, ms: int) -> None:
        self.pair.run(self.pair.now + ms)

    @rule()
    def link_down(self) -> None:
        self.pair.set_link(False)

    @rule()
    def link_up(self) -> None:
        self.pair.set_link(True)

    @invariant()
    def never_twice_and_never_wrong(self) -> None:
        tokens = [int.from_bytes(r.data[:4], "big") for r in self.pair.received]
        assert len(tokens) == len(set(tokens))
        for r, t in zip(self.pair.received, tokens, strict=True):
            block, red_len = self.blocks[t]
            assert r.data == (block[:red_len] if r.red else block)
        assert len({s.token for s in self.pair.sent}) == len(self.pair.sent)

    @invariant()
    def bounded(self) -> None:
        e = self.pair.engines
        assert e[1].sessions_out <= e[1].config.max_sessions
        assert e[2].buffered_bytes <= e[2].config.max_buffered_bytes

    def teardown(self) -> None:
        self.pair.set_link(True)
        self.pair.run(self.pair.now + 10**9)
        check_outcome(self.pair, self.blocks)


TestLtpLinkMachine = LtpLinkMachine.TestCase
TestLtpLinkMachine.settings = settings(stateful_step_count=30)


@given(
    link=links(),
    seed=st.integers(0, 2**32),
    sizes=st.lists(st.integers(4, 6000), min_size=1, max_size=4),
)
def test_held_reports_acknowledge_only_accepted_blocks(
    link: LinkModel, seed: int, sizes: list[int]
) -> None:
    # The receiver's client accepts each block once it has it: same outcome
    # as without holding, and nothing acknowledged before the client said so.
    p = Pair(
        link,
        seed=seed,
        mtu=300,
        session=SessionConfig(owlt_ms=link.owlt_ms, margin_ms=100, max_retries=6),
        config=EngineConfig(hold_reports=True),
    )
    blocks = {}
    for token, n in enumerate(sizes):
        block = token.to_bytes(4, "big") + bytes(
            (token + i) % 256 for i in range(n - 4)
        )
        blocks[token] = (block, n)
        p.send(block, red_len=n, token=token)
    p.run(100_000_000)
    check_outcome(p, blocks)


def test_a_refused_block_is_cancelled_and_never_acknowledged() -> None:
    p = Pair(
        LinkModel(owlt_ms=50),
        seed=5,
        mtu=500,
        config=EngineConfig(hold_reports=True),
        verdict="refuse",
    )
    p.send(b"\x00\x00\x00\x01" + bytes(3000), token=1)
    p.run(10**8)
    # Delivered to the client, which refused it: the sender is told to
    # keep it (not ok), never that it arrived.
    assert len(p.received) == 1
    assert [s.ok for s in p.sent] == [False]
    assert p.idle()
