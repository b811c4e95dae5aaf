"""Sets of byte ranges ``[start, end)``, kept sorted and merged: what a block
receiver has of a block, and what a block sender knows was received."""

from __future__ import annotations

import bisect


class RangeSet:
    """Disjoint, sorted, half-open integer ranges."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> int:
        """Add ``[start, end)``; returns how many bytes were new."""
        if end <= start:
            return 0
        i = bisect.bisect_left(self._ends, start)
        j = bisect.bisect_right(self._starts, end)
        covered = 0
        lo, hi = start, end
        for k in range(i, j):
            s, e = self._starts[k], self._ends[k]
            covered += min(e, end) - max(s, start) if min(e, end) > max(s, start) else 0
            lo, hi = min(lo, s), max(hi, e)
        self._starts[i:j] = [lo]
        self._ends[i:j] = [hi]
        return (end - start) - covered

    def covers(self, start: int, end: int) -> bool:
        """True when ``[start, end)`` is entirely in the set (empty: True)."""
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def clipped(self, start: int, end: int) -> list[tuple[int, int]]:
        """The ranges intersected with ``[start, end)``."""
        out = []
        i = bisect.bisect_right(self._ends, start)
        while i < len(self._starts) and self._starts[i] < end:
            out.append((max(self._starts[i], start), min(self._ends[i], end)))
            i += 1
        return out

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """What is missing of ``[start, end)``."""
        out = []
        at = start
        for s, e in self.clipped(start, end):
            if s > at:
                out.append((at, s))
            at = e
        if at < end:
            out.append((at, end))
        return out

    def __len__(self) -> int:
        return len(self._starts)

    def total(self) -> int:
        """Bytes in the set."""
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))
