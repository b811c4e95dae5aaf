"""Fragments held in memory, unacknowledged, until their bundle is whole
(RFC 9171 5.9; spec/agent.md "Delivery and reassembly").

Theory of operation
-------------------
A fragment for a local endpoint whose previous hop wants it acknowledged
(a ``cl_token``: a sender that keeps it and retransmits until the Ack) over
a convergence layer named in ``AgentConfig.hold_fragments_ms`` is not
stored at once: :func:`hold_fragment` keeps it decoded in
``Agent._held`` (a :class:`HeldGroup` per whole bundle, at most
``AgentConfig.hold_fragments_bytes`` in all, each piece counted as its
wire size plus ``HELD_PIECE_OVERHEAD``) and emits no Ack. When the
held pieces cover the payload, :func:`release` reassembles them and the
whole bundle is accepted as if it had come whole (stored once, checked by
the security policy, handed over); then every held piece's Acks are
emitted, after that store write, so the driver releases them with its
durable commit: persist before acknowledge holds, each piece's bytes being
in the stored whole (a whole the security policy refuses is not kept: its
pieces are then stored as fragments, as below). A group not whole within its hold time (flushed by ``on_tick``, in a durable
transaction: the Acks follow), or with a copy
of a piece with other content, a piece that disagrees on the total length
or does not fit the bound, is *flushed* (:func:`flush`): its pieces go the
ordinary way (stored as fragments, acknowledged; a copy that differs is
dropped unacknowledged and taken when sent again). A restart forgets what is
held: none of it was acknowledged, so the previous hop still has it.

Over UDP this saves node 2 the store write, row and delete of every
fragment of a bundle cut to the MTU (spec/performance.md, "Seventh round").
The hold time must stay well under the sender's ACK timeout: a sender
whose window is smaller than one bundle's pieces waits for Acks that wait
for the rest of the pieces until the hold ends.

Functions take the ``Agent`` as ``self`` (bound as its private methods; see
:mod:`dcis.dtn.agent.entries`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dcis.dtn.agent.actions import Ack, Action, Event
from dcis.dtn.agent.entries import content_digest
from dcis.dtn.agent.store import StoreFull
from dcis.dtn.bpv7.admin import StatusKind, StatusReason
from dcis.dtn.bpv7.bundle import Bundle, encode_bundle_parts
from dcis.dtn.bpv7.fragment import reassemble
from dcis.dtn.errors import InvalidArgument

if TYPE_CHECKING:
    from dcis.dtn.agent.agent import Agent

HELD_PIECE_OVERHEAD = 1024
"""Bytes counted against ``hold_fragments_bytes`` for each held piece on top
of its wire size: about what its decoded objects cost (a 48-byte piece
takes ~1.3 KB of Python objects)."""

HELD_COPY_OVERHEAD = 128
"""Bytes counted for each copy of a held piece: its Ack, kept until the
group is stored (~90 bytes with its list slot); the copy itself is not
kept."""


@dataclass(slots=True)
class HeldGroup:
    """Pieces of one bundle held unacknowledged (see the module docstring)."""

    total: int
    """The whole payload's length (the pieces' total ADU length)."""
    since: int
    """When the first piece came (DTN ms): the group is flushed at
    ``since`` + the hold time."""
    hold_ms: int
    prev_node: int | None
    expiry: int
    parts: dict[tuple[int, int], Bundle] = field(default_factory=dict)
    """(offset, length) -> the piece."""
    acks: dict[tuple[int, int], list[Ack]] = field(default_factory=dict)
    """(offset, length) -> the Acks of every copy of it received."""
    nbytes: int = 0
    length_sum: int = 0

    @property
    def deadline(self) -> int:
        """When the group is flushed if not whole by then (DTN ms)."""
        return self.since + self.hold_ms


def hold_fragment(
    self: Agent,
    bundle: Bundle,
    size: int,
    ack: Ack,
    hold_ms: int,
    prev_node: int | None,
    expiry: int,
    now: int,
    actions: list[Action],
) -> bool:
    """Hold received fragment ``bundle`` (``size`` bytes on the wire) with
    ``ack`` withheld; True if handled (held, or dropped unacknowledged: a
    copy that differs from the piece held), False if it must go the
    ordinary way (stored and acknowledged now)."""
    p = bundle.primary
    total = p.total_adu_length
    off = p.fragment_offset
    assert total is not None
    assert off is not None
    group = bundle.original_key
    g = self._held.get(group)
    rng = (off, len(bundle.payload))
    if g is not None:
        old = g.parts.get(rng)
        # A copy (a retransmission, or the piece cut again by a sender that
        # resends the whole bundle: its hop blocks may differ) is
        # acknowledged with the rest.
        if old is not None and content_digest(old) == content_digest(bundle):
            if self._held_bytes + HELD_COPY_OVERHEAD > self.config.hold_fragments_bytes:
                # Its Ack would pass the bound: dropped unacknowledged (the
                # sender sends it again: once the hold ends, a duplicate).
                actions.append(
                    Event("dropped", bundle.bundle_key, "copy past the hold bound")
                )
                return True
            g.acks[rng].append(ack)
            g.nbytes += HELD_COPY_OVERHEAD
            self._held_bytes += HELD_COPY_OVERHEAD
            return True
        if old is not None or g.total != total:
            # A copy with other content (a broken or forged sender), or
            # another total length: store what was held, the ordinary way
            # (which keeps copies that differ apart); this one is taken
            # when its sender sends it again -- it was not acknowledged.
            flush(self, group, now, actions)
            actions.append(
                Event(
                    "dropped",
                    bundle.bundle_key,
                    "differs from the fragment held: taken when sent again",
                )
            )
            return True
    # A piece costs its wire bytes and its Python objects (the decoded
    # bundle and blocks, the group's entries): the bound counts both, so
    # tiny pieces cannot hold many times what it says.
    size += HELD_PIECE_OVERHEAD
    if self._held_bytes + size > self.config.hold_fragments_bytes:
        if g is not None:
            flush(self, group, now, actions)
        return False
    if g is None:
        g = self._held[group] = HeldGroup(
            total=total, since=now, hold_ms=hold_ms, prev_node=prev_node, expiry=expiry
        )
        heapq.heappush(self._held_due, (g.deadline, group))
    g.parts[rng] = bundle
    g.acks[rng] = [ack]
    g.nbytes += size
    g.length_sum += rng[1]
    g.expiry = max(g.expiry, expiry)
    self._held_bytes += size
    if g.length_sum >= g.total and _covered(g):
        release(self, group, now, actions)
    return True


def _covered(g: HeldGroup) -> bool:
    reach = 0
    for o, n in sorted(g.parts):
        if o > reach:
            return False
        reach = max(reach, o + n)
    return reach >= g.total


def _take(self: Agent, group: str) -> HeldGroup:
    g = self._held.pop(group)
    self._held_bytes -= g.nbytes
    if not self._held:
        # Nothing held: every deadline in the heap is stale. (Else a stale
        # one is dropped when it reaches the top, within the hold time.)
        self._held_due.clear()
    return g


def release(self: Agent, group: str, now: int, actions: list[Action]) -> None:
    """The held pieces of ``group`` cover its payload: accept the whole
    bundle as received whole, then emit every piece's Acks."""
    g = _take(self, group)
    try:
        whole = reassemble(g.parts.values())
    except InvalidArgument:
        # Pieces that agree on the key but do not make one bundle (a
        # broken or forged sender): stored as fragments, as ever.
        _store_pieces(self, g, now, actions)
        return
    key = whole.bundle_key
    if key in self._entries or self.store.is_delivered(key):
        self.counters["duplicates"] += 1
        actions.append(Event("duplicate", key, "reassembled again"))
    else:
        # Its bytes may wait for the store's next sync (a late write, never
        # made if it is delivered and confirmed first): every piece's
        # previous hop keeps it until the Acks below, which a driver with
        # group commit sends after that sync -- as for a bundle received
        # whole over UDP (reception.receive_one).
        if not _accept(self, whole, key, g, now, actions, write_later=True):
            return  # not acknowledged: the previous hop keeps every piece
        if key not in self._entries:
            # Not kept: refused by the security policy (forged pieces may
            # have made it whole before the genuine ones came), its lifetime
            # over, or an admin record for an endpoint nobody registered.
            # As on the ordinary path, the pieces are stored as fragments
            # and acknowledged, waiting for other copies: acknowledging
            # pieces kept nowhere would lose the genuine ones.
            _store_pieces(self, g, now, actions)
            return
        self.counters["reassembled"] += 1
        actions.append(
            Event("reassembled", key, f"from {len(g.parts)} fragments held in memory")
        )
    for piece in g.parts.values():
        self._report_bundle(
            piece, StatusKind.RECEIVED, StatusReason.NO_INFO, now, actions
        )
    for acks in g.acks.values():
        actions.extend(acks)


