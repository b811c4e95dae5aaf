"""Forwarding: choosing a next hop, queueing, transmitting within each
contact's window and volume, fragmenting to fit, and the outcome of each
transmission (RFC 9171 sections 5.4 and 5.8).

Theory of operation
-------------------
:func:`forward` picks a next hop (an open contact to the destination
itself, else CGR over the contact plan, whose residual volume it books:
``Router.forwarding_route``, which shares a route found at one node with
the later nodes on it, spec/routing.md "Shared route suffixes") and
appends the bundle to that neighbour's queue, or holds it unrouted (retried
when the plan changes, a contact to the destination opens, or after a
doubling back-off). :func:`pump` drains an open neighbour's queue within the
window and the contact's remaining volume, updating the hop blocks
(:func:`prepare`) and fragmenting a bundle too big for the MTU or what is
left of the contact (:func:`fragment`). :func:`transmit_done` ends a
transmission: the bundle leaves the store when the next hop has it, else it
is queued again behind a jittered back-off, or routed again if the contact
closed.

Functions take the ``Agent`` as ``self`` (bound as its private methods; see
:mod:`dcis.dtn.agent.entries`).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING, Final

from dcis.dtn.agent.actions import (
    Action,
    Event,
    EventKind,
    trusted_event,
    trusted_transmit,
)
from dcis.dtn.agent.entries import (
    Entry,
    Link,
    Pieces,
)
from dcis.dtn.agent.location import Location, Step
from dcis.dtn.agent.store import (
    BundleState,
)
from dcis.dtn.bpv7.admin import StatusKind, StatusReason
from dcis.dtn.bpv7.bundle import (
    GATHER_PAYLOAD_BYTES,
    Bundle,
    decode_bundle_untrusted,
    encode_bundle_parts,
    stored_payload_crc,
)
from dcis.dtn.bpv7.eid import is_null_eid, parse_eid
from dcis.dtn.bpv7.flags import BundleFlags
from dcis.dtn.bpv7.fragment import PieceEncoder, fragment_bundle
from dcis.dtn.bpv7.processing import forwarded_parts, update_for_forwarding
from dcis.dtn.errors import DecodeError, InvalidArgument
from dcis.dtn.routing.contact import Contact

if TYPE_CHECKING:
    from dcis.dtn.agent.agent import Agent

# Enum members read for every bundle, bound once (on Python 3.11 a member
# read off its class goes through EnumType's __getattr__ hook: ~4x a
# global's cost; see entries.py).
_ROUTE: Final = Step.ROUTE
_TRANSMIT: Final = Step.TRANSMIT
_QUEUED: Final = Location.QUEUED
_IN_FLIGHT: Final = Location.IN_FLIGHT
_FORWARDED: Final = StatusKind.FORWARDED
_NO_INFO: Final = StatusReason.NO_INFO
_FORWARDED_EVENT: Final = EventKind.FORWARDED

# _prepare's answer when it fragmented a bundle (the fragments head the queue).
_REQUEUED = object()


# Bytes a fragment's primary block may add (offset, total ADU length).
_FRAGMENT_MARGIN = 24


# Smallest payload piece worth a fragment of its own.
_MIN_FRAGMENT_PAYLOAD = 64


PIECE_VIEWS_MAX_BYTES = 16 * 1024 * 1024
"""Most payload bytes of bundles whose pieces were all cut that the views of
their pieces still in flight may keep in memory (``_send_piece``); past it a
piece's payload is copied (only its bytes are then held)."""


# Bundle sizes are rounded up to this for route lookups (see Agent._route).
_ROUTE_SIZE_QUANTUM = 1024


