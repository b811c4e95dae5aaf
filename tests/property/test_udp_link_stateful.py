"""UdpLink as a state machine (hypothesis RuleBasedStateMachine).

The one hop-ACK/retransmission machine that both the runtime's UDP CL and
the simulator's links drive (its transitions: ``TX_TRANSITIONS``).

Rules: transmit, authentic ACKs (of tokens on the wire, or guessed ones),
time passing, a driver queueing a segment (pacing: ``hold``) and sending it
later (``on_sent``), a bare bundle or a DCiS segment from the peer, the
contact ending; bundles over the MTU (whole in PART segments under ``on``,
refused otherwise) and NEEDs naming random ranges of a transfer, a DATA
segment's token or a guessed one. Invariants, in every ack mode: a
transmission finishes exactly once (at most once as it runs, and the contact
ending at teardown finishes the rest); it finishes ``ok`` only if it went
out best effort or its own
token was acknowledged (never because of silence, a guessed token or a bare
datagram); a queued segment is never sent again nor timed out (its timer is
stopped); each transmission's state is the model's (queued or awaiting its
ACK) and the next deadline is that of a segment on the wire; reachability
is reported on changes only; a ``none``/``off`` link never sends a DCiS
segment. PART transfers: every part carries its bundle's bytes at its
offset; in every burst only the last datagram carries the token; a timeout
resends the last part only, and a failure comes after exactly ``max_tries``
sends since the last NEED served; a NEED resends exactly the parts
overlapping its ranges and the last part (nothing else; the last carries
the token), within the transfer's budget of ``NEED_RESENDS_PER_PART``
resends per part (a round over it is cut, the last part kept), starts the
tries over and restarts the timer at the first try's timeout -- any other
NEED (queued, stale, naming nothing, past the budget) sends nothing and,
unless queued, is counted stale and leaves the timer as it is.
"""

from __future__ import annotations

import math
import random

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dcis.dtn.cl.udp import (
    MIN_PART_CHUNK_BYTES,
    NEED_RESENDS_PER_PART,
    PART_OVERHEAD_BYTES,
    AckMode,
    BareBundle,
    DataSegment,
    LinkOutput,
    PartSegment,
    Reachability,
    SendDatagram,
    TxDone,
    TxState,
    UdpLink,
    data_mac,
    decode_datagram_untrusted,
    mac_ok,
    part_mac,
)

BUNDLE = b"\x9f\x89\x07\x00\x01\x82\x02\x82\x02\x01\xff"
MTU = MIN_PART_CHUNK_BYTES + PART_OVERHEAD_BYTES
CHUNK = MTU - PART_OVERHEAD_BYTES
MAX_TRANSFER = 8 * CHUNK
MAX_TRIES = 3
SPANS = st.lists(  # NEED ranges, as (gap, length) from the previous one's end
    st.tuples(st.integers(0, 2 * CHUNK), st.integers(1, 2 * CHUNK)),
    min_size=1,
    max_size=4,
)


def _decoded(o: SendDatagram) -> object:
    return decode_datagram_untrusted(
        o.data if isinstance(o.data, bytes) else b"".join(o.data)
    )


def _part_spans(outs: list[LinkOutput]) -> list[tuple[int, int]]:
    """The byte range of each PART segment ``outs`` sends (nothing else)."""
    spans = []
    for o in outs:
        assert isinstance(o, SendDatagram)
        seg = _decoded(o)
        assert isinstance(seg, PartSegment)
        spans.append((seg.offset, seg.end))
    return spans


def _ranges(spans: list[tuple[int, int]], pos: int = 0) -> tuple[tuple[int, int], ...]:
    ranges = []
    for gap, length in spans:
        ranges.append((pos + gap, pos + gap + length))
        pos += gap + length
    return tuple(ranges)


