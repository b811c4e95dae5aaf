"""The block sender's session state machine (RFC 5326 sections 6 and 8.1).

Theory of operation
-------------------
One :class:`SenderSession` sends one block. Its red part (the first
``red_len`` bytes) is sent reliably, the rest (green) once::

    SENDING --ALL_SENT--> WAITING --report claims all red--> CLOSED
       |                     |
       +--CANCEL/CR/limits---+--> CANCELLING --CAS or retries out--> CLOSED

- Start: the red part is queued with a checkpoint on its last segment (the
  end-of-red-part, EORP, which is also end-of-block when there is no green
  part), then the green part, the last green segment flagged end-of-block.
- Every checkpoint starts a timer when it actually leaves (the engine calls
  :meth:`SenderSession.on_sent`), ``2 x owlt + margin``; on expiry the same
  checkpoint is sent again, at most ``max_retries`` times, then the session is
  cancelled with RLEXC.
- A report segment (RS) is always acknowledged (RA). Its claims are added to
  what is known received; its checkpoint's timer stops. If all red bytes
  are claimed the session succeeds; otherwise each gap inside the report's
  bounds is queued for retransmission, the last retransmitted segment being a
  new checkpoint that answers the report (section 6.13). More than
  ``max_cycles`` such cycles cancel the session with RXMTCYCEXC.
- Success needs one report that claims the whole red part by itself. When
  only the sum of several reports covers it, the receiver may since have
  lost what the earlier ones claimed (it restarted: its buffers are memory),
  so the end of the red part is sent again as a checkpoint and only that
  report's claims are kept.
- A cancel from the receiver (CR) is acknowledged (CAR) and ends the session;
  our own cancel (CS) is sent until acknowledged (CAS) or out of retries.
- :class:`~dcis.dtn.cl.ltp.common.Finished` is emitted exactly once: success, or
  the moment the session is cancelled, so the bundle can be routed elsewhere
  while the CS exchange finishes.

Every (state, input) pair is in :data:`SENDER_TRANSITIONS`; a segment that
makes no sense for a block sender (data, RA, CS, CAR for our own session) is
counted as a protocol violation and otherwise ignored.

Timers are suspended while the span's link is down (section 6.1 says why).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from dcis.dtn.cl.ltp.common import (
    Effect,
    Event,
    Finished,
    Input,
    SendControl,
    SendData,
    SessionConfig,
    Timer,
)
from dcis.dtn.cl.ltp.ranges import RangeSet
from dcis.dtn.cl.ltp.segment import (
    CancelAckSegment,
    CancelReason,
    CancelSegment,
    DataSegment,
    ReportAckSegment,
    ReportSegment,
    Segment,
    SegmentType,
    SessionId,
)
from dcis.dtn.errors import InvalidArgument

_MAX_REPORTS_REMEMBERED = 256


class SenderState(enum.Enum):
    """States of a block sender's session."""

    SENDING = "sending"
    """The first transmission is not all out yet."""
    WAITING = "waiting"
    """All sent; waiting for reports on the red part."""
    CANCELLING = "cancelling"
    """We sent CS; waiting for CAS."""
    CLOSED = "closed"
    """Over; the engine forgets the session."""


_S = SenderState
_ACTIVE = (_S.SENDING, _S.WAITING)

SENDER_TRANSITIONS: dict[tuple[SenderState, Input], str] = {}
"""(state, input) -> name of the :class:`SenderSession` method that handles it."""


def _fill() -> None:
    t = SENDER_TRANSITIONS
    for s in SenderState:
        for seg_type in SegmentType:
            t[(s, seg_type)] = "_violation"
        for ev in Event:
            t[(s, ev)] = "_ignore"
        t[(s, SegmentType.REPORT)] = "_on_report" if s in _ACTIVE else "_ack_report"
        t[(s, SegmentType.CANCEL_FROM_RECEIVER)] = (
            "_ack_cancel" if s is _S.CLOSED else "_on_cancel_from_receiver"
        )
        t[(s, SegmentType.CANCEL_ACK_TO_SENDER)] = (
            "_on_cancel_ack" if s is _S.CANCELLING else "_ignore"
        )
    for s in _ACTIVE:
        t[(s, Event.CHECKPOINT_TIMER)] = "_on_checkpoint_timer"
        t[(s, Event.CANCEL)] = "_on_local_cancel"
    t[(_S.SENDING, Event.ALL_SENT)] = "_on_all_sent"
    t[(_S.CANCELLING, Event.CANCEL_TIMER)] = "_on_cancel_timer"


_fill()


