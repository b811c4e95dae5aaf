"""Actions: what the agent core asks its driver (runtime or simulator) to do.

The core never performs I/O; each input method (``on_receive``,
``on_contact_start``, ``on_contact_end``, ``on_tick``, ``on_transmit_done``,
``send``) returns a list of these, and the driver carries them out in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal

from dcis.dtn.time import DtnTime


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send one encoded bundle to neighbour node ``neighbor``.

    ``parts`` are the bundle's bytes as buffers to write one after the
    other (``dcis.dtn.bpv7.bundle.encode_bundle_parts``: a large payload is
    its own buffer, not copied into the rest); :attr:`data` joins them.
    A driver that can gather (``sendmsg``) writes ``parts``.

    The driver reports the outcome with ``agent.on_transmit_done(tx_id, ok,
    now)``: ``ok=True`` once the next hop holds it (hop-by-hop ack, or the
    datagram left for a best-effort peer); ``ok=False`` if it was not taken
    (timeout, link closed), and the agent keeps the bundle and retries.
    """

    neighbor: int
    parts: tuple[bytes | memoryview, ...]
    """A large payload may be a ``memoryview`` of the stored bundle's (an
    MTU piece cut at transmission): valid while the transmission is."""
    tx_id: int

    @property
    def data(self) -> bytes:
        """The encoded bundle in one buffer (joined when in several parts)."""
        parts = self.parts
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0]
        return b"".join(parts)

    @property
    def size(self) -> int:
        """The encoded bundle's length in bytes."""
        return sum(map(len, self.parts))


@dataclass(frozen=True, slots=True)
class Ack:
    """The bundle received with CL token ``cl_token`` from ``neighbor`` is now
    durably held (or was a duplicate of one already handled): the convergence
    layer may acknowledge it to the previous hop.

    ``bundle_key``: the bundle just stored under that key, when the Ack is
    for a bundle taken in (not a duplicate, a deletion or pieces held in
    memory: None). A driver may hold such an Ack until that bundle has
    been delivered and confirmed, instead of until its bytes are on disk;
    an Ack with none may stand for a copy of such a bundle (spec/udpcl.md,
    "Hop ACKs at delivery"). Not compared: two Acks are equal when they
    acknowledge the same token of the same neighbour."""

    neighbor: int
    cl_token: int
    bundle_key: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A whole (reassembled) bundle delivered to a local endpoint.

    ``endpoint`` and ``source`` are EID strings (``ipn:3.16``);
    ``creation_ms`` is the bundle's creation time (DTN ms, 0 when the source
    had no clock) and ``sequence`` its creation sequence number;
    ``bundle_key`` identifies the bundle in the store and in traces.

    The one type for a delivered bundle: the agent's ``Deliver`` action, a
    service's ``on_bundle`` argument (``dcis.dtn.node.Inbound``) and what the app
    clients and ``Node.endpoint`` hand out (``ReceivedBundle``) are this
    class. A driver confirms hand-over with ``on_delivered(bundle_key, now)``
    so that a crash between the two never delivers twice nor loses it.
    """

    endpoint: str
    source: str
    payload: bytes
    creation_ms: int
    sequence: int
    bundle_key: str


Deliver = Inbound
"""The agent's action "hand this bundle to local endpoint ``endpoint``": an
:class:`Inbound` (the name says what the driver must do with it)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """Call ``agent.on_tick(now)`` no later than ``at``."""

    at: DtnTime


DeletionCause = Literal["hop_limit", "security", "unprocessable_block", "no_age"]
"""Which rule made the agent delete a bundle on purpose (``Deletion.cause``)."""

DELETION_CAUSES: tuple[DeletionCause, ...] = (
    "hop_limit",
    "security",
    "unprocessable_block",
    "no_age",
)
"""Every :data:`DeletionCause`, in the order drivers list them."""


