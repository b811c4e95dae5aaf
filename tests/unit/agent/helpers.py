"""Small helpers for driving agents by hand in tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from dtn.agent.actions import Ack, Action, Deliver, Event, Schedule, Transmit
from dtn.routing.contact import Contact

T = TypeVar("T")

OPEN = float("inf")


def of(actions: Sequence[Action], kind: type[T]) -> list[T]:
    """The actions of one type, in order."""
    return [a for a in actions if isinstance(a, kind)]


def events(actions: Sequence[Action], kind: str) -> list[Event]:
    return [a for a in actions if isinstance(a, Event) and a.kind == kind]


def link(
    frm: int, to: int, *, start_s: float = 0.0, end_s: float = OPEN, rate: float = 0.0
) -> Contact:
    """A contact; open-ended with no rate bound by default (a driver's link)."""
    return Contact(frm, to, start_s, end_s, rate)


__all__ = [
    "OPEN",
    "Ack",
    "Deliver",
    "Event",
    "Schedule",
    "Transmit",
    "events",
    "link",
    "of",
]