class SenderSession:
    """One outbound block (sans-I/O). Build with :meth:`start`.

    ``block`` is the whole block; ``red_len`` bytes of it are red.
    """

    def __init__(
        self,
        *,
        session: SessionId,
        block: bytes,
        red_len: int,
        client_service: int,
        config: SessionConfig,
        first_checkpoint_serial: int,
        suspended: bool = False,
    ) -> None:
        if not block or not 0 <= red_len <= len(block):
            raise InvalidArgument("a block has >= 1 byte and 0 <= red_len <= its size")
        self.session = session
        self.block = block
        self.red_len = red_len
        self.client_service = client_service
        self.config = config
        self.state = SenderState.SENDING
        self.suspended = suspended
        self.violations = 0
        self.retransmitted_bytes = 0
        self._next_cp = first_checkpoint_serial
        self._acked = RangeSet()
        self._checkpoints: dict[int, DataSegment] = {}
        self._tries: dict[tuple[str, int], int] = {}
        self._timers: dict[tuple[str, int], Timer] = {}
        self._reports_seen: dict[int, None] = {}
        self._cycles = 0
        self._finished = False
        self._cancel_seg: CancelSegment | None = None

    # ------------------------------------------------------------ API

    def start(self) -> list[Effect]:
        """The first transmission: red part (checkpoint at its end), then green."""
        out: list[Effect] = []
        if self.red_len:
            out.append(SendData(0, self.red_len, self._new_cp(), 0))
        if self.red_len < len(self.block):
            out.append(SendData(self.red_len, len(self.block)))
        return out

    def handle(
        self, inp: Input, seg: Segment | None, now: int, key: int = 0
    ) -> list[Effect]:
        """Feed one input (a segment of this session, or an event); returns effects."""
        name = SENDER_TRANSITIONS[(self.state, inp)]
        fn: Callable[[Segment | None, int, int], list[Effect]] = getattr(self, name)
        return fn(seg, now, key)

    def piece(
        self, start: int, end: int, checkpoint_serial: int | None, report_serial: int
    ) -> DataSegment:
        """The data segment for block bytes ``[start, end)``; a checkpoint when
        ``checkpoint_serial`` is set (always for the end of the red part)."""
        red = end <= self.red_len
        if red and end == self.red_len and checkpoint_serial is None:
            checkpoint_serial = self._new_cp()  # EORP is always a checkpoint
        if red:
            if checkpoint_serial is None:
                kind = SegmentType.RED
            elif end < self.red_len:
                kind = SegmentType.RED_CHECKPOINT
            elif end < len(self.block):
                kind = SegmentType.RED_EORP
            else:
                kind = SegmentType.RED_EORP_EOB
        else:
            checkpoint_serial = None
            kind = (
                SegmentType.GREEN_EOB if end == len(self.block) else SegmentType.GREEN
            )
        return DataSegment(
            session=self.session,
            type=kind,
            client_service=self.client_service,
            offset=start,
            data=self.block[start:end],
            checkpoint_serial=checkpoint_serial,
            report_serial=report_serial if checkpoint_serial is not None else None,
        )

    def on_sent(self, seg: Segment, now: int) -> list[Effect]:
        """The engine sent ``seg`` now: start its timer; notice the end of the
        first transmission."""
        out: list[Effect] = []
        if isinstance(seg, DataSegment):
            if seg.checkpoint_serial is not None and self.state in _ACTIVE:
                self._checkpoints[seg.checkpoint_serial] = seg
                self._start_timer(("cp", seg.checkpoint_serial), now)
            if seg.end == len(self.block) and self.state is SenderState.SENDING:
                out += self.handle(Event.ALL_SENT, None, now)
        elif isinstance(seg, CancelSegment) and self.state is SenderState.CANCELLING:
            self._start_timer(("cs", 0), now)
        return out

    def next_deadline(self) -> float:
        """Earliest running timer (``math.inf``: none)."""
        return min((t.deadline for t in self._timers.values()), default=math.inf)

    def on_timers(self, now: int) -> list[Effect]:
        """Handle every timer that is due."""
        out: list[Effect] = []
        for k in [k for k, t in self._timers.items() if t.deadline <= now]:
            if self._timers.pop(k, None) is None:
                continue
            ev = Event.CHECKPOINT_TIMER if k[0] == "cp" else Event.CANCEL_TIMER
            out += self.handle(ev, None, now, k[1])
        return out

    def suspend(self, now: int) -> None:
        """The link went down: timers stop."""
        self.suspended = True
        for t in self._timers.values():
            t.suspend(now)

    def resume(self, now: int) -> None:
        """The link came back: timers go on from where they stopped."""
        self.suspended = False
        for t in self._timers.values():
            t.resume(now)

    @property
    def acknowledged(self) -> bool:
        """Every red byte has been claimed by a report."""
        return self._acked.covers(0, self.red_len)

    # ------------------------------------------------------------ helpers

    def _new_cp(self) -> int:
        cp = self._next_cp
        self._next_cp = cp + 1 if cp < 2**63 else 1
        return cp

    def _start_timer(self, key: tuple[str, int], now: int) -> None:
        self._timers[key] = Timer(now, self.config.rto_ms, running=not self.suspended)

    def _finish(self, ok: bool, reason: str, code: int | None = None) -> list[Effect]:
        if self._finished:
            return []
        self._finished = True
        return [Finished(ok, reason, code)]

    def _cancel(self, reason: CancelReason, why: str) -> list[Effect]:
        self.state = SenderState.CANCELLING
        self._timers.clear()
        self._checkpoints.clear()
        self._cancel_seg = CancelSegment(
            session=self.session, from_sender=True, reason=reason
        )
        return [
            SendControl(self._cancel_seg, timed=True),
            *self._finish(False, why, reason),
        ]

    def _ra(self, rs: ReportSegment) -> SendControl:
        return SendControl(
            ReportAckSegment(session=self.session, report_serial=rs.report_serial)
        )

    # ------------------------------------------------------------ transitions

    def _violation(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        self.violations += 1
        return []

    def _ignore(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        return []

    def _ack_report(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        assert isinstance(seg, ReportSegment)
        return [self._ra(seg)]

    def _ack_cancel(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        return [SendControl(CancelAckSegment(session=self.session, to_sender=False))]

    def _on_report(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        assert isinstance(seg, ReportSegment)
        out: list[Effect] = [self._ra(seg)]
        if seg.report_serial in self._reports_seen:
            return out  # a duplicate: acknowledged again, nothing more
        self._reports_seen[seg.report_serial] = None
        if len(self._reports_seen) > _MAX_REPORTS_REMEMBERED:
            del self._reports_seen[next(iter(self._reports_seen))]
        if self._checkpoints.pop(seg.checkpoint_serial, None) is not None:
            self._timers.pop(("cp", seg.checkpoint_serial), None)
        own = RangeSet()
        for s, e in seg.absolute_claims():
            self._acked.add(s, min(e, self.red_len))
            own.add(s, min(e, self.red_len))
        if self.acknowledged and not own.covers(0, self.red_len):
            # Complete only by adding reports up: the receiver may have lost
            # what earlier ones claimed (a restart empties its buffers). Ask
            # once more, with the end of the red part as a checkpoint that
            # answers no report, for a report on the whole red part.
            self._acked = own
            self._cycles += 1
            if self._cycles > self.config.max_cycles:
                return out + self._cancel(
                    CancelReason.RXMTCYCEXC,
                    f"more than {self.config.max_cycles} cycles",
                )
            start = max(0, self.red_len - 1)
            return [
                *out,
                SendData(start, self.red_len, self._new_cp(), 0, retransmission=True),
            ]
        if self.acknowledged:
            self._timers.clear()
            self._checkpoints.clear()
            if self.state is SenderState.WAITING:
                self.state = SenderState.CLOSED
            return out + self._finish(True, "red part acknowledged")
        gaps = self._acked.gaps(
            min(seg.lower_bound, self.red_len), min(seg.upper_bound, self.red_len)
        )
        if not gaps:
            return out
        self._cycles += 1
        if self._cycles > self.config.max_cycles:
            return out + self._cancel(
                CancelReason.RXMTCYCEXC, f"more than {self.config.max_cycles} cycles"
            )
        cp = self._new_cp()
        for i, (s, e) in enumerate(gaps):
            last = i == len(gaps) - 1
            self.retransmitted_bytes += e - s
            out.append(
                SendData(
                    s,
                    e,
                    cp if last else None,
                    seg.report_serial if last else 0,
                    retransmission=True,
                )
            )
        return out

    def _on_all_sent(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        if self.red_len == 0:
            self.state = SenderState.CLOSED
            return self._finish(True, "green block sent")
        if self.acknowledged:
            self.state = SenderState.CLOSED
            return self._finish(True, "red part acknowledged")
        self.state = SenderState.WAITING
        return []

    def _on_checkpoint_timer(
        self, seg: Segment | None, now: int, key: int
    ) -> list[Effect]:
        cp = self._checkpoints.get(key)
        if cp is None:
            return []
        tries = self._tries.get(("cp", key), 0)
        if tries >= self.config.max_retries:
            return self._cancel(
                CancelReason.RLEXC, f"checkpoint unanswered after {tries} retries"
            )
        self._tries[("cp", key)] = tries + 1
        return [SendControl(cp, timed=True)]

    def _on_local_cancel(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        return self._cancel(CancelReason(key), "cancelled locally")

    def _on_cancel_from_receiver(
        self, seg: Segment | None, now: int, key: int
    ) -> list[Effect]:
        assert isinstance(seg, CancelSegment)
        self.state = SenderState.CLOSED
        self._timers.clear()
        code = seg.reason
        name = code.name if isinstance(code, CancelReason) else str(code)
        return [
            SendControl(CancelAckSegment(session=self.session, to_sender=False)),
            *self._finish(False, f"cancelled by the receiver ({name})", int(code)),
        ]

    def _on_cancel_ack(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        self.state = SenderState.CLOSED
        self._timers.clear()
        return []

    def _on_cancel_timer(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        tries = self._tries.get(("cs", 0), 0)
        if tries >= self.config.max_retries or self._cancel_seg is None:
            self.state = SenderState.CLOSED
            return []
        self._tries[("cs", 0)] = tries + 1
        return [SendControl(self._cancel_seg, timed=True)]
