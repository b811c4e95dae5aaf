"""Replay windows: refuse a bundle seen before, per source node.

A bundle is named by its source and creation timestamp (creation time in DTN
ms, sequence number; RFC 9171 4.2.7). A window per source node remembers the
timestamps it accepted, within a bounded span of time and a bounded count:

- ``NEW`` -- never seen, and not older than the window: accept and record.
- ``DUPLICATE`` -- seen before (a replay, or a harmless retransmission).
- ``TOO_OLD`` -- older than the window's low edge. The window cannot tell
  whether it was seen (the record is gone), so it refuses. The low edge is
  ``newest creation time - window_ms``, raised further when the count bound
  evicts the oldest entries.

Set ``window_ms`` to at least the longest bundle lifetime the network uses:
a bundle older than that has expired anyway, so ``TOO_OLD`` never refuses a
live bundle for want of memory. Bundles from sources without a clock carry
creation time 0 (RFC 9171 4.2.7) and are told apart by sequence number alone;
the count bound then decides how far back they are remembered.

Record a timestamp only *after* the bundle authenticated: otherwise forged
bundles could fill the window and push genuine ones out as ``TOO_OLD``.
"""

from __future__ import annotations

import heapq
from enum import Enum

from dcis.crypto.errors import InvalidArgument


class ReplayVerdict(Enum):
    """Outcome of a replay check."""

    NEW = "new"
    DUPLICATE = "duplicate"
    TOO_OLD = "too old"


Stamp = tuple[int, int]  # (creation time ms, sequence number)


class ReplayWindow:
    """Accepted creation timestamps of one source, bounded in span and count."""

    def __init__(self, *, window_ms: int, max_entries: int) -> None:
        if window_ms < 0:
            raise InvalidArgument(f"window_ms must be >= 0, got {window_ms}")
        if max_entries < 1:
            raise InvalidArgument(f"max_entries must be >= 1, got {max_entries}")
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._seen: set[Stamp] = set()
        self._heap: list[Stamp] = []  # same members as _seen, oldest first
        self._newest_ms = -1
        self._evicted: Stamp | None = None  # everything <= this is TOO_OLD

    def __len__(self) -> int:
        return len(self._seen)

    def _low_edge_ms(self) -> int:
        return self._newest_ms - self.window_ms

    def check(self, creation_ms: int, sequence: int) -> ReplayVerdict:
        """Classify a timestamp without recording it."""
        stamp = (creation_ms, sequence)
        if self._newest_ms >= 0 and creation_ms < self._low_edge_ms():
            return ReplayVerdict.TOO_OLD
        if stamp in self._seen:
            return ReplayVerdict.DUPLICATE
        if self._evicted is not None and stamp <= self._evicted:
            return ReplayVerdict.TOO_OLD
        return ReplayVerdict.NEW

    def record(self, creation_ms: int, sequence: int) -> ReplayVerdict:
        """Classify and, when ``NEW``, remember the timestamp."""
        verdict = self.check(creation_ms, sequence)
        if verdict is not ReplayVerdict.NEW:
            return verdict
        stamp = (creation_ms, sequence)
        self._seen.add(stamp)
        heapq.heappush(self._heap, stamp)
        self._newest_ms = max(self._newest_ms, creation_ms)
        low = self._low_edge_ms()
        # Forget what fell below the time edge: check() refuses it by time anyway.
        while self._heap and self._heap[0][0] < low:
            self._seen.discard(heapq.heappop(self._heap))
        # Count bound: forget the oldest, and refuse everything up to it from now on.
        while len(self._heap) > self.max_entries:
            gone = heapq.heappop(self._heap)
            self._seen.discard(gone)
            self._evicted = gone if self._evicted is None else max(self._evicted, gone)
        return verdict


class ReplayGuard:
    """One :class:`ReplayWindow` per source node, created on first use."""

    def __init__(self, *, window_ms: int, max_entries_per_source: int = 4096) -> None:
        if window_ms < 0 or max_entries_per_source < 1:
            raise InvalidArgument(
                "window_ms must be >= 0 and max_entries_per_source >= 1"
            )
        self.window_ms = window_ms
        self.max_entries_per_source = max_entries_per_source
        self._windows: dict[int, ReplayWindow] = {}

    def check(self, source_node: int, creation_ms: int, sequence: int) -> ReplayVerdict:
        """Classify a bundle's timestamp without recording it."""
        w = self._windows.get(source_node)
        return ReplayVerdict.NEW if w is None else w.check(creation_ms, sequence)

    def record(
        self, source_node: int, creation_ms: int, sequence: int
    ) -> ReplayVerdict:
        """Classify and, when ``NEW``, remember (call after authentication)."""
        w = self._windows.get(source_node)
        if w is None:
            w = self._windows[source_node] = ReplayWindow(
                window_ms=self.window_ms, max_entries=self.max_entries_per_source
            )
        return w.record(creation_ms, sequence)

    def forget(self, source_node: int) -> None:
        """Drop a source's window (e.g. the node was revoked)."""
        self._windows.pop(source_node, None)