def flush(self: Agent, group: str, now: int, actions: list[Action]) -> None:
    """Store the held pieces of ``group`` as fragments and acknowledge them
    (the ordinary way): its hold time is over, or it cannot be held."""
    _store_pieces(self, _take(self, group), now, actions)


def _store_pieces(self: Agent, g: HeldGroup, now: int, actions: list[Action]) -> None:
    for rng, piece in sorted(g.parts.items()):
        key = piece.bundle_key
        whole = piece.original_key
        stored = True
        if self.store.is_delivered(whole):
            stored = False  # delivered whole by now: a duplicate
        elif key in self._entries or whole in self._entries:
            # Something with its key came meanwhile (another CL, a bare
            # bundle, an earlier piece stored here completed the bundle):
            # as on reception, a copy of it is a duplicate, acknowledged;
            # one with other content is kept apart, never acknowledged as
            # a "duplicate" of, say, a forgery and dropped.
            variant = self._variant_key(piece, key, now, actions)
            if variant is None:
                stored = False
            elif not variant:
                self.counters["refused"] += 1
                actions.append(
                    Event("refused", key, "more copies differ than are kept")
                )
                continue  # not acknowledged: the previous hop keeps it
            else:
                actions.append(Event("variant", variant, "same key, other content"))
                self.counters["variants"] += 1
                key = variant
        if stored:
            if not _accept(self, piece, key, g, now, actions):
                continue  # not acknowledged: the previous hop keeps it
        else:
            self.counters["duplicates"] += 1
            actions.append(Event("duplicate", key))
        self._report_bundle(
            piece, StatusKind.RECEIVED, StatusReason.NO_INFO, now, actions
        )
        actions.extend(g.acks[rng])


