"""Hop ACKs held until delivery: the runtime's bookkeeping (spec/udpcl.md,
"Hop ACKs at delivery").

With group commit a received bundle's hop ACK waits for the sync that makes
it durable, and that sync writes its payload (a late write,
``SqliteStore.put(write_later=True)``) unless the bundle left first. A
bundle for a local application is usually pushed to it before that sync
and confirmed a few milliseconds later: its payload was written for
nothing. Such a bundle's ACK can instead wait for its confirmation -- a
bundle delivered and confirmed is finished at this node, so the ACK needs
no write or sync of its bytes -- while the syncs in between leave its
payload held (``begin_sync(keep_late=...)``).

An ACK held here is released by exactly one of:

- the confirmation (:meth:`AckHold.confirmed`): the bundle left the store
  with the commit that made the driver call it; the ACK goes at once;
- its hold time running out (:meth:`AckHold.take_due`): the next sync
  writes its payload like any other and the ACK goes after that sync;
- any ACK that names no stored bundle -- a duplicate's, a deletion's, held
  pieces' (:meth:`AckHold.expire_all`): such an ACK may stand for a copy
  of a held bundle, so every held bundle is written by the next sync, and
  that ACK goes after it as well.

Bounds: at most :data:`HOLD_S` seconds, :data:`HOLD_MAX` bundles and
:data:`HOLD_MAX_BYTES` payload bytes (past either, an ACK waits for the
sync as before); a slow or dead application costs its peer at most
``HOLD_S`` plus one sync of extra ACK delay, well under the UDP CL's
ACK timeout (1 s by default).

No I/O and no clock: times are the driver's, passed in (seconds).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

__all__ = ["HOLD_MAX", "HOLD_MAX_BYTES", "HOLD_S", "AckHold"]

HOLD_S = 0.05
"""The longest an ACK waits for its bundle's confirmation before the next
sync writes the payload and releases it."""
HOLD_MAX = 512
"""The most ACKs held at once (the app API's delivery queue is 256 a
connection by default)."""
HOLD_MAX_BYTES = 8 << 20
"""The most payload bytes held back from syncs (half of the store's
``PENDING_MAX_BYTES``, so that later bundles still get late writes)."""


@dataclass(slots=True)
class _Held:
    since: float
    size: int
    ack: Callable[[], object]


class AckHold:
    """The hop ACKs held until their bundles are confirmed (module docstring)."""

    def __init__(self, hold_s: float = HOLD_S) -> None:
        # How long an ACK waits at most (``HOLD_S``, or less: the driver
        # keeps it under the UDP CL's ACK timeout).
        self._hold_s = hold_s
        # In the order held: the front is the first due.
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def keys(self) -> Collection[str]:
        """The bundles whose payloads the next sync may leave unwritten."""
        return self._held.keys()

    def hold(self, key: str, size: int, ack: Callable[[], object], now: float) -> bool:
        """Hold ``ack`` (the hop ACK of the bundle ``key``, whose payload is
        ``size`` bytes, just pushed to an application) until ``key`` is
        confirmed or the hold time ends. False (nothing held) past a bound
        or if ``key`` is held already: the driver then sends it after the
        next sync, as without this."""
        if (
            key in self._held
            or len(self._held) >= HOLD_MAX
            or self._bytes + size > HOLD_MAX_BYTES
        ):
            return False
        self._held[key] = _Held(now, size, ack)
        self._bytes += size
        return True

    def confirmed(self, keys: Iterable[str], gone: Callable[[str], bool]) -> int:
        """``keys`` were confirmed by their applications with a commit that
        is over: the ACKs of those that left the store (``gone(key)``) go
        now. Returns how many went."""
        n = 0
        for key in keys:
            h = self._held.get(key)
            if h is None or not gone(key):
                continue
            del self._held[key]
            self._bytes -= h.size
            h.ack()
            n += 1
        return n

    def drop(self, keys: Iterable[str]) -> None:
        """The bundles ``keys`` were refused (their late writes failed at a
        sync): their held ACKs, if any, are never sent. (A held ACK's
        payload is kept held by the syncs, so none should be; this makes
        sure no later confirmation releases one.)"""
        for key in keys:
            h = self._held.pop(key, None)
            if h is not None:
                self._bytes -= h.size

    def due_at(self) -> float | None:
        """When the first held ACK's hold time ends (None if none is held)."""
        for h in self._held.values():
            return h.since + self._hold_s
        return None

    def is_due(self, now: float) -> bool:
        """Whether a held ACK's hold time has ended by ``now``."""
        at = self.due_at()
        return at is not None and at <= now

    def take_due(self, now: float) -> list[tuple[str, Callable[[], object]]]:
        """Call before a sync begins: the ACKs whose hold time has ended
        leave the hold (their payloads are then written by that sync), as
        ``(key, ack)``; the caller sends them once it is over -- but those
        whose late writes failed (their bundles refused, not stored)."""
        out: list[tuple[str, Callable[[], object]]] = []
        held = self._held
        while held:
            key = next(iter(held))
            h = held[key]
            if h.since + self._hold_s > now:
                break
            del held[key]
            self._bytes -= h.size
            out.append((key, h.ack))
        return out

    def expire_all(self) -> None:
        """Every held ACK is due now (see the module docstring)."""
        for h in self._held.values():
            h.since = -math.inf
