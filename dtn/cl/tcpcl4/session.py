"""TCPCLv4 session state machine (RFC 9174), sans-I/O.

Theory of operation
-------------------
One :class:`Session` per TCP connection, active (we connected) or passive
(we accepted). The driver feeds received bytes with :meth:`Session.receive_data`,
writes what :meth:`Session.data_to_send` returns, calls :meth:`Session.on_tick`
at :meth:`Session.next_deadline`, and closes the connection once
:attr:`Session.closed` is true and nothing is left to send. Time is ``now`` in
milliseconds on any monotonic scale.

Setup (RFC 9174 section 4)::

    active                                  passive
    contact header  ------------------>
                    <------------------  contact header
    [TLS handshake when both set CAN_TLS: the driver does it on StartTls,
     then calls tls_established()]
    SESS_INIT       ------------------>
                    <------------------  SESS_INIT

The passive side waits for the active side's contact header and SESS_INIT
before sending its own. Negotiated: keepalive = the smaller of both (0: none),
segments no larger than the peer's segment MRU, whole transfers no larger
than its transfer MRU; the peer's node id is reported in SessionEstablished.

Transfers (section 5.2): a bundle is one transfer with its own id (ours count
from 0), cut into XFER_SEGMENTs with START on the first (carrying a Transfer
Length extension item) and END on the last. The receiver answers every
segment with a cumulative XFER_ACK; the final one waits until the driver has
stored the bundle (:meth:`Session.ack_transfer`; persist before you
acknowledge), or becomes an XFER_REFUSE (:meth:`Session.refuse_transfer`).
Only the acknowledgement of the whole length completes a transfer for the
sender (event TransferAcked): until then the bundle stays in the store.

Termination (section 6): SESS_TERM, answered by SESS_TERM with REPLY and the
same reason; transfers already started may finish, new ones are refused; the
connection closes when both have been sent and nothing is in progress.

Hostile input: every length a peer announces is bounded before any data is
buffered (:class:`~dcis.dtn.cl.tcpcl4.messages.Limits`: segment MRU, node id,
extension items; the transfer MRU bounds one reassembly). A bad contact
header closes the connection; a bad message ends the session with SESS_TERM
(MSG_REJECT first when the type is unknown); nothing here raises for bytes a
peer sends. Every transition is in :data:`TRANSITIONS`; a (state, input)
pair not in it is a protocol violation (MSG_REJECT "unexpected" inside an
established session, SESS_TERM before one).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, auto

from dcis.dtn.cl.tcpcl4.messages import (
    CONTACT_HEADER_BYTES,
    TRANSFER_LENGTH_EXTENSION,
    VERSION,
    ContactFlags,
    ContactHeader,
    ExtensionItem,
    KeepAlive,
    Limits,
    Message,
    MessageType,
    MsgReject,
    RefuseReason,
    RejectReason,
    SegmentFlags,
    SessInit,
    SessTerm,
    TermFlags,
    TermReason,
    XferAck,
    XferRefuse,
    XferSegment,
    decode_contact_header_untrusted,
    decode_message_untrusted,
    encode_contact_header,
    encode_message,
    encode_segment_head,
)
from dcis.dtn.errors import DecodeError, InvalidArgument

__all__ = [
    "TRANSITIONS",
    "BundleReceived",
    "Input",
    "Session",
    "SessionClosed",
    "SessionConfig",
    "SessionEstablished",
    "SessionEvent",
    "StartTls",
    "State",
    "TransferAcked",
    "TransferFailed",
    "TransferTooLarge",
]


class State(Enum):
    """Session states."""

    START = auto()
    CONTACT_WAIT = auto()  # our contact header sent (active) or awaited (passive)
    TLS_WAIT = auto()  # the driver is doing the TLS handshake
    INIT_WAIT = auto()  # waiting for the peer's SESS_INIT
    ESTABLISHED = auto()
    ENDING = auto()  # SESS_TERM sent or received
    CLOSED = auto()


class Input(Enum):
    """What moves the machine."""

    OPEN = auto()
    CONTACT_PLAIN = auto()
    CONTACT_TLS = auto()
    TLS_DONE = auto()
    SESS_INIT = auto()
    TRANSFER = auto()  # XFER_SEGMENT, XFER_ACK, XFER_REFUSE
    KEEPALIVE = auto()
    MSG_REJECT = auto()
    SESS_TERM = auto()
    LOCAL_TERM = auto()
    ALL_DONE = auto()  # both SESS_TERMs exchanged and nothing in progress
    FAIL = auto()  # bad bytes, timeout, connection lost


_S = State
_I = Input
TRANSITIONS: dict[tuple[State, Input], State] = {
    (_S.START, _I.OPEN): _S.CONTACT_WAIT,
    (_S.CONTACT_WAIT, _I.CONTACT_PLAIN): _S.INIT_WAIT,
    (_S.CONTACT_WAIT, _I.CONTACT_TLS): _S.TLS_WAIT,
    (_S.TLS_WAIT, _I.TLS_DONE): _S.INIT_WAIT,
    (_S.INIT_WAIT, _I.SESS_INIT): _S.ESTABLISHED,
    (_S.INIT_WAIT, _I.SESS_TERM): _S.ENDING,
    (_S.INIT_WAIT, _I.LOCAL_TERM): _S.ENDING,
    (_S.ESTABLISHED, _I.TRANSFER): _S.ESTABLISHED,
    (_S.ESTABLISHED, _I.KEEPALIVE): _S.ESTABLISHED,
    (_S.ESTABLISHED, _I.MSG_REJECT): _S.ESTABLISHED,
    (_S.ESTABLISHED, _I.SESS_TERM): _S.ENDING,
    (_S.ESTABLISHED, _I.LOCAL_TERM): _S.ENDING,
    (_S.ENDING, _I.TRANSFER): _S.ENDING,
    (_S.ENDING, _I.KEEPALIVE): _S.ENDING,
    (_S.ENDING, _I.MSG_REJECT): _S.ENDING,
    (_S.ENDING, _I.SESS_TERM): _S.ENDING,
    (_S.ENDING, _I.LOCAL_TERM): _S.ENDING,
    (_S.ENDING, _I.ALL_DONE): _S.CLOSED,
    **{(s, _I.FAIL): _S.CLOSED for s in State},
}
"""Every legal (state, input) -> next state; anything else is a protocol violation."""


class TransferTooLarge(InvalidArgument):
    """A bundle larger than the peer's transfer MRU (it would refuse it)."""


