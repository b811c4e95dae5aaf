"""The LTP convergence layer for bundles (sans-I/O): blocks of bundles over
an :class:`~dcis.dtn.cl.ltp.LtpEngine`, for the runtime and the simulator alike.

Theory of operation
-------------------
:class:`LtpCl` glues the engine to the agent's convergence-layer interface;
its driver (:class:`~dcis.dtn.runtime.node.Node` over UDP, or the simulator)
feeds it and carries out what it returns (:class:`LtpResult`), so it holds
no socket and reads no clock (``now_ms``: the driver's monotonic ms).

- Transmit: a bundle for an ``ltp`` neighbour waits in that neighbour's queue
  until the engine has room for a session (``[ltp] max_sessions``) and the
  link is up; then it leaves in a block of its own, or, with
  ``ltp_aggregate = true``, together with the bundles queued behind it: a
  block leaves when ``[ltp] aggregate_bytes`` are queued or the oldest has
  waited ``aggregate_ms`` (ION's size and time limits). The block is all red (reliable), or all green
  with ``ltp_green = true`` (best effort). Its bundles' transmissions
  complete (``ok``) only when the engine reports the red part fully
  acknowledged; a cancelled session fails them and the agent routes them
  again, so a bundle leaves the store only once the next hop has it.
- Receive: LTP segments arrive on the node's UDP socket (first byte
  ``0x00``-``0x0F``: an LTP version 0 control byte; bundles start ``0x9F``
  and DCiS segments ``0xD9``). A received block is cut into its bundles
  (ION sends several per block, HDTN one), each with a token. The engine
  holds the report that acknowledges a delivered block until the agent has
  stored every bundle of it (its ``Ack`` for each token, after the fsync):
  persist before acknowledging. A block whose bundles are not all stored
  within 30 s (refused: store full, malformed) is cancelled (CR
  SYS_CNCLD), so the sender keeps it and tries again.
- Contacts: a contact's start brings the span up with the plan's light time
  and the contact's rate; its end takes it down, which suspends every timer
  of the span's sessions until the next contact (RFC 5326 section 6).
  Bundles still queued (not yet in a session) fail back to the agent.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dcis.dtn.cl.ltp import (
    BlockReceived,
    BlockSent,
    EngineConfig,
    LtpEngine,
    SendSegment,
    SessionConfig,
    SpanConfig,
)
from dcis.dtn.cl.ltp.aggregate import aggregate, split_block_untrusted
from dcis.dtn.cl.ltp.engine import Output
from dcis.dtn.errors import DtnError


class LtpNeighbourLike(Protocol):
    """What :class:`LtpCl` reads of a neighbour (``NeighbourConfig`` of
    node.toml has these, and so does :class:`LtpNeighbour`)."""

    @property
    def node(self) -> int: ...
    @property
    def address(self) -> tuple[str, int]: ...
    @property
    def engine_id(self) -> int | None: ...
    @property
    def ltp_mtu_bytes(self) -> int: ...
    @property
    def rate_bytes_s(self) -> float: ...
    @property
    def ltp_aggregate(self) -> bool: ...
    @property
    def ltp_green(self) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LtpNeighbour:
    """An ``ltp`` neighbour (for drivers without a node.toml, e.g. the
    simulator); ``address`` is only handed back in :attr:`LtpResult.sends`."""

    node: int
    address: tuple[str, int]
    engine_id: int | None = None
    ltp_mtu_bytes: int = 1400
    rate_bytes_s: float = 0.0
    ltp_aggregate: bool = False
    ltp_green: bool = False


_STORE_TIMEOUT_MS = 30_000
"""How long a received block's bundles may take to be stored before the
block is refused (cancelled, so that the sender tries again)."""

LTP_FIRST_BYTES = range(0x00, 0x10)
"""First bytes of an LTP version 0 segment (RFC 5326 section 3.1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LtpConfig:
    """node.toml ``[ltp]`` (every key optional).

    ``engine_id`` defaults to the node number; ``margin_ms`` is added to the
    round trip for retransmission timers; ``aggregate_bytes`` and
    ``aggregate_ms`` are the size and time limits of a block built from
    several bundles; ``report_delay_ms`` defers a report while earlier
    segments may still be on their way (reordering).
    """

    engine_id: int | None = None
    max_sessions: int = 64
    max_receive_sessions: int = 256
    max_block_bytes: int = 256 * 1024 * 1024
    max_buffered_bytes: int = 512 * 1024 * 1024
    margin_ms: int = 1_000
    max_retries: int = 10
    aggregate_bytes: int = 1_000_000
    aggregate_ms: int = 50
    report_delay_ms: int = 50


@dataclass(slots=True)
class LtpResult:
    """What the node must do after a call into :class:`LtpCl`."""

    sends: list[tuple[tuple[str, int], bytes]] = field(default_factory=list)
    done: list[tuple[int, bool]] = field(default_factory=list)
    received: list[tuple[int, bytes, int | None]] = field(default_factory=list)
    """(neighbour, bundle, token): the agent's ``Ack`` for the token says
    the bundle is stored (:meth:`LtpCl.on_stored`)."""
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Neighbour:
    config: LtpNeighbourLike
    engine_id: int
    queue: deque[tuple[int, bytes]] = field(default_factory=deque)
    queued_bytes: int = 0
    oldest_ms: int = 0


class LtpCl:
    """The LTP convergence layer for every ``ltp`` neighbour of one node."""

    def __init__(
        self,
        *,
        node: int,
        config: LtpConfig,
        neighbours: Sequence[LtpNeighbourLike],
        rng: random.Random,
    ) -> None:
        self.config = config
        self.engine = LtpEngine(
            config.engine_id if config.engine_id is not None else node,
            config=EngineConfig(
                max_sessions=config.max_sessions,
                max_receive_sessions=config.max_receive_sessions,
                max_block_bytes=config.max_block_bytes,
                max_buffered_bytes=config.max_buffered_bytes,
                hold_reports=True,
            ),
            rng=rng,
        )
        self._nbs: dict[int, _Neighbour] = {}
        self._by_engine: dict[int, _Neighbour] = {}
        for nb in neighbours:
            engine_id = nb.engine_id if nb.engine_id is not None else nb.node
            n = _Neighbour(nb, engine_id)
            self._nbs[nb.node] = n
            self._by_engine[engine_id] = n
            self.engine.add_span(
                SpanConfig(
                    engine_id=engine_id,
                    mtu_bytes=nb.ltp_mtu_bytes,
                    rate_bytes_s=nb.rate_bytes_s,
                    session=SessionConfig(
                        margin_ms=config.margin_ms,
                        max_retries=config.max_retries,
                        report_delay_ms=config.report_delay_ms,
                    ),
                ),
                up=False,
            )
        self._blocks: dict[int, list[int]] = {}
        # Received blocks whose report waits for their bundles to be stored:
        # (engine, session) -> [bundles not yet stored, deadline]; and the
        # token of each of their bundles -> (engine, session).
        self._unstored: dict[tuple[int, int], list[int]] = {}
        self._tokens: dict[int, tuple[int, int]] = {}
        self._next_rx_token = 1
        self._next_token = 1
        self.counters: dict[str, int] = dict.fromkeys(
            ("ltp_bundles_in", "ltp_bad_blocks", "ltp_green_blocks_in"), 0
        )

    def has(self, node: int) -> bool:
        """Whether ``node`` is an ``ltp`` neighbour."""
        return node in self._nbs

    # ------------------------------------------------------------ inputs

    def transmit(self, node: int, tx_id: int, bundle: bytes, now_ms: int) -> LtpResult:
        """Queue one bundle for ``node`` (the agent's ``Transmit``)."""
        n = self._nbs[node]
        if not n.queue:
            n.oldest_ms = now_ms
        n.queue.append((tx_id, bundle))
        n.queued_bytes += len(bundle)
        res = LtpResult()
        self._pump(self._nbs[node], now_ms, res)
        return res

    def on_datagram(self, data: bytes, now_ms: int) -> LtpResult:
        """A datagram whose first byte is in :data:`LTP_FIRST_BYTES`."""
        res = LtpResult()
        self._outputs(self.engine.on_datagram(data, now_ms), now_ms, res)
        return res

    def on_stored(self, token: int, now_ms: int) -> LtpResult:
        """The agent stored (or already had) the bundle received with
        ``token``; when a block's bundles all are, its report may go."""
        res = LtpResult()
        key = self._tokens.pop(token, None)
        entry = self._unstored.get(key) if key is not None else None
        if key is None or entry is None:
            return res
        entry[0] -= 1
        if entry[0] <= 0:
            del self._unstored[key]
            self._outputs(self.engine.accept_block(*key, now_ms), now_ms, res)
        return res

    def on_tick(self, now_ms: int) -> LtpResult:
        """Timers and pacing (call at :meth:`next_deadline`)."""
        res = LtpResult()
        for key in [k for k, (_, d) in self._unstored.items() if d <= now_ms]:
            # Some bundle was never stored (refused, store full, malformed):
            # cancel, so that the sender keeps the block and tries again.
            del self._unstored[key]
            for t in [t for t, k in self._tokens.items() if k == key]:
                del self._tokens[t]
            res.problems.append(f"block {key} not stored in time: refused")
            self._outputs(self.engine.refuse_block(*key, now_ms), now_ms, res)
        self._outputs(self.engine.on_tick(now_ms), now_ms, res)
        for n in self._nbs.values():
            if n.queue:
                self._pump(n, now_ms, res)
        return res

    def next_deadline(self) -> float | None:
        """When :meth:`on_tick` is due (ms on the same clock as ``now_ms``)."""
        d = self.engine.next_deadline()
        for _, at in self._unstored.values():
            d = at if d is None else min(d, at)
        for n in self._nbs.values():
            if n.queue and n.config.ltp_aggregate and self.engine.is_up(n.engine_id):
                at = n.oldest_ms + self.config.aggregate_ms
                d = at if d is None else min(d, at)
        return d

    def contact(
        self,
        node: int,
        up: bool,
        now_ms: int,
        *,
        owlt_s: float | None = None,
        rate_bytes_s: float | None = None,
    ) -> LtpResult:
        """A contact to ``node`` started (``up``) or ended."""
        n = self._nbs[node]
        res = LtpResult()
        outs = self.engine.set_link(
            n.engine_id,
            up,
            now_ms,
            owlt_ms=None if owlt_s is None else round(owlt_s * 1000),
            rate_bytes_s=rate_bytes_s,
        )
        self._outputs(outs, now_ms, res)
        if up:
            self._pump(n, now_ms, res)
        else:
            res.done += [(tx, False) for tx, _ in n.queue]
            n.queue.clear()
            n.queued_bytes = 0
        return res

    def status(self, node: int) -> dict[str, Any]:
        """Per-neighbour figures for ``dcis status`` (the ``ltp_*`` counters
        and session counts are the engine's, over all ltp neighbours)."""
        n = self._nbs[node]
        c = self.engine.counters
        return {
            "engine_id": n.engine_id,
            "in_contact": self.engine.is_up(n.engine_id),
            "queued_bundles": len(n.queue),
            "sessions_out": self.engine.sessions_out,
            "sessions_in": self.engine.sessions_in,
            "buffered_bytes": self.engine.buffered_bytes,
            "aggregate": n.config.ltp_aggregate,
            **{f"ltp_{k}": v for k, v in dataclasses.asdict(c).items()},
            **self.counters,
        }

    # ------------------------------------------------------------ internals

    def _pump(self, n: _Neighbour, now_ms: int, res: LtpResult) -> None:
        while n.queue and self.engine.can_send() and self.engine.is_up(n.engine_id):
            if (
                n.config.ltp_aggregate
                and n.queued_bytes < self.config.aggregate_bytes
                and now_ms < n.oldest_ms + self.config.aggregate_ms
            ):
                return  # wait for more bundles to share the block
            tx_ids: list[int] = []
            parts: list[bytes] = []
            size = 0
            while n.queue:
                tx, b = n.queue[0]
                if parts and (
                    not n.config.ltp_aggregate
                    or size + len(b) > self.config.aggregate_bytes
                ):
                    break
                n.queue.popleft()
                n.queued_bytes -= len(b)
                n.oldest_ms = now_ms
                tx_ids.append(tx)
                parts.append(b)
                size += len(b)
            block = aggregate(parts)
            token = self._next_token
            self._next_token += 1
            self._blocks[token] = tx_ids
            try:
                outs = self.engine.send_block(
                    n.engine_id,
                    block,
                    red_len=0 if n.config.ltp_green else len(block),
                    token=token,
                    now=now_ms,
                )
            except DtnError as exc:  # InvalidArgument: above max_block_bytes
                del self._blocks[token]
                res.done += [(tx, False) for tx in tx_ids]
                res.problems.append(f"block refused: {exc}")
                continue
            self._outputs(outs, now_ms, res)

    def _outputs(self, outs: list[Output], now_ms: int, res: LtpResult) -> None:
        freed: set[int] = set()
        for o in outs:
            if isinstance(o, SendSegment):
                n = self._by_engine.get(o.engine_id)
                if n is not None:
                    res.sends.append((n.config.address, o.data))
            elif isinstance(o, BlockSent):
                tx_ids = self._blocks.pop(o.token, [])
                res.done += [(tx, o.ok) for tx in tx_ids]
                if not o.ok:
                    res.problems.append(f"block to engine {o.engine_id}: {o.reason}")
                freed.add(o.engine_id)
            elif isinstance(o, BlockReceived):
                n = self._by_engine.get(o.engine_id)
                if n is None:
                    continue
                if not o.red:
                    self.counters["ltp_green_blocks_in"] += 1
                bundles, err = split_block_untrusted(o.data)
                self.counters["ltp_bundles_in"] += len(bundles)
                if err is not None:
                    self.counters["ltp_bad_blocks"] += 1
                    res.problems.append(f"block from engine {o.engine_id}: {err}")
                if not o.red:
                    res.received += [(n.config.node, b, None) for b in bundles]
                    continue
                key = (o.engine_id, o.session_number)
                if not bundles:
                    # Nothing storable in it: acknowledge, or it comes forever.
                    self._outputs(self.engine.accept_block(*key, now_ms), now_ms, res)
                    continue
                self._unstored[key] = [len(bundles), now_ms + _STORE_TIMEOUT_MS]
                for b in bundles:
                    token = self._next_rx_token
                    self._next_rx_token += 1
                    self._tokens[token] = key
                    res.received.append((n.config.node, b, token))
        if freed:
            # A session closed: queued bundles (for any span) may go now.
            for n in self._nbs.values():
                if n.queue:
                    self._pump(n, now_ms, res)
