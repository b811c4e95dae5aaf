"""Where a stored bundle is in the agent, as one value, and every move the
agent makes between those values, in one table.

Theory of operation
-------------------
Each stored bundle's :class:`~dcis.dtn.agent.entries.Entry` holds one
:class:`Location`. The agent changes it only through
:meth:`Entry.move <dcis.dtn.agent.entries.Entry.move>` with a :class:`Step`;
:data:`MOVES` says, for each (location, step) pair the agent may take, the
location that follows. A pair missing from the table raises
:class:`IllegalMove` (h11's ``_state.py`` rule: everything about the state
machine lives in one file, and a transition not written down is a bug, caught
where it happens rather than as a bundle lost later).

The location's companions on the entry are ``next_hop`` (the neighbour whose
queue holds the bundle, or which it is in flight to: set exactly in
``QUEUED`` and ``IN_FLIGHT``) and ``tx_id`` (the transmission outstanding:
set exactly in ``IN_FLIGHT``); ``move`` keeps them consistent.

``STORED`` is where a bundle is between the steps of one input (just stored
or taken out of a queue, about to be routed or handed over); after every
public method of the agent returns, each stored bundle is in one of the
resting locations. ``GONE``: the bundle left the store (forwarded, delivered,
expired, deleted, replaced by its fragments or by the whole bundle).

:data:`TRANSITIONS` is the same machine seen from outside: for each resting
location and each :class:`Input` the agent can be given, the locations the
bundle may rest in afterwards. ``tests/unit/agent/test_location_sweep.py``
drives a real agent into each resting location, applies each input, checks
the result against :data:`TRANSITIONS`, and checks that every row of
:data:`MOVES` is a move the agent really makes (h2's state-machine sweep).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from dcis.dtn.errors import DtnError

__all__ = [
    "MOVES",
    "RESTING",
    "TRANSITIONS",
    "IllegalMove",
    "Input",
    "Location",
    "Step",
    "location_of",
]


class Location(StrEnum):
    """Where one bundle is."""

    STORED = "stored"
    """In the store, not placed yet (only between the steps of one input)."""
    UNROUTED = "unrouted"
    """No next hop is known: waits for the plan, a retry or a contact with its
    destination (``Agent._unrouted``)."""
    QUEUED = "queued"
    """In ``next_hop``'s queue, waiting for a contact with it to be open, a
    window slot or the end of a back-off (``Agent._queues``)."""
    IN_FLIGHT = "in_flight"
    """Transmission ``tx_id`` to ``next_hop`` is outstanding (``Transmit``
    emitted); ``on_transmit_done`` decides."""
    UNCLAIMED = "unclaimed"
    """For a local endpoint not registered: waits for ``register``
    (``Agent._unclaimed``)."""
    DELIVERING = "delivering"
    """``Deliver`` emitted to a local endpoint; waits for ``on_delivered``."""
    REASSEMBLY = "reassembly"
    """A fragment of a bundle for this node, waiting for the other fragments."""
    GONE = "gone"
    """Not in the store any more."""


RESTING = frozenset(Location) - {Location.STORED, Location.GONE}
"""Locations a stored bundle can be in when no input is being processed."""


class Step(StrEnum):
    """One move the agent makes with a bundle."""

    ROUTE = "route"
    """A next hop was chosen (CGR, or a contact with the destination opened):
    into that neighbour's queue."""
    NO_ROUTE = "no_route"
    """No next hop: held unrouted."""
    TRANSMIT = "transmit"
    """Sent to the convergence layer (``Transmit``)."""
    REQUEUE = "requeue"
    """The transmission failed, the contact is still open: back at the front
    of the same queue, after a back-off."""
    RELEASE = "release"
    """Taken out of its queue, the unrouted set or flight, to be routed again
    (contact closed, plan changed, retry time, transmission failed with the
    contact gone) or delivered (its endpoint turned out to be local)."""
    HAND_OVER = "hand_over"
    """``Deliver`` emitted (again, after a restart or a ``redeliver``)."""
    WAIT_ENDPOINT = "wait_endpoint"
    """For a local endpoint that is not registered: held for it. A bundle
    already handed over stays ``DELIVERING``: the application that got it
    may still confirm it."""
    COLLECT = "collect"
    """A fragment for this node joins its fragment group."""
    REMOVE = "remove"
    """Out of the store (forwarded, delivered, expired, deleted, replaced)."""


class IllegalMove(DtnError, RuntimeError):
    """The agent tried a move :data:`MOVES` does not allow: a bug in the
    agent (never the peer's or the caller's doing). The entry is left where
    it was."""

    def __init__(self, key: str, at: Location, step: Step) -> None:
        super().__init__(f"bundle {key}: no move {step.value!r} from {at.value!r}")
        self.key = key
        self.at = at
        self.step = step


L = Location
S = Step

