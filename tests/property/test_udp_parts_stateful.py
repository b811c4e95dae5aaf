"""PartAssembler as a state machine (hypothesis RuleBasedStateMachine).

Random transfers (random bytes, cut at random points) from a few senders;
their parts delivered in any order, duplicated, lost, or with a wrong
total; time advancing and partials expiring. The model holds, per partial
transfer, a byte mask of what arrived and when it last progressed, in
progress order, and applies the documented limits itself (evict the least
recently progressed to make room; forget what has not progressed for
``idle_timeout_s``). Checked on every part: a whole bundle comes back
exactly when the model's mask fills, equal to the original bytes; the NEED
ranges are the complement of the mask (the first ``MAX_NEED_RANGES``),
given exactly when the part ends at ``total`` and gaps remain; duplicates
and refusals are the model's. Invariants: the memory bounds, and the held
transfers, bytes and next deadline are the model's.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dcis.dtn.cl.udp import MAX_NEED_RANGES, PartSegment
from dcis.dtn.cl.udp_parts import PartAssembler

IDLE_S = 10.0
PROBE_S = 0.5
MAX_TRANSFER = 2_000


@dataclass
class Sent:
    data: bytes
    parts: list[tuple[int, int]]


@dataclass
class Held:
    mask: bytearray  # 1 where a byte arrived
    last_s: float


def gaps(mask: bytearray) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    start = None
    for i, b in enumerate([*mask, 1]):
        if not b and start is None:
            start = i
        elif b and start is not None:
            out.append((start, i))
            start = None
    return tuple(out)


class AssemblerMachine(RuleBasedStateMachine):
    @initialize(
        max_partial=st.integers(1, 5_000),
        max_transfers=st.integers(1, 4),
        seed=st.integers(0, 2**32),
        min_chunk=st.sampled_from([1, 1, 16, 64]),
    )
    def start(
        self, max_partial: int, max_transfers: int, seed: int, min_chunk: int
    ) -> None:
        self.asm = PartAssembler(
            MAX_TRANSFER, max_partial, IDLE_S, max_transfers, min_chunk, PROBE_S
        )
        self.min_chunk = min_chunk
        # Transfers of several parts completed, and when (insertion order).
        self.done: dict[tuple[int, int], float] = {}
        self.max_partial = max_partial
        self.max_transfers = max_transfers
        self.rng = random.Random(seed)
        self.now = 0.0
        self.sent: dict[tuple[int, int], Sent] = {}
        self.held: dict[tuple[int, int], Held] = {}  # progress order
        self.completed = self.evicted = self.expired = 0

    @rule(
        sender=st.integers(1, 3),
        total=st.integers(1, MAX_TRANSFER + 200),
        n_cuts=st.integers(0, 400),
    )
    def new_transfer(self, sender: int, total: int, n_cuts: int) -> None:
        token = self.rng.getrandbits(64)
        points = sorted({0, total, *(self.rng.randrange(total) for _ in range(n_cuts))})
        parts = list(itertools.pairwise(points))
        self.sent[(sender, token)] = Sent(self.rng.randbytes(total), parts)

    def _held_bytes(self) -> int:
        return sum(len(h.mask) for h in self.held.values())

    def _make_room(self, total: int) -> None:
        while (
            len(self.held) >= self.max_transfers
            or self._held_bytes() + total > self.max_partial
        ):
            del self.held[next(iter(self.held))]  # the least recently progressed
            self.evicted += 1
            event("evicted")

    def _send(self, key: tuple[int, int], start: int, end: int, total: int) -> None:
        sent = self.sent[key]
        chunk = sent.data[start:end]
        seg = PartSegment(key[0], key[1], start, total, memoryview(chunk))
        before = self.asm.counters.duplicates
        r = self.asm.on_part(seg, self.now)
        h = self.held.get(key)
        if end != total and end - start < self.min_chunk:
            assert r.dropped is not None
            event("small chunk")
            return
        if (
            h is None
            and key in self.done
            and (end != total or self.now - self.done[key] < PROBE_S)
        ):
            assert r.dropped is not None
            event("late part")
            return
        if h is not None and total != len(h.mask):
            assert r.dropped is not None
            assert r.whole is None
            event("conflict")
            return
        if h is None:
            if total > MAX_TRANSFER:
                assert r.dropped is not None
                event("too big")
                return
            if (start, end) == (0, total):
                assert r.whole == bytearray(sent.data)
                self.completed += 1
                event("one part")
                return
            if total > self.max_partial:
                assert r.dropped is not None
                event("no room")
                return
            self._make_room(total)
            h = self.held[key] = Held(bytearray(total), self.now)
        dup = all(h.mask[start:end])
        assert self.asm.counters.duplicates == before + dup
        h.mask[start:end] = b"\x01" * (end - start)
        assert r.dropped is None
        if all(h.mask):
            assert r.whole == bytearray(sent.data)
            assert r.need == ()
            del self.held[key]
            self.done.pop(key, None)
            self.done[key] = self.now
            if len(self.done) > 4 * self.max_transfers:
                del self.done[next(iter(self.done))]
            self.completed += 1
            event("completed")
            return
        assert r.whole is None
        if not dup:
            h.last_s = self.now
            self.held[key] = self.held.pop(key)
        expected = gaps(h.mask)[:MAX_NEED_RANGES] if end == total else ()
        assert r.need == expected
        if len(expected) == MAX_NEED_RANGES:
            event("NEED capped")

    @rule(
        pick=st.integers(0, 2**16), which=st.integers(0, 2**16), times=st.integers(1, 2)
    )
    def deliver(self, pick: int, which: int, times: int) -> None:
        if not self.sent:
            return
        key = list(self.sent)[pick % len(self.sent)]
        sent = self.sent[key]
        start, end = sent.parts[which % len(sent.parts)]
        for _ in range(times):  # a duplicated datagram
            self._send(key, start, end, len(sent.data))

    @rule(pick=st.integers(0, 2**16), keep=st.floats(0.0, 1.0))
    def burst(self, pick: int, keep: float) -> None:
        """Some of one transfer's parts (each kept with probability
        ``keep``), shuffled: the many-gap case where NEED is capped."""
        if not self.sent:
            return
        key = list(self.sent)[pick % len(self.sent)]
        sent = self.sent[key]
        parts = [p for p in sent.parts if self.rng.random() < keep]
        self.rng.shuffle(parts)
        for start, end in parts:
            self._send(key, start, end, len(sent.data))

    @rule(pick=st.integers(0, 2**16), which=st.integers(0, 2**16))
    def deliver_with_wrong_total(self, pick: int, which: int) -> None:
        if not self.sent:
            return
        key = list(self.sent)[pick % len(self.sent)]
        sent = self.sent[key]
        start, end = sent.parts[which % len(sent.parts)]
        self._send(key, start, end, len(sent.data) + 1 + which % 5)

    @rule(dt=st.floats(0.0, 2 * IDLE_S))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def expire(self) -> None:
        while self.done and next(iter(self.done.values())) + IDLE_S <= self.now:
            del self.done[next(iter(self.done))]
        gone = [k for k, h in self.held.items() if h.last_s + IDLE_S <= self.now]
        for k in gone:
            del self.held[k]
        self.expired += len(gone)
        if gone:
            event("expired")
        assert self.asm.expire(self.now) == len(gone)

    @invariant()
    def within_bounds(self) -> None:
        assert self.asm.partial_bytes <= self.max_partial
        assert self.asm.partial_count <= self.max_transfers

    @invariant()
    def holds_what_the_model_holds(self) -> None:
        assert self.asm.partial_count == len(self.held)
        assert self.asm.partial_bytes == self._held_bytes()
        deadlines = [h.last_s + IDLE_S for h in self.held.values()]
        assert self.asm.next_deadline() == (min(deadlines) if deadlines else None)
        c = self.asm.counters
        assert (c.completed, c.evicted, c.expired) == (
            self.completed,
            self.evicted,
            self.expired,
        )


TestPartAssembler = AssemblerMachine.TestCase
