"""The object store service (service 18): put, get, rm, scrub, repair, GC.

Theory of operation
-------------------
*Put* (:meth:`DfsService.put`) runs the pipeline of :mod:`dcis.dfs.core.codec`
over the object, picks ``n`` distinct holders by the rule of
:mod:`dcis.dfs.core.placement`, keeps the blocks meant for this node in its share
store and sends every other block to its holder as a STORE bundle; a holder
that has every block of its share answers STORED. The manifest goes to the
log under ``dfs/m/<name>`` at once (tentative; the log commits it, inside a
partition later). The put is *done* then: the bundles are in the agent's
custody and the manifest in the log; STORED answers count shares placed.

*Get* (:meth:`DfsService.get`) reads the manifest and the current placement
at the tentative level (so it works inside a partition), orders the share
holders by CGR's earliest arrival (this node first), and asks the first
``k`` of them for their blocks (FETCH). Blocks whose CRC-32C matches the
manifest count; as soon as a chunk has ``k`` of them it is decoded, its
ciphertext hash checked and its plaintext decrypted. A MISSING answer, a bad
block, or a holder silent past its deadline (twice the earliest arrival plus
``fetch_slack_ms``) brings in the next holder. The get fails when every
holder has been tried and some chunk still lacks k good blocks, or at
``get_timeout_ms``.

*Maintenance*, every ``maintenance_interval_ms``:

1. scrub: re-read the next ``scrub_blocks_per_round`` local blocks; a block
   that fails its disk checksum or the manifest's CRC is dropped and its
   share rebuilt at once;
2. self-heal: a share the current placement gives to this node but that is
   incomplete here (a push lost, a crash, a scrubbed block, a repair that
   chose this node) is *pulled*: FETCH from k other holders, decode, check,
   recompute this share's blocks, store them. A pushed share gets
   ``push_grace_ms`` to arrive first;
3. repair: a holder that membership reports dead or left is replaced (one
   it does not list yet is not: a node's view may be young).
   A live holder of the object picks new holders by the placement rule,
   excluding every current holder (so two shares never share a node), and
   submits a compare-and-set of ``dfs/p/<oid>`` from the committed value it
   read to the next generation. At most one such entry commits per
   generation (exactly one repair per missing share); the new holder then
   self-heals. A rejected claim is retried next round on fresh state, so
   repair converges while holders come and go;
4. GC: a local share of a removed or replaced object (a ``dfs/x/<oid>``
   tombstone, which ``rm`` and an overwriting ``put`` write) is dropped at
   once; one
   of an object no manifest names, or that the committed placement gives to
   another node, after ``gc_grace_ms``.

Bounds: open rebuilds (``max_fetches``) and gets (twice that), FETCH answers (blocks only
from the local store), STORE bundles (the store's capacity).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import nacl.public
import nacl.utils

from dcis.consensus.log.api import (
    CompareAndSet,
    EntryId,
    KeyValueLog,
    Level,
    Outcome,
    Put,
)
from dcis.consensus.membership.view import MemberInfo, MembershipView, MemberState
from dcis.crypto.keys import NodeIdentity
from dcis.dfs.core import appwire, wire
from dcis.dfs.core._sodium import new_buffer
from dcis.dfs.core.codec import (
    DEFAULT_CHUNK_SIZE,
    KEY_BYTES,
    OBJECT_ID_BYTES,
    Buf,
    block_from_ciphertext,
    block_len,
    check_kn,
    chunk_count,
    chunk_hash,
    chunk_plain_len,
    crc32c,
    decode_ciphertext,
    decrypt_into,
    encode_chunk,
    object_hash,
)
from dcis.dfs.core.errors import (
    CorruptBlock,
    DecodeError,
    DfsError,
    InvalidArgument,
    NotFound,
    StoreFull,
    Unrecoverable,
)
from dcis.dfs.core.manifest import (
    MANIFEST_PREFIX,
    REMOVED_PREFIX,
    Manifest,
    Placement,
    Tombstone,
    check_name,
    decode_placement_untrusted,
    decode_record_untrusted,
    encode_manifest,
    encode_placement,
    encode_tombstone,
    manifest_key,
    placement_key,
    removed_key,
)
from dcis.dfs.core.placement import PlacementPolicy, choose_holders
from dcis.dfs.core.store import ShareStore
from dcis.dtn.node.service import Inbound, Send, ServiceContext

log = logging.getLogger(__name__)

SERVICE = 18
OPEN_READER = 0
"""The ``keys`` entry holding the object key in the clear (no security)."""


class AccessDenied(DfsError):
    """The manifest wraps the object key for other readers only."""


class Busy(DfsError):
    """Too many gets and rebuilds are open on this node."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DfsConfig:
    """Tunables of the object store service (times in DTN ms)."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    k: int = 3
    n: int = 10
    maintenance_interval_ms: int = 60_000
    scrub_blocks_per_round: int = 256
    push_grace_ms: int = 300_000
    gc_grace_ms: int = 86_400_000
    fetch_slack_ms: int = 30_000
    get_timeout_ms: int = 3_600_000
    share_lifetime_ms: int = 86_400_000
    max_fetches: int = 64
    holder_check_ms: int = 1_000
    """While a holder owes blocks, how often membership is asked whether it
    is still alive: one that is not any more (suspect, unreachable, dead)
    gets another holder brought in beside it at once, without waiting for
    ``fetch_slack_ms``."""
    fetch_window: int = 16
    """Chunks asked of one holder at a time (a FETCH); more are asked as
    half of them have come."""
    fetch_ahead: int = 64
    """No chunk is asked more than this many past the lowest chunk a get
    or rebuild still lacks: bounds the blocks it holds (about
    ``fetch_ahead * (k - 1)`` blocks) whatever the object's size."""
    max_app_bytes: int = 1 << 31
    """Bound on the bytes buffered for local apps' unfinished puts: each
    open put holds less than a chunk (plus one part), so at most
    ``max_app_bytes // chunk_size`` app puts are open at once."""
    policy: PlacementPolicy = PlacementPolicy()  # noqa: RUF009 (frozen)

    def __post_init__(self) -> None:
        check_kn(self.k, self.n)
        if self.chunk_size <= 0 or self.maintenance_interval_ms <= 0:
            raise InvalidArgument("chunk_size and maintenance_interval_ms must be > 0")
        if self.fetch_window < 1 or self.fetch_ahead < 1 or self.holder_check_ms < 1:
            raise InvalidArgument(
                "fetch_window, fetch_ahead and holder_check_ms must be >= 1"
            )