class LinkMachine(RuleBasedStateMachine):
    # ``on`` twice as often: the one mode that sends PART segments.
    @initialize(
        mode=st.sampled_from([AckMode.ON, *AckMode]),
        seed=st.integers(0, 2**32),
        key=st.none() | st.just(bytes(range(32))),
    )
    def start(self, mode: AckMode, seed: int, key: bytes | None) -> None:
        self.link = UdpLink(
            mac_key=key,
            local_node=1,
            neighbor=2,
            ack_mode=mode,
            ack_timeout_s=1.0,
            max_tries=MAX_TRIES,
            rng=random.Random(seed),
            mtu_bytes=MTU,
            max_transfer_bytes=MAX_TRANSFER,
        )
        self.now = 0.0
        self.next_tx = 1
        self.token_of: dict[int, int] = {}  # tx_id -> token on the wire
        self.acked: set[int] = set()  # tokens acknowledged
        self.bare: set[int] = set()  # tx_ids sent best effort
        self.done: dict[int, bool] = {}
        self.held: set[int] = set()  # tokens queued by the driver (timer stopped)
        self.reachable = True
        self.bundle_of: dict[int, bytes] = {}  # token -> bundle sent in PARTs
        self.tries: dict[int, int] = {}  # token -> sends (first + timeouts)
        self.budget: dict[int, int] = {}  # token -> parts NEEDs may resend
        self.needs = 0  # NEEDs served
        self.stale_needs = 0

    def _take(self, outs: list[LinkOutput]) -> None:
        segs = [_decoded(o) if isinstance(o, SendDatagram) else None for o in outs]
        for i, o in enumerate(outs):
            if isinstance(o, SendDatagram):
                # In a burst of parts, only the last datagram has the token.
                nxt = segs[i + 1] if i + 1 < len(segs) else None
                seg = segs[i]
                burst_goes_on = (
                    isinstance(seg, PartSegment)
                    and isinstance(nxt, PartSegment)
                    and nxt.token == seg.token
                )
                self._check_send(o, seg, burst_goes_on)
            if isinstance(o, TxDone):
                assert o.tx_id not in self.done, "finished twice"
                tok = self.token_of.get(o.tx_id)
                if "no ACK" in o.reason:
                    assert tok is not None
                    assert o.reason == f"no ACK after {MAX_TRIES} tries"
                    assert self.tries[tok] == MAX_TRIES
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

    def _check_send(self, o: SendDatagram, seg: object, burst_goes_on: bool) -> None:
        """One datagram sent (``seg`` decoded): what it carries and its MAC."""
        key = self.link.mac_key
        if isinstance(seg, PartSegment):
            assert self.link.ack_mode is AckMode.ON
            bundle = self.bundle_of[seg.token]
            assert seg.total == len(bundle)
            assert bytes(seg.chunk) == bundle[seg.offset : seg.end]
            assert o.token == (None if burst_goes_on else seg.token)
            assert o.size <= MTU
            if key is None:
                assert seg.mac is None
            else:
                want = part_mac(
                    key,
                    sender=1,
                    receiver=2,
                    token=seg.token,
                    offset=seg.offset,
                    total=seg.total,
                    chunk=seg.chunk,
                )
                assert mac_ok(want, seg.mac)
        elif o.token is None:
            assert seg == BareBundle(BUNDLE)
        else:
            assert self.link.ack_mode not in (AckMode.NONE, AckMode.OFF)
            assert o.token not in self.held, "a queued segment was resent"
            assert isinstance(seg, DataSegment)
            assert seg.token == o.token
            if key is None:
                assert seg.mac is None
            else:
                want = data_mac(
                    key, sender=1, receiver=2, token=seg.token, bundle=BUNDLE
                )
                assert mac_ok(want, seg.mac)

    @rule()
    def transmit(self) -> None:
        tx = self.next_tx
        self.next_tx += 1
        best_effort = self.link.best_effort
        outs = self.link.transmit(tx, BUNDLE, self.now)
        for o in outs:
            if isinstance(o, SendDatagram) and o.token is not None:
                self.token_of[tx] = o.token
                self.tries[o.token] = 1
        if best_effort:
            self.bare.add(tx)
        self._take(list(outs))

    @rule(
        size=st.integers(MTU + 1, MAX_TRANSFER + 2 * CHUNK)
        | st.sampled_from([MTU + 1, MAX_TRANSFER, MAX_TRANSFER + 1])
    )
    def transmit_over_the_mtu(self, size: int) -> None:
        tx = self.next_tx
        self.next_tx += 1
        bundle = b"\x9f" + random.Random(tx).randbytes(size - 1)
        outs = self.link.transmit(tx, bundle, self.now)
        if self.link.ack_mode is not AckMode.ON or size > MAX_TRANSFER:
            assert len(outs) == 1
            assert isinstance(outs[0], TxDone)
            assert "exceeds" in outs[0].reason
            self._take(outs)
            return
        assert len(outs) == math.ceil(size / CHUNK)
        last = outs[-1]
        assert isinstance(last, SendDatagram)
        assert last.token is not None
        self.token_of[tx] = last.token
        self.bundle_of[last.token] = bundle
        self.tries[last.token] = 1
        self.budget[last.token] = NEED_RESENDS_PER_PART * len(outs)
        self._take(outs)
        # Every part, in order.
        starts = range(0, size, CHUNK)
        assert _part_spans(outs) == [(a, min(a + CHUNK, size)) for a in starts]

    def _live_transfers(self) -> list[int]:
        return [
            t
            for tx, t in self.token_of.items()
            if t in self.bundle_of and tx not in self.done
        ]

    @precondition(lambda self: bool(self._live_transfers()))
    @rule(
        data=st.data(),
        spans=SPANS,
        # Enough to spend the budget of the smallest transfer one part a time.
        times=st.integers(1, NEED_RESENDS_PER_PART * 2 + 1),
        start=st.sampled_from([0, 0, 0, MAX_TRANSFER]),
    )
    def need_parts_of_a_transfer(
        self, data: st.DataObject, spans: list[tuple[int, int]], times: int, start: int
    ) -> None:
        """``times`` NEEDs for one transfer (a receiver asking again and
        again), for ranges from ``start`` (past the end of any transfer: the
        NEED names none of its parts)."""
        tok = data.draw(st.sampled_from(self._live_transfers()))
        for _ in range(times):
            self._need(tok, _ranges(spans, start))

    @rule(data=st.data(), spans=SPANS, guess=st.booleans())
    def need_for_any_token(
        self, data: st.DataObject, spans: list[tuple[int, int]], guess: bool
    ) -> None:
        """A NEED for any token used (a DATA segment's, a finished
        transfer's) or for a guessed one."""
        used = list(self.token_of.values())
        if guess or not used:
            tok = data.draw(st.integers(0, 2**64 - 1))
        else:
            tok = data.draw(st.sampled_from(used))
        self._need(tok, _ranges(spans))

    def _need(self, tok: int, ranges: tuple[tuple[int, int], ...]) -> None:
        live = tok in self.bundle_of and self.link.state_of(tok) is not None
        deadline = self.link.next_deadline()
        outs = self.link.on_need(tok, ranges, self.now)
        self._take(outs)
        got = _part_spans([o for o in outs if isinstance(o, SendDatagram)])
        if live and tok in self.held:
            assert not got  # its parts are on their way
            return
        size = len(self.bundle_of[tok]) if live else 0
        parts = [(a, min(a + CHUNK, size)) for a in range(0, size, CHUNK)]
        want = [(a, b) for a, b in parts if any(lo < b and a < hi for lo, hi in ranges)]
        budget = self.budget.get(tok, 0)
        if not live or not want or budget <= 0:
            assert not got
            assert self.link.next_deadline() == deadline, "a stale NEED moved the timer"
            self.stale_needs += 1
            return
        if want[-1] != parts[-1]:
            want.append(parts[-1])  # the part that draws the next NEED
        if len(want) > budget:
            want = [*want[: budget - 1], parts[-1]]
        assert got == want
        self.budget[tok] = budget - len(want)
        self.needs += 1
        self.tries[tok] = 1  # the receiver is there: the tries start over
        assert self.link.state_of(tok) is TxState.AWAITING_ACK
        rto_1 = 1.0 if self.link.reachable else 4.0
        d = self.link.next_deadline()
        assert d is not None
        assert d <= self.now + rto_1

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
        outs = self.link.on_timer(self.now)
        resent = [o.token for o in outs if isinstance(o, SendDatagram)]
        assert None not in resent
        assert len(set(resent)) == len(resent), "more than one datagram a try"
        for o in outs:
            if isinstance(o, SendDatagram):
                assert o.token is not None
                self.tries[o.token] += 1
                assert self.tries[o.token] <= MAX_TRIES
                seg = _decoded(o)
                if isinstance(seg, PartSegment):  # a probe: the last part
                    assert seg.end == seg.total
        self._take(outs)

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
        assert self.link.counters.stale_needs == self.stale_needs
        assert self.link.counters.needs == self.needs

    def teardown(self) -> None:
        if not hasattr(self, "link"):
            return
        self._take(self.link.close())
        assert set(self.done) == set(range(1, self.next_tx)), "never finished"


TestUdpLink = LinkMachine.TestCase