MOVES: dict[tuple[Location, Step], Location] = {
    (L.STORED, S.ROUTE): L.QUEUED,
    (L.STORED, S.NO_ROUTE): L.UNROUTED,
    (L.STORED, S.HAND_OVER): L.DELIVERING,
    (L.STORED, S.WAIT_ENDPOINT): L.UNCLAIMED,
    (L.STORED, S.COLLECT): L.REASSEMBLY,
    (L.STORED, S.REMOVE): L.GONE,
    (L.UNROUTED, S.ROUTE): L.QUEUED,
    (L.UNROUTED, S.RELEASE): L.STORED,
    (L.UNROUTED, S.REMOVE): L.GONE,
    (L.QUEUED, S.TRANSMIT): L.IN_FLIGHT,
    (L.QUEUED, S.RELEASE): L.STORED,
    (L.QUEUED, S.REMOVE): L.GONE,
    (L.IN_FLIGHT, S.REQUEUE): L.QUEUED,
    (L.IN_FLIGHT, S.RELEASE): L.STORED,
    (L.IN_FLIGHT, S.REMOVE): L.GONE,
    (L.UNCLAIMED, S.HAND_OVER): L.DELIVERING,
    (L.UNCLAIMED, S.WAIT_ENDPOINT): L.UNCLAIMED,
    (L.UNCLAIMED, S.REMOVE): L.GONE,
    (L.DELIVERING, S.HAND_OVER): L.DELIVERING,
    (L.DELIVERING, S.WAIT_ENDPOINT): L.DELIVERING,
    (L.DELIVERING, S.REMOVE): L.GONE,
    (L.REASSEMBLY, S.REMOVE): L.GONE,
    # Removing is idempotent: a bundle may be found damaged while it is
    # being taken out (store_corrupt inside remove's caller).
    (L.GONE, S.REMOVE): L.GONE,
}
"""For each move the agent may make: the location it leads to."""


class Input(StrEnum):
    """What can happen to a node while a bundle rests somewhere in it."""

    TICK = "tick"
    """Timers run, before the bundle's expiry."""
    EXPIRE = "expire"
    """Timers run at the bundle's expiry."""
    CONTACT_START = "contact_start"
    """A contact to the bundle's destination node opens."""
    CONTACT_END = "contact_end"
    """That contact closes (no-op if it was not open)."""
    TX_OK = "tx_ok"
    """The outcome of the bundle's transmission: the next hop has it."""
    TX_FAIL = "tx_fail"
    """The outcome of the bundle's transmission: not taken."""
    DELIVERED = "delivered"
    """The application confirmed the bundle's delivery."""
    DUPLICATE = "duplicate"
    """The same bundle arrives again from a neighbour."""
    REGISTER = "register"
    """The bundle's destination endpoint is registered."""
    REDELIVER = "redeliver"
    """The driver asks for the bundle again (``redeliver``: it had deferred
    the ``Deliver``)."""
    UNREGISTER = "unregister"
    """The bundle's destination endpoint is unregistered, then the driver
    asks for the bundle again (``redeliver``)."""
    RECOVER = "recover"
    """The agent rebuilds its memory from the store (a restart)."""


I = Input  # noqa: E741 (a table reads better with short names)


def _rows(
    at: Location, default: Location, **special: frozenset[Location]
) -> dict[tuple[Location, Input], frozenset[Location]]:
    """Every input from ``at``: ``special`` ones as given, expiry ends it,
    the rest leave it at ``default``."""
    rows = {(at, i): frozenset({default}) for i in Input}
    rows[(at, I.EXPIRE)] = frozenset({L.GONE})
    for name, to in special.items():
        rows[(at, Input(name))] = to
    return rows


TRANSITIONS: dict[tuple[Location, Input], frozenset[Location]] = {
    **_rows(L.UNROUTED, L.UNROUTED, contact_start=frozenset({L.IN_FLIGHT})),
    **_rows(
        L.QUEUED,
        L.QUEUED,
        tick=frozenset({L.QUEUED, L.IN_FLIGHT}),
        contact_start=frozenset({L.QUEUED, L.IN_FLIGHT}),
        contact_end=frozenset({L.UNROUTED}),
        recover=frozenset({L.QUEUED, L.IN_FLIGHT}),
    ),
    **_rows(
        L.IN_FLIGHT,
        L.IN_FLIGHT,
        tx_ok=frozenset({L.GONE}),
        tx_fail=frozenset({L.QUEUED, L.UNROUTED}),
        recover=frozenset({L.IN_FLIGHT, L.QUEUED}),
    ),
    **_rows(
        L.UNCLAIMED,
        L.UNCLAIMED,
        register=frozenset({L.DELIVERING}),
    ),
    **_rows(L.DELIVERING, L.DELIVERING, delivered=frozenset({L.GONE})),
    **_rows(L.REASSEMBLY, L.REASSEMBLY),
}
"""For each (resting location, input): where the bundle may rest afterwards."""


def location_of(agent: Any, key: str) -> Location:
    """Where bundle ``key`` is in ``agent`` (a ``dcis.dtn.agent.Agent``) now."""
    e = agent._entries.get(key)
    return Location.GONE if e is None else Location(e.location)
