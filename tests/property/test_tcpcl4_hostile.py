"""TCPCLv4 against a hostile peer (hypothesis): any contact header, SESS_INIT values,
segment lengths or byte soup give a clean SESS_TERM or a close -- never an
exception, never a receive buffer beyond the announced bounds."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dcis.dtn.cl.tcpcl4.messages import (
    ExtensionItem,
    SegmentFlags,
    SessInit,
    XferSegment,
    encode_message,
)
from dcis.dtn.cl.tcpcl4.session import (
    BundleReceived,
    Session,
    SessionClosed,
    SessionConfig,
    State,
    TransferAcked,
    TransferFailed,
)
from tests.unit.cl.tcpcl4_pair import Pair

SEG_MRU = 4096
CFG = SessionConfig(
    node_id="ipn:2.0",
    segment_mru=SEG_MRU,
    transfer_mru=20_000,
    max_node_id=64,
    max_extensions=256,
)


def passive() -> Session:
    s = Session(CFG, active=False)
    s.start(0)
    return s


def bound(s: Session) -> int:
    # the most a peer can make the session hold: one segment's header and data,
    # plus a SESS_INIT's node id and extensions
    return SEG_MRU + 64 + 256 + 64 + 64


def feed_all(s: Session, data: bytes, cut: int) -> None:
    cut = max(1, cut)
    for i in range(0, len(data), cut):
        evs = s.receive_data(data[i : i + cut], 0)
        assert len(s._rx) <= bound(s)
        inc = s._incoming
        assert inc is None or inc.size <= CFG.transfer_mru
        if s.closed:
            assert any(isinstance(e, SessionClosed) for e in evs) or not evs
            return
        s.data_to_send()


@given(st.binary(max_size=64), st.binary(max_size=512), st.integers(1, 64))
def test_any_contact_header_then_any_bytes(head: bytes, rest: bytes, cut: int) -> None:
    s = passive()
    feed_all(s, head + rest, cut)
    assert s.state in State


@given(
    keepalive=st.integers(0, 0xFFFF),
    smru=st.integers(0, 2**64 - 1),
    tmru=st.integers(0, 2**64 - 1),
    node_id=st.text(max_size=80),
    ext=st.lists(
        st.tuples(st.booleans(), st.integers(0, 0xFFFF), st.binary(max_size=40)),
        max_size=8,
    ),
    tail=st.binary(max_size=200),
    cut=st.integers(1, 50),
)
def test_any_sess_init_values(
    keepalive: int,
    smru: int,
    tmru: int,
    node_id: str,
    ext: list[tuple[bool, int, bytes]],
    tail: bytes,
    cut: int,
) -> None:
    s = passive()
    if len(node_id.encode()) > 0xFFFF:
        return
    init = SessInit(
        keepalive_s=keepalive,
        segment_mru=smru,
        transfer_mru=tmru,
        node_id=node_id,
        extensions=tuple(ExtensionItem(t, v, c) for c, t, v in ext),
    )
    feed_all(s, b"dtn!\x04\x00" + encode_message(init) + tail, cut)
    if s.established:
        assert s.peer_node_id == node_id
        assert s.keepalive_s == min(keepalive, CFG.keepalive_s)


@given(
    segs=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(0, 2**64 - 1),
            st.binary(max_size=300),
            st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        ),
        max_size=12,
    ),
    cut=st.integers(1, 400),
)
def test_any_segment_lengths_and_flags(
    segs: list[tuple[int, int, int, bytes, int | None]], cut: int
) -> None:
    s = passive()
    init = SessInit(
        keepalive_s=0, segment_mru=1000, transfer_mru=1000, node_id="ipn:1.0"
    )
    stream = b"dtn!\x04\x00" + encode_message(init)
    for flags, tid, claimed, data, declared in segs:
        f = SegmentFlags(flags)
        ext = (
            (ExtensionItem(1, struct.pack(">Q", declared)),)
            if declared is not None and f & SegmentFlags.START
            else ()
        )
        raw = encode_message(
            XferSegment(flags=f, transfer_id=tid, data=data, extensions=ext)
        )
        if claimed % 4 == 0:
            # lie about the data length: the header announces `claimed`
            i = len(raw) - len(data) - 8
            raw = raw[:i] + struct.pack(">Q", claimed) + data
        stream += raw
    feed_all(s, stream, cut)
    for ev in s._take():
        if isinstance(ev, BundleReceived):
            assert len(ev.data) <= CFG.transfer_mru


class TwoSessions(RuleBasedStateMachine):
    """Bundles sent both ways over a pair with random chunking, acks held or given,
    refusals, keepalive ticks and termination: every bundle ends exactly once as
    delivered-and-acked or failed, and the receiver sees exactly what was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(
            SessionConfig(node_id="ipn:1.0", max_segment_bytes=50, keepalive_s=10),
            SessionConfig(node_id="ipn:2.0", max_segment_bytes=70, transfer_mru=5000),
            auto_ack=False,
        )
        self.pair.start()
        self.sent: dict[tuple[str, int], bytes] = {}
        self.ended: set[tuple[str, int]] = set()

    def _side(self, a: bool) -> tuple[str, Session, Session]:
        return ("a", self.pair.a, self.pair.p) if a else ("p", self.pair.p, self.pair.a)

    @precondition(lambda self: self.pair.a.established and self.pair.p.established)
    @rule(a=st.booleans(), data=st.binary(max_size=400))
    def send(self, a: bool, data: bytes) -> None:
        side, s, _ = self._side(a)
        tid = s.send_bundle(data, self.pair.now)
        self.sent[(side, tid)] = data

    @rule(chunk=st.integers(1, 300))
    def shuttle(self, chunk: int) -> None:
        self.pair.run(chunk)

    @rule(a=st.booleans(), refuse=st.booleans())
    def answer(self, a: bool, refuse: bool) -> None:
        side, s, _ = self._side(a)
        for ev in self.pair.events[side]:
            if isinstance(ev, BundleReceived) and ev.transfer_id in s._held:
                if refuse:
                    s.refuse_transfer(ev.transfer_id, self.pair.now)
                else:
                    s.ack_transfer(ev.transfer_id, self.pair.now)

    @rule(ms=st.integers(0, 30_000))
    def tick(self, ms: int) -> None:
        self.pair.now += ms
        for side, s in (("a", self.pair.a), ("p", self.pair.p)):
            self.pair._handle(side, s.on_tick(self.pair.now))

    @rule(a=st.booleans())
    def terminate(self, a: bool) -> None:
        side, s, _ = self._side(a)
        self.pair._handle(side, s.terminate(self.pair.now))

    @invariant()
    def outcomes_are_consistent(self) -> None:
        for side in ("a", "p"):
            other = "p" if side == "a" else "a"
            done: list[int] = []
            for ev in self.pair.events[side]:
                if isinstance(ev, TransferAcked | TransferFailed):
                    done.append(ev.transfer_id)
            assert len(done) == len(set(done)), "a transfer ended twice"
            for tid in done:
                assert (side, tid) in self.sent
            for ev in self.pair.events[side]:
                if isinstance(ev, TransferAcked):
                    got = [
                        e.data
                        for e in self.pair.events[other]
                        if isinstance(e, BundleReceived)
                        and e.transfer_id == ev.transfer_id
                    ]
                    # acked means received whole (or refused as "completed", never here)
                    assert got == [self.sent[(side, ev.transfer_id)]]
        for s in (self.pair.a, self.pair.p):
            assert s.in_flight >= 0
            if s.closed:
                assert s.in_flight == 0

    def teardown(self) -> None:
        # after both sides are closed, every bundle sent has an outcome
        for side, s in (("a", self.pair.a), ("p", self.pair.p)):
            if s.closed:
                ended = {
                    ev.transfer_id
                    for ev in self.pair.events[side]
                    if isinstance(ev, TransferAcked | TransferFailed)
                }
                mine = {tid for (sd, tid) in self.sent if sd == side}
                assert mine <= ended


TestTwoSessions = TwoSessions.TestCase
