"""UdpLink as a state machine (hypothesis RuleBasedStateMachine).

The one hop-ACK/retransmission machine that both the runtime's UDP CL and
the simulator's links drive (its transitions: ``TX_TRANSITIONS``).

Rules: transmit, authentic ACKs (of tokens on the wire, or guessed ones),
time passing, a driver queueing a segment (pacing: ``hold``) and sending it
later (``on_sent``), a bare bundle or a DCiS segment from the peer, the
contact ending. Invariants, in every ack mode: a transmission finishes at
most once; it finishes ``ok`` only if it went out best effort or its own
token was acknowledged (never because of silence, a guessed token or a bare
datagram); a queued segment is never sent again nor timed out (its timer is
stopped); each transmission's state is the model's (queued or awaiting its
ACK) and the next deadline is that of a segment on the wire; reachability
is reported on changes only; a ``none``/``off`` link never sends a DCiS
segment.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dcis.dtn.cl.udp import (
    AckMode,
    DataSegment,
    Reachability,
    SendDatagram,
    TxDone,
    TxState,
    UdpLink,
    decode_datagram_untrusted,
)

BUNDLE = b"\x9f\x89\x07\x00\x01\x82\x02\x82\x02\x01\xff"


class LinkMachine(RuleBasedStateMachine):
    @initialize(mode=st.sampled_from(list(AckMode)), seed=st.integers(0, 2**32))
    def start(self, mode: AckMode, seed: int) -> None:
        self.link = UdpLink(
            local_node=1,
            neighbor=2,
            ack_mode=mode,
            ack_timeout_s=1.0,
            max_tries=3,
            rng=random.Random(seed),
        )
        self.now = 0.0
        self.next_tx = 1
        self.token_of: dict[int, int] = {}  # tx_id -> token on the wire
        self.acked: set[int] = set()  # tokens acknowledged
        self.bare: set[int] = set()  # tx_ids sent best effort
        self.done: dict[int, bool] = {}
        self.held: set[int] = set()  # tokens queued by the driver (timer stopped)
        self.reachable = True

    def _take(self, outs: list[object]) -> None:
        for o in outs:
            if isinstance(o, TxDone):
                assert o.tx_id not in self.done, "finished twice"
                tok = self.token_of.get(o.tx_id)
                if tok in self.held:
                    assert "no ACK" not in o.reason, "a queued segment timed out"
                    self.held.discard(tok)
                if o.ok:
                    tok = self.token_of.get(o.tx_id)
                    assert o.tx_id in self.bare or (
                        tok is not None and tok in self.acked
                    )
                self.done[o.tx_id] = o.ok
            elif isinstance(o, Reachability):
                assert o.reachable != self.reachable
                self.reachable = o.reachable
            elif isinstance(o, SendDatagram):
                if o.token is None:
                    assert o.data == BUNDLE
                else:
                    assert self.link.ack_mode not in (AckMode.NONE, AckMode.OFF)
                    assert o.token not in self.held, "a queued segment was resent"
                    seg = decode_datagram_untrusted(o.data)
                    assert isinstance(seg, DataSegment)
                    assert seg.token == o.token

    @rule()
    def transmit(self) -> None:
        tx = self.next_tx
        self.next_tx += 1
        best_effort = self.link.best_effort
        outs = self.link.transmit(tx, BUNDLE, self.now)
        for o in outs:
            if isinstance(o, SendDatagram) and o.token is not None:
                self.token_of[tx] = o.token
        if best_effort:
            self.bare.add(tx)
        self._take(list(outs))

    @rule(data=st.data())
    def ack_a_token_on_the_wire(self, data: st.DataObject) -> None:
        live = [t for tx, t in self.token_of.items() if tx not in self.done]
        if not live:
            return
        tok = data.draw(st.sampled_from(live))
        self.acked.add(tok)
        self._take(list(self.link.on_ack((tok,), self.now)))

    @rule(tok=st.integers(0, 2**64 - 1))
    def ack_a_guessed_token(self, tok: int) -> None:
        if tok in self.token_of.values():
            return
        self._take(list(self.link.on_ack((tok,), self.now)))

    @rule(dt=st.floats(0.0, 30.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self._take(list(self.link.on_timer(self.now)))

    def _live(self) -> list[int]:
        return [t for tx, t in self.token_of.items() if tx not in self.done]

    @rule(data=st.data())
    def driver_queues_a_segment(self, data: st.DataObject) -> None:
        live = self._live()
        if not live:
            return
        tok = data.draw(st.sampled_from(live))
        self.link.hold(tok)
        self.held.add(tok)

    @rule(data=st.data())
    def queued_segment_leaves(self, data: st.DataObject) -> None:
        if not self.held:
            return
        tok = data.draw(st.sampled_from(sorted(self.held)))
        self.link.on_sent(tok, self.now)
        self.held.discard(tok)
        d = self.link.next_deadline()
        assert d is not None
        assert d > self.now

    @rule()
    def bare_datagram_from_the_peer(self) -> None:
        self._take(list(self.link.on_heard_bare(self.now)))

    @rule()
    def dcis_segment_from_the_peer(self) -> None:
        self._take(list(self.link.on_heard_dcis()))

    @rule()
    def contact_ends(self) -> None:
        self._take(list(self.link.close()))

    @invariant()
    def in_flight_matches(self) -> None:
        if not hasattr(self, "link"):
            return
        open_ = [tx for tx in self.token_of if tx not in self.done]
        assert self.link.in_flight == len(open_)
        assert self.link.reachable == self.reachable
        for tx in open_:
            tok = self.token_of[tx]
            want = TxState.QUEUED if tok in self.held else TxState.AWAITING_ACK
            assert self.link.state_of(tok) is want
            assert self.link.tx_id_of(tok) == tx
        on_wire = [
            self.token_of[tx] for tx in open_ if self.token_of[tx] not in self.held
        ]
        assert (self.link.next_deadline() is None) == (not on_wire)


TestUdpLink = LinkMachine.TestCase