# -- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTls:
    """Both sides offered TLS: do the handshake now, then call ``tls_established``."""


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    """SESS_INIT exchanged: the negotiated parameters and the peer's node id."""

    peer_node_id: str
    keepalive_s: int
    peer_segment_mru: int
    peer_transfer_mru: int
    tls: bool


@dataclass(frozen=True, slots=True)
class BundleReceived:
    """A whole transfer arrived; answer with ``ack_transfer`` or ``refuse_transfer``."""

    transfer_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TransferAcked:
    """The peer acknowledged the whole of our transfer (or refused it as already held)."""

    transfer_id: int


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """Our transfer will not complete (refused, or the session ended first)."""

    transfer_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session is over; close the connection once ``data_to_send`` is empty."""

    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolProblem:
    """Something the peer did wrong that did not end the session (for the log)."""

    detail: str


SessionEvent = (
    StartTls
    | SessionEstablished
    | BundleReceived
    | TransferAcked
    | TransferFailed
    | SessionClosed
    | ProtocolProblem
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Local parameters of a session.

    - ``node_id``: our node id, e.g. ``"ipn:5.0"``.
    - ``keepalive_s``: proposed keepalive interval (0: none).
    - ``segment_mru``: largest segment we accept (bounds the receive buffer).
    - ``transfer_mru``: largest transfer (bundle) we accept.
    - ``max_segment_bytes``: largest segment we send (also capped by the peer's MRU).
    - ``can_tls`` / ``require_tls``: offer TLS / end the session without it.
    - ``setup_timeout_ms``: time allowed from connection to SESS_INIT.
    - ``term_timeout_ms``: time allowed for the peer's SESS_TERM reply.
    - ``max_queued_transfers``: outgoing transfers waiting at most.
    """

    node_id: str
    keepalive_s: int = 30
    segment_mru: int = 1 << 20
    transfer_mru: int = 1 << 30
    max_segment_bytes: int = 1 << 20
    can_tls: bool = False
    require_tls: bool = False
    setup_timeout_ms: int = 30_000
    term_timeout_ms: int = 10_000
    max_queued_transfers: int = 1024
    max_node_id: int = 1024
    max_extensions: int = 65_536

    def __post_init__(self) -> None:
        if not self.node_id:
            raise InvalidArgument("node_id must not be empty")
        if not 0 <= self.keepalive_s <= 0xFFFF:
            raise InvalidArgument(
                f"keepalive_s must be in 0..65535, got {self.keepalive_s}"
            )
        for name in ("segment_mru", "transfer_mru", "max_segment_bytes"):
            v = getattr(self, name)
            if not 1 <= v < 1 << 64:
                raise InvalidArgument(f"{name} must be in 1..2^64-1, got {v}")
        if self.require_tls and not self.can_tls:
            raise InvalidArgument("require_tls needs can_tls")


