"""The block receiver's session state machine (RFC 5326 sections 6 and 8.2).

Theory of operation
-------------------
One :class:`ReceiverSession` per (originator engine, session number)::

    RECEIVING --red part complete--> DELIVERED --RA for a report--> CLOSED
        |   \\--green-only block complete (EOB)------------------> CLOSED
        +--CS / limits / miscolored--> CANCELLING --CAR or retries--> CLOSED

- Red data is copied into a buffer that grows to the highest offset seen
  (the engine bounds it per block and in total). The end-of-red-part segment
  fixes the red length; red data beyond it, or green data inside it, is
  "miscolored" and cancels the session (section 6.21).
- Every checkpoint is answered by report segments (RS) claiming what arrived
  of ``[0, upper)``: ``upper`` is the checkpoint's end, or the upper bound of
  the report it answers when that is larger. Claims that do not fit one MTU
  are split over several reports with consecutive bounds (section 6.2). Each
  RS is resent on its timer (``2 x owlt + margin``, suspended while the link
  is down) until acknowledged (RA), at most ``max_retries`` times; then the
  session is cancelled with RLEXC.
- Deferred reports: with ``report_delay_ms`` set, a checkpoint that arrives
  while bytes before it are missing is answered only when they arrive or the
  delay ends, whichever is first, so that reordering on the way does not
  cause retransmissions; the latest checkpoint is the one answered.
- Held reports (``hold``): the report that would tell the sender its red part
  arrived in full waits until the client accepts the block (ACCEPT: it
  stored the bundles); REFUSE cancels the session instead, so that the
  sender keeps the block and tries again.
- The red part is delivered (:class:`~dcis.dtn.cl.ltp.common.Delivered`) exactly
  once, the moment its last byte arrives, whichever segment brings it; the
  buffer is freed then. The session stays (DELIVERED) to answer checkpoints
  with a report claiming everything, and closes once every report it has
  outstanding is acknowledged (or on inactivity).
- A green-only block is delivered whole when every byte up to its
  end-of-block segment is present; green data of a block that also has a red
  part is not delivered (spec/ltp.md says why).
- A session that hears nothing for ``idle_ms`` of link-up time closes (after
  a CR with SYS_CNCLD if it was still receiving a red part).

Every (state, input) pair is in :data:`RECEIVER_TRANSITIONS`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from dcis.dtn.cl.ltp.common import (
    Delivered,
    Effect,
    Event,
    Finished,
    Input,
    SendControl,
    SessionConfig,
    Timer,
)
from dcis.dtn.cl.ltp.ranges import RangeSet
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


class ReceiverState(enum.Enum):
    """States of a block receiver's session."""

    RECEIVING = "receiving"
    """Data is arriving; nothing delivered yet."""
    DELIVERED = "delivered"
    """The red part was delivered; answering checkpoints until an RA."""
    CANCELLING = "cancelling"
    """We sent CR; waiting for CAR."""
    CLOSED = "closed"
    """Over; the engine forgets the session."""


_R = ReceiverState
_OPEN = (_R.RECEIVING, _R.DELIVERED)

RECEIVER_TRANSITIONS: dict[tuple[ReceiverState, Input], str] = {}
"""(state, input) -> name of the :class:`ReceiverSession` method that handles it."""


def _fill() -> None:
    t = RECEIVER_TRANSITIONS
    for s in ReceiverState:
        for seg_type in SegmentType:
            t[(s, seg_type)] = "_violation"
        for ev in Event:
            t[(s, ev)] = "_ignore"
        for seg_type in SegmentType:
            if seg_type.is_data:
                t[(s, seg_type)] = "_ignore"
        t[(s, SegmentType.CANCEL_FROM_SENDER)] = (
            "_ack_cancel" if s is _R.CLOSED else "_on_cancel_from_sender"
        )
        t[(s, SegmentType.CANCEL_ACK_TO_RECEIVER)] = (
            "_on_cancel_ack" if s is _R.CANCELLING else "_ignore"
        )
        t[(s, SegmentType.REPORT_ACK)] = "_on_report_ack" if s in _OPEN else "_ignore"
    for seg_type in SegmentType:
        if seg_type.is_red:
            t[(_R.RECEIVING, seg_type)] = "_on_red"
            t[(_R.DELIVERED, seg_type)] = "_on_red_after_delivery"
        elif seg_type.is_data:
            t[(_R.RECEIVING, seg_type)] = "_on_green"
    t[(_R.DELIVERED, Event.ACCEPT)] = "_on_accept"
    t[(_R.DELIVERED, Event.REFUSE)] = "_on_refuse"
    for s in _OPEN:
        t[(s, Event.DEFER_TIMER)] = "_on_defer_timer"
        t[(s, Event.REPORT_TIMER)] = "_on_report_timer"
        t[(s, Event.INACTIVITY_TIMER)] = "_on_inactivity"
        t[(s, Event.CANCEL)] = "_on_local_cancel"
    t[(_R.CANCELLING, Event.CANCEL_TIMER)] = "_on_cancel_timer"
    t[(_R.CANCELLING, Event.INACTIVITY_TIMER)] = "_on_inactivity"


