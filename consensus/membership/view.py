"""What membership tells the other services of its node (the log, the object
store): who the members are, what state each is in, and what each advertises.

The membership service (service 16) implements :class:`MembershipView`; a
node's service factory hands that object to the services that need it, which
only read it. Types here are plain data so that a test can build a view by
hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class MemberState(StrEnum):
    """A member's state as one node sees it (spec/membership.md).

    ``unreachable`` is *expected* silence: the contact plan gives no path to
    the member within the probe timeout. It is never a step towards ``dead``.
    """

    ALIVE = "alive"
    SUSPECT = "suspect"
    UNREACHABLE = "unreachable"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """What a member advertises with its entry. ``None`` where the member
    does not know (e.g. no battery telemetry)."""

    store_free_bytes: int = 0
    store_total_bytes: int = 0
    cpu_load: float = 0.0
    battery_pct: float | None = None
    sunlit: bool | None = None
    temperature_c: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberInfo:
    """One member as this node currently sees it. ``last_heard_ms`` is DTN
    time of the last update this node took about the member (0: never)."""

    node: int
    state: MemberState
    incarnation: int
    last_heard_ms: int = 0
    resources: Resources = field(default_factory=Resources)


class MembershipView(Protocol):
    """Read-only view of membership, for other services of the same node."""

    def members(self) -> Mapping[int, MemberInfo]:
        """Every member this node knows of (itself included), by node number."""
        ...

    def live(self) -> frozenset[int]:
        """Node numbers in state alive, suspect or unreachable: members that
        may still answer (a suspect one might; an unreachable one will, when
        a contact comes)."""
        ...