def transmit_done(
    self: Agent, tx_id: int, ok: bool, now: int, actions: list[Action]
) -> None:
    info = self._inflight.pop(tx_id, None)
    if info is None:
        return
    key, nb, nbytes, sent_on = info
    link = self._links.get(nb)
    if link is sent_on:
        # Same contact still open (not one opened since): its window
        # slot is free again, and a failed transmission's bytes were
        # not delivered -- give them back to its remaining volume so
        # the retry fits where it first did.
        link.inflight = max(0, link.inflight - 1)
        link.inflight_bytes = max(0, link.inflight_bytes - nbytes)
        if not ok:
            link.remaining_bytes += nbytes
    e = self._entries.get(key)
    p = self._pieces.get(key) if self._pieces else None
    if p is not None and tx_id in p.outstanding:
        p.outstanding.discard(tx_id)
        if not ok and not p.failed:
            p.failed = True  # no more pieces: the whole bundle goes again
            if p.link.sending is p:
                p.link.sending = None
        if p.outstanding or p.link.sending is p:
            e = None  # more outcomes or pieces to come
        else:
            del self._pieces[key]
            ok = not p.failed
    elif e is not None and e.tx_id != tx_id:
        e = None
    if e is not None and e.location is _IN_FLIGHT:
        if ok:
            self._report_entry(e, _FORWARDED, _NO_INFO, now, actions)
            self._remove(e)
            self.counters["forwarded"] += 1
            # The member, not its string: Event looks a string up (~1 us a hop).
            actions.append(trusted_event(_FORWARDED_EVENT, key, f"to node {nb}"))
        else:
            self.counters["transmit_failed"] += 1
            if link is not None:
                # Retry on this contact after a delay (jittered so that
                # a failing link does not spin in lock step).
                e.move(Step.REQUEUE)
                self._queues.setdefault(nb, deque()).appendleft(key)
                delay = self.config.retry_delay_ms
                delay += int(delay * 0.1 * self._rng.random())
                link.backoff_until = now + delay
                heapq.heappush(self._backoff, (link.backoff_until, nb))
            else:
                e.move(Step.RELEASE)
                self._forward(e, now, actions)
    if link is not None:
        self._pump(nb, now, actions)


def abort_pieces(self: Agent, p: Pieces, now: int, actions: list[Action]) -> None:
    """The contact of ``p`` closed before all its pieces were sent: no more
    are; once the pieces in flight have their outcomes (now, if none is
    in flight) the whole bundle is routed again."""
    p.failed = True
    if p.link.sending is p:
        p.link.sending = None
    if p.outstanding or self._pieces.get(p.key) is not p:
        return
    del self._pieces[p.key]
    e = self._entries.get(p.key)
    if e is not None and e.location is Location.IN_FLIGHT:
        e.move(Step.RELEASE)
        self._forward(e, now, actions)


def no_route(self: Agent, e: Entry, now: int, actions: list[Action]) -> None:
    """Say why ``e`` waits (``no_route`` event; the runtime logs it at info)."""
    d = e.dest_node
    if isinstance(d, str):
        why = f"{e.destination}: no static route from {d} to an ipn node"
    elif self._router is None:
        why = f"no contact plan and no open contact to node {d}"
    else:
        why = f"no route to node {d} in the contact plan arriving before expiry"
    actions.append(Event(EventKind.NO_ROUTE, e.key, why))


def now_s(self: Agent, now: int) -> float:
    return (now - self.plan_epoch) / 1000.0


def volume(self: Agent, contact: Contact, now: int) -> float:
    rate = contact.rate_bytes_s
    if rate <= 0 or not math.isfinite(rate) or not math.isfinite(contact.end_s):
        return math.inf  # open-ended or unknown rate: no volume bound
    return max(0.0, (contact.end_s - max(contact.start_s, self._now_s(now))) * rate)


