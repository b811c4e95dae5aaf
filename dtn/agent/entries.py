"""The agent's in-memory record of each stored bundle, and the operations
that put a bundle in the store, read it back and take it out.

Theory of operation
-------------------
Every bundle the agent holds has one :class:`Entry` in ``Agent._entries``,
made by :func:`track` when the bundle enters the store (or is found there by
``recover``) and dropped by :func:`remove`, which deletes the stored copy in
the same step; queues and heaps that still name the key skip it lazily.
:func:`load` is the one way the agent reads stored bytes: a copy damaged in
the store since its commit is counted, reported and removed
(:func:`store_corrupt`), never delivered nor forwarded.

A bundle is usually read back soon after it is stored: delivered at once,
or forwarded once the link's window has room. :func:`store_new` keeps the
decoded bundle it was given -- one originated, received, cut into
fragments (each fragment) or reassembled -- in ``Agent._hot`` (oldest first, at most
``AgentConfig.keep_decoded`` bundles -- none by default, :data:`HOT_MAX_BUNDLES`
in the daemon, 64 in the simulator -- and ``AgentConfig.keep_decoded_bytes``:
:data:`HOT_MAX_BYTES` by default, :data:`DAEMON_HOT_MAX_BYTES` in the daemon) and
:func:`load_bundle` reads it there instead of reading and decoding the
stored copy again (at 1 KB, a store read and a decode were ~8% of a node's
CPU per bundle: spec/performance.md), until :func:`remove` takes the
bundle out: a retried transmission, or a delivery the driver deferred and
asks for again (``Agent.redeliver``), reads it there too. It is the same
bundle the stored bytes encode. When the cache is full, a new bundle is
not kept: a queue longer than the cache is sent oldest first, so evicting
the oldest would evict the next ones read. Only entries kept longer than
:data:`HOT_MAX_AGE_MS` (a queue that does not move: no contact) make room
for new ones.

The functions take the :class:`~dcis.dtn.agent.agent.Agent` as ``self``;
``Agent`` binds them as its private methods (``Agent._remove`` is
:func:`remove`), so each module holds one concern of the agent and the
agent's public API stays in ``agent.py``.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from dcis.dtn.agent.actions import (
    Ack,
    Action,
    Deletion,
    DeletionCause,
    Event,
)
from dcis.dtn.agent.location import MOVES, IllegalMove, Location, Step
from dcis.dtn.agent.store import (
    BundleState,
    StoreCorrupt,
    StoredBundle,
    StoreError,
    StoreFull,
    Wire,
    trusted_stored_bundle,
    wire_size,
)
from dcis.dtn.bpv7.admin import StatusKind, StatusReason
from dcis.dtn.bpv7.bundle import (
    GATHER_PAYLOAD_BYTES,
    Bundle,
    decode_bundle_untrusted,
    stored_payload_crc,
)
from dcis.dtn.bpv7.flags import BlockType
from dcis.dtn.bpv7.fragment import PieceEncoder
from dcis.dtn.bpv7.primary import encode_primary
from dcis.dtn.bpv7.processing import ForwardSplice, forward_splice
from dcis.dtn.errors import DecodeError, DtnError
from dcis.dtn.routing.contact import Contact

if TYPE_CHECKING:
    from dcis.dtn.agent.agent import Agent

# Copies of one bundle key with different contents kept apart (see
# reception.receive_one), besides the first.
MAX_VARIANTS = 4

HOT_MAX_BUNDLES = 1024
"""Just-stored bundles a daemon keeps decoded in memory (``AgentConfig.keep_decoded``;
see the module docstring)."""
HOT_MAX_BYTES = 4 * 1024 * 1024
"""Most encoded bytes of just-stored bundles kept decoded in memory, by
default (``AgentConfig.keep_decoded_bytes``; the simulator's agents)."""
DAEMON_HOT_MAX_BYTES = 32 * 1024 * 1024
"""The daemon's ``keep_decoded_bytes``: ~500 bundles of 64 KB, 32 of 1 MB
(a 4 MiB cache held ~64 of 64 KB, fewer than node 1 queues at 48 app sends
in flight: the others were read back and decoded to be forwarded)."""
HOT_MAX_AGE_MS = 10_000
"""A full cache drops entries kept this long to take new ones."""

# Members read for every bundle, bound once here: on Python 3.11 reading a
# member off its enum class (``Step.ROUTE``) goes through EnumType's
# ``__getattr__`` attribute hook, ~600 instructions against ~150 for a
# global (spec/performance.md, "Eighth round: the 1 KB path").
_ROUTE: Final = Step.ROUTE
_TRANSMIT: Final = Step.TRANSMIT
_REMOVE: Final = Step.REMOVE
_QUEUED: Final = Location.QUEUED
_IN_FLIGHT: Final = Location.IN_FLIGHT
_UNROUTED: Final = Location.UNROUTED

# Blocks every hop rewrites: not part of a bundle's content.
_HOP_BLOCKS = frozenset(
    {BlockType.PREVIOUS_NODE, BlockType.BUNDLE_AGE, BlockType.HOP_COUNT}
)


def content_digest(bundle: Bundle) -> bytes:
    """What makes two copies of a bundle the same: a 16-byte BLAKE2b digest of
    the primary block and every block but those each hop rewrites (previous
    node, bundle age, hop count). Copies sharing a key but not this digest
    are different bundles (one of them forged or broken)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(encode_primary(bundle.primary))
    for blk in bundle.blocks:
        if blk.type_code in _HOP_BLOCKS:
            continue
        h.update(b"%d|%d|%d|" % (blk.type_code, blk.number, len(blk.data)))
        h.update(blk.data)
    return h.digest()


class TooManyBundles(StoreFull):
    """A new bundle was refused: the agent holds ``AgentConfig.max_bundles``."""

    def __init__(self, held: int) -> None:
        DtnError.__init__(self, f"store full: {held} bundles held, the most allowed")
        self.needed_bytes = 0
        self.used_bytes = 0
        self.limit_bytes = 0


def variant_base(key: str) -> str | None:
    """The key a variant's store key was made from (``key#<32 hex>``), else
    None. Bundle keys themselves end in a decimal number."""
    if len(key) > 33 and key[-33] == "#":
        tail = key[-32:]
        if all(c in "0123456789abcdef" for c in tail):
            return key[:-33]
    return None


def fragment_of(frag: Bundle, whole: Bundle) -> bool:
    """True if fragment ``frag`` carries exactly a piece of ``whole``."""
    p, w = frag.primary, whole.primary
    off = p.fragment_offset
    if off is None or p.total_adu_length != len(whole.payload):
        return False
    same_primary = (
        p.source == w.source
        and p.destination == w.destination
        and p.creation == w.creation
        and p.lifetime_ms == w.lifetime_ms
    )
    piece = frag.payload
    return same_primary and whole.payload[off : off + len(piece)] == piece


@dataclass(slots=True)
class Entry:
    """In-memory state of one stored bundle.

    Where it is: ``location``, changed only by :meth:`move` (the table is
    :data:`dcis.dtn.agent.location.MOVES`), with ``next_hop`` and ``tx_id``.
    """

    key: str
    destination: str
    dest_node: int | str
    expiry_ms: int
    size: int
    received_ms: int
    prev_node: int | None
    frag_group: str | None = None
    location: Location = Location.STORED
    # the neighbour whose queue holds it, or that it is in flight to
    # (set exactly when QUEUED or IN_FLIGHT)
    next_hop: int | None = None
    # the transmission in flight (set exactly when IN_FLIGHT)
    tx_id: int | None = None
    # (offset, payload length, total ADU length) of a fragment for reassembly
    frag_range: tuple[int, int, int] | None = None
    # bundle processing flags (None: not known yet, after recover)
    flags: int | None = None
    # contact whose residual volume CGR charged for it (not sent yet)
    booked: Contact | None = None
    # content_digest of the copy received, when what is stored differs from
    # it (decrypted by the security policy); else computed from the store
    digest: bytes | None = None

    def move(
        self, step: Step, *, hop: int | None = None, tx_id: int | None = None
    ) -> None:
        """Take ``step`` (raises :class:`IllegalMove` if :data:`MOVES` has no
        such move from here, leaving the entry as it was). ``hop``: the
        neighbour for :attr:`Step.ROUTE`; ``tx_id``: the transmission for
        :attr:`Step.TRANSMIT`."""
        to = MOVES.get((self.location, step))
        if (
            to is None
            or (step is _ROUTE and hop is None)
            or (step is _TRANSMIT and tx_id is None)
        ):
            raise IllegalMove(self.key, self.location, step)
        if step is _ROUTE:
            self.next_hop = hop
        elif to is not _QUEUED and to is not _IN_FLIGHT:
            self.next_hop = None
        self.tx_id = tx_id if to is _IN_FLIGHT else None
        self.location = to


@dataclass(slots=True)
class Link:
    """An open contact to one neighbour."""

    contact: Contact
    remaining_bytes: float
    inflight: int = 0
    inflight_bytes: int = 0
    backoff_until: int = 0
    # a bundle going out in pieces whose next piece goes before the queue
    sending: Pieces | None = None


@dataclass(slots=True)
class Pieces:
    """A stored bundle going out as fragments cut at transmission (RFC 9171
    5.8; ``forwarding.prepare``): the store keeps the whole bundle as its one
    entry, and each piece is a transient wire unit made when the window has
    room for it. The entry stays ``IN_FLIGHT`` (its ``tx_id`` is the first
    piece's) until every piece sent has an outcome; it leaves the store when
    all pieces were sent and taken, else the whole bundle is queued again.
    """

    key: str
    bundle: Bundle | None
    """The stored bundle as loaded (each piece is updated for forwarding
    when it is made, as a stored fragment would be); None once the last
    piece was cut: a bundle waiting for its pieces' outcomes is not held in
    memory (the window bounds the bytes in flight, not the bundles whose
    last piece is), and a failure sends it again from the store. Only its
    payload may be, by the views its large pieces in flight are sent as,
    within ``forwarding.PIECE_VIEWS_MAX_BYTES`` for all such bundles."""
    sizes: tuple[int, ...]
    """Payload bytes of each piece, in order."""
    link: Link
    """The contact the pieces go over (a piece never goes over another)."""
    tx_id: int = -1
    sent: int = 0
    """Pieces emitted so far."""
    offset: int = 0
    """Payload offset of the next piece."""
    outstanding: set[int] = field(default_factory=set)
    """Transmissions of pieces whose outcome has not come yet."""
    failed: bool = False
    """A piece was not taken, or the contact closed before every piece left:
    no more are sent, and the whole bundle goes again."""
    encoder: PieceEncoder | None = None
    """What the pieces of ``bundle`` share, encoded once (made with the
    first piece; dropped with ``bundle``)."""


@dataclass(slots=True)
class FragmentGroup:
    """Fragments of one bundle awaiting reassembly."""

    total: int
    parts: dict[str, tuple[int, int]] = field(
        default_factory=dict
    )  # key -> (offset, length)
    # Sum of the parts' lengths: the union cannot cover ``total`` before
    # this does, so the (sorting) coverage check waits for it.
    length_sum: int = 0


def store_new(
    self: Agent,
    key: str,
    data: Wire,
    *,
    destination: str,
    dest_node: int | str,
    expiry_ms: int,
    state: BundleState,
    received_ms: int,
    prev_node: int | None,
    flags: int,
    frag_group: str | None = None,
    force: bool = False,
    bundle: Bundle | None = None,
    own_encoding: bool = False,
    write_later: bool = False,
) -> Entry:
    """Put a new bundle in the store (raises StoreFull unless ``force``)
    and track it in memory and on the expiry heap. ``data``: its bytes, or
    ``encode_bundle_parts``' buffers (stored joined, never joined here).
    ``bundle``: ``data`` decoded, kept for :func:`load_bundle` (within the
    bounds). ``own_encoding``: ``data`` is ``encode_bundle_parts(bundle)``
    (a bundle originated here), so forwarding it may splice the stored
    primary and payload blocks (:func:`hot_splice`). ``write_later``: see
    ``BundleStore.put`` (nobody is told the bundle is held before the
    store's next sync)."""
    rec = trusted_stored_bundle(
        key,
        destination,
        expiry_ms,
        state,
        wire_size(data),
        received_ms,
        prev_node,
        frag_group,
    )
    cap = self.config.max_bundles
    if cap is not None and not force and len(self._entries) >= cap:
        raise TooManyBundles(len(self._entries))
    if write_later:
        self.store.put(rec, data, force=force, write_later=True)
    else:
        self.store.put(rec, data, force=force)
    e = self._track(rec, dest_node, flags)
    if bundle is not None and self.config.keep_decoded:
        payload = bundle.blocks[-1]
        # A large payload's CRC field, read from the stored bytes, so that
        # forwarding it does not compute it again (only the blocks before
        # it change per hop): 20-30 us of CPU per 1 MB forwarded.
        crc = (
            stored_payload_crc(payload, data)
            if len(payload.data) >= GATHER_PAYLOAD_BYTES
            else None
        )
        splice = forward_splice(bundle, data) if own_encoding else None
        _keep_hot(self, key, bundle, rec.size_bytes, received_ms, crc, splice)
    return e


def _keep_hot(
    self: Agent,
    key: str,
    bundle: Bundle,
    size: int,
    now: int,
    crc: bytes | None,
    splice: ForwardSplice | None,
) -> None:
    hot = self._hot
    _drop_hot(self, key)
    most = self.config.keep_decoded
    while len(hot) >= most or self._hot_bytes + size > self.config.keep_decoded_bytes:
        if not hot:
            return  # larger than the whole cache
        oldest = next(iter(hot))
        _b, n, at, _c, _s = hot[oldest]
        if now - at < HOT_MAX_AGE_MS:
            return  # full of bundles about to be read: this one is read later
        del hot[oldest]
        self._hot_bytes -= n
    hot[key] = (bundle, size, now, crc, splice)
    self._hot_bytes += size


def _drop_hot(self: Agent, key: str) -> None:
    got = self._hot.pop(key, None)
    if got is not None:
        self._hot_bytes -= got[1]


def track(
    self: Agent, rec: StoredBundle, dest_node: int | str, flags: int | None
) -> Entry:
    """The in-memory entry of stored bundle ``rec``, on the expiry heap."""
    e = Entry(
        key=rec.key,
        destination=rec.destination,
        dest_node=dest_node,
        expiry_ms=rec.expiry_ms,
        size=rec.size_bytes,
        received_ms=rec.received_ms,
        prev_node=rec.prev_node,
        frag_group=rec.frag_group,
        flags=flags,
    )
    self._entries[rec.key] = e
    heapq.heappush(self._expiry, (rec.expiry_ms, rec.key))
    base = variant_base(rec.key)
    if base is not None:
        self._variants[base] = self._variants.get(base, 0) + 1
    return e


def held_digest(self: Agent, e: Entry, actions: list[Action], now: int) -> bytes | None:
    if e.digest is None:
        data = self._load(e.key, actions, now)
        if data is None:
            return None
        try:
            e.digest = content_digest(decode_bundle_untrusted(data))
        except DecodeError:
            return None
    return e.digest


def remove(self: Agent, e: Entry) -> None:
    """Drop ``e`` from the store and memory (queues/heap skip it lazily)."""
    self._unbook(e)
    if self._hot:
        _drop_hot(self, e.key)
    if self._pieces:
        # Pieces still in flight are ignored when their outcomes come.
        p = self._pieces.pop(e.key, None)
        if p is not None and p.link.sending is p:
            p.link.sending = None
    # No answer needed: a store batches it with the transaction's others.
    self.store.discard(e.key)
    if self._entries.pop(e.key, None) is not None:
        base = variant_base(e.key)
        if base is not None:
            n = self._variants.get(base, 0) - 1
            if n > 0:
                self._variants[base] = n
            else:
                self._variants.pop(base, None)
    if e.location is _UNROUTED:
        keys = self._unrouted.get(e.dest_node)
        if keys is not None:
            keys.pop(e.key, None)
    if e.frag_group is not None:
        g = self._groups.get(e.frag_group)
        if g is not None:
            part = g.parts.pop(e.key, None)
            if part is not None:
                g.length_sum -= part[1]
            if not g.parts:
                del self._groups[e.frag_group]
    waiting = self._unclaimed.get(e.destination)
    if waiting is not None:
        waiting.pop(e.key, None)
    e.move(_REMOVE)


def delete(
    self: Agent,
    key: str,
    bundle: Bundle,
    cause: DeletionCause,
    why: str,
    reason: StatusReason,
    now: int,
    actions: list[Action],
    entry: Entry | None = None,
    ack: Ack | None = None,
) -> None:
    """Delete ``bundle`` (and stored ``entry``) by rule ``cause`` (``why``
    in words), report it with ``reason``, then pass on ``ack``."""
    if entry is not None:
        self._remove(entry)
    self.counters["deleted"] += 1
    actions.append(Deletion("deleted", key, why, cause=cause))
    self._report_bundle(bundle, StatusKind.DELETED, reason, now, actions)
    if ack is not None:
        actions.append(ack)


def load(self: Agent, key: str, actions: list[Action], now: int | None) -> bytes | None:
    """The stored bytes of ``key``; None when not stored or damaged in the
    store since its commit (then counted, reported and removed: a
    damaged bundle is never delivered nor forwarded)."""
    try:
        return self.store.get(key)
    except StoreCorrupt as exc:
        self._store_corrupt(key, str(exc), actions, now)
        return None


def load_bundle(
    self: Agent, key: str, actions: list[Action], now: int | None
) -> Bundle | None:
    """Stored bundle ``key`` decoded: the copy :func:`store_new` kept, else
    :func:`load`'s bytes decoded. None as for :func:`load`; raises
    :class:`DecodeError` when the stored bytes do not decode."""
    got = self._hot.get(key)
    if got is not None:
        return got[0]
    data = self._load(key, actions, now)
    if data is None:
        return None
    return decode_bundle_untrusted(data)


def hot_payload_crc(self: Agent, key: str, bundle: Bundle) -> bytes | None:
    """The CRC field of ``bundle``'s payload block as the stored bytes of
    ``key`` carry it, when :func:`load_bundle` found ``bundle`` in the
    decoded copies and the payload is large (else None: encoding computes
    it). ``bundle`` may be the loaded bundle updated for forwarding: the
    field is given only for the very payload block that was stored."""
    got = self._hot.get(key)
    if got is None or got[3] is None or got[0].blocks[-1] is not bundle.blocks[-1]:
        return None
    return got[3]


def hot_splice(self: Agent, key: str) -> tuple[Bundle, ForwardSplice] | None:
    """Stored bundle ``key`` and the unchanged pieces of its stored
    encoding, when :func:`store_new` kept it decoded with them (a bundle
    originated here, no BPSec block): forwarding then writes only its
    extension blocks (:func:`~dcis.dtn.bpv7.processing.forwarded_parts`).
    None otherwise."""
    got = self._hot.get(key)
    if got is None or got[4] is None:
        return None
    return got[0], got[4]


def store_corrupt(
    self: Agent, key: str, detail: str, actions: list[Action], now: int | None
) -> None:
    self.counters["store_corrupt"] += 1
    actions.append(Event("store_corrupt", key, detail))
    raw = getattr(self.store, "get_unchecked", None)
    try:
        data = raw(key) if raw is not None else None
        b = decode_bundle_untrusted(data) if data is not None else None
    except (DecodeError, StoreError):
        b = None
    e = self._entries.get(key)
    if e is not None:
        self._remove(e)
    else:
        self.store.delete(key)
    if b is not None and now is not None:
        # The primary block still decodes (its CRC held): tell its
        # report-to endpoint the bundle is gone from here.
        self._report_bundle(
            b,
            StatusKind.DELETED,
            StatusReason.DEPLETED_STORAGE,
            now,
            actions,
            force=True,
        )


def corrupt(self: Agent, e: Entry, exc: DecodeError, actions: list[Action]) -> None:
    # Only a damaged store file gets here; say so loudly and move on.
    self._remove(e)
    self.counters["dropped"] += 1
    actions.append(Event("dropped", e.key, f"stored copy unreadable: {exc}"))
