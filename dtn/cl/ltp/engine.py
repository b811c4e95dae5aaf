"""The LTP engine: sessions multiplexed over spans, paced, bounded (sans-I/O).

Theory of operation
-------------------
An :class:`LtpEngine` is one LTP engine (RFC 5326 section 1.1): it owns every
session this engine sends (:class:`~dcis.dtn.cl.ltp.sender.SenderSession`) or
receives (:class:`~dcis.dtn.cl.ltp.receiver.ReceiverSession`), and one *span* per
remote engine it talks to. It never reads a clock or touches a socket: every
method takes ``now`` (milliseconds, any monotonic origin) and returns
:data:`Output` values for its driver.

- Send: :meth:`LtpEngine.send_block` opens a session; its segments are cut
  to the span's MTU when they leave. Outputs :class:`SendSegment`, later
  :class:`BlockSent` (``ok``: the red part was fully acknowledged; not
  ``ok``: cancelled -- the caller may route the block elsewhere).
- Receive: :meth:`LtpEngine.on_datagram` decodes one segment and routes it
  to its session (a new receiver session for the first data segment of an
  unknown session from a configured engine). Outputs
  :class:`BlockReceived` once per block.
- Pacing: each span has a queue in three classes -- control segments
  (reports, acks, cancels, resent checkpoints), retransmitted data, new data
  -- served in that order through a token bucket at the span's rate.
  Timers of checkpoints and reports start when their segment leaves, so
  queueing is never mistaken for loss. :meth:`next_deadline` includes the
  moment the bucket allows the next segment.
- Link state (section 6): :meth:`set_link` marks a span down or up. While
  down nothing is sent to it and every timer of its sessions is suspended;
  at the next contact they resume with the time they had left.
- Bounds: at most ``max_sessions`` outbound sessions (:meth:`can_send`
  says whether another fits), ``max_receive_sessions`` inbound ones,
  ``max_block_bytes`` per block and ``max_buffered_bytes`` of receive
  buffer in total; a session that would pass a bound is refused or cancelled
  with SYS_CNCLD. Segments from engines that are not configured spans are
  dropped. Closed session ids are remembered (``closed_memory`` of each
  kind) so that a late duplicate can neither open a new session nor be
  delivered twice; a late checkpoint of a delivered block is answered with a
  report claiming all of it, a late report with its RA, a late cancel with
  its ack.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace

from dcis.dtn.cl.ltp.common import (
    Delivered,
    Effect,
    Event,
    Finished,
    SendControl,
    SendData,
    SessionConfig,
)
from dcis.dtn.cl.ltp.receiver import ReceiverSession, ReceiverState, full_report
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
    data_header_bytes,
    decode_segment_untrusted,
    encode_segment,
    segment_type,
)
from dcis.dtn.cl.ltp.sender import SenderSession, SenderState
from dcis.dtn.errors import DecodeError, DtnError, InvalidArgument

BUNDLE_SERVICE = 1
"""RFC 7122 section 3: client service id 1 is the Bundle Protocol."""

MIN_MTU = 128


class EngineBusy(DtnError):
    """No room for another outbound session (``max_sessions``)."""


@dataclass(frozen=True, slots=True)
class SendSegment:
    """Output: send ``data`` (one encoded segment) to engine ``engine_id``."""

    engine_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BlockSent:
    """Output: the block sent with ``token`` is done; ``ok`` means its red
    part was fully acknowledged (or, all green, that it all left)."""

    engine_id: int
    token: int
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BlockReceived:
    """Output: a block (its red part, or a whole green-only block) arrived."""

    engine_id: int
    session_number: int
    data: bytes
    red: bool
    client_service: int = BUNDLE_SERVICE


Output = SendSegment | BlockSent | BlockReceived


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanConfig:
    """A remote engine we talk to (its UDP address is the driver's business)."""

    engine_id: int
    mtu_bytes: int = 1400
    rate_bytes_s: float = 0.0
    session: SessionConfig = field(default_factory=SessionConfig)

    def __post_init__(self) -> None:
        if self.mtu_bytes < MIN_MTU:
            raise InvalidArgument(f"mtu_bytes must be >= {MIN_MTU}")
        if self.rate_bytes_s < 0 or not math.isfinite(self.rate_bytes_s):
            raise InvalidArgument("rate_bytes_s must be finite and >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Bounds of one engine (node.toml ``[ltp]``)."""

    max_sessions: int = 64
    max_receive_sessions: int = 256
    max_block_bytes: int = 256 * 1024 * 1024
    max_buffered_bytes: int = 512 * 1024 * 1024
    closed_memory: int = 4096
    release_limit: int = 256
    """Most segments released per call; more wait for the next ``on_tick``."""
    client_services: frozenset[int] = frozenset({BUNDLE_SERVICE})
    hold_reports: bool = False
    """Hold a delivered block's final report until :meth:`LtpEngine.accept_block`."""

    def __post_init__(self) -> None:
        if min(self.max_sessions, self.max_receive_sessions, self.release_limit) < 1:
            raise InvalidArgument("session bounds and release_limit must be >= 1")
        if self.max_block_bytes < 1 or self.max_buffered_bytes < 1:
            raise InvalidArgument("byte bounds must be >= 1")


@dataclass(slots=True)
class _Job:
    number: int
    pos: int
    end: int
    cp: int | None
    rs: int


@dataclass(slots=True)
class _Span:
    config: SpanConfig
    up: bool = True
    ctrl: deque[tuple[object, Segment]] = field(default_factory=deque)
    retx: deque[_Job] = field(default_factory=deque)
    data: deque[_Job] = field(default_factory=deque)
    head: tuple[object, Segment, bytes] | None = None
    tokens: float = 0.0
    last_ms: int | None = None
    release_at: float = math.inf
    sent_bytes: int = 0

    def queued(self) -> bool:
        return bool(self.head or self.ctrl or self.retx or self.data)


@dataclass(slots=True)
class EngineCounters:
    """What the engine did (``dcis status`` shows them)."""

    segments_out: int = 0
    segments_in: int = 0
    bytes_out: int = 0
    junk: int = 0
    unknown_engine: int = 0
    violations: int = 0
    blocks_sent: int = 0
    blocks_failed: int = 0
    blocks_received: int = 0
    refused_sessions: int = 0
    cancelled_in: int = 0
    late_segments: int = 0
    retransmitted_bytes: int = 0
    new_bytes_in: int = 0
    """Block bytes received for the first time: the receive goodput."""


class LtpEngine:
    """One LTP engine (see the module docstring). ``rng`` seeds session and
    serial numbers."""

    def __init__(
        self,
        engine_id: int,
        *,
        config: EngineConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine_id = engine_id
        self.config = config or EngineConfig()
        self.counters = EngineCounters()
        self._rng = rng or random.Random(engine_id)
        self._spans: dict[int, _Span] = {}
        self._out: dict[
            int, tuple[SenderSession, int, int]
        ] = {}  # number -> (s, span, token)
        self._in: dict[SessionId, ReceiverSession] = {}
        self._closed_out: OrderedDict[int, int] = OrderedDict()  # number -> span
        self._closed_in: OrderedDict[SessionId, int | None] = (
            OrderedDict()
        )  # -> red_len
        self._buffered = 0
        self._next_number = self._rng.randrange(1, 2**31)
        self._outputs: list[Output] = []
        # Timer heap: (deadline, seq, key) with key ("o", number) or ("i",
        # SessionId); _armed[key] is the earliest deadline pushed for it.
        # Entries go stale when a session's timers move later or it closes;
        # they are dropped (and the session re-armed) when they reach the top.
        self._heap: list[tuple[float, int, tuple[str, object]]] = []
        self._armed: dict[tuple[str, object], float] = {}
        self._seq = 0

    # ------------------------------------------------------------ spans

    def add_span(self, span: SpanConfig, *, up: bool = True) -> None:
        """Configure a remote engine (replacing its settings if known)."""
        old = self._spans.get(span.engine_id)
        if old is None:
            self._spans[span.engine_id] = _Span(span, up=up)
            return
        old.config = span
        for s in self._sessions_of(span.engine_id):
            s.config = span.session

    def span_config(self, engine_id: int) -> SpanConfig:
        """The settings of a configured span (KeyError if none)."""
        return self._spans[engine_id].config

    def set_link(
        self,
        engine_id: int,
        up: bool,
        now: int,
        *,
        owlt_ms: int | None = None,
        rate_bytes_s: float | None = None,
    ) -> list[Output]:
        """The link to ``engine_id`` came up or went down (RFC 5326 section 6:
        timers are suspended while it is down); optionally with the new
        contact's light time and rate."""
        span = self._spans[engine_id]
        cfg = span.config
        if owlt_ms is not None:
            cfg = replace(cfg, session=replace(cfg.session, owlt_ms=max(0, owlt_ms)))
        if rate_bytes_s is not None:
            cfg = replace(cfg, rate_bytes_s=max(0.0, rate_bytes_s))
        if cfg is not span.config:
            self.add_span(cfg)
        if span.up != up:
            span.up = up
            span.last_ms = None
            for s in self._sessions_of(engine_id):
                if up:
                    s.resume(now)
                else:
                    s.suspend(now)
                self._arm(s)
        return self._flush(now)

    def is_up(self, engine_id: int) -> bool:
        """Whether the link to ``engine_id`` is up."""
        return self._spans[engine_id].up

    def _sessions_of(self, engine_id: int) -> list[SenderSession | ReceiverSession]:
        out: list[SenderSession | ReceiverSession] = [
            s for s, sp, _ in self._out.values() if sp == engine_id
        ]
        out += [s for sid, s in self._in.items() if sid.originator == engine_id]
        return out

    # ------------------------------------------------------------ sending

    def can_send(self) -> bool:
        """Whether :meth:`send_block` would accept another block now."""
        return len(self._out) < self.config.max_sessions

    @property
    def sessions_out(self) -> int:
        """Open outbound sessions."""
        return len(self._out)

    @property
    def sessions_in(self) -> int:
        """Open inbound sessions."""
        return len(self._in)

    @property
    def buffered_bytes(self) -> int:
        """Receive buffer held by inbound sessions."""
        return self._buffered

    def send_block(
        self,
        engine_id: int,
        block: bytes,
        *,
        red_len: int,
        token: int,
        now: int,
        client_service: int = BUNDLE_SERVICE,
    ) -> list[Output]:
        """Open a session sending ``block`` (``red_len`` bytes of it red) to
        ``engine_id``. Raises :class:`EngineBusy` when ``max_sessions`` are
        open, :class:`InvalidArgument` for an unknown span or a bad block."""
        span = self._spans.get(engine_id)
        if span is None:
            raise InvalidArgument(f"no span for engine {engine_id}")
        if not self.can_send():
            raise EngineBusy(f"{len(self._out)} sessions open")
        if not block or len(block) > self.config.max_block_bytes:
            raise InvalidArgument(f"block of {len(block)} bytes")
        number = self._next_number
        while number in self._out or number in self._closed_out:
            number = number + 1 if number < 2**63 else 1
        self._next_number = number + 1 if number < 2**63 else 1
        s = SenderSession(
            session=SessionId(self.engine_id, number),
            block=bytes(block),
            red_len=red_len,
            client_service=client_service,
            config=span.config.session,
            first_checkpoint_serial=self._rng.randrange(1, 2**31),
            suspended=not span.up,
        )
        self._out[number] = (s, engine_id, token)
        self._sender_effects(number, s.start(), now)
        return self._flush(now)

    def cancel_block(self, token: int, now: int) -> list[Output]:
        """Cancel the outbound session of ``token`` (USR_CNCLD)."""
        for number, (s, _, t) in list(self._out.items()):
            if t == token:
                self._sender_effects(
                    number,
                    s.handle(Event.CANCEL, None, now, CancelReason.USR_CNCLD),
                    now,
                )
        return self._flush(now)

    def accept_block(
        self, engine_id: int, session_number: int, now: int
    ) -> list[Output]:
        """The client holds the block it received in this session durably:
        the report acknowledging it may go (``hold_reports``)."""
        return self._client_verdict(engine_id, session_number, Event.ACCEPT, now)

    def refuse_block(
        self, engine_id: int, session_number: int, now: int
    ) -> list[Output]:
        """The client could not take the block: cancel the session (CR
        SYS_CNCLD) so that the sender keeps it and tries again."""
        return self._client_verdict(engine_id, session_number, Event.REFUSE, now)

    def _client_verdict(
        self, engine_id: int, session_number: int, ev: Event, now: int
    ) -> list[Output]:
        sid = SessionId(engine_id, session_number)
        s = self._in.get(sid)
        if s is not None:
            self._receiver_effects(
                sid, s.handle(ev, None, now, CancelReason.SYS_CNCLD), now
            )
        return self._flush(now)

    # ------------------------------------------------------------ receiving

    def on_datagram(self, data: bytes, now: int) -> list[Output]:
        """One received datagram (one segment, RFC 7122). Malformed bytes are
        counted (``junk``) and dropped; never raises for the peer's input."""
        try:
            seg = decode_segment_untrusted(data)
        except DecodeError:
            self.counters.junk += 1
            return self._flush(now)
        self.counters.segments_in += 1
        return self.on_segment(seg, now)

    def on_segment(self, seg: Segment, now: int) -> list[Output]:
        """One decoded segment."""
        sid = seg.session
        kind = segment_type(seg)
        if sid.originator == self.engine_id:
            self._to_sender(sid, kind, seg, now)
        elif sid.originator in self._spans:
            self._to_receiver(sid, kind, seg, now)
        else:
            self.counters.unknown_engine += 1
        return self._flush(now)

    def _to_sender(
        self, sid: SessionId, kind: SegmentType, seg: Segment, now: int
    ) -> None:
        entry = self._out.get(sid.number)
        if entry is None:
            span = self._closed_out.get(sid.number)
            if span is None or span not in self._spans:
                self.counters.late_segments += 1
                return
            if isinstance(seg, ReportSegment):
                self._queue_ctrl(
                    span,
                    None,
                    ReportAckSegment(session=sid, report_serial=seg.report_serial),
                )
            elif kind is SegmentType.CANCEL_FROM_RECEIVER:
                self._queue_ctrl(
                    span, None, CancelAckSegment(session=sid, to_sender=False)
                )
            else:
                self.counters.late_segments += 1
            return
        s = entry[0]
        before = s.violations
        self._sender_effects(sid.number, s.handle(kind, seg, now), now)
        self.counters.violations += s.violations - before

    def _to_receiver(
        self, sid: SessionId, kind: SegmentType, seg: Segment, now: int
    ) -> None:
        span = self._spans[sid.originator]
        s = self._in.get(sid)
        if s is None:
            if sid in self._closed_in:
                self._late_to_receiver(sid, seg)
                return
            if not isinstance(seg, DataSegment):
                if kind is SegmentType.CANCEL_FROM_SENDER:
                    self._queue_ctrl(
                        sid.originator,
                        None,
                        CancelAckSegment(session=sid, to_sender=True),
                    )
                else:
                    self.counters.late_segments += 1
                return
            refuse: CancelReason | None = None
            if seg.client_service not in self.config.client_services:
                refuse = CancelReason.UNREACH
            elif len(self._in) >= self.config.max_receive_sessions:
                refuse = CancelReason.SYS_CNCLD
            if refuse is not None:
                self.counters.refused_sessions += 1
                self._remember_in(sid, None)
                self._queue_ctrl(
                    sid.originator,
                    None,
                    CancelSegment(session=sid, from_sender=False, reason=refuse),
                )
                return
            mtu = span.config.mtu_bytes
            s = ReceiverSession(
                session=sid,
                config=span.config.session,
                first_report_serial=self._rng.randrange(1, 2**31),
                max_claims=(mtu - 64) // 20,
                now=now,
                suspended=not span.up,
                hold=self.config.hold_reports,
            )
            self._in[sid] = s
        if isinstance(seg, DataSegment) and seg.end > self.config.max_block_bytes:
            effects = s.handle(Event.CANCEL, None, now, CancelReason.SYS_CNCLD)
        else:
            before_v, before_n = s.violations, s.new_bytes
            effects = s.handle(kind, seg, now)
            self.counters.violations += s.violations - before_v
            self.counters.new_bytes_in += s.new_bytes - before_n
        self._receiver_effects(sid, effects, now)

    def _late_to_receiver(self, sid: SessionId, seg: Segment) -> None:
        red_len = self._closed_in[sid]
        if isinstance(seg, DataSegment) and seg.type.is_checkpoint and red_len:
            # The sender missed our last report: tell it again that it all came.
            rs = full_report(
                sid,
                self._rng.randrange(1, 2**31),
                seg.checkpoint_serial or 0,
                red_len,
            )
            self._queue_ctrl(sid.originator, None, rs)
        elif isinstance(seg, CancelSegment) and seg.from_sender:
            self._queue_ctrl(
                sid.originator, None, CancelAckSegment(session=sid, to_sender=True)
            )
        else:
            self.counters.late_segments += 1

    # ------------------------------------------------------------ effects

    def _queue_ctrl(self, engine_id: int, owner: object, seg: Segment) -> None:
        self._spans[engine_id].ctrl.append((owner, seg))

    def _sender_effects(self, number: int, effects: list[Effect], now: int) -> None:
        entry = self._out.get(number)
        if entry is None:
            return
        s, span_id, token = entry
        span = self._spans[span_id]
        for e in effects:
            if isinstance(e, SendControl):
                span.ctrl.append((number if e.timed else None, e.segment))
            elif isinstance(e, SendData):
                job = _Job(number, e.start, e.end, e.checkpoint_serial, e.report_serial)
                (span.retx if e.retransmission else span.data).append(job)
            elif isinstance(e, Finished):
                if e.ok:
                    self.counters.blocks_sent += 1
                else:
                    self.counters.blocks_failed += 1
                self._outputs.append(BlockSent(span_id, token, e.ok, e.reason))
        self._arm(s)
        if s.state is SenderState.CLOSED:
            del self._out[number]
            self.counters.retransmitted_bytes += s.retransmitted_bytes
            self._closed_out[number] = span_id
            while len(self._closed_out) > self.config.closed_memory:
                self._closed_out.popitem(last=False)

    def _receiver_effects(
        self, sid: SessionId, effects: list[Effect], now: int
    ) -> None:
        s = self._in.get(sid)
        if s is None:
            return
        for e in effects:
            if isinstance(e, SendControl):
                self._queue_ctrl(sid.originator, sid if e.timed else None, e.segment)
            elif isinstance(e, Delivered):
                self.counters.blocks_received += 1
                self._outputs.append(
                    BlockReceived(sid.originator, sid.number, e.data, e.red)
                )
            elif isinstance(e, Finished) and not e.ok:
                self.counters.cancelled_in += 1
        self._account(sid, s, now)
        self._arm(s)
        if s.state is ReceiverState.CLOSED:
            del self._in[sid]
            self._remember_in(sid, s.red_len if s.delivered and s.accepted else None)

    def _account(self, sid: SessionId, s: ReceiverSession, now: int) -> None:
        # The engine's buffered total follows each session's change.
        new = s.buffered if s.state is not ReceiverState.CLOSED else 0
        self._buffered += new - s.accounted
        s.accounted = new
        if (
            self._buffered > self.config.max_buffered_bytes
            and s.state is ReceiverState.RECEIVING
        ):
            for e in s.handle(Event.CANCEL, None, now, CancelReason.SYS_CNCLD):
                if isinstance(e, SendControl):
                    self._queue_ctrl(sid.originator, sid, e.segment)
                elif isinstance(e, Finished):
                    self.counters.cancelled_in += 1
            self._buffered -= s.accounted
            s.accounted = 0

    def _remember_in(self, sid: SessionId, red_len: int | None) -> None:
        self._closed_in[sid] = red_len
        while len(self._closed_in) > self.config.closed_memory:
            self._closed_in.popitem(last=False)

    # ------------------------------------------------------------ time

    @staticmethod
    def _key(s: SenderSession | ReceiverSession) -> tuple[str, object]:
        if isinstance(s, SenderSession):
            return ("o", s.session.number)
        return ("i", s.session)

    def _session(
        self, key: tuple[str, object]
    ) -> SenderSession | ReceiverSession | None:
        k = key[1]
        if isinstance(k, int):
            entry = self._out.get(k)
            return entry[0] if entry is not None else None
        assert isinstance(k, SessionId)
        return self._in.get(k)

    def _arm(self, s: SenderSession | ReceiverSession) -> None:
        """Make sure the timer heap holds ``s``'s earliest deadline."""
        d = s.next_deadline()
        key = self._key(s)
        if d < self._armed.get(key, math.inf):
            self._armed[key] = d
            self._seq += 1
            heapq.heappush(self._heap, (d, self._seq, key))

    def _top(self) -> tuple[float, SenderSession | ReceiverSession] | None:
        """The earliest real deadline and its session (stale entries dropped)."""
        while self._heap:
            d, _, key = self._heap[0]
            s = self._session(key)
            if s is None or self._armed.get(key) != d:
                heapq.heappop(self._heap)
                if s is None and self._armed.get(key) == d:
                    del self._armed[key]
                continue
            real = s.next_deadline()
            if real == d:
                return d, s
            heapq.heappop(self._heap)  # its timers moved later: re-arm
            del self._armed[key]
            self._arm(s)
        return None

    def next_deadline(self) -> float | None:
        """When :meth:`on_tick` has something to do (None: nothing pending)."""
        top = self._top()
        d = top[0] if top is not None else math.inf
        for span in self._spans.values():
            if span.up and span.queued():
                d = min(d, span.release_at)
        return None if d == math.inf else d

    def on_tick(self, now: int) -> list[Output]:
        """Fire due timers and release what pacing allows."""
        while (top := self._top()) is not None and top[0] <= now:
            s = top[1]
            heapq.heappop(self._heap)
            del self._armed[self._key(s)]
            if isinstance(s, SenderSession):
                self._sender_effects(s.session.number, s.on_timers(now), now)
            else:
                self._receiver_effects(s.session, s.on_timers(now), now)
            self._arm(s)  # nothing happened (all its timers were later)
        return self._flush(now)

    # ------------------------------------------------------------ release

    def _flush(self, now: int) -> list[Output]:
        for engine_id, span in self._spans.items():
            if span.up and span.queued():
                self._drain(engine_id, span, now)
        out, self._outputs = self._outputs, []
        return out

    def _next_item(self, span: _Span) -> tuple[object, Segment, bytes] | None:
        if span.ctrl:
            owner, seg = span.ctrl.popleft()
            return owner, seg, encode_segment(seg)
        for q in (span.retx, span.data):
            while q:
                job = q[0]
                entry = self._out.get(job.number)
                if entry is None or entry[0].state not in (
                    SenderState.SENDING,
                    SenderState.WAITING,
                ):
                    q.popleft()
                    continue
                s = entry[0]
                room = span.config.mtu_bytes - data_header_bytes(
                    originator=self.engine_id,
                    number=job.number,
                    client_service=s.client_service,
                    offset=job.end,
                    length=span.config.mtu_bytes,
                )
                end = min(job.end, job.pos + max(1, room))
                last = end == job.end
                seg = s.piece(job.pos, end, job.cp if last else None, job.rs)
                job.pos = end
                if last:
                    q.popleft()
                return job.number, seg, encode_segment(seg)
        return None

    def _drain(self, engine_id: int, span: _Span, now: int) -> None:
        rate = span.config.rate_bytes_s
        cap = max(float(span.config.mtu_bytes), rate * 0.1)
        if rate > 0:
            if span.last_ms is None:
                span.tokens = cap
            else:
                span.tokens = min(cap, span.tokens + (now - span.last_ms) * rate / 1000)
            span.last_ms = now
        released = 0
        span.release_at = math.inf
        while True:
            if released >= self.config.release_limit:
                span.release_at = now
                return
            item = span.head or self._next_item(span)
            span.head = None
            if item is None:
                return
            owner, seg, wire = item
            if rate > 0 and span.tokens + 1e-6 < len(wire):
                span.head = item
                span.release_at = now + math.ceil(
                    (len(wire) - span.tokens) * 1000 / rate
                )
                return
            if rate > 0:
                span.tokens -= len(wire)
            released += 1
            self.counters.segments_out += 1
            self.counters.bytes_out += len(wire)
            span.sent_bytes += len(wire)
            self._outputs.append(SendSegment(engine_id, wire))
            self._on_sent(owner, seg, now)

    def _on_sent(self, owner: object, seg: Segment, now: int) -> None:
        if isinstance(owner, int):
            entry = self._out.get(owner)
            if entry is not None:
                self._sender_effects(owner, entry[0].on_sent(seg, now), now)
        elif isinstance(owner, SessionId):
            r = self._in.get(owner)
            if r is not None:
                self._receiver_effects(owner, r.on_sent(seg, now), now)
