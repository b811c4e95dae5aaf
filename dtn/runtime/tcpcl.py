"""TCPCLv4 (RFC 9174) driver: the sans-I/O :class:`~dcis.dtn.cl.tcpcl4.session.Session` on trio streams.

Theory of operation
-------------------
:class:`TcpclCla` owns every TCPCL session of a node:

- **active** sessions, one per configured ``cla = "tcpcl"`` neighbour: a task
  waits until the agent hands it a bundle, connects, runs the session and
  keeps it up (keepalives) for the next bundles; a failed connection fails
  what was queued (the agent tries again after its retry delay) and the task
  backs off before it reconnects;
- **passive** sessions, one per accepted connection on ``tcpcl_listen``.

Bundles go out only over our active sessions; both kinds receive. A received
bundle is handed to the node (``receive``), which answers through a callback:
acknowledged once the store has it durably (the final XFER_ACK waits for the
fsync), refused with XFER_REFUSE "no resources" when the store is full. A
transmission is reported done (``done(tx_id, ok)``) only when the peer
acknowledged the whole transfer; until then the bundle stays in the store.

The contact header is read byte-exactly (6 bytes), so that with TLS nothing
of the handshake is read as TCPCL; when both sides offer TLS the stream is
wrapped in :class:`trio.SSLStream` (certificates from files, Python
``ssl``), and a peer certificate's URI subject names, when it has any, must
include the node id the peer gives in SESS_INIT (RFC 9174 4.4.3).
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from dcis.dtn.cl.tcpcl4.messages import TermReason
from dcis.dtn.cl.tcpcl4.session import (
    BundleReceived,
    ProtocolProblem,
    Session,
    SessionClosed,
    SessionConfig,
    SessionEstablished,
    SessionEvent,
    StartTls,
    TransferAcked,
    TransferFailed,
    TransferTooLarge,
)
from dcis.dtn.errors import InvalidArgument

__all__ = ["TcpclCla", "TcpclSettings", "make_tls_contexts"]

LogFn = Callable[..., None]
_MAX_TX_BACKLOG = 4 << 20  # answers queued before we stop reading a peer
_CONN_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ssl.SSLError,
)
Answer = Callable[[bool], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpclSettings:
    """The ``[tcpcl]`` table of node.toml (paths resolved).

    ``tls_cert``/``tls_key``: our certificate chain and key (PEM); with them
    we offer TLS. ``tls_ca``: CA certificates that peers' certificates must
    chain to (without it, peers are not verified). ``require_tls``: end
    sessions with peers that do not offer TLS. ``max_sessions`` bounds the
    passive sessions held at once (each may buffer one transfer of up to
    ``transfer_mru`` bytes); a connection beyond it is closed at once.
    """

    keepalive_s: int = 30
    segment_mru: int = 1 << 20
    transfer_mru: int = 256 << 20
    max_sessions: int = 64
    max_segment_bytes: int = 1 << 20
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    require_tls: bool = False
    connect_timeout_s: float = 10.0


def make_tls_contexts(
    s: TcpclSettings,
) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) SSL contexts from the settings' files; (None, None) without TLS.

    Raises OSError / ssl.SSLError for unreadable or bad files.
    """
    if s.tls_cert is None:
        return None, None
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(s.tls_cert, s.tls_key)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    client.load_cert_chain(s.tls_cert, s.tls_key)
    # Peers are named by node id (a URI subject name), not by host name:
    # the chain is checked here, the name after SESS_INIT.
    client.check_hostname = False
    if s.tls_ca is not None:
        server.load_verify_locations(s.tls_ca)
        server.verify_mode = ssl.CERT_OPTIONAL
        client.load_verify_locations(s.tls_ca)
        client.verify_mode = ssl.CERT_REQUIRED
    else:
        client.verify_mode = ssl.CERT_NONE
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9174 4.4: TLS 1.2 or later
    return server, client


@dataclass(slots=True)
class _Active:
    node: int
    address: tuple[str, int]
    queue: list[tuple[int, bytes]] = field(default_factory=list)
    wake: trio.Event = field(default_factory=trio.Event)
    session: Session | None = None
    poke: Callable[[], None] | None = None
    tids: dict[int, int] = field(default_factory=dict)  # transfer id -> tx id


