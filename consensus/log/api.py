"""The key-value state store on the partition-tolerant log, as other services
of the same node use it (the object store keeps manifests, share locations
and repair claims there).

Theory of operation: ``submit`` appends an operation at once as a
*tentative* entry of this node (origin = this node, the next sequence
number); the log service shares it and later commits it in the agreed
order, or records it ``rejected`` when its precondition fails at commit
(a compare-and-set whose expected value no longer holds). Reads name the
level: ``committed`` sees only committed entries; ``tentative`` sees
committed state with the known tentative entries applied in their current
tentative order (this node's own included: read-your-writes).

Calls are local and synchronous; any bundles a call needs sent are queued by
the log service and leave at its next ``on_tick`` (its ``next_deadline()``
becomes "now").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Level(StrEnum):
    """Which state a read sees."""

    COMMITTED = "committed"
    TENTATIVE = "tentative"


class Outcome(StrEnum):
    """What became of a submitted entry. ``None`` from :meth:`KeyValueLog.outcome`
    means not decided yet."""

    COMMITTED = "committed"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class EntryId:
    """An entry's identity: its origin node and that origin's sequence number
    (1, 2, ... in the order the origin made them)."""

    origin: int
    seq: int


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value`` (last writer wins by hybrid logical clock)."""

    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``."""

    key: str


@dataclass(frozen=True, slots=True)
class CompareAndSet:
    """Set ``key`` to ``value`` (``None``: delete) only if at commit its
    committed value is ``expected`` (``None``: absent); else the entry is
    rejected. Decided at commit only, never on tentative state."""

    key: str
    expected: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Increment:
    """Add ``delta`` (may be negative) to the counter at ``key`` (a CRDT
    merge: increments commute, so every order gives the same total). The value
    reads as the decimal ASCII of the total; a non-counter value counts as 0."""

    key: str
    delta: int


@dataclass(frozen=True, slots=True)
class SetAdd:
    """Add ``member`` to the set at ``key``. A set reads as its members,
    sorted and joined by ``b"\\n"``; members must not contain ``b"\\n"``."""

    key: str
    member: bytes


@dataclass(frozen=True, slots=True)
class SetRemove:
    """Remove ``member`` from the set at ``key``."""

    key: str
    member: bytes


Op = Put | Delete | CompareAndSet | Increment | SetAdd | SetRemove


class KeyValueLog(Protocol):
    """The state store as a local service API."""

    def submit(self, op: Op, now_ms: int) -> EntryId:
        """Append ``op`` as this node's next tentative entry; returns its id."""
        ...

    def get(self, key: str, level: Level = Level.COMMITTED) -> bytes | None:
        """The value of ``key`` at ``level``, or None."""
        ...

    def scan(
        self, prefix: str, level: Level = Level.COMMITTED
    ) -> Iterator[tuple[str, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        ...

    def outcome(self, entry: EntryId) -> Outcome | None:
        """COMMITTED or REJECTED once decided; None while tentative."""
        ...