class OpState(StrEnum):
    """Where a put or get stands."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(eq=False, kw_only=True)
class PutOp:
    """A put in progress: done once the manifest is in the log; ``placed``
    grows as holders confirm their shares (STORED)."""

    name: str
    manifest: Manifest
    state: OpState = OpState.DONE
    placed: set[int] = field(default_factory=set)
    error: DfsError | None = None


@dataclass(eq=False, kw_only=True)
class GetOp:
    """A get in progress. ``data`` is whole once ``state`` is DONE;
    ``chunks_done`` (in any order) and ``shares_fetched`` show progress."""

    name: str
    manifest: Manifest
    key: bytes
    data: memoryview | None
    """The whole object; None for a streamed get (``on_piece``), which
    never holds more than its open chunks."""
    state: OpState = OpState.RUNNING
    error: DfsError | None = None
    chunks_done: int = 0
    shares_fetched: set[int] = field(default_factory=set)

    def result(self) -> bytes:
        """The object's bytes; raises the error of a failed get."""
        if self.error is not None:
            raise self.error
        if self.state != OpState.DONE:
            raise InvalidArgument("get still running")
        if self.data is None:
            raise InvalidArgument("a streamed get keeps no copy of the object")
        return bytes(self.data)

    def view(self) -> memoryview:
        """The object's bytes without a copy (once DONE)."""
        if self.state != OpState.DONE or self.data is None:
            self.result()  # raises the error, "still running" or "streamed"
        assert self.data is not None
        return self.data


class PutWriter:
    """A streaming put (:meth:`DfsService.put_begin`): bytes in, one chunk
    buffered at most; each whole chunk is encoded and its blocks stored or
    queued for their holders at once. ``buffered`` is the bytes held now,
    ``peak_buffered`` the most ever held (bounded by the chunk size plus one
    piece, whatever the object's size)."""

    def __init__(
        self,
        svc: DfsService,
        *,
        name: str,
        size: int,
        k: int,
        n: int,
        holders: tuple[int, ...],
        object_id: bytes,
        key: bytes,
        keys: dict[int, bytes],
        created_ms: int,
    ) -> None:
        self._svc = svc
        self.name = name
        self.size = size
        self.k = k
        self.n = n
        self.holders = holders
        self.object_id = object_id
        self.key = key
        self.keys = keys
        self.created_ms = created_ms
        self.hashes: list[bytes] = []
        self.crcs: list[tuple[int, ...]] = []
        self.written = 0
        self.peak_buffered = 0
        self._buf = bytearray()
        self._chunk = 0
        self.op: PutOp | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not encoded yet (less than one chunk)."""
        return len(self._buf)

    def write(self, data: Buf, now_ms: int) -> None:
        """Append ``data``; InvalidArgument past ``size`` or after close."""
        if self.op is not None:
            raise InvalidArgument("put already closed")
        if self.written + len(data) > self.size:
            raise InvalidArgument(
                f"{self.written + len(data)} bytes written, the put is {self.size}"
            )
        cs = self._svc.config.chunk_size
        view = memoryview(data).cast("B")
        self.written += len(view)
        if not self._buf and len(view) == cs:
            # A whole chunk with nothing pending: encoded in place, no copy.
            self._svc._put_chunk(self, self._chunk, view, now_ms)
            self._chunk += 1
            return
        self._buf += view
        self.peak_buffered = max(self.peak_buffered, len(self._buf))
        while len(self._buf) >= cs:
            with memoryview(self._buf) as whole, whole[:cs] as chunk:
                self._svc._put_chunk(self, self._chunk, chunk, now_ms)
            self._chunk += 1
            del self._buf[:cs]

    def close(self, now_ms: int) -> PutOp:
        """Encode the last (short) chunk and put the manifest in the log.
        InvalidArgument unless exactly ``size`` bytes were written."""
        if self.op is not None:
            return self.op
        if self.written != self.size:
            raise InvalidArgument(f"{self.written} of {self.size} bytes written")
        if self._buf or self._chunk == 0:
            # The last short chunk (an empty object has one empty chunk).
            self._svc._put_chunk(self, self._chunk, bytes(self._buf), now_ms)
            self._chunk += 1
            self._buf = bytearray()
        self.op = self._svc._put_commit(self, now_ms)
        return self.op


@dataclass(eq=False)
class _Request:
    """Chunks of one share asked of its holder: ``pending`` asked and not
    answered yet, ``todo`` not asked yet (asked a window at a time)."""

    share: int
    holder: int
    pending: set[int]
    deadline_ms: int
    todo: list[int] = field(default_factory=list)
    rtt_ms: int = 0
    check_ms: int = 0
    """When membership is next asked whether the holder is still alive."""
    hedged: bool = False
    """Another holder was brought in for this one (it stays asked)."""


@dataclass(eq=False)
class _Gather:
    """Collect k verified blocks for each open chunk of one object, from the
    holders in earliest-arrival order. ``on_chunk(j, ciphertext)`` consumes
    each chunk; ``skip`` is a share never used (the one being rebuilt)."""

    manifest: Manifest
    holders: tuple[int, ...]
    candidates: list[int]
    open_chunks: set[int]
    on_chunk: Callable[[int, bytes], None]
    on_end: Callable[[DfsError | None], None]
    deadline_ms: int
    blocks: dict[int, dict[int, Buf]] = field(default_factory=dict)
    requests: dict[int, _Request] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    used: set[int] = field(default_factory=set)
    check_hash: bool = True
    finished: bool = False
    held: int = 0
    """Bytes of blocks held, waiting for their chunk's k-th."""
    low: int = 0


def _ended(g: _Gather) -> bool:
    """Whether ``g`` has finished (a call: callbacks may have ended it)."""
    return g.finished


def service_eid(node: int) -> str:
    """The object store endpoint of ``node``."""
    return f"ipn:{node}.{SERVICE}"


def _source_node(source: str) -> int | None:
    if not source.startswith("ipn:"):
        return None
    node, _, svc = source[4:].partition(".")
    if not (node.isdigit() and svc == str(SERVICE)):
        return None
    return int(node)


