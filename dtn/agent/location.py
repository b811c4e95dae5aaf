"""Where a stored bundle is in the agent, as one value, and the transitions
the agent makes between those values on each input, in one table.

Theory of operation
-------------------
The agent keeps a bundle's whereabouts in a few fields of its in-memory
entry (``unrouted``, ``queued_to``, ``tx_id``, ``state``). This module names
the combinations that occur -- the bundle's :class:`Location` -- and lists in
:data:`TRANSITIONS`, for every (location, input) pair, the locations the
bundle may be in afterwards (h11's ``_state.py`` style: the rules in one
place). ``tests/unit/agent/test_location_sweep.py`` drives a real agent into
each location, applies each :class:`Input` and checks the table (h2's
state-machine sweep). The agent does not consult the table; it is the
agent's behaviour written down and checked, the first step to keeping the
location in one field (spec/node.md, issue 11).

``GONE`` is not a stored location: the bundle left the store (forwarded,
delivered, expired, deleted).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from dcis.dtn.agent.store import BundleState

__all__ = ["TRANSITIONS", "Input", "Location", "location_of"]


class Location(StrEnum):
    """Where one bundle is."""

    UNROUTED = "unrouted"
    """Stored; no contact to a next hop is known (waits for the plan or a link)."""
    QUEUED = "queued"
    """In a neighbour's queue (its contact is open; waiting for a slot or backoff)."""
    IN_FLIGHT = "in_flight"
    """Handed to the convergence layer; the outcome is not known yet."""
    DELIVERING = "delivering"
    """For a local endpoint: handed over (or waiting for the endpoint), not confirmed."""
    REASSEMBLY = "reassembly"
    """A fragment for a local endpoint, waiting for the others."""
    WAITING = "waiting"
    """Stored, none of the above (e.g. booked on a contact not yet open)."""
    GONE = "gone"
    """Not in the store any more."""


class Input(StrEnum):
    """What can happen to a node while a bundle is somewhere in it."""

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
    RECOVER = "recover"
    """The agent rebuilds its memory from the store (a restart)."""


L = Location
I = Input  # noqa: E741 (a table reads better with short names)

TRANSITIONS: dict[tuple[Location, Input], frozenset[Location]] = {
    (L.UNROUTED, I.TICK): frozenset({L.UNROUTED}),
    (L.UNROUTED, I.EXPIRE): frozenset({L.GONE}),
    (L.UNROUTED, I.CONTACT_START): frozenset({L.IN_FLIGHT}),
    (L.UNROUTED, I.CONTACT_END): frozenset({L.UNROUTED}),
    (L.UNROUTED, I.TX_OK): frozenset({L.UNROUTED}),
    (L.UNROUTED, I.TX_FAIL): frozenset({L.UNROUTED}),
    (L.UNROUTED, I.DELIVERED): frozenset({L.UNROUTED}),
    (L.UNROUTED, I.DUPLICATE): frozenset({L.UNROUTED}),
    (L.UNROUTED, I.RECOVER): frozenset({L.UNROUTED}),
    (L.QUEUED, I.TICK): frozenset({L.QUEUED, L.IN_FLIGHT}),
    (L.QUEUED, I.EXPIRE): frozenset({L.GONE}),
    (L.QUEUED, I.CONTACT_START): frozenset({L.QUEUED, L.IN_FLIGHT}),
    (L.QUEUED, I.CONTACT_END): frozenset({L.UNROUTED}),
    (L.QUEUED, I.TX_OK): frozenset({L.QUEUED}),
    (L.QUEUED, I.TX_FAIL): frozenset({L.QUEUED}),
    (L.QUEUED, I.DELIVERED): frozenset({L.QUEUED}),
    (L.QUEUED, I.DUPLICATE): frozenset({L.QUEUED}),
    (L.QUEUED, I.RECOVER): frozenset({L.QUEUED, L.IN_FLIGHT}),
    (L.IN_FLIGHT, I.TICK): frozenset({L.IN_FLIGHT}),
    (L.IN_FLIGHT, I.EXPIRE): frozenset({L.GONE}),
    (L.IN_FLIGHT, I.CONTACT_START): frozenset({L.IN_FLIGHT}),
    (L.IN_FLIGHT, I.CONTACT_END): frozenset({L.IN_FLIGHT}),
    (L.IN_FLIGHT, I.TX_OK): frozenset({L.GONE}),
    (L.IN_FLIGHT, I.TX_FAIL): frozenset({L.QUEUED, L.UNROUTED}),
    (L.IN_FLIGHT, I.DELIVERED): frozenset({L.IN_FLIGHT}),
    (L.IN_FLIGHT, I.DUPLICATE): frozenset({L.IN_FLIGHT}),
    (L.IN_FLIGHT, I.RECOVER): frozenset({L.IN_FLIGHT, L.QUEUED}),
    (L.DELIVERING, I.TICK): frozenset({L.DELIVERING}),
    (L.DELIVERING, I.EXPIRE): frozenset({L.GONE}),
    (L.DELIVERING, I.CONTACT_START): frozenset({L.DELIVERING}),
    (L.DELIVERING, I.CONTACT_END): frozenset({L.DELIVERING}),
    (L.DELIVERING, I.TX_OK): frozenset({L.DELIVERING}),
    (L.DELIVERING, I.TX_FAIL): frozenset({L.DELIVERING}),
    (L.DELIVERING, I.DELIVERED): frozenset({L.GONE}),
    (L.DELIVERING, I.DUPLICATE): frozenset({L.DELIVERING}),
    (L.DELIVERING, I.RECOVER): frozenset({L.DELIVERING}),
    (L.REASSEMBLY, I.TICK): frozenset({L.REASSEMBLY}),
    (L.REASSEMBLY, I.EXPIRE): frozenset({L.GONE}),
    (L.REASSEMBLY, I.CONTACT_START): frozenset({L.REASSEMBLY}),
    (L.REASSEMBLY, I.CONTACT_END): frozenset({L.REASSEMBLY}),
    (L.REASSEMBLY, I.TX_OK): frozenset({L.REASSEMBLY}),
    (L.REASSEMBLY, I.TX_FAIL): frozenset({L.REASSEMBLY}),
    (L.REASSEMBLY, I.DELIVERED): frozenset({L.REASSEMBLY}),
    (L.REASSEMBLY, I.DUPLICATE): frozenset({L.REASSEMBLY}),
    (L.REASSEMBLY, I.RECOVER): frozenset({L.REASSEMBLY}),
}
"""For each (location, input): where the bundle may be afterwards."""


def location_of(agent: Any, key: str) -> Location:
    """Where bundle ``key`` is in ``agent`` (a ``dcis.dtn.agent.Agent``) now."""
    e = agent._entries.get(key)
    if e is None:
        return Location.GONE
    if e.tx_id is not None:
        return Location.IN_FLIGHT
    if e.state == BundleState.DELIVERING:
        return Location.DELIVERING
    if e.state == BundleState.REASSEMBLY:
        return Location.REASSEMBLY
    if e.unrouted:
        return Location.UNROUTED
    if e.queued_to is not None:
        return Location.QUEUED
    return Location.WAITING