_fill()


class ReceiverSession:
    """One inbound block (sans-I/O).

    ``max_claims`` is how many reception claims fit one report in the MTU;
    ``first_report_serial`` seeds the report serial numbers.
    """

    def __init__(
        self,
        *,
        session: SessionId,
        config: SessionConfig,
        first_report_serial: int,
        max_claims: int,
        now: int,
        suspended: bool = False,
        hold: bool = False,
    ) -> None:
        self.session = session
        self.hold = hold
        """Hold the report of a delivered red part until ACCEPT (the client
        stored it) or cancel on REFUSE: nothing is acknowledged to the
        sender before its client has the block durably."""
        self.accepted = not hold
        self.config = config
        self.state = ReceiverState.RECEIVING
        self.suspended = suspended
        self.violations = 0
        self.red_len: int | None = None
        self.delivered = False
        self.accounted = 0
        self.new_bytes = 0
        """Block bytes received for the first time (duplicates not counted)."""
        """Buffer bytes the engine has counted for this session."""
        self._max_claims = max(1, max_claims)
        self._next_rs = first_report_serial
        self._red = RangeSet()
        self._buf = bytearray()
        self._green = RangeSet()
        self._gbuf = bytearray()
        self._green_end: int | None = None
        self._reports: dict[int, ReportSegment] = {}
        self._tries: dict[tuple[str, int], int] = {}
        self._timers: dict[tuple[str, int], Timer] = {}
        self._finished = False
        self._cancel_seg: CancelSegment | None = None
        self._deferred: DataSegment | None = None
        self._timers[("idle", 0)] = Timer(now, config.idle_ms, running=not suspended)

    # ------------------------------------------------------------ API

    @property
    def buffered(self) -> int:
        """Bytes of buffer this session holds."""
        return len(self._buf) + len(self._gbuf)

    def handle(
        self, inp: Input, seg: Segment | None, now: int, key: int = 0
    ) -> list[Effect]:
        """Feed one input (a segment of this session, or an event); returns effects."""
        name = RECEIVER_TRANSITIONS[(self.state, inp)]
        fn: Callable[[Segment | None, int, int], list[Effect]] = getattr(self, name)
        return fn(seg, now, key)

    def on_sent(self, seg: Segment, now: int) -> list[Effect]:
        """The engine sent ``seg`` now: start the timer of a report or cancel."""
        if isinstance(seg, ReportSegment) and seg.report_serial in self._reports:
            self._start_timer(("rs", seg.report_serial), now)
        elif isinstance(seg, CancelSegment) and self.state is ReceiverState.CANCELLING:
            self._start_timer(("cr", 0), now)
        return []

    def next_deadline(self) -> float:
        """Earliest running timer (``math.inf``: none)."""
        return min((t.deadline for t in self._timers.values()), default=math.inf)

    def on_timers(self, now: int) -> list[Effect]:
        """Handle every timer that is due."""
        out: list[Effect] = []
        for k in [k for k, t in self._timers.items() if t.deadline <= now]:
            if self._timers.pop(k, None) is None:
                continue
            ev = {
                "rs": Event.REPORT_TIMER,
                "cr": Event.CANCEL_TIMER,
                "idle": Event.INACTIVITY_TIMER,
                "defer": Event.DEFER_TIMER,
            }[k[0]]
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

    def full_report(self, serial: int, checkpoint_serial: int) -> ReportSegment | None:
        """A report claiming the whole red part (for a delivered block)."""
        if self.red_len is None:
            return None
        return full_report(self.session, serial, checkpoint_serial, self.red_len)

    # ------------------------------------------------------------ helpers

    def _start_timer(self, key: tuple[str, int], now: int) -> None:
        self._timers[key] = Timer(now, self.config.rto_ms, running=not self.suspended)

    def _touch(self, now: int) -> None:
        self._timers[("idle", 0)] = Timer(
            now, self.config.idle_ms, running=not self.suspended
        )

    def _finish(self, ok: bool, reason: str, code: int | None = None) -> list[Effect]:
        if self._finished:
            return []
        self._finished = True
        return [Finished(ok, reason, code)]

    def _close(self, ok: bool, reason: str) -> list[Effect]:
        self.state = ReceiverState.CLOSED
        self._timers.clear()
        self._free()
        return self._finish(ok, reason)

    def _free(self) -> None:
        self._buf = bytearray()
        self._gbuf = bytearray()

    def _cancel(self, reason: CancelReason, why: str) -> list[Effect]:
        self.state = ReceiverState.CANCELLING
        self._timers = {k: t for k, t in self._timers.items() if k[0] == "idle"}
        self._reports.clear()
        self._free()
        self._cancel_seg = CancelSegment(
            session=self.session, from_sender=False, reason=reason
        )
        return [
            SendControl(self._cancel_seg, timed=True),
            *self._finish(False, why, reason),
        ]

    def _new_rs(self) -> int:
        rs = self._next_rs
        self._next_rs = rs + 1 if rs < 2**63 else 1
        return rs

    def _reports_for(self, cp: DataSegment) -> list[Effect]:
        upper = cp.end
        answered = self._reports.get(cp.report_serial or 0)
        if answered is not None:
            upper = max(upper, answered.upper_bound)
        if self.delivered:
            assert self.red_len is not None
            ranges = [(0, self.red_len)]
            upper = max(upper, self.red_len)
        else:
            ranges = self._red.clipped(0, upper)
        out: list[Effect] = []
        lower = 0
        chunks = [
            ranges[i : i + self._max_claims]
            for i in range(0, len(ranges), self._max_claims)
        ] or [[]]
        for i, chunk in enumerate(chunks):
            hi = upper if i == len(chunks) - 1 else chunk[-1][1]
            rs = ReportSegment(
                session=self.session,
                report_serial=self._new_rs(),
                checkpoint_serial=cp.checkpoint_serial or 0,
                upper_bound=hi,
                lower_bound=lower,
                claims=tuple(ReceptionClaim(s - lower, e - s) for s, e in chunk),
            )
            self._reports[rs.report_serial] = rs
            out.append(SendControl(rs, timed=True))
            lower = hi
        return out

    # ------------------------------------------------------------ transitions

    def _violation(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        self.violations += 1
        return []

    def _ignore(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        return []

    def _ack_cancel(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        return [SendControl(CancelAckSegment(session=self.session, to_sender=True))]

    def _on_red(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        assert isinstance(seg, DataSegment)
        self._touch(now)
        if seg.type.is_eorp:
            if self.red_len is not None and self.red_len != seg.end:
                return self._cancel(CancelReason.MISCOLORED, "two ends of red part")
            self.red_len = seg.end
        if (self.red_len is not None and seg.end > self.red_len) or (
            len(self._green) and self._green.clipped(0, seg.end)
        ):
            return self._cancel(CancelReason.MISCOLORED, "red data beyond green")
        if self.red_len is not None and self._red.clipped(self.red_len, 2**64):
            return self._cancel(CancelReason.MISCOLORED, "red data beyond its end")
        fresh = self._red.add(seg.offset, seg.end)
        self.new_bytes += fresh
        if fresh:
            if len(self._buf) < seg.end:
                self._buf.extend(bytes(seg.end - len(self._buf)))
            self._buf[seg.offset : seg.end] = seg.data
        out: list[Effect] = []
        if self.red_len is not None and self._red.covers(0, self.red_len):
            self.delivered = True
            self.state = ReceiverState.DELIVERED
            out.append(Delivered(bytes(self._buf[: self.red_len]), True))
            self._free()
        if seg.type.is_checkpoint and (
            self._deferred is None or seg.end >= self._deferred.end
        ):
            self._deferred = seg
        cp = self._deferred
        if cp is None or (self.delivered and not self.accepted):
            return out
        if (
            self.delivered
            or self.config.report_delay_ms == 0
            or self._red.covers(0, cp.end)
        ):
            # Nothing missing before the checkpoint (or no deferring): report now.
            self._deferred = None
            self._timers.pop(("defer", 0), None)
            return out + self._reports_for(cp)
        if ("defer", 0) not in self._timers:
            self._timers[("defer", 0)] = Timer(
                now, self.config.report_delay_ms, running=not self.suspended
            )
        return out

    def _on_red_after_delivery(
        self, seg: Segment | None, now: int, key: int
    ) -> list[Effect]:
        assert isinstance(seg, DataSegment)
        self._touch(now)
        if not seg.type.is_checkpoint:
            return []
        if not self.accepted:
            self._deferred = seg  # answered once the client accepts the block
            return []
        return self._reports_for(seg)

    def _on_accept(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        if self.accepted:
            return []
        self.accepted = True
        cp, self._deferred = self._deferred, None
        self._timers.pop(("defer", 0), None)
        return self._reports_for(cp) if cp is not None else []

    def _on_refuse(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        if self.accepted:
            return []
        return self._cancel(CancelReason(key), "refused by the client")

    def _on_green(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        assert isinstance(seg, DataSegment)
        self._touch(now)
        if (self.red_len is not None and seg.offset < self.red_len) or (
            self._red.clipped(seg.offset, 2**64)
        ):
            return self._cancel(CancelReason.MISCOLORED, "green data inside red part")
        if len(self._red) or self.red_len is not None:
            return []  # green part of a mixed block: not delivered (spec/ltp.md)
        if seg.type.is_eob:
            if self._green_end is not None and self._green_end != seg.end:
                return self._cancel(CancelReason.MISCOLORED, "two ends of block")
            self._green_end = seg.end
        if self._green_end is not None and seg.end > self._green_end:
            return self._cancel(CancelReason.MISCOLORED, "data beyond end of block")
        fresh = self._green.add(seg.offset, seg.end)
        self.new_bytes += fresh
        if fresh:
            if len(self._gbuf) < seg.end:
                self._gbuf.extend(bytes(seg.end - len(self._gbuf)))
            self._gbuf[seg.offset : seg.end] = seg.data
        if self._green_end is not None and self._green.covers(0, self._green_end):
            data = bytes(self._gbuf[: self._green_end])
            return [Delivered(data, False), *self._close(True, "green block received")]
        return []

    def _on_report_ack(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        assert isinstance(seg, ReportAckSegment)
        serial = seg.report_serial
        if self._reports.pop(serial, None) is None:
            return []
        self._timers.pop(("rs", serial), None)
        # Close once the reports sent since the client accepted the block are
        # all acknowledged (an RA for an older report is not enough: the one
        # claiming everything may still be on its way, or lost).
        if (
            self.state is ReceiverState.DELIVERED
            and self.accepted
            and not self._reports
        ):
            return self._close(True, "red part delivered and reported")
        return []

    def _on_defer_timer(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        if self.delivered and not self.accepted:
            return []
        cp, self._deferred = self._deferred, None
        return self._reports_for(cp) if cp is not None else []

    def _on_report_timer(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        rs = self._reports.get(key)
        if rs is None:
            return []
        tries = self._tries.get(("rs", key), 0)
        if tries >= self.config.max_retries:
            if self.state is ReceiverState.DELIVERED:
                return self._close(True, "delivered; report never acknowledged")
            return self._cancel(
                CancelReason.RLEXC, f"report unacknowledged after {tries} retries"
            )
        self._tries[("rs", key)] = tries + 1
        return [SendControl(rs, timed=True)]

    def _on_inactivity(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        if self.state is ReceiverState.RECEIVING and len(self._red):
            out = self._cancel(CancelReason.SYS_CNCLD, "sender silent")
            self._timers.clear()
            self.state = ReceiverState.CLOSED
            return out
        return self._close(self.delivered, "inactive")

    def _on_local_cancel(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        return self._cancel(CancelReason(key), "cancelled locally")

    def _on_cancel_from_sender(
        self, seg: Segment | None, now: int, key: int
    ) -> list[Effect]:
        assert isinstance(seg, CancelSegment)
        code = seg.reason
        name = code.name if isinstance(code, CancelReason) else str(code)
        ack = SendControl(CancelAckSegment(session=self.session, to_sender=True))
        return [ack, *self._close(False, f"cancelled by the sender ({name})")]

    def _on_cancel_ack(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        self.state = ReceiverState.CLOSED
        self._timers.clear()
        return []

    def _on_cancel_timer(self, seg: Segment | None, now: int, key: int) -> list[Effect]:
        tries = self._tries.get(("cr", 0), 0)
        if tries >= self.config.max_retries or self._cancel_seg is None:
            self.state = ReceiverState.CLOSED
            self._timers.clear()
            return []
        self._tries[("cr", 0)] = tries + 1
        return [SendControl(self._cancel_seg, timed=True)]


def full_report(
    session: SessionId, serial: int, checkpoint_serial: int, red_len: int
) -> ReportSegment:
    """A report claiming all of ``[0, red_len)``."""
    return ReportSegment(
        session=session,
        report_serial=serial,
        checkpoint_serial=checkpoint_serial,
        upper_bound=red_len,
        lower_bound=0,
        claims=(ReceptionClaim(0, red_len),) if red_len else (),
    )