class DfsService:
    """Service 18 on one node. ``membership`` and ``log`` are the node's
    membership view and key-value log; ``store`` its share store (it
    outlives this object across a crash). ``identity`` (default: the
    context's credentials) unwraps object keys; ``readers`` (a map, or a callable
    read at each put, e.g. over the constellation's certificates) maps the nodes
    every put wraps the key for to their X25519 public keys. ``entropy(n)``
    gives n random bytes for object ids and keys (default: the OS CSPRNG;
    the simulator passes a seeded one)."""

    service = SERVICE

    def __init__(
        self,
        *,
        membership: MembershipView,
        log: KeyValueLog,
        store: ShareStore,
        config: DfsConfig | None = None,
        identity: NodeIdentity | None = None,
        readers: Mapping[int, bytes] | Callable[[], Mapping[int, bytes]] | None = None,
        entropy: Callable[[int], bytes] | None = None,
    ) -> None:
        self.membership = membership
        self.log = log
        self.store = store
        self.config = config or DfsConfig()
        self._identity = identity
        self.readers: Mapping[int, bytes] | Callable[[], Mapping[int, bytes]] = (
            readers or {}
        )
        self._entropy = entropy or nacl.utils.random
        self._ctx: ServiceContext | None = None
        self._node = 0
        self._outbox: list[Send] = []
        self._now = 0
        self._next_maintenance = 0
        self._next_req = 1
        self._gathers: list[_Gather] = []
        self._by_req: dict[int, _Gather] = {}
        self._rebuilding: set[tuple[bytes, int]] = set()
        self._urgent: set[tuple[bytes, int]] = set()
        self._first_seen: dict[tuple[bytes, int], int] = {}
        self._claims: dict[bytes, EntryId] = {}
        self._puts: dict[bytes, PutOp] = {}
        self._scrub_queue: list[tuple[bytes, int, int]] = []
        self._decoded: dict[bytes, Manifest | Tombstone | None] = {}
        self._app_puts: dict[tuple[str, int], PutWriter] = {}
        self._app_put_ops: dict[bytes, tuple[str, int]] = {}
        self.stats: dict[str, int] = {
            "scrubbed": 0,
            "corrupt": 0,
            "rebuilt_blocks": 0,
            "repair_claims": 0,
            "gc_shares": 0,
            "dropped": 0,
            "app_buffer_peak": 0,
            "get_buffer_peak": 0,
        }

    # -- lifecycle ---------------------------------------------------------

    @property
    def node(self) -> int:
        """This node's number (0 before start)."""
        return self._node

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        """Begin an incarnation; maintenance starts after a random offset."""
        self._ctx = ctx
        self._node = ctx.node
        if self._identity is None and ctx.credentials is not None:
            self._identity = ctx.credentials.identity
        self._now = now_ms
        self._next_maintenance = now_ms + ctx.rng.randrange(
            self.config.maintenance_interval_ms
        )
        return self._drain()

    def stop(self) -> None:
        """Orderly shutdown: open gets fail."""
        for g in list(self._gathers):
            self._finish(g, Unrecoverable("service stopped"))

    def next_deadline(self) -> int | None:
        """When ``on_tick`` is next due."""
        if self._outbox:
            return self._now
        times = [self._next_maintenance]
        for g in self._gathers:
            times.append(g.deadline_ms)
            # An answered or hedged request's deadline is no timer any more.
            times.extend(
                min(r.deadline_ms, r.check_ms)
                for r in g.requests.values()
                if r.pending and not r.hedged
            )
        return min(times)

    def on_send_result(
        self, tag: int, bundle_key: str | None, error: str | None, now_ms: int
    ) -> list[Send]:
        """Nothing to do: a lost STORE is healed by the holder's pull."""
        self._now = now_ms
        return self._drain()

    def on_contact(self, neighbor: int, up: bool, now_ms: int) -> list[Send]:
        """Nothing to do: bundles wait in the agent for their contact."""
        self._now = now_ms
        return self._drain()

    def on_tick(self, now_ms: int) -> list[Send]:
        """Timers: fetch deadlines, get timeouts, maintenance."""
        self._now = now_ms
        for g in list(self._gathers):
            self._tick_gather(g, now_ms)
        if now_ms >= self._next_maintenance:
            self._next_maintenance = now_ms + self.config.maintenance_interval_ms
            self.maintain(now_ms)
        return self._drain()

    def _drain(self) -> list[Send]:
        out, self._outbox = self._outbox, []
        return out

    def _send(self, node: int, m: wire.Message) -> None:
        self._outbox.append(
            Send(
                service_eid(node),
                wire.encode_message(m),
                lifetime_ms=self.config.share_lifetime_ms,
            )
        )

    def _eta_at(self, now_ms: int, size: int) -> Callable[[int], int | None]:
        return lambda node: self._eta(node, now_ms, size)

    def _eta(self, node: int, now_ms: int, size: int) -> int | None:
        if node == self._node:
            return now_ms
        if self._ctx is None:
            return None
        return self._ctx.earliest_arrival(node, at_ms=now_ms, size=size)

    # -- the log -----------------------------------------------------------

    def _record(self, raw: bytes) -> Manifest | Tombstone | None:
        if raw in self._decoded:
            return self._decoded[raw]
        try:
            rec: Manifest | Tombstone | None = decode_record_untrusted(raw)
        except DecodeError as exc:
            log.warning("dfs: bad manifest in the log dropped: %s", exc)
            rec = None
        if len(self._decoded) > 4096:
            self._decoded.clear()
        self._decoded[raw] = rec
        return rec

    def manifests(
        self, prefix: str = "", level: Level = Level.TENTATIVE
    ) -> Iterator[Manifest | Tombstone]:
        """Every manifest or tombstone whose name starts with ``prefix``."""
        for _, raw in self.log.scan(MANIFEST_PREFIX + prefix, level):
            rec = self._record(raw)
            if rec is not None:
                yield rec

    def manifest(self, name: str) -> Manifest:
        """The live manifest of ``name`` (tentative level); NotFound if none."""
        check_name(name)
        raw = self.log.get(manifest_key(name), Level.TENTATIVE)
        rec = self._record(raw) if raw is not None else None
        if not isinstance(rec, Manifest):
            raise NotFound(
                f"no object named {name!r} on this node "
                "(deleted, or its manifest has not reached this node's log yet)"
            )
        return rec

    def placement(self, m: Manifest, level: Level = Level.TENTATIVE) -> Placement:
        """The object's current holders at ``level`` (the manifest's when no
        repair has changed them)."""
        raw = self.log.get(placement_key(m.object_id), level)
        if raw is not None:
            try:
                return decode_placement_untrusted(raw, m.n)
            except DecodeError as exc:
                log.warning("dfs: bad placement record ignored: %s", exc)
        return Placement(0, m.placement)

    def ls(self, prefix: str = "") -> list[Manifest]:
        """Live objects whose name starts with ``prefix``, by name."""
        return [m for m in self.manifests(prefix) if isinstance(m, Manifest)]

    def stat(self, name: str) -> dict[str, object]:
        """k, n, size, holders and each share's state (as this node sees
        it: ``ok``, ``suspect``, ``unreachable``, ``lost``; ``missing`` or
        ``partial`` for a share this node should hold but does not)."""
        m = self.manifest(name)
        p = self.placement(m)
        members = self.membership.members()
        shares = []
        for i, h in enumerate(p.holders):
            if h == self._node:
                have = len(self.store.chunks(m.object_id, i))
                state = "ok" if have == m.chunks else ("partial" if have else "missing")
            else:
                info = members.get(h)
                if info is None or info.state in (MemberState.DEAD, MemberState.LEFT):
                    state = "lost"
                elif info.state == MemberState.ALIVE:
                    state = "ok"
                else:
                    state = str(info.state)
            shares.append({"share": i, "holder": h, "state": state})
        return {
            "name": m.name,
            "object_id": m.object_id.hex(),
            "size": m.size,
            "k": m.k,
            "n": m.n,
            "chunk_size": m.chunk_size,
            "generation": p.generation,
            "holders": list(p.holders),
            "shares": shares,
            "writer": m.writer,
            "created_ms": m.created_ms,
        }

    # -- put / rm ----------------------------------------------------------

    def put(
        self,
        name: str,
        data: bytes | bytearray | memoryview,
        now_ms: int,
        *,
        k: int | None = None,
        n: int | None = None,
        readers: Mapping[int, bytes] | None = None,
    ) -> PutOp:
        """Store ``data`` as ``name`` (replacing any object of that name).
        Raises InvalidArgument, PlacementError or StoreFull; the STORE
        bundles leave at the next call (``next_deadline()`` is now)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgument("data must be a bytes-like object")
        view = memoryview(data).cast("B")
        w = self.put_begin(name, len(view), now_ms, k=k, n=n, readers=readers)
        cs = self.config.chunk_size
        for at in range(0, len(view), cs):
            w.write(view[at : at + cs], now_ms)
        return w.close(now_ms)

    def put_begin(
        self,
        name: str,
        size: int,
        now_ms: int,
        *,
        k: int | None = None,
        n: int | None = None,
        readers: Mapping[int, bytes] | None = None,
    ) -> PutWriter:
        """Start a streaming put of exactly ``size`` bytes: holders are
        chosen and the key wrapped now (PlacementError, AccessDenied and
        InvalidArgument come before any data); feed the bytes with
        :meth:`PutWriter.write` (any piece sizes; each whole chunk is
        encoded and its STOREs queued at once, so at most one chunk is
        buffered) and end with :meth:`PutWriter.close`."""
        self._now = now_ms
        check_name(name)
        k = self.config.k if k is None else k
        n = self.config.n if n is None else n
        check_kn(k, n)
        if size < 0:
            raise InvalidArgument(f"negative size {size}")
        cs = self.config.chunk_size
        chunks = chunk_count(size, cs)
        share_bytes = sum(
            block_len(chunk_plain_len(size, cs, j), k) for j in range(chunks)
        )
        holders = choose_holders(
            self.membership.members(),
            n,
            share_bytes=share_bytes,
            exclude=(),
            eta=self._eta_at(now_ms, share_bytes),
            now_ms=now_ms,
            policy=self.config.policy,
        )
        object_id = self._entropy(OBJECT_ID_BYTES)
        key = self._entropy(KEY_BYTES)
        # Wrapped first: a readers callable may refuse (nothing sent yet).
        keys = self._wrap(key, readers)
        return PutWriter(
            self,
            name=name,
            size=size,
            k=k,
            n=n,
            holders=tuple(holders),
            object_id=object_id,
            key=key,
            keys=keys,
            created_ms=now_ms,
        )

    def _put_chunk(self, w: PutWriter, j: int, plain: Buf, now_ms: int) -> None:
        """Encode chunk ``j`` of a streaming put; keep or send its blocks."""
        enc = encode_chunk(plain, key=w.key, object_id=w.object_id, j=j, k=w.k, n=w.n)
        w.hashes.append(enc.cipher_hash)
        w.crcs.append(tuple(enc.crcs))
        chunks = chunk_count(w.size, self.config.chunk_size)
        for i, h in enumerate(w.holders):
            if h == self._node:
                self.store.put_block(w.object_id, i, j, enc.blocks[i], now_ms)
            else:
                self._send(h, wire.Store(w.object_id, i, j, chunks, enc.blocks[i]))

    def _put_commit(self, w: PutWriter, now_ms: int) -> PutOp:
        """The manifest of a finished streaming put goes to the log."""
        self._now = now_ms
        manifest = Manifest(
            object_id=w.object_id,
            name=w.name,
            size=w.size,
            chunk_size=self.config.chunk_size,
            k=w.k,
            n=w.n,
            placement=w.holders,
            chunk_hashes=tuple(w.hashes),
            block_crcs=tuple(w.crcs),
            root=object_hash(w.hashes),
            keys=w.keys,
            writer=self._node,
            created_ms=w.created_ms,
        )
        raw = encode_manifest(manifest)
        self._decoded[raw] = manifest
        try:
            old: Manifest | None = self.manifest(w.name)
        except NotFound:
            old = None
        self.log.submit(Put(manifest_key(w.name), raw), now_ms)
        if old is not None:
            # The replaced object's shares are reclaimed like a removed one's.
            tomb = encode_tombstone(Tombstone(old.object_id, now_ms))
            self.log.submit(Put(removed_key(old.object_id), tomb), now_ms)
        op = PutOp(name=w.name, manifest=manifest)
        op.placed.update(i for i, h in enumerate(w.holders) if h == self._node)
        if len(self._puts) > 1024:
            self._puts.clear()
        self._puts[w.object_id] = op
        return op

    def _wrap(
        self, key: bytes, readers: Mapping[int, bytes] | None
    ) -> dict[int, bytes]:
        want = dict(self.readers() if callable(self.readers) else self.readers)
        want.update(readers or {})
        if self._identity is not None:
            want[self._node] = self._identity.kx_public
        if not want:
            return {OPEN_READER: key}
        return {
            node: bytes(nacl.public.SealedBox(nacl.public.PublicKey(pub)).encrypt(key))
            for node, pub in want.items()
        }

    def _unwrap(self, m: Manifest) -> bytes:
        if OPEN_READER in m.keys:
            return m.keys[OPEN_READER]
        sealed = m.keys.get(self._node)
        if sealed is None or self._identity is None:
            raise AccessDenied(
                f"{m.name}: the object key is not wrapped for node {self._node}"
            )
        box = nacl.public.SealedBox(nacl.public.PrivateKey(self._identity.kx_secret))
        try:
            key: bytes = box.decrypt(sealed)
        except Exception as exc:  # nacl.exceptions.CryptoError
            raise AccessDenied(f"{m.name}: cannot unwrap the object key") from exc
        return key

    def rm(self, name: str, now_ms: int) -> Manifest:
        """Remove ``name``: a tombstone in the log; holders drop the shares at
        their next maintenance. Raises NotFound."""
        self._now = now_ms
        m = self.manifest(name)
        tomb = encode_tombstone(Tombstone(m.object_id, now_ms))
        self.log.submit(Put(manifest_key(name), tomb), now_ms)
        self.log.submit(Put(removed_key(m.object_id), tomb), now_ms)
        for i in range(m.n):
            self.store.delete_share(m.object_id, i)
        return m

    # -- get -----------------------------------------------------------------

    def get(
        self,
        name: str,
        now_ms: int,
        *,
        on_piece: Callable[[int, memoryview], None] | None = None,
        on_done: Callable[[GetOp], None] | None = None,
    ) -> GetOp:
        """Start reading ``name``; poll the returned op (and keep calling
        ``on_tick``/``on_bundle``). Raises NotFound or AccessDenied at once;
        a failed fetch shows as ``state == FAILED`` with ``error`` set.
        ``on_piece(offset, bytes)`` is called as each chunk is ready (in any
        order), ``on_done(op)`` once the get ends either way."""
        self._now = now_ms
        m = self.manifest(name)
        key = self._unwrap(m)
        if len(self._gathers) >= 2 * self.config.max_fetches:
            raise Busy(f"{len(self._gathers)} gets and rebuilds open; try later")
        whole = None if on_piece is not None else new_buffer(m.size)
        op = GetOp(name=name, manifest=m, key=key, data=whole)

        def on_chunk(j: int, ct: bytes) -> None:
            at = j * m.chunk_size
            plain_len = chunk_plain_len(m.size, m.chunk_size, j)
            if whole is not None:
                out = whole[at : at + plain_len]
            else:
                out = new_buffer(plain_len)
            decrypt_into(out, ct, key=key, object_id=m.object_id, j=j)
            op.chunks_done += 1
            if on_piece is not None:
                on_piece(at, out)

        def on_end(err: DfsError | None) -> None:
            op.state = OpState.FAILED if err else OpState.DONE
            op.error = err
            if on_done is not None:
                on_done(op)

        self._gather(
            m,
            skip=None,
            chunks=set(range(m.chunks)),
            on_chunk=on_chunk,
            on_end=on_end,
            now_ms=now_ms,
            used=op.shares_fetched,
            # A reader holds the key: the AEAD tag checks each chunk (and
            # binds it to the object id and index); the ciphertext hash is
            # for repairers, who have no key.
            check_hash=False,
        )
        return op

    def _gather(
        self,
        m: Manifest,
        *,
        skip: int | None,
        chunks: set[int],
        on_chunk: Callable[[int, bytes], None],
        on_end: Callable[[DfsError | None], None],
        now_ms: int,
        used: set[int] | None = None,
        check_hash: bool = True,
    ) -> None:
        holders = self.placement(m).holders
        share_bytes = block_len(min(m.size, m.chunk_size), m.k) * m.chunks

        members = self.membership.members()

        def order(i: int) -> tuple[int, int, int, int]:
            h = holders[i]
            info = members.get(h)
            if h == self._node or (
                info is not None and info.state == MemberState.ALIVE
            ):
                rank = 0
            elif info is None or info.state in (MemberState.DEAD, MemberState.LEFT):
                rank = 2
            else:
                rank = 1
            eta = self._eta(h, now_ms, share_bytes)
            return (rank, 0 if eta is not None else 1, eta or 0, h)

        cands = sorted((i for i in range(m.n) if i != skip), key=order)
        g = _Gather(
            manifest=m,
            holders=holders,
            candidates=cands,
            open_chunks=set(chunks),
            on_chunk=on_chunk,
            on_end=on_end,
            deadline_ms=now_ms + self.config.get_timeout_ms,
            used=set() if used is None else used,
            check_hash=check_hash,
        )
        self._gathers.append(g)
        for _ in range(m.k):
            self._activate_next(g, now_ms)
        self._pump(g, now_ms)

    def _activate_next(self, g: _Gather, now_ms: int) -> None:
        """Bring in the next candidate share: a request for every open
        chunk, asked a window at a time by :meth:`_pump`."""
        if not g.candidates or not g.open_chunks or g.finished:
            return
        i = g.candidates.pop(0)
        h = g.holders[i]
        rtt = 0
        if h != self._node:
            eta = self._eta(h, now_ms, 0)
            rtt = 2 * (eta - now_ms) if eta is not None else 0
        req = self._next_req
        self._next_req += 1
        g.requests[req] = _Request(
            i,
            h,
            set(),
            now_ms + rtt + self.config.fetch_slack_ms,
            todo=sorted(g.open_chunks, reverse=True),
            rtt_ms=rtt,
        )
        self._by_req[req] = g

    def _low(self, g: _Gather) -> int:
        """The lowest open chunk (open chunks only ever close)."""
        while g.low not in g.open_chunks and g.open_chunks:
            g.low += 1
        return g.low

    def _pump(self, g: _Gather, now_ms: int) -> None:
        """Ask (or read locally) the next window of chunks of every request
        whose window is half answered, never past ``fetch_ahead`` chunks
        beyond the lowest open one: the blocks a gather holds are bounded
        whatever the object's size. Then end the gather if it is done."""
        window = self.config.fetch_window
        moved = True
        while moved and not g.finished and g.open_chunks:
            moved = False
            limit = self._low(g) + self.config.fetch_ahead
            for req, r in list(g.requests.items()):
                if _ended(g):
                    return
                if req not in g.requests or len(r.pending) > window // 2:
                    continue
                ask: list[int] = []
                while r.todo and len(r.pending) + len(ask) < window:
                    j = r.todo[-1]
                    if j not in g.open_chunks:
                        r.todo.pop()
                    elif j >= limit:
                        break
                    else:
                        ask.append(r.todo.pop())
                if not ask:
                    continue
                moved = True
                if r.holder != self._node:
                    r.pending.update(ask)
                    r.deadline_ms = now_ms + r.rtt_ms + self.config.fetch_slack_ms
                    r.check_ms = now_ms + self.config.holder_check_ms
                    r.hedged = False
                    self._send(
                        r.holder,
                        wire.Fetch(req, g.manifest.object_id, r.share, tuple(ask)),
                    )
                    continue
                for j in ask:
                    try:
                        data = self.store.get_block(g.manifest.object_id, r.share, j)
                    except CorruptBlock:
                        data = None
                        self._urgent.add((g.manifest.object_id, r.share))
                    if data is None:
                        g.failed.add(r.share)
                        self._drop_share_requests(g, r.share)
                        self._activate_next(g, now_ms)
                        break
                    self._take_block(g, r.share, j, data)
                    if _ended(g):
                        return
                    if req not in g.requests:
                        break
        self._check_end(g)

    def _take_block(self, g: _Gather, i: int, j: int, data: Buf) -> None:
        m = g.manifest
        if j not in g.open_chunks:
            return
        if crc32c(data) != m.block_crcs[j][i]:
            g.failed.add(i)
            self._drop_share_requests(g, i)
            self._activate_next(g, self._now)
            return
        got = g.blocks.setdefault(j, {})
        got[i] = data
        g.held += len(data)
        self.stats["get_buffer_peak"] = max(self.stats["get_buffer_peak"], g.held)
        g.used.add(i)
        if len(got) < m.k:
            return
        plain_len = chunk_plain_len(m.size, m.chunk_size, j)
        g.open_chunks.discard(j)
        del g.blocks[j]
        g.held -= sum(len(b) for b in got.values())
        try:
            ct = decode_ciphertext(got, plain_len=plain_len, k=m.k, n=m.n)
            if g.check_hash and chunk_hash(ct) != m.chunk_hashes[j]:
                raise DecodeError(f"chunk {j}: ciphertext hash mismatch")
            g.on_chunk(j, ct)
        except DfsError as exc:
            self._finish(g, Unrecoverable(f"{m.name}: {exc}"))
            return
        if not g.open_chunks:
            self._finish(g, None)

    def _drop_share_requests(self, g: _Gather, share: int) -> None:
        for req, r in list(g.requests.items()):
            if r.share == share:
                del g.requests[req]
                self._by_req.pop(req, None)

    def _check_end(self, g: _Gather) -> None:
        if g.finished:
            return
        if not g.open_chunks:
            self._finish(g, None)
            return
        if not g.candidates and not any(r.pending for r in g.requests.values()):
            self._finish(
                g,
                Unrecoverable(
                    f"{g.manifest.name}: {len(g.open_chunks)} chunks lack {g.manifest.k} good blocks"
                ),
            )

    def _finish(self, g: _Gather, err: DfsError | None) -> None:
        if g.finished:
            return
        g.finished = True
        for req in g.requests:
            self._by_req.pop(req, None)
        g.requests.clear()
        if g in self._gathers:
            self._gathers.remove(g)
        g.on_end(err)

    def _tick_gather(self, g: _Gather, now_ms: int) -> None:
        if now_ms >= g.deadline_ms:
            self._finish(g, Unrecoverable(f"{g.manifest.name}: timed out"))
            return
        members: Mapping[int, MemberInfo] | None = None
        for r in list(g.requests.values()):
            if not r.pending or r.hedged:
                continue
            gone = False
            if now_ms >= r.check_ms:
                # Membership may know before the slack runs out that the
                # holder is suspect, unreachable or dead.
                if members is None:
                    members = self.membership.members()
                info = members.get(r.holder)
                gone = info is not None and info.state != MemberState.ALIVE
                r.check_ms = now_ms + self.config.holder_check_ms
            if gone or now_ms >= r.deadline_ms:
                # Still wanted, but another holder is brought in beside it.
                r.hedged = True
                self._activate_next(g, now_ms)
        self._pump(g, now_ms)

    # -- bundles -----------------------------------------------------------

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        """A message from another node's object store."""
        self._now = now_ms
        if inbound.source.startswith(
            f"ipn:{self._node}."
        ) and not inbound.source.endswith(f".{SERVICE}"):
            self._on_app(inbound, now_ms)
            return self._drain()
        peer = _source_node(inbound.source)
        try:
            if peer is None:
                raise DecodeError(
                    f"not from an object store endpoint: {inbound.source}"
                )
            msg = wire.decode_message_untrusted(inbound.payload)
        except DecodeError as exc:
            self.stats["dropped"] += 1
            log.warning("dfs: bundle_dropped from %s: %s", inbound.source, exc)
            return self._drain()
        if isinstance(msg, wire.Store):
            self._on_store(peer, msg, now_ms)
        elif isinstance(msg, wire.Stored):
            op = self._puts.get(msg.object_id)
            if op is not None and op.manifest.placement[msg.share] == peer:
                op.placed.add(msg.share)
                app = self._app_put_ops.get(msg.object_id)
                if app is not None:
                    self._app_reply(
                        app[0], appwire.Progress(app[1], len(op.placed), op.manifest.n)
                    )
        elif isinstance(msg, wire.Fetch):
            self._on_fetch(peer, msg)
        else:
            g = self._by_req.get(msg.req)
            r = g.requests.get(msg.req) if g is not None else None
            if g is not None and r is not None and r.share == msg.share:
                if isinstance(msg, wire.Block):
                    if msg.chunk in r.pending:
                        r.pending.discard(msg.chunk)
                        self._take_block(g, msg.share, msg.chunk, msg.data)
                else:
                    # The holder lacks part of its share: ask it no more.
                    r.pending.difference_update(msg.chunks)
                    r.todo.clear()
                    g.failed.add(msg.share)
                    self._activate_next(g, now_ms)
                if not g.finished:
                    self._pump(g, now_ms)
        return self._drain()

    # -- local applications ------------------------------------------------

    def _app_reply(self, app: str, m: appwire.AppMessage) -> None:
        self._outbox.append(Send(app, appwire.encode_app(m)))

    def _on_app(self, inbound: Inbound, now_ms: int) -> None:
        app = inbound.source
        try:
            msg = appwire.decode_app_untrusted(inbound.payload)
        except DecodeError as exc:
            self.stats["dropped"] += 1
            log.warning("dfs: bad request from %s dropped: %s", app, exc)
            return
        req = getattr(msg, "req", 0)
        try:
            self._app_request(app, msg, now_ms)
        except DfsError as exc:
            self._app_puts.pop((app, req), None)
            self._app_reply(app, appwire.Error(req, type(exc).__name__, str(exc)))

    def _app_request(self, app: str, msg: appwire.AppMessage, now_ms: int) -> None:
        if isinstance(msg, appwire.PutBegin):
            # Each open put buffers less than one chunk (plus one part).
            cs = self.config.chunk_size
            if (len(self._app_puts) + 1) * cs > self.config.max_app_bytes:
                raise InvalidArgument(
                    f"{len(self._app_puts)} app puts open: no room for another "
                    f"(max_app_bytes {self.config.max_app_bytes})"
                )
            w = self.put_begin(msg.name, msg.size, now_ms, k=msg.k, n=msg.n)
            self._app_puts[(app, msg.req)] = w
            if msg.size == 0:
                self._app_put_done(app, msg.req, now_ms)
        elif isinstance(msg, appwire.PutPart):
            open_put = self._app_puts.get((app, msg.req))
            if open_put is None:
                raise InvalidArgument("no put in progress with that request number")
            if msg.offset != open_put.written:
                raise InvalidArgument("put part out of order")
            open_put.write(msg.data, now_ms)
            self.stats["app_buffer_peak"] = max(
                self.stats["app_buffer_peak"], open_put.peak_buffered
            )
            if open_put.written == open_put.size:
                self._app_put_done(app, msg.req, now_ms)
        elif isinstance(msg, appwire.Call):
            self._app_call(app, msg, now_ms)
        else:
            raise InvalidArgument("a reply is not a request")

    def _app_put_done(self, app: str, req: int, now_ms: int) -> None:
        w = self._app_puts.pop((app, req))
        op = w.close(now_ms)
        m = op.manifest
        self._app_put_ops[m.object_id] = (app, req)
        if len(self._app_put_ops) > 1024:
            del self._app_put_ops[next(iter(self._app_put_ops))]
        self._app_reply(
            app,
            appwire.Ok(
                req,
                {
                    "name": m.name,
                    "object_id": m.object_id.hex(),
                    "size": m.size,
                    "k": m.k,
                    "n": m.n,
                    "holders": list(m.placement),
                    "placed": len(op.placed),
                },
            ),
        )

    def _app_call(self, app: str, msg: appwire.Call, now_ms: int) -> None:
        req = msg.req
        if msg.op == "ls":
            entries = [
                {
                    "name": m.name,
                    "size": m.size,
                    "k": m.k,
                    "n": m.n,
                    "created_ms": m.created_ms,
                }
                for m in self.ls(msg.arg)
            ]
            self._app_reply(app, appwire.Ok(req, {"objects": entries}))
        elif msg.op == "stat":
            self._app_reply(app, appwire.Ok(req, self.stat(msg.arg)))
        elif msg.op == "rm":
            m = self.rm(msg.arg, now_ms)
            self._app_reply(
                app, appwire.Ok(req, {"name": m.name, "object_id": m.object_id.hex()})
            )
        else:

            def piece(offset: int, data: memoryview) -> None:
                self._app_reply(app, appwire.Data(req, offset, bytes(data)))

            def done(op: GetOp) -> None:
                if op.error is not None:
                    self._app_reply(
                        app, appwire.Error(req, type(op.error).__name__, str(op.error))
                    )
                else:
                    self._app_reply(
                        app,
                        appwire.Ok(
                            req,
                            {
                                "size": op.manifest.size,
                                "shares": sorted(op.shares_fetched),
                            },
                        ),
                    )

            self.get(msg.arg, now_ms, on_piece=piece, on_done=done)

    def _on_store(self, peer: int, msg: wire.Store, now_ms: int) -> None:
        try:
            self.store.put_block(msg.object_id, msg.share, msg.chunk, msg.data, now_ms)
        except StoreFull as exc:
            self.stats["dropped"] += 1
            log.warning("dfs: STORE from node %d dropped: %s", peer, exc)
            return
        if len(self.store.chunks(msg.object_id, msg.share)) == msg.chunks:
            self._send(peer, wire.Stored(msg.object_id, msg.share))

    def _on_fetch(self, peer: int, msg: wire.Fetch) -> None:
        missing: list[int] = []
        for j in msg.chunks:
            try:
                data = self.store.get_block(msg.object_id, msg.share, j)
            except CorruptBlock:
                self.stats["corrupt"] += 1
                log.warning(
                    "dfs: a fetch from node %d found a bad block %s/%d/%d",
                    peer,
                    msg.object_id.hex(),
                    msg.share,
                    j,
                )
                self.store.delete_block(msg.object_id, msg.share, j)
                self._urgent.add((msg.object_id, msg.share))
                data = None
            if data is None:
                missing.append(j)
            else:
                self._send(peer, wire.Block(msg.req, msg.object_id, msg.share, j, data))
        if missing:
            self._send(
                peer, wire.Missing(msg.req, msg.object_id, msg.share, tuple(missing))
            )

    # -- maintenance -------------------------------------------------------

    def maintain(self, now_ms: int) -> None:
        """One round of scrub, self-heal, repair and GC (see the module
        docstring). Called from ``on_tick`` on schedule; tests call it."""
        self._now = now_ms
        live: dict[bytes, Manifest] = {}
        dead: set[bytes] = set()
        for rec in self.manifests():
            if isinstance(rec, Manifest):
                live[rec.object_id] = rec
            else:
                dead.add(rec.object_id)
        for key, _ in self.log.scan(REMOVED_PREFIX, Level.TENTATIVE):
            try:
                dead.add(bytes.fromhex(key[len(REMOVED_PREFIX) :]))
            except ValueError:
                continue
        for oid in dead:
            live.pop(oid, None)
        self._scrub(live)
        self._collect(live, dead, now_ms)
        self._heal(live, now_ms)
        self._repair(now_ms)
        self._settle_claims()

    def _scrub(self, live: Mapping[bytes, Manifest]) -> None:
        budget = self.config.scrub_blocks_per_round
        if not self._scrub_queue:
            for oid, share, _ in self.store.shares():
                self._scrub_queue.extend(
                    (oid, share, j) for j in self.store.chunks(oid, share)
                )
            self._scrub_queue.reverse()
        while budget and self._scrub_queue:
            oid, share, j = self._scrub_queue.pop()
            budget -= 1
            self.stats["scrubbed"] += 1
            m = live.get(oid)
            try:
                data = self.store.get_block(oid, share, j)
                bad = (
                    data is not None
                    and m is not None
                    and (
                        share >= m.n
                        or j >= m.chunks
                        or crc32c(data) != m.block_crcs[j][share]
                    )
                )
            except CorruptBlock:
                bad = True
            if bad:
                self.stats["corrupt"] += 1
                log.warning(
                    "dfs: scrub found a bad block %s/%d/%d", oid.hex(), share, j
                )
                self.store.delete_block(oid, share, j)
                self._urgent.add((oid, share))

    def _collect(
        self, live: Mapping[bytes, Manifest], dead: set[bytes], now_ms: int
    ) -> None:
        for oid, share, since in list(self.store.shares()):
            m = live.get(oid)
            drop = oid in dead and m is None
            if not drop and now_ms - since >= self.config.gc_grace_ms:
                if m is None:
                    drop = True
                else:
                    holders = self.placement(m, Level.COMMITTED).holders
                    drop = share >= m.n or holders[share] != self._node
            if drop:
                self.stats["gc_shares"] += 1
                self.store.delete_share(oid, share)

    def _heal(self, live: Mapping[bytes, Manifest], now_ms: int) -> None:
        for oid, m in live.items():
            holders = self.placement(m).holders
            for i, h in enumerate(holders):
                if h != self._node or (oid, i) in self._rebuilding:
                    continue
                have = set(self.store.chunks(oid, i))
                if len(have) == m.chunks:
                    self._first_seen.pop((oid, i), None)
                    self._urgent.discard((oid, i))
                    continue
                first = self._first_seen.setdefault((oid, i), now_ms)
                # Only the writer pushes, and only to the first placement;
                # a share a repair gave us is pulled at once.
                urgent = (oid, i) in self._urgent or m.placement[i] != self._node
                if not urgent and now_ms - first < self.config.push_grace_ms:
                    continue
                if len(self._gathers) >= self.config.max_fetches:
                    return
                self._rebuild(m, i, set(range(m.chunks)) - have, now_ms)

    def _rebuild(self, m: Manifest, share: int, chunks: set[int], now_ms: int) -> None:
        key = (m.object_id, share)
        self._rebuilding.add(key)

        def on_chunk(j: int, ct: bytes) -> None:
            block = block_from_ciphertext(ct, share, k=m.k, n=m.n)
            try:
                self.store.put_block(m.object_id, share, j, block, self._now)
            except StoreFull as exc:
                log.warning("dfs: cannot keep a rebuilt block: %s", exc)
                return
            self.stats["rebuilt_blocks"] += 1

        def on_end(err: DfsError | None) -> None:
            self._rebuilding.discard(key)
            if err is None:
                self._urgent.discard(key)
                self._first_seen.pop(key, None)
            else:
                log.info(
                    "dfs: rebuild of %s/%d waits: %s", m.object_id.hex(), share, err
                )

        self._gather(
            m,
            skip=share,
            chunks=chunks,
            on_chunk=on_chunk,
            on_end=on_end,
            now_ms=now_ms,
        )

    def _repair(self, now_ms: int) -> None:
        members = self.membership.members()
        for rec in self.manifests(level=Level.COMMITTED):
            if not isinstance(rec, Manifest) or rec.object_id in self._claims:
                continue
            m = rec
            raw = self.log.get(placement_key(m.object_id), Level.COMMITTED)
            p = self.placement(m, Level.COMMITTED)
            if self._node not in p.holders:
                continue
            # Only a holder membership has declared dead or left is lost: one
            # this node has not heard of yet (a fresh view) is not.
            lost = [
                i
                for i, h in enumerate(p.holders)
                if h in members
                and members[h].state in (MemberState.DEAD, MemberState.LEFT)
            ]
            if not lost:
                continue
            share_bytes = block_len(min(m.size, m.chunk_size), m.k) * m.chunks
            try:
                fresh = choose_holders(
                    members,
                    len(lost),
                    share_bytes=share_bytes,
                    exclude=set(p.holders),
                    eta=self._eta_at(now_ms, share_bytes),
                    now_ms=now_ms,
                    policy=self.config.policy,
                )
            except DfsError as exc:
                log.info("dfs: repair of %s waits: %s", m.name, exc)
                continue
            holders = list(p.holders)
            for i, h in zip(lost, fresh, strict=True):
                holders[i] = h
            new = encode_placement(Placement(p.generation + 1, tuple(holders)))
            self._claims[m.object_id] = self.log.submit(
                CompareAndSet(placement_key(m.object_id), raw, new), now_ms
            )
            self.stats["repair_claims"] += 1

    def _settle_claims(self) -> None:
        for oid, entry in list(self._claims.items()):
            if self.log.outcome(entry) is not None:
                del self._claims[oid]

    def claim_outcomes(self) -> dict[bytes, Outcome | None]:
        """Open repair claims of this node and their outcome so far."""
        return {oid: self.log.outcome(e) for oid, e in self._claims.items()}
