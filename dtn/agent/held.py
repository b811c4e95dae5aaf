"""Fragments held in memory, unacknowledged, until their bundle is whole
(RFC 9171 5.9; spec/agent.md "Delivery and reassembly").

Theory of operation
-------------------
A fragment for a local endpoint whose previous hop wants it acknowledged
(a ``cl_token``: a sender that keeps it and retransmits until the Ack) over
a convergence layer named in ``AgentConfig.hold_fragments_ms`` is not
stored at once: :func:`hold_fragment` keeps it decoded in
``Agent._held`` (a :class:`HeldGroup` per whole bundle, at most
``AgentConfig.hold_fragments_bytes`` in all) and emits no Ack. When the
held pieces cover the payload, :func:`release` reassembles them and the
whole bundle is accepted as if it had come whole (stored once, checked by
the security policy, handed over); then every held piece's Acks are
emitted, after that store write, so the driver releases them with its
durable commit: persist before acknowledge holds, each piece's bytes being
in the stored whole. A group not whole within its hold time (flushed by ``on_tick``, in a durable
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
            g.acks[rng].append(ack)
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
    if self._held_bytes + size > self.config.hold_fragments_bytes:
        if g is not None:
            flush(self, group, now, actions)
        return False
    if g is None:
        g = self._held[group] = HeldGroup(
            total=total, since=now, hold_ms=hold_ms, prev_node=prev_node, expiry=expiry
        )
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
        try:
            self._accept(
                whole,
                encode_bundle_parts(whole),
                key,
                prev_node=g.prev_node,
                now=now,
                actions=actions,
                expiry=g.expiry,
                received=True,
            )
        except StoreFull as exc:
            # Not acknowledged: the previous hop keeps every piece.
            self.counters["refused"] += 1
            actions.append(Event("refused", key, str(exc)))
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
        # A piece of a bundle held or delivered whole by now (an earlier
        # piece stored here completed it) is a duplicate: acknowledged.
        if (
            key not in self._entries
            and whole not in self._entries
            and not self.store.is_delivered(whole)
        ):
            try:
                self._accept(
                    piece,
                    encode_bundle_parts(piece),
                    key,
                    prev_node=g.prev_node,
                    now=now,
                    actions=actions,
                    expiry=g.expiry,
                    received=True,
                )
            except StoreFull as exc:
                self.counters["refused"] += 1
                actions.append(Event("refused", key, str(exc)))
                continue  # not acknowledged: the previous hop keeps it
        self._report_bundle(
            piece, StatusKind.RECEIVED, StatusReason.NO_INFO, now, actions
        )
        actions.extend(g.acks[rng])


def flush_due(self: Agent, now: int, actions: list[Action]) -> None:
    """Flush every held group whose hold time is over. Their Acks follow
    the store writes, so the writes are durable ones even inside the
    relaxed transaction of a tick (a driver's group commit then syncs them
    before it sends the Acks)."""
    due = [k for k, g in self._held.items() if g.deadline <= now]
    if due:
        with self.store.transaction(durable=True):
            for group in due:
                flush(self, group, now, actions)


def held_deadline(self: Agent) -> int | None:
    """The earliest hold time to end (DTN ms), None when nothing is held."""
    if not self._held:
        return None
    return min(g.deadline for g in self._held.values())