class TcpclCla:
    """All TCPCLv4 sessions of one node (see the module docstring).

    ``receive(neighbour or None, bundle bytes, answer)`` hands a bundle to the
    node, which calls ``answer(True)`` once it is durably stored or
    ``answer(False)`` to refuse it; ``done(tx_id, ok)`` reports a
    transmission; ``log(level, event, **fields)`` logs.
    """

    def __init__(
        self,
        *,
        node: int,
        settings: TcpclSettings,
        receive: Callable[[int | None, bytes, Answer], None],
        done: Callable[[int, bool], None],
        log: LogFn,
    ) -> None:
        self.node = node
        self.settings = settings
        self._receive = receive
        self._done = done
        self._log = log
        self._server_ctx, self._client_ctx = make_tls_contexts(settings)
        self.peers: dict[int, _Active] = {}
        self._passive_count = 0
        self.address: tuple[str, int] | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "tcpcl_sessions",
                "tcpcl_bundles_in",
                "tcpcl_bundles_out",
                "tcpcl_refused",
                "tcpcl_failed",
            ),
            0,
        )

    def add_peer(self, node: int, address: tuple[str, int]) -> None:
        """A neighbour we send to over TCPCL."""
        self.peers[node] = _Active(node, address)

    def _config(self) -> SessionConfig:
        s = self.settings
        return SessionConfig(
            node_id=f"ipn:{self.node}.0",
            keepalive_s=s.keepalive_s,
            segment_mru=s.segment_mru,
            transfer_mru=s.transfer_mru,
            max_segment_bytes=s.max_segment_bytes,
            can_tls=self._client_ctx is not None,
            require_tls=s.require_tls and self._client_ctx is not None,
        )

    @staticmethod
    def _now() -> int:
        return int(trio.current_time() * 1000)

    # ------------------------------------------------------------ sending

    def transmit(self, neighbour: int, tx_id: int, data: bytes) -> bool:
        """Queue a bundle for ``neighbour``; False if it is not a TCPCL neighbour."""
        peer = self.peers.get(neighbour)
        if peer is None:
            return False
        s = peer.session
        if s is not None and s.established:
            self._start_transfer(peer, s, tx_id, data)
        else:
            peer.queue.append((tx_id, data))
            peer.wake.set()
        return True

    def _start_transfer(
        self, peer: _Active, s: Session, tx_id: int, data: bytes
    ) -> None:
        try:
            tid = s.send_bundle(data, self._now())
        except TransferTooLarge as exc:
            self._log(
                "warning", "tcpcl_too_large", neighbour=peer.node, detail=str(exc)
            )
            self.counters["tcpcl_failed"] += 1
            self._done(tx_id, False)
            return
        except InvalidArgument as exc:
            self._log("info", "tcpcl_send_failed", neighbour=peer.node, detail=str(exc))
            self.counters["tcpcl_failed"] += 1
            self._done(tx_id, False)
            return
        peer.tids[tid] = tx_id
        if peer.poke is not None:
            peer.poke()

    def _fail_queue(self, peer: _Active) -> None:
        q, peer.queue = peer.queue, []
        for tx_id, _ in q:
            self.counters["tcpcl_failed"] += 1
            self._done(tx_id, False)

    async def run_active(self, peer: _Active) -> None:
        """Keep a session to ``peer`` while it has bundles (runs until cancelled)."""
        backoff = 0.5
        while True:
            if not peer.queue:
                peer.wake = trio.Event()
                await peer.wake.wait()
            try:
                with trio.fail_after(self.settings.connect_timeout_s):
                    stream = await trio.open_tcp_stream(*peer.address)
            except (OSError, trio.TooSlowError) as exc:
                self._log(
                    "info", "tcpcl_connect_failed", neighbour=peer.node, detail=str(exc)
                )
                self._fail_queue(peer)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            await self._run_session(stream, active=True, peer=peer)

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        """Accept passive sessions on ``listeners`` (runs until cancelled)."""
        self.address = listeners[0].socket.getsockname()[:2]
        await trio.serve_listeners(self._passive, listeners)

    async def _passive(self, stream: trio.SocketStream) -> None:
        if self._passive_count >= self.settings.max_sessions:
            self._log(
                "warning", "tcpcl_too_many_sessions", limit=self.settings.max_sessions
            )
            await stream.aclose()
            return
        self._passive_count += 1
        try:
            await self._run_session(stream, active=False, peer=None)
        finally:
            self._passive_count -= 1

    # ------------------------------------------------------------ one session

    async def _run_session(
        self, raw: trio.SocketStream, *, active: bool, peer: _Active | None
    ) -> None:
        s = Session(self._config(), active=active)
        stream: trio.abc.Stream = raw
        wake = trio.Event()
        state: dict[str, Any] = {
            "wake": wake,
            "drained": trio.Event(),
            "neighbour": peer.node if peer else None,
        }

        def poke() -> None:
            state["wake"].set()

        if peer is not None:
            peer.session = s
            peer.poke = poke
        self.counters["tcpcl_sessions"] += 1
        try:
            events = s.start(self._now())
            await self._flush(stream, s)
            # the contact header, byte-exactly (TLS may follow it)
            header = b""
            with trio.fail_after(self.settings.connect_timeout_s):
                while len(header) < 6 and not s.closed:
                    got = await stream.receive_some(6 - len(header))
                    if not got:
                        events += s.connection_lost(self._now())
                        break
                    header += got
                    events += s.receive_data(got, self._now())
                if any(isinstance(e, StartTls) for e in events):
                    await self._flush(stream, s)  # our contact header before TLS
                    tls = await self._start_tls(raw, active)
                    stream = tls
                    cert = tls.getpeercert() or {}
                    state["peer_uris"] = [
                        v for k, v in cert.get("subjectAltName", ()) if k == "URI"
                    ]
                    events += s.tls_established(self._now())
            await self._flush(stream, s)
            self._handle(s, events, peer, state)
            if s.closed:
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    self._reader, stream, s, peer, state, nursery.cancel_scope
                )
                nursery.start_soon(self._writer, stream, s, state, nursery.cancel_scope)
                nursery.start_soon(self._timer, s, peer, state)
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            ssl.SSLError,
        ) as exc:
            self._log(
                "info",
                "tcpcl_session_error",
                neighbour=state["neighbour"],
                detail=str(exc),
            )
            self._handle(s, s.connection_lost(self._now()), peer, state)
        except trio.TooSlowError:
            self._log("info", "tcpcl_setup_timeout", neighbour=state["neighbour"])
            self._handle(s, s.connection_lost(self._now()), peer, state)
        finally:
            if not s.closed:
                self._handle(s, s.connection_lost(self._now()), peer, state)
            if peer is not None and peer.session is s:
                peer.session = None
                peer.poke = None
                self._fail_queue(peer)
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def _start_tls(
        self, raw: trio.SocketStream, active: bool
    ) -> trio.SSLStream[Any]:
        ctx = self._client_ctx if active else self._server_ctx
        assert ctx is not None
        tls = trio.SSLStream(raw, ctx, server_side=not active, server_hostname=None)
        await tls.do_handshake()
        return tls

    async def _flush(self, stream: trio.abc.Stream, s: Session) -> None:
        while True:
            data = s.data_to_send()
            if not data:
                return
            await stream.send_all(data)

    async def _reader(
        self,
        stream: trio.abc.Stream,
        s: Session,
        peer: _Active | None,
        state: dict[str, Any],
        scope: trio.CancelScope,
    ) -> None:
        try:
            while not s.closed:
                while s.tx_backlog > _MAX_TX_BACKLOG and not s.closed:
                    # the peer is not reading our answers: stop reading its data
                    state["drained"] = trio.Event()
                    state["wake"].set()
                    await state["drained"].wait()
                data = await stream.receive_some(1 << 18)
                if not data:
                    self._handle(s, s.connection_lost(self._now()), peer, state)
                    break
                self._handle(s, s.receive_data(data, self._now()), peer, state)
                state["wake"].set()
        except _CONN_ERRORS as exc:
            self._log(
                "info",
                "tcpcl_session_error",
                neighbour=state["neighbour"],
                detail=repr(exc),
            )
            self._handle(s, s.connection_lost(self._now()), peer, state)
            scope.cancel()
        state["wake"].set()

    async def _writer(
        self,
        stream: trio.abc.Stream,
        s: Session,
        state: dict[str, Any],
        scope: trio.CancelScope,
    ) -> None:
        try:
            while True:
                data = s.data_to_send(1 << 20)
                if data:
                    await stream.send_all(data)
                    state["drained"].set()
                    continue
                if s.closed:
                    scope.cancel()  # everything said: close the connection
                    return
                state["wake"] = trio.Event()
                await state["wake"].wait()
        except _CONN_ERRORS as exc:
            self._log(
                "info",
                "tcpcl_session_error",
                neighbour=state["neighbour"],
                detail=repr(exc),
            )
            scope.cancel()

    async def _timer(
        self, s: Session, peer: _Active | None, state: dict[str, Any]
    ) -> None:
        while not s.closed:
            d = s.next_deadline()
            if d is None:
                await trio.sleep(math.inf)
            else:
                await trio.sleep_until(d / 1000)
            self._handle(s, s.on_tick(self._now()), peer, state)
            state["wake"].set()

    # ------------------------------------------------------------ events

    def _handle(
        self,
        s: Session,
        events: list[SessionEvent],
        peer: _Active | None,
        state: dict[str, Any],
    ) -> None:
        for ev in events:
            if isinstance(ev, SessionEstablished):
                uris = state.get("peer_uris")
                if uris and ev.peer_node_id not in uris:
                    # RFC 9174 4.4.3: the certificate must name the node id
                    self._log(
                        "warning",
                        "tcpcl_node_id_mismatch",
                        peer_node_id=ev.peer_node_id,
                        certificate_names=uris,
                    )
                    s.terminate(self._now(), TermReason.CONTACT_FAILURE)
                    state["wake"].set()
                    continue
                nb = _ipn_node(ev.peer_node_id)
                if peer is None:
                    state["neighbour"] = nb
                self._log(
                    "info",
                    "tcpcl_session",
                    neighbour=state["neighbour"],
                    peer_node_id=ev.peer_node_id,
                    keepalive_s=ev.keepalive_s,
                    peer_segment_mru=ev.peer_segment_mru,
                    peer_transfer_mru=ev.peer_transfer_mru,
                    tls=ev.tls,
                )
                if peer is not None:
                    q, peer.queue = peer.queue, []
                    for tx_id, data in q:
                        self._start_transfer(peer, s, tx_id, data)
            elif isinstance(ev, BundleReceived):
                self.counters["tcpcl_bundles_in"] += 1
                tid = ev.transfer_id

                def answer(ok: bool, tid: int = tid) -> None:
                    if ok:
                        s.ack_transfer(tid, self._now())
                    else:
                        self.counters["tcpcl_refused"] += 1
                        s.refuse_transfer(tid, self._now())
                    state["wake"].set()

                self._receive(state["neighbour"], ev.data, answer)
            elif isinstance(ev, TransferAcked | TransferFailed):
                tx = peer.tids.pop(ev.transfer_id, None) if peer is not None else None
                if tx is None:
                    continue
                ok = isinstance(ev, TransferAcked)
                self.counters["tcpcl_bundles_out" if ok else "tcpcl_failed"] += 1
                if not ok:
                    self._log(
                        "info",
                        "tcpcl_transfer_failed",
                        neighbour=state["neighbour"],
                        reason=ev.reason,  # type: ignore[union-attr]
                    )
                self._done(tx, ok)
            elif isinstance(ev, SessionClosed):
                self._log(
                    "info",
                    "tcpcl_session_closed",
                    neighbour=state["neighbour"],
                    reason=ev.reason,
                )
            elif isinstance(ev, ProtocolProblem):
                self._log(
                    "warning",
                    "tcpcl_protocol",
                    neighbour=state["neighbour"],
                    detail=ev.detail,
                )

    async def close_all(self) -> None:
        """End every active session cleanly (SESS_TERM); used at shutdown."""
        for peer in self.peers.values():
            s = peer.session
            if s is not None:
                s.terminate(self._now(), TermReason.UNKNOWN)
                if peer.poke is not None:
                    peer.poke()


def _ipn_node(node_id: str) -> int | None:
    if node_id.startswith("ipn:"):
        head = node_id[4:].partition(".")[0]
        if head.isdigit():
            return int(head)
    return None