class EventKind(StrEnum):
    """Every kind of :class:`Event` the agent and the node (``dcis.dtn.node``)
    emit. A ``StrEnum``: a kind compares equal to its string, and an
    :class:`Event` built with any other string raises ``ValueError``, so a
    counter or log reader keyed by kind cannot drift from what is emitted."""

    RECEIVED = "received"
    """A bundle came from a neighbour (detail: which)."""
    FORWARDED = "forwarded"
    """The next hop holds a bundle."""
    DELIVERED = "delivered"
    """A local endpoint's delivery was confirmed."""
    EXPIRED = "expired"
    """A bundle's lifetime ended here."""
    REFUSED = "refused"
    """The store refused a bundle (full); the sender keeps it."""
    DROPPED = "dropped"
    """Bad input dropped (undecodable bundle, ...)."""
    DUPLICATE = "duplicate"
    """A copy of a bundle already held or delivered."""
    DELETED = "deleted"
    """Deleted on purpose (:class:`Deletion` says by which rule)."""
    FRAGMENTED = "fragmented"
    """Split to fit a link's MTU."""
    REASSEMBLED = "reassembled"
    """Fragments made whole again."""
    ADMIN_RECORD = "admin_record"
    """An administrative record for an endpoint not registered here."""
    NO_ROUTE = "no_route"
    """A bundle waits without a route (detail: why); the daemon logs it at info."""
    STATUS_REPORT = "status_report"
    """A status report was originated."""
    VARIANT = "variant"
    """A bundle sharing a held bundle's key but not its content, kept apart."""
    STORE_CORRUPT = "store_corrupt"
    """A stored record failed the store's own checksum; never delivered."""
    SERVICE_STARTED = "service_started"
    """A node service started (bundle_key empty; detail: its endpoint)."""
    SERVICE_FAILED = "service_failed"
    """A node service raised; its call's state writes were discarded."""
    SERVICE_SEND_FAILED = "service_send_failed"
    """The agent refused a service's untagged ``Send`` (store full, bad EID)."""


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth a trace/log line: ``kind`` is an :class:`EventKind`
    (a plain string naming one is converted); ``detail`` is a short
    human-readable reason. Raises ``ValueError`` for an unknown kind."""

    kind: str
    bundle_key: str
    detail: str = ""

    def __post_init__(self) -> None:
        if type(self.kind) is not EventKind:
            object.__setattr__(self, "kind", EventKind(self.kind))


@dataclass(frozen=True, slots=True)
class Deletion(Event):
    """The agent's ``Event("deleted", key, detail)`` for a bundle it deleted
    on purpose, with the rule that did it as ``cause`` for a driver to count
    by (``detail`` is wording, not meant to be parsed). A subclass, so every
    other event stays three fields to build."""

    cause: DeletionCause = field(kw_only=True)


Action = Transmit | Ack | Deliver | Schedule | Event


# Trusted construction for the actions made for every bundle. A frozen
# dataclass's __init__ sets each field through ``object.__setattr__``
# (~150 ns a field) and Event's __post_init__ looks its kind up: an Event
# cost ~1.0 us, an Inbound ~1.7 us; the slot setters below take ~0.3 and
# ~0.5 (spec/performance.md, "Eighth round: the 1 KB path"). Same
# objects: equal, of the same class, fields alike.
_new: Final = object.__new__
_set_Event_kind: Final = Event.__dict__["kind"].__set__
_set_Event_bundle_key: Final = Event.__dict__["bundle_key"].__set__
_set_Event_detail: Final = Event.__dict__["detail"].__set__
_set_Ack_neighbor: Final = Ack.__dict__["neighbor"].__set__
_set_Ack_cl_token: Final = Ack.__dict__["cl_token"].__set__
_set_Ack_bundle_key: Final = Ack.__dict__["bundle_key"].__set__
_set_Transmit_neighbor: Final = Transmit.__dict__["neighbor"].__set__
_set_Transmit_parts: Final = Transmit.__dict__["parts"].__set__
_set_Transmit_tx_id: Final = Transmit.__dict__["tx_id"].__set__
_set_Inbound_endpoint: Final = Inbound.__dict__["endpoint"].__set__
_set_Inbound_source: Final = Inbound.__dict__["source"].__set__
_set_Inbound_payload: Final = Inbound.__dict__["payload"].__set__
_set_Inbound_creation_ms: Final = Inbound.__dict__["creation_ms"].__set__
_set_Inbound_sequence: Final = Inbound.__dict__["sequence"].__set__
_set_Inbound_bundle_key: Final = Inbound.__dict__["bundle_key"].__set__


def trusted_event(kind: EventKind, bundle_key: str, detail: str) -> Event:
    """``Event(kind, bundle_key, detail)`` for a caller passing an
    :class:`EventKind` member (nothing to look up or check)."""
    e = _new(Event)
    _set_Event_kind(e, kind)
    _set_Event_bundle_key(e, bundle_key)
    _set_Event_detail(e, detail)
    return e


def trusted_ack(neighbor: int, cl_token: int, bundle_key: str | None = None) -> Ack:
    """``Ack(neighbor, cl_token, bundle_key)`` (its fields as given)."""
    a = _new(Ack)
    _set_Ack_neighbor(a, neighbor)
    _set_Ack_cl_token(a, cl_token)
    _set_Ack_bundle_key(a, bundle_key)
    return a


def trusted_transmit(
    neighbor: int, parts: tuple[bytes | memoryview, ...], tx_id: int
) -> Transmit:
    """``Transmit(neighbor, parts, tx_id)`` (its fields as given)."""
    t = _new(Transmit)
    _set_Transmit_neighbor(t, neighbor)
    _set_Transmit_parts(t, parts)
    _set_Transmit_tx_id(t, tx_id)
    return t


def trusted_inbound(
    endpoint: str,
    source: str,
    payload: bytes,
    creation_ms: int,
    sequence: int,
    bundle_key: str,
) -> Inbound:
    """``Inbound(endpoint=..., ..., bundle_key=...)`` (its fields as given)."""
    d = _new(Inbound)
    _set_Inbound_endpoint(d, endpoint)
    _set_Inbound_source(d, source)
    _set_Inbound_payload(d, payload)
    _set_Inbound_creation_ms(d, creation_ms)
    _set_Inbound_sequence(d, sequence)
    _set_Inbound_bundle_key(d, bundle_key)
    return d
