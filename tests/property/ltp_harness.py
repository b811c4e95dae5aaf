"""Two LTP engines joined by a seeded, simulated link (virtual time).

The link drops, duplicates and delays (reorders) segments from a seeded
``random.Random`` and goes down during given outages; while it is down both
engines are told (timers suspended) and nothing crosses.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from dcis.dtn.cl.ltp import (
    BlockReceived,
    BlockSent,
    EngineConfig,
    LtpEngine,
    SendSegment,
    SessionConfig,
    SpanConfig,
)
from dcis.dtn.cl.ltp.engine import Output

A, B = 1, 2


@dataclass
class LinkModel:
    owlt_ms: int = 100
    loss: float = 0.0
    dup: float = 0.0
    jitter_ms: int = 0
    outages: list[tuple[int, int]] = field(default_factory=list)
    """(start_ms, end_ms) intervals during which the link is down."""


class Pair:
    """Engine ``A`` sends to engine ``B`` (and B answers) over a LinkModel."""

    def __init__(
        self,
        link: LinkModel,
        *,
        seed: int = 0,
        mtu: int = 1024,
        rate_bytes_s: float = 0.0,
        session: SessionConfig | None = None,
        config: EngineConfig | None = None,
        verdict: str = "accept",
    ) -> None:
        self.link = link
        self.verdict = verdict
        """With ``hold_reports``: what B's client says of each block."""
        self.rng = random.Random(seed)
        sc = session or SessionConfig(owlt_ms=link.owlt_ms, margin_ms=200)
        self.engines = {
            A: LtpEngine(A, config=config, rng=random.Random(seed + 1)),
            B: LtpEngine(B, config=config, rng=random.Random(seed + 2)),
        }
        self.engines[A].add_span(
            SpanConfig(
                engine_id=B, mtu_bytes=mtu, rate_bytes_s=rate_bytes_s, session=sc
            )
        )
        self.engines[B].add_span(
            SpanConfig(
                engine_id=A, mtu_bytes=mtu, rate_bytes_s=rate_bytes_s, session=sc
            )
        )
        self.now = 0
        self._heap: list[tuple[int, int, int, bytes]] = []
        self._seq = 0
        self._events: list[tuple[int, bool]] = sorted(
            [(s, False) for s, _ in link.outages] + [(e, True) for _, e in link.outages]
        )
        self.received: list[BlockReceived] = []
        self.sent: list[BlockSent] = []
        self.segments = 0
        self.forced_down = False

    def set_link(self, up: bool) -> None:
        """Take the link down (or bring it back) now, outside the outages."""
        self.forced_down = not up
        for me, other in ((A, B), (B, A)):
            self._handle(me, self.engines[me].set_link(other, up, self.now))

    def up(self, at: int) -> bool:
        if self.forced_down:
            return False
        return not any(s <= at < e for s, e in self.link.outages)

    def send(self, block: bytes, *, red_len: int | None = None, token: int) -> None:
        outs = self.engines[A].send_block(
            B,
            block,
            red_len=len(block) if red_len is None else red_len,
            token=token,
            now=self.now,
        )
        self._handle(A, outs)

    def _handle(self, frm: int, outs: list[Output]) -> None:
        to = B if frm == A else A
        for o in outs:
            if isinstance(o, SendSegment):
                self.segments += 1
                if not self.up(self.now) or self.rng.random() < self.link.loss:
                    continue
                copies = 2 if self.rng.random() < self.link.dup else 1
                for _ in range(copies):
                    at = self.now + self.link.owlt_ms
                    if self.link.jitter_ms:
                        at += self.rng.randrange(self.link.jitter_ms + 1)
                    self._seq += 1
                    heapq.heappush(self._heap, (at, self._seq, to, o.data))
            elif isinstance(o, BlockReceived):
                self.received.append(o)
                eng = self.engines[frm]
                if eng.config.hold_reports and o.red:
                    v = (
                        eng.accept_block
                        if self.verdict == "accept"
                        else eng.refuse_block
                    )
                    self._handle(frm, v(o.engine_id, o.session_number, self.now))
            elif isinstance(o, BlockSent):
                self.sent.append(o)

    def idle(self) -> bool:
        a, b = self.engines[A], self.engines[B]
        return (
            not self._heap
            and a.sessions_out == 0
            and a.sessions_in == 0
            and b.sessions_out == 0
            and b.sessions_in == 0
        )

    def run(self, until_ms: int, *, max_steps: int = 2_000_000) -> None:
        """Advance virtual time, delivering segments and firing timers,
        until ``until_ms`` or until nothing is left to do."""
        for _ in range(max_steps):
            cands = [until_ms]
            if self._heap:
                cands.append(self._heap[0][0])
            for e in self.engines.values():
                d = e.next_deadline()
                if d is not None:
                    cands.append(int(-(-d // 1)))
            if self._events:
                cands.append(self._events[0][0])
            t = max(self.now, min(cands))
            if t >= until_ms and not (self._events and self._events[0][0] <= t):
                self.now = until_ms
                return
            self.now = t
            while self._events and self._events[0][0] <= t:
                _, up = self._events.pop(0)
                for me, other in ((A, B), (B, A)):
                    self._handle(me, self.engines[me].set_link(other, up, t))
            while self._heap and self._heap[0][0] <= t:
                _, _, to, data = heapq.heappop(self._heap)
                self._handle(to, self.engines[to].on_datagram(data, t))
            for me in (A, B):
                d = self.engines[me].next_deadline()
                if d is not None and d <= t:
                    self._handle(me, self.engines[me].on_tick(t))
            if self.idle() and not self._events:
                return
        raise AssertionError("simulation did not settle")
