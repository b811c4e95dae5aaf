"""What the LTP session machines and the engine share: inputs, effects,
timers and tunables (sans-I/O)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from dcis.dtn.cl.ltp.segment import CancelReason, Segment, SegmentType
from dcis.dtn.errors import InvalidArgument


class Event(enum.Enum):
    """Session inputs that are not segments: timers and local requests."""

    CHECKPOINT_TIMER = "checkpoint_timer"
    REPORT_TIMER = "report_timer"
    CANCEL_TIMER = "cancel_timer"
    INACTIVITY_TIMER = "inactivity_timer"
    DEFER_TIMER = "defer_timer"
    ACCEPT = "accept"
    REFUSE = "refuse"
    ALL_SENT = "all_sent"
    CANCEL = "cancel"


Input = SegmentType | Event
"""What a session's transition table is keyed by (with its state)."""


@dataclass(frozen=True, slots=True)
class SendControl:
    """Effect: queue ``segment`` ahead of data; ``timed`` means the session
    starts a timer when the engine reports it sent (``on_sent``)."""

    segment: Segment
    timed: bool = False


@dataclass(frozen=True, slots=True)
class SendData:
    """Effect: queue block bytes ``[start, end)`` for transmission, cut to the
    MTU; the last piece is a checkpoint with these serials when
    ``checkpoint_serial`` is set. ``retransmission`` ones go first."""

    start: int
    end: int
    checkpoint_serial: int | None = None
    report_serial: int = 0
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """Effect: the session is over. Sender: ``ok`` means the red part was
    acknowledged in full (or the green part all sent). Receiver: ``ok`` means
    it closed normally."""

    ok: bool
    reason: str = ""
    cancel_reason: CancelReason | int | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    """Effect (receiver): a whole block part arrived: ``red`` part, or a whole
    green-only block."""

    data: bytes
    red: bool


Effect = SendControl | SendData | Finished | Delivered


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Timer and retry tunables (see spec/ltp.md, "Timers").

    - ``owlt_ms``: one-way light time of the span (from the contact plan).
    - ``margin_ms``: added to the round trip for the remote's processing and
      queueing; a retransmission timer runs ``2 x owlt_ms + margin_ms``.
    - ``max_retries``: retransmissions of one checkpoint, report or cancel
      before giving up (checkpoint/report: cancel with RLEXC).
    - ``max_cycles``: report/retransmission cycles per session before the
      sender cancels with RXMTCYCEXC.
    - ``inactivity_ms``: a receiver session that hears nothing for this long
      (link-up time only) is closed, so that a vanished sender cannot pin
      its buffer; 0 means ``(max_retries + 2) x 2 x rto``.
    - ``report_delay_ms``: a receiver that gets a checkpoint while bytes
      before it are missing waits this long before reporting (deferred
      report), so that segments merely reordered on the way are not
      reported missing and sent twice; 0 reports at once.
    """

    owlt_ms: int = 0
    margin_ms: int = 1_000
    max_retries: int = 10
    max_cycles: int = 100
    inactivity_ms: int = 0
    report_delay_ms: int = 0

    def __post_init__(self) -> None:
        if self.owlt_ms < 0 or self.margin_ms < 1 or self.max_retries < 0:
            raise InvalidArgument("owlt_ms >= 0, margin_ms >= 1, max_retries >= 0")
        if self.max_cycles < 1 or self.inactivity_ms < 0 or self.report_delay_ms < 0:
            raise InvalidArgument("max_cycles >= 1, inactivity_ms >= 0")

    @property
    def rto_ms(self) -> int:
        """Retransmission timeout: the round trip plus the margin."""
        return 2 * self.owlt_ms + self.margin_ms

    @property
    def idle_ms(self) -> int:
        """Receiver inactivity limit."""
        return self.inactivity_ms or (self.max_retries + 2) * 2 * self.rto_ms


class Timer:
    """A countdown that can be suspended while the link is down (RFC 5326
    section 6.1: the remote cannot answer while it cannot hear us)."""

    __slots__ = ("deadline", "remaining")

    def __init__(self, now: int, duration_ms: int, *, running: bool = True) -> None:
        self.deadline: float = now + duration_ms if running else math.inf
        self.remaining = duration_ms

    def suspend(self, now: int) -> None:
        """Stop counting; what is left is kept."""
        if self.deadline != math.inf:
            self.remaining = max(0, int(self.deadline - now))
            self.deadline = math.inf

    def resume(self, now: int) -> None:
        """Count down what was left."""
        if self.deadline == math.inf:
            self.deadline = now + self.remaining