@dataclass(slots=True)
class _Outgoing:
    tid: int
    data: bytes
    sent: int = 0
    acked: int = 0


@dataclass(slots=True)
class _Incoming:
    tid: int
    declared: int | None
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    draining: bool = False  # refused: read and drop the rest of its segments
    done: bool = False  # END seen, final ACK held for ack_transfer()
    end_flags: SegmentFlags = SegmentFlags.END


class Session:
    """One TCPCLv4 session (see the module docstring). ``active``: we connected."""

    def __init__(self, config: SessionConfig, *, active: bool) -> None:
        self.config = config
        self.active = active
        self.state = State.START
        self._limits = Limits(
            segment_mru=config.segment_mru,
            max_node_id=config.max_node_id,
            max_extensions=config.max_extensions,
        )
        self._rx = bytearray()
        self._tx = bytearray()
        self._events: list[SessionEvent] = []
        self.tls = False
        self.peer_node_id: str | None = None
        self.keepalive_s = 0
        self.peer_segment_mru = 0
        self.peer_transfer_mru = 0
        self._next_tid = 0
        self._queue: deque[_Outgoing] = deque()
        self._sending: _Outgoing | None = None  # segments being sent
        self._unacked: dict[int, _Outgoing] = {}  # fully sent, awaiting final ACK
        self._incoming: _Incoming | None = None
        self._held: dict[int, _Incoming] = {}  # complete, final ACK waiting
        # answers in segment order: (transfer id, None) holds a final ACK's place
        self._answers: deque[tuple[int | None, bytes | None]] = deque()
        self._term_sent = False
        self._term_received = False
        self._deadline_setup: int | None = None
        self._deadline_term: int | None = None
        self._last_rx = 0
        self._last_tx = 0
        self.close_reason: str | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "segments_in",
                "segments_out",
                "bundles_in",
                "bundles_out",
                "refused_in",
                "refused_out",
                "rejects_in",
                "rejects_out",
                "keepalives_in",
                "keepalives_out",
            ),
            0,
        )

    # ------------------------------------------------------------ properties

    @property
    def closed(self) -> bool:
        """True once the session is over (close after ``data_to_send``)."""
        return self.state is State.CLOSED

    @property
    def established(self) -> bool:
        """True when transfers may be started (SESS_INIT exchanged, no SESS_TERM)."""
        return self.state is State.ESTABLISHED

    @property
    def tx_backlog(self) -> int:
        """Control bytes (ACKs, rejects, ...) waiting for ``data_to_send``, held ones included.

        A driver stops reading while this is large: a peer that sends but
        never reads cannot make us buffer answers without bound.
        """
        return len(self._tx) + sum(len(raw or b"..") for _, raw in self._answers)

    @property
    def in_flight(self) -> int:
        """Outgoing transfers queued, being sent or awaiting their final ACK."""
        return len(self._queue) + len(self._unacked) + (1 if self._sending else 0)

    # ------------------------------------------------------------ transitions

    def _go(self, inp: Input) -> bool:
        nxt = TRANSITIONS.get((self.state, inp))
        if nxt is None:
            return False
        self.state = nxt
        return True

    def _emit(self, m: Message, now: int) -> None:
        self._tx += encode_message(m)
        self._last_tx = now

    # ------------------------------------------------------------ driver API

    def start(self, now: int) -> list[SessionEvent]:
        """The connection is up: the active side sends its contact header."""
        self._go(Input.OPEN)
        self._last_rx = now
        self._deadline_setup = now + self.config.setup_timeout_ms
        if self.active:
            self._send_contact(now)
        return self._take()

    def _send_contact(self, now: int) -> None:
        flags = ContactFlags.CAN_TLS if self.config.can_tls else ContactFlags.NONE
        self._tx += encode_contact_header(ContactHeader(flags))
        self._last_tx = now

    def _send_init(self, now: int) -> None:
        c = self.config
        self._emit(
            SessInit(
                keepalive_s=c.keepalive_s,
                segment_mru=c.segment_mru,
                transfer_mru=c.transfer_mru,
                node_id=c.node_id,
            ),
            now,
        )

    def tls_established(self, now: int) -> list[SessionEvent]:
        """The driver finished the TLS handshake (after StartTls)."""
        if self._go(Input.TLS_DONE):
            self.tls = True
            if self.active:
                self._send_init(now)
        return self._take()

    def receive_data(self, data: bytes | bytearray, now: int) -> list[SessionEvent]:
        """Bytes from the peer; returns the events they cause. Never raises for bad bytes."""
        if self.state is State.CLOSED:
            return []
        self._rx += data
        self._last_rx = now
        try:
            self._parse(now)
        except DecodeError as exc:
            self._protocol_failure(exc, now)
        return self._take()

    def connection_lost(self, now: int) -> list[SessionEvent]:
        """The TCP connection ended (EOF or error)."""
        if self.state is not State.CLOSED:
            self._close("connection lost", now)
        return self._take()

    def send_bundle(self, data: bytes, now: int) -> int:
        """Queue a bundle as a transfer; returns its transfer id.

        Raises InvalidArgument when the session is not established or the
        queue is full, TransferTooLarge when the peer's transfer MRU is smaller.
        """
        if self.state is not State.ESTABLISHED:
            raise InvalidArgument(f"session not established ({self.state.name})")
        if len(data) > self.peer_transfer_mru:
            raise TransferTooLarge(
                f"bundle of {len(data)} bytes exceeds the peer's transfer MRU {self.peer_transfer_mru}"
            )
        if self.in_flight >= self.config.max_queued_transfers:
            raise InvalidArgument("too many transfers queued on the session")
        tid = self._next_tid
        self._next_tid += 1
        self._queue.append(_Outgoing(tid, bytes(data)))
        return tid

    def data_to_send(self, max_bytes: int = 1 << 20) -> bytes:
        """Bytes to write to the connection (control messages first, then segments).

        At most about ``max_bytes`` (one segment may exceed it); b"" when idle.
        """
        while len(self._tx) < max_bytes and self._next_segment():
            pass
        if len(self._tx) <= max_bytes:
            out = bytes(self._tx)
            self._tx.clear()
        else:
            out = bytes(self._tx[:max_bytes])
            del self._tx[:max_bytes]
        return out

    def _next_segment(self) -> bool:
        if self.state not in (State.ESTABLISHED, State.ENDING):
            return False
        if self._sending is None:
            if not self._queue or self.state is not State.ESTABLISHED:
                return False
            self._sending = self._queue.popleft()
        t = self._sending
        size = min(self.peer_segment_mru, self.config.max_segment_bytes)
        chunk = t.data[t.sent : t.sent + size]
        flags = SegmentFlags.NONE
        ext: tuple[ExtensionItem, ...] = ()
        if t.sent == 0:
            flags |= SegmentFlags.START
            if len(t.data) > size:
                # RFC 9174 5.2.5.1: not for a transfer of one segment
                ext = (
                    ExtensionItem(
                        TRANSFER_LENGTH_EXTENSION, struct.pack(">Q", len(t.data))
                    ),
                )
        t.sent += len(chunk)
        if t.sent >= len(t.data):
            flags |= SegmentFlags.END
            self._unacked[t.tid] = t
            self._sending = None
        self._tx += encode_segment_head(flags, t.tid, len(chunk), ext)
        self._tx += chunk
        self.counters["segments_out"] += 1
        return True

    def ack_transfer(self, transfer_id: int, now: int) -> None:
        """Send the held final XFER_ACK: the received bundle is stored."""
        inc = self._held.pop(transfer_id, None)
        if inc is not None and self.state is not State.CLOSED:
            self._release(
                transfer_id,
                XferAck(flags=inc.end_flags, transfer_id=transfer_id, length=inc.size),
                now,
            )
            self.counters["bundles_in"] += 1
            self._maybe_done(now)

    def refuse_transfer(
        self,
        transfer_id: int,
        now: int,
        reason: RefuseReason = RefuseReason.NO_RESOURCES,
    ) -> None:
        """Refuse a received bundle (not stored) instead of acknowledging it."""
        inc = self._held.pop(transfer_id, None)
        if inc is not None and self.state is not State.CLOSED:
            self._release(
                transfer_id, XferRefuse(reason=reason, transfer_id=transfer_id), now
            )
            self.counters["refused_out"] += 1
            self._maybe_done(now)

    def terminate(
        self, now: int, reason: TermReason = TermReason.UNKNOWN
    ) -> list[SessionEvent]:
        """End the session cleanly (SESS_TERM); queued transfers fail."""
        if self.state in (State.START, State.CONTACT_WAIT, State.TLS_WAIT):
            self._close("terminated locally", now)
        elif self._go(Input.LOCAL_TERM) and not self._term_sent:
            self._send_term(TermFlags.NONE, reason, now)
            self._fail_queued("session terminating")
            self._maybe_done(now)
        return self._take()

    # ------------------------------------------------------------ timers

    def next_deadline(self) -> int | None:
        """When ``on_tick`` must run next (ms), or None."""
        if self.state is State.CLOSED:
            return None
        ds = [d for d in (self._deadline_setup, self._deadline_term) if d is not None]
        if self.state in (State.ESTABLISHED, State.ENDING) and self.keepalive_s:
            ka = self.keepalive_s * 1000
            ds.append(self._last_tx + ka)
            ds.append(self._last_rx + 2 * ka)
        return min(ds) if ds else None

    def on_tick(self, now: int) -> list[SessionEvent]:
        """Timers: setup and termination timeouts, keepalives, idle peers."""
        if self.state is State.CLOSED:
            return []
        if self._deadline_setup is not None and now >= self._deadline_setup:
            self._close("session setup timed out", now)
            return self._take()
        if self._deadline_term is not None and now >= self._deadline_term:
            self._close("no SESS_TERM reply in time", now)
            return self._take()
        if self.state in (State.ESTABLISHED, State.ENDING) and self.keepalive_s:
            ka = self.keepalive_s * 1000
            if now - self._last_rx >= 2 * ka:
                # RFC 9174 5.1.1: no data for twice the interval
                if not self._term_sent:
                    self._send_term(TermFlags.NONE, TermReason.IDLE_TIMEOUT, now)
                self._close("peer idle for twice the keepalive interval", now)
                return self._take()
            if now - self._last_tx >= ka:
                self._emit(KeepAlive(), now)
                self.counters["keepalives_out"] += 1
        return self._take()

    # ------------------------------------------------------------ parsing

    def _parse(self, now: int) -> None:
        while self._rx and self.state is not State.CLOSED:
            if self.state is State.CONTACT_WAIT:
                h = decode_contact_header_untrusted(self._rx)
                if h is None:
                    return
                del self._rx[:CONTACT_HEADER_BYTES]
                self._on_contact(h, now)
                continue
            if self.state in (State.START, State.TLS_WAIT):
                return  # bytes wait for the handshake (TLS data goes to the driver)
            got = decode_message_untrusted(self._rx, self._limits)
            if got is None:
                return
            msg, used = got
            del self._rx[:used]
            self._on_message(msg, now)

    def _on_contact(self, h: ContactHeader, now: int) -> None:
        if h.version != VERSION:
            # RFC 9174 4.3: answer a version we do not speak, then close
            if not self.active:
                self._send_contact(now)
            self._emit(
                SessTerm(flags=TermFlags.NONE, reason=TermReason.VERSION_MISMATCH), now
            )
            self._close(f"peer speaks TCPCL version {h.version}", now)
            return
        if not self.active:
            self._send_contact(now)
        use_tls = self.config.can_tls and bool(h.flags & ContactFlags.CAN_TLS)
        if self.config.require_tls and not use_tls:
            self._go(Input.CONTACT_PLAIN)
            self._send_term(TermFlags.NONE, TermReason.CONTACT_FAILURE, now)
            self._close("peer does not offer TLS, which we require", now)
            return
        if use_tls:
            self._go(Input.CONTACT_TLS)
            self._events.append(StartTls())
        else:
            self._go(Input.CONTACT_PLAIN)
            if self.active:
                self._send_init(now)

    def _on_message(self, m: Message, now: int) -> None:
        if isinstance(m, SessInit):
            self._on_init(m, now)
        elif isinstance(m, XferSegment | XferAck | XferRefuse):
            if not self._go(Input.TRANSFER):
                self._unexpected(m, now)
            elif isinstance(m, XferSegment):
                self._on_segment(m, now)
            elif isinstance(m, XferAck):
                self._on_ack(m)
            else:
                self._on_refuse(m)
        elif isinstance(m, KeepAlive):
            if self._go(Input.KEEPALIVE):
                self.counters["keepalives_in"] += 1
            else:
                self._unexpected(m, now)
        elif isinstance(m, MsgReject):
            self.counters["rejects_in"] += 1
            if self._go(Input.MSG_REJECT):
                self._events.append(
                    ProtocolProblem(
                        f"peer rejected message type {m.header} (reason {int(m.reason)})"
                    )
                )
            else:
                self._close("MSG_REJECT before the session", now)
        else:
            self._on_term(m, now)
        self._maybe_done(now)

    def _unexpected(self, m: Message, now: int) -> None:
        code = _type_of(m)
        if self.state in (State.ESTABLISHED, State.ENDING):
            self._emit(MsgReject(reason=RejectReason.UNEXPECTED, header=code), now)
            self.counters["rejects_out"] += 1
            self._events.append(ProtocolProblem(f"unexpected message type {code:#04x}"))
        else:
            self._send_term(TermFlags.NONE, TermReason.CONTACT_FAILURE, now)
            self._close(f"message type {code:#04x} before the session was set up", now)

    def _on_init(self, m: SessInit, now: int) -> None:
        if not self._go(Input.SESS_INIT):
            self._unexpected(m, now)
            return
        for item in m.extensions:
            if item.critical:
                # RFC 9174 4.7: an unknown critical session extension ends it
                self._send_term(TermFlags.NONE, TermReason.CONTACT_FAILURE, now)
                self._close(f"unknown critical session extension {item.type}", now)
                return
        if not m.node_id or m.segment_mru == 0 or m.transfer_mru == 0:
            self._send_term(TermFlags.NONE, TermReason.CONTACT_FAILURE, now)
            self._close("SESS_INIT with an empty node id or a zero MRU", now)
            return
        if not self.active:
            self._send_init(now)
        self._deadline_setup = None
        self.peer_node_id = m.node_id
        self.keepalive_s = min(self.config.keepalive_s, m.keepalive_s)
        self.peer_segment_mru = m.segment_mru
        self.peer_transfer_mru = m.transfer_mru
        self._events.append(
            SessionEstablished(
                peer_node_id=m.node_id,
                keepalive_s=self.keepalive_s,
                peer_segment_mru=m.segment_mru,
                peer_transfer_mru=m.transfer_mru,
                tls=self.tls,
            )
        )

    def _on_segment(self, m: XferSegment, now: int) -> None:
        self.counters["segments_in"] += 1
        inc = self._incoming
        if m.flags & SegmentFlags.START:
            if inc is not None and not inc.draining:
                self._events.append(
                    ProtocolProblem(f"transfer {inc.tid} abandoned by a new START")
                )
            inc = self._incoming = self._start_incoming(m, now)
            if inc is None:
                return
        elif inc is None or inc.tid != m.transfer_id:
            self._emit(
                MsgReject(
                    reason=RejectReason.UNEXPECTED, header=MessageType.XFER_SEGMENT
                ),
                now,
            )
            self.counters["rejects_out"] += 1
            return
        if inc.draining:
            if m.flags & SegmentFlags.END:
                self._incoming = None
            return
        inc.size += len(m.data)
        limit = inc.declared if inc.declared is not None else self.config.transfer_mru
        if inc.size > limit:
            why = (
                RefuseReason.NOT_ACCEPTABLE
                if inc.declared is not None
                else RefuseReason.NO_RESOURCES
            )
            self._refuse_incoming(inc, why, now, m.flags)
            return
        inc.parts.append(m.data)
        if m.flags & SegmentFlags.END:
            self._incoming = None
            if inc.declared is not None and inc.size != inc.declared:
                self._refuse_incoming(inc, RefuseReason.NOT_ACCEPTABLE, now, m.flags)
                return
            inc.done = True
            inc.end_flags = m.flags
            data = b"".join(inc.parts)
            inc.parts = []
            self._held[inc.tid] = inc
            self._answers.append((inc.tid, None))  # its answer waits for the store
            self._events.append(BundleReceived(inc.tid, data))
        else:
            self._answer(
                XferAck(flags=m.flags, transfer_id=m.transfer_id, length=inc.size), now
            )

    def _start_incoming(self, m: XferSegment, now: int) -> _Incoming | None:
        declared: int | None = None
        why: RefuseReason | None = None
        if self.state is State.ENDING:
            why = RefuseReason.SESSION_TERMINATING
        for item in m.extensions:
            if item.type == TRANSFER_LENGTH_EXTENSION:
                if len(item.value) != 8:
                    # dtn7-rs sends its own "bundle id" item under type 1 (a
                    # string): not a length; refuse only if marked critical
                    if item.critical:
                        why = why or RefuseReason.EXTENSION_FAILURE
                    else:
                        self._events.append(
                            ProtocolProblem(
                                "ignored a type-1 transfer extension that is not 8 bytes"
                            )
                        )
                elif declared is not None:
                    why = why or RefuseReason.NOT_ACCEPTABLE  # at most once (5.2.5.1)
                else:
                    (declared,) = struct.unpack(">Q", item.value)
            elif item.critical:
                why = why or RefuseReason.EXTENSION_FAILURE
        if declared is not None and declared > self.config.transfer_mru:
            why = why or RefuseReason.NO_RESOURCES
        inc = _Incoming(m.transfer_id, declared)
        if why is not None:
            self._refuse_incoming(inc, why, now, m.flags)
            return inc if not m.flags & SegmentFlags.END else None
        return inc

    def _refuse_incoming(
        self, inc: _Incoming, why: RefuseReason, now: int, flags: SegmentFlags
    ) -> None:
        inc.draining = True
        inc.parts = []
        self._answer(XferRefuse(reason=why, transfer_id=inc.tid), now)
        self.counters["refused_out"] += 1
        if flags & SegmentFlags.END:
            self._incoming = None
        else:
            self._incoming = inc

    def _on_ack(self, m: XferAck) -> None:
        t = self._unacked.get(m.transfer_id)
        if t is None:
            s = self._sending
            if s is not None and s.tid == m.transfer_id:
                s.acked = max(s.acked, m.length)
            return  # a late ACK of a refused or finished transfer
        t.acked = max(t.acked, m.length)
        if m.flags & SegmentFlags.END:
            # The peer has the END segment, so (TCP is in order) all of it.
            # RFC 9174 5.2.3 asks for the cumulative length; dtn7-rs sends the
            # last segment's: accept both, note the other.
            if m.length != len(t.data):
                self._events.append(
                    ProtocolProblem(
                        f"XFER_ACK END for transfer {t.tid} acknowledges {m.length} of {len(t.data)} bytes"
                    )
                )
            del self._unacked[t.tid]
            self.counters["bundles_out"] += 1
            self._events.append(TransferAcked(t.tid))

    def _on_refuse(self, m: XferRefuse) -> None:
        self.counters["refused_in"] += 1
        t = self._unacked.pop(m.transfer_id, None)
        if (
            t is None
            and self._sending is not None
            and self._sending.tid == m.transfer_id
        ):
            t = self._sending
            self._sending = None  # stop sending its segments (5.2.4)
        if t is None:
            for q in self._queue:
                if q.tid == m.transfer_id:
                    self._queue.remove(q)
                    t = q
                    break
        if t is None:
            return
        if m.reason == RefuseReason.COMPLETED:
            self._events.append(TransferAcked(t.tid))  # the peer already has it
        else:
            self._events.append(
                TransferFailed(t.tid, f"refused by the peer (reason {int(m.reason)})")
            )

    def _on_term(self, m: SessTerm, now: int) -> None:
        if not self._go(Input.SESS_TERM):
            self._unexpected(m, now)
            return
        self._term_received = True
        self._deadline_term = None  # the reply came (or the peer began)
        if not self._term_sent:
            # RFC 9174 6.1: reply with the same reason
            self._send_term(TermFlags.REPLY, m.reason, now)
        self._fail_queued("session terminated by the peer")
        if self.state is State.ENDING and self.peer_node_id is None:
            self._close("peer ended the session during setup", now)

    # Answers to the peer's transfers (XFER_ACK, XFER_REFUSE) leave in the order
    # of its segments, also when a final ACK waits for the store: a later
    # transfer's ACK never overtakes it (HDTN matches ACKs to its segments in
    # order).
    def _answer(self, m: XferAck | XferRefuse, now: int) -> None:
        if self._answers:
            self._answers.append((None, encode_message(m)))
        else:
            self._emit(m, now)

    def _release(self, tid: int, m: XferAck | XferRefuse, now: int) -> None:
        for i, (t, raw) in enumerate(self._answers):
            if t == tid and raw is None:
                self._answers[i] = (None, encode_message(m))
                break
        while self._answers and self._answers[0][1] is not None:
            raw = self._answers.popleft()[1]
            assert raw is not None
            self._tx += raw
            self._last_tx = now

    def _send_term(self, flags: TermFlags, reason: TermReason | int, now: int) -> None:
        self._emit(SessTerm(flags=flags, reason=reason), now)
        self._term_sent = True
        if not self._term_received:
            self._deadline_term = now + self.config.term_timeout_ms

    def _fail_queued(self, why: str) -> None:
        while self._queue:
            t = self._queue.popleft()
            self._events.append(TransferFailed(t.tid, why))

    def _maybe_done(self, now: int) -> None:
        if (
            self.state is State.ENDING
            and self._term_sent
            and self._term_received
            and self._sending is None
            and not self._unacked
            and not self._queue
            and self._incoming is None
            and not self._held
        ):
            self._go(Input.ALL_DONE)
            self.close_reason = "session ended"
            self._events.append(SessionClosed("session ended"))

    def _protocol_failure(self, exc: DecodeError, now: int) -> None:
        if self.state is State.CONTACT_WAIT:
            self._close(
                f"bad contact header: {exc}", now
            )  # not a TCPCL peer: no SESS_TERM
            return
        if exc.where is not None and exc.where.startswith("type 0x"):
            code = int(exc.where[7:], 16)
            self._emit(MsgReject(reason=RejectReason.TYPE_UNKNOWN, header=code), now)
            self.counters["rejects_out"] += 1
        if not self._term_sent:
            reason = (
                TermReason.RESOURCE_EXHAUSTION
                if "exceeds" in str(exc) or "bytes" in str(exc)
                else TermReason.UNKNOWN
            )
            self._emit(SessTerm(flags=TermFlags.NONE, reason=reason), now)
            self._term_sent = True
        self._close(f"bad message: {exc}", now)

    def _close(self, reason: str, now: int) -> None:
        if self.state is State.CLOSED:
            return
        self._go(Input.FAIL)
        self.close_reason = reason
        self._rx.clear()
        self._fail_queued(reason)
        if self._sending is not None:
            self._events.append(TransferFailed(self._sending.tid, reason))
            self._sending = None
        for tid in list(self._unacked):
            self._events.append(TransferFailed(tid, reason))
        self._unacked.clear()
        self._incoming = None
        self._held.clear()
        self._answers.clear()
        self._deadline_setup = self._deadline_term = None
        self._events.append(SessionClosed(reason))

    def _take(self) -> list[SessionEvent]:
        ev, self._events = self._events, []
        return ev


def _type_of(m: Message) -> int:
    return {
        XferSegment: MessageType.XFER_SEGMENT,
        XferAck: MessageType.XFER_ACK,
        XferRefuse: MessageType.XFER_REFUSE,
        KeepAlive: MessageType.KEEPALIVE,
        SessTerm: MessageType.SESS_TERM,
        MsgReject: MessageType.MSG_REJECT,
        SessInit: MessageType.SESS_INIT,
    }[type(m)]