def _accept(
    self: Agent,
    bundle: Bundle,
    key: str,
    g: HeldGroup,
    now: int,
    actions: list[Action],
    *,
    write_later: bool = False,
) -> bool:
    """Accept ``bundle`` (the whole, or one piece) under ``key`` as received
    from the group's previous hop; False, with a "refused" event, if the
    store is full (then it must not be acknowledged). ``write_later``: as
    for ``reception.accept``."""
    try:
        self._accept(
            bundle,
            encode_bundle_parts(bundle),
            key,
            prev_node=g.prev_node,
            now=now,
            actions=actions,
            expiry=g.expiry,
            received=True,
            write_later=write_later,
        )
    except StoreFull as exc:
        self.counters["refused"] += 1
        actions.append(Event("refused", key, str(exc)))
        return False
    return True


def _due_top(self: Agent) -> tuple[int, str] | None:
    """The earliest (deadline, group) of a group still held: stale heap
    tops (groups released or flushed, or held again since) are dropped, so
    a tick or a deadline costs O(log n), not a pass over every group."""
    heap = self._held_due
    while heap:
        at, group = heap[0]
        g = self._held.get(group)
        if g is not None and g.deadline == at:
            return heap[0]
        heapq.heappop(heap)
    return None


def flush_due(self: Agent, now: int, actions: list[Action]) -> None:
    """Flush every held group whose hold time is over. Their Acks follow
    the store writes, so the writes are durable ones even inside the
    relaxed transaction of a tick (a driver's group commit then syncs them
    before it sends the Acks)."""
    top = _due_top(self)
    if top is None or top[0] > now:
        return
    with self.store.transaction(durable=True):
        while top is not None and top[0] <= now:
            heapq.heappop(self._held_due)
            flush(self, top[1], now, actions)
            top = _due_top(self)


def held_deadline(self: Agent) -> int | None:
    """The earliest hold time to end (DTN ms), None when nothing is held."""
    top = _due_top(self)
    return None if top is None else top[0]