def check_plan(self: Agent, now: int, actions: list[Action]) -> None:
    plan = self.plan
    if plan is None or plan.version == self._plan_version:
        return
    self._plan_version = plan.version
    # The plan changed: bundles without a route may have one now, and
    # bundles queued for a neighbour not in contact now were routed over
    # contacts the new plan may have dropped (they would wait for it
    # until they expire). Plan changes are rare: O(bundles held) is fine.
    pending = [k for keys in self._unrouted.values() for k in keys]
    self._unrouted.clear()
    for key in pending:
        e = self._entries.get(key)
        if e is not None and e.location is Location.UNROUTED:
            e.move(Step.RELEASE)
            if isinstance(e.dest_node, str):
                # the plan may have brought a static route for its dtn: node
                e.dest_node = self._dest_of(parse_eid(e.destination))
            self._forward(e, now, actions)
    for nb in [n for n in self._queues if n not in self._links]:
        for key in self._queues.pop(nb):
            e = self._entries.get(key)
            if e is not None and queued_for(e, nb):
                e.move(Step.RELEASE)
                self._forward(e, now, actions)


def retry_unrouted(self: Agent, d: int, now: int, actions: list[Action]) -> None:
    """Route the bundles waiting for destination ``d`` again; those still
    without a route wait twice as long for the next try."""
    del self._reroute_at[d]
    iv = self._reroute_iv.get(d, self.config.reroute_interval_ms)
    self._reroute_iv[d] = min(2 * iv, self.config.max_reroute_interval_ms)
    for key in list(self._unrouted.pop(d, {})):
        e = self._entries.get(key)
        if e is not None and e.location is Location.UNROUTED:
            e.move(Step.RELEASE)
            self._forward(e, now, actions)
    if d not in self._unrouted:
        self._reroute_iv.pop(d, None)  # all routed: start afresh next time


def unbook(self: Agent, e: Entry) -> None:
    # A bundle routed but not sent over its contact gives the volume back.
    booked = e.booked
    if booked is not None:
        e.booked = None
        # A contact the plan has since dropped has no volume to give back.
        with suppress(InvalidArgument):
            self._router.release(booked, e.size)


def forward(self: Agent, e: Entry, now: int, actions: list[Action]) -> None:
    """Pick a next hop for ``e`` and queue it there, or hold it unrouted."""
    self._unbook(e)
    d = e.dest_node
    nb: int | None = None
    if isinstance(d, int):
        if d in self._links:
            nb = d  # a contact with the destination itself is open
        elif self._router is not None:
            nb = self._route(e, d, now)
    if nb is None:
        e.move(Step.NO_ROUTE)
        self._unrouted.setdefault(d, {})[e.key] = None
        self._no_route(e, now, actions)
        if (
            self._router is not None
            and isinstance(d, int)
            and d not in self._reroute_at
        ):
            at = now + self._reroute_iv.get(d, self.config.reroute_interval_ms)
            self._reroute_at[d] = at
            heapq.heappush(self._reroute, (at, d))
        return
    e.move(_ROUTE, hop=nb)
    self._queues.setdefault(nb, deque()).append(e.key)
    if nb in self._links:
        self._pump(nb, now, actions)


def route(self: Agent, e: Entry, dst: int, now: int) -> int | None:
    """CGR next hop for ``e`` (None: no route that arrives in time).

    The router's route cache is keyed by size and deadline, so both are
    made coarse: the size is rounded up to whole KiB (a route that fits
    the larger size fits the bundle), and the deadline is checked here
    on the earliest-arrival route (if it arrives too late, every route
    does). Bundles to one destination then share cached routes, and a
    route found at one node serves the next nodes on it (the router's
    ``forwarding_route``: same arrival and hop count as ``best_route``).
    """
    excluded = () if e.prev_node is None or e.prev_node == dst else (e.prev_node,)
    size = -(-e.size // _ROUTE_SIZE_QUANTUM) * _ROUTE_SIZE_QUANTUM
    route = self._router.forwarding_route(
        self.node, dst, self._now_s(now), size, excluded=excluded
    )
    if route is None or route.arrival_s > self._now_s(e.expiry_ms):
        return None
    if route.contacts:
        e.booked = route.contacts[0]
        self._router.consume(e.booked, e.size)
    return int(route.next_hop)


def queued_for(e: Entry, nb: int) -> bool:
    """True if ``e`` waits in neighbour ``nb``'s queue (a queue may still
    name a bundle that moved on: queues delete lazily)."""
    return e.location is _QUEUED and e.next_hop == nb


def pump(self: Agent, nb: int, now: int, actions: list[Action]) -> None:
    """Transmit what is queued for open neighbour ``nb``, within the
    window and the contact's remaining volume: first the next pieces of a
    bundle going out in pieces, then the queue in order."""
    link = self._links.get(nb)
    if link is None or now < link.backoff_until:
        return
    q = self._queues.get(nb)
    if not q and link.sending is None:
        return
    skipped: list[str] = []
    window = self.config.window
    window_bytes = self.config.window_bytes
    while link.inflight < window:
        if window_bytes is not None and link.inflight_bytes >= window_bytes:
            break
        if link.sending is not None:
            pe = self._entries.get(link.sending.key)
            if pe is not None and pe.expiry_ms <= now:
                # Lifetime over before its tick (as for a queued bundle
                # below): expire it, send no further piece.
                self._expire(pe, now, actions)
                continue
            _send_piece(self, link.sending, nb, now, actions)
            continue
        if not q:
            break
        key = q.popleft()
        e = self._entries.get(key)
        if e is None or not queued_for(e, nb):
            continue
        if e.expiry_ms <= now:
            # Lifetime over, its tick not run yet (contact events come
            # first at one instant): expire it, never forward it.
            self._expire(e, now, actions)
            continue
        wire = self._prepare(e, link, now, actions)
        if wire is _REQUEUED:
            continue  # fragmented: the fragments are at the queue's front
        if wire is None:
            if key in self._entries and queued_for(e, nb):
                skipped.append(key)  # does not fit this contact: keep it queued
                if len(skipped) >= window:
                    # The contact is (nearly) full: looking further down
                    # a long queue for a bundle small enough would cost
                    # a decode per queued bundle on every call.
                    break
            continue
        if isinstance(wire, Pieces):
            # Cut at transmission: its first piece now, the others as the
            # window allows (before anything else queued).
            self._pieces[key] = wire
            link.sending = wire
            tx = _send_piece(self, wire, nb, now, actions)
            wire.tx_id = tx
        else:
            assert isinstance(wire, tuple)
            tx = _emit(self, key, nb, link, wire, actions)
        e.move(_TRANSMIT, tx_id=tx)
        if e.booked is not None and e.booked != link.contact:
            # Booked on a later contact, going on this one: the booking
            # moves here (a driver's open-ended link is not in the plan).
            self._unbook(e)
            with suppress(InvalidArgument):
                self._router.consume(link.contact, e.size)
        e.booked = None  # the volume is used now, not just planned
    if skipped and q is not None:
        q.extendleft(reversed(skipped))


def _emit(
    self: Agent,
    key: str,
    nb: int,
    link: Link,
    wire: tuple[bytes | memoryview, ...],
    actions: list[Action],
) -> int:
    """``Transmit`` ``wire`` (of bundle ``key``) to ``nb`` over ``link``:
    its id, counted in flight and against the contact's volume."""
    size = len(wire[0]) if len(wire) == 1 else sum(map(len, wire))
    tx = self._next_tx
    self._next_tx += 1
    self._inflight[tx] = (key, nb, size, link)
    link.inflight += 1
    link.inflight_bytes += size
    link.remaining_bytes -= size
    self.counters["transmits"] += 1
    actions.append(trusted_transmit(nb, wire, tx))
    return tx


def _send_piece(
    self: Agent, p: Pieces, nb: int, now: int, actions: list[Action]
) -> int:
    """Cut and transmit the next piece of ``p``: a fragment of the stored
    bundle (RFC 9171 5.8) updated for forwarding as a stored fragment
    would be, so the bytes on the wire are those of the fragments this
    node once stored. Its transmission id."""
    size = p.sizes[p.sent]
    b = p.bundle
    assert b is not None  # pieces are still to be cut
    e = self._entries[p.key]
    # The blocks were updated once already (prepare): no DecodeError here.
    # The piece's payload goes out as a view of the bundle's, not copied --
    # which keeps that payload in memory until the piece's outcome: within
    # PIECE_VIEWS_MAX_BYTES for the bundles whose pieces were all cut (a
    # next hop slow to acknowledge them must not make this node hold many
    # whole payloads), beyond it copied as before.
    pinned = sum(
        sum(q.sizes)
        for q in self._pieces.values()
        if q.bundle is None and q.outstanding
    )
    if p.encoder is None:
        p.encoder = PieceEncoder(b, self.eid)
    wire = p.encoder.parts(
        p.offset,
        size,
        dwell_ms=max(0, now - e.received_ms),
        view=pinned + len(b.payload) <= PIECE_VIEWS_MAX_BYTES,
    )
    p.offset += size
    p.sent += 1
    if p.sent == len(p.sizes):
        p.link.sending = None
        p.bundle = None  # only the outcomes are awaited now
        p.encoder = None
    tx = _emit(self, p.key, nb, p.link, wire, actions)
    p.outstanding.add(tx)
    return tx


def prepare(
    self: Agent, e: Entry, link: Link, now: int, actions: list[Action]
) -> tuple[bytes, ...] | Pieces | object | None:
    """The bytes to send for ``e`` (blocks updated), as the buffers of
    ``encode_bundle_parts`` (a large payload not copied); a :class:`Pieces`
    when only the link's MTU is too small for it (it is cut as it is sent,
    the store keeps it whole); ``_REQUEUED`` if it was fragmented to fit
    what is left of the contact (its stored fragments now head the queue);
    None if it cannot go now (too big for what is left of the contact) or
    was deleted (hop limit, unreadable)."""
    spliced = self._hot_splice(e.key) if self._hot else None
    wire = None
    if spliced is not None:
        # Originated here: only the extension blocks are written, the
        # primary and payload blocks come from the stored encoding (the
        # same bytes as the general path below; None leaves it to that).
        b = spliced[0]
        wire = forwarded_parts(
            b, spliced[1], node=self.eid, dwell_ms=max(0, now - e.received_ms)
        )
    if wire is None:
        got = _prepare_general(self, e, now, actions)
        if got is None:
            return None
        b, wire = got
    size = len(wire[0]) if len(wire) == 1 else sum(map(len, wire))
    limit = link.remaining_bytes
    mtu = self.config.mtu_by_neighbour.get(
        link.contact.to, self.config.max_bundle_bytes
    )
    if mtu is not None:
        limit = min(limit, mtu)
    if size <= limit:
        return wire
    # An anonymous bundle (null source) has no unique id, so its fragments
    # could never be told apart and reassembled (RFC 9171 5.8): never split it.
    if (
        b.primary.flags & BundleFlags.MUST_NOT_FRAGMENT
        or b.is_admin_record
        or is_null_eid(b.primary.source)
    ):
        if size <= link.remaining_bytes:
            return wire  # over the MTU but must not be fragmented: the CLA must cope
        return None
    # A fragment's primary block is up to ~20 bytes longer (offset and
    # total ADU length): keep a margin so that the first one really fits.
    n = len(b.payload)
    overhead = size - n + _FRAGMENT_MARGIN
    first = int(limit) - overhead
    per = n if mtu is None else mtu - overhead
    # Pieces smaller than this are not worth their headers.
    smallest = min(_MIN_FRAGMENT_PAYLOAD, n - 1)
    if smallest < 1 or per < smallest:
        # Cannot usefully fragment for this MTU: as for MUST_NOT_FRAGMENT.
        return wire if size <= link.remaining_bytes else None
    if mtu is not None and size > mtu:
        pieces = -(-n // per)
        if n + pieces * overhead <= link.remaining_bytes:
            # Only the MTU makes it split, and every piece fits what is left
            # of the contact: cut it as it is sent (RFC 9171 5.8 lets any
            # node fragment at transmission), keeping the stored bundle as
            # the one entry -- no fragment is stored or written.
            sizes = (per,) * (n // per) + ((n % per,) if n % per else ())
            self.counters["fragmented"] += 1
            actions.append(
                Event("fragmented", e.key, f"into {len(sizes)} fragments as sent")
            )
            return Pieces(key=e.key, bundle=b, sizes=sizes, link=link)
    if first < smallest:
        return None  # too little volume left: wait for the next contact
    if self._fragment(e, b, first, per, actions):
        return _REQUEUED
    return None


def _prepare_general(
    self: Agent, e: Entry, now: int, actions: list[Action]
) -> tuple[Bundle, tuple[bytes, ...]] | None:
    """The stored bundle of ``e`` and its bytes updated for forwarding;
    None if it was deleted (hop limit, unreadable, gone)."""
    stored = None
    try:
        if e.key in self._hot:
            b = self._load_bundle(e.key, actions, now)
        else:
            # Read back: its stored bytes carry the payload block's CRC field
            # too (the decoder checked it), taken below rather than computed
            # over the payload again -- a node with a queue longer than its
            # decoded copies read and CRC'd every 1 MB bundle twice.
            stored = self._load(e.key, actions, now)
            b = None if stored is None else decode_bundle_untrusted(stored)
        if b is None:
            self._entries.pop(e.key, None)
            return None
        # RFC 9171 5.4: previous node = us, bundle age + time held here,
        # hop count + 1.
        out = update_for_forwarding(
            b, node=self.eid, dwell_ms=max(0, now - e.received_ms)
        )
    except DecodeError as exc:
        self._corrupt(e, exc, actions)
        return None
    hop = out.hop_count
    if hop is not None and hop.exceeded:
        self._delete(
            e.key,
            b,
            "hop_limit",
            f"hop limit {hop.limit} reached",
            StatusReason.HOP_LIMIT_EXCEEDED,
            now,
            actions,
            entry=e,
        )
        return None
    # A large payload block is the one stored: its CRC is read, not computed.
    crc = None
    if e.size >= GATHER_PAYLOAD_BYTES:
        crc = (
            self._hot_payload_crc(e.key, out)
            if stored is None
            else stored_payload_crc(out.blocks[-1], stored)
        )
    return b, encode_bundle_parts(out, payload_crc=crc)


def fragment(
    self: Agent, e: Entry, b: Bundle, first: int, per: int, actions: list[Action]
) -> bool:
    """Replace queued bundle ``e`` by fragments (RFC 9171 5.8): the first
    carries ``first`` payload bytes, the others at most ``per``. They
    take its place at the front of its queue. False if nothing to split."""
    n = len(b.payload)
    sizes = [min(first, n)]
    pos = sizes[0]
    while pos < n:
        step = min(per, n - pos)
        sizes.append(step)
        pos += step
    if len(sizes) < 2:
        return False
    nb = e.next_hop
    self._remove(e)
    new_keys: list[str] = []
    for fb in fragment_bundle(b, sizes):
        # Stored from its parts (a fragment's payload is not joined into a
        # copy of the bundle) and kept decoded, as an originated bundle is:
        # forwarding it then neither reads it back from the store nor
        # decodes it, and takes its payload CRC from the stored bytes.
        data = encode_bundle_parts(fb)
        key = fb.bundle_key
        if key in self._entries:
            continue  # an identical fragment is already held
        # force: the fragments replace a bundle already accepted, and
        # refusing them now would lose it.
        fe = self._store_new(
            key,
            data,
            destination=e.destination,
            dest_node=e.dest_node,
            expiry_ms=e.expiry_ms,
            state=BundleState.PENDING,
            received_ms=e.received_ms,
            prev_node=e.prev_node,
            flags=int(fb.primary.flags),
            force=True,
            bundle=fb,
        )
        if nb is not None:
            fe.move(Step.ROUTE, hop=nb)
        new_keys.append(key)
    self.counters["fragmented"] += 1
    actions.append(Event("fragmented", e.key, f"into {len(sizes)} fragments"))
    if nb is not None:
        self._queues.setdefault(nb, deque()).extendleft(reversed(new_keys))
    return True
