"""The simulator's trace: one line per event, hashed as it is written.

The trace is never held whole in memory: each record updates a running
SHA-256 (``digest``) and, when a sink is given, is written to it at once. Two
runs with the same inputs and seed produce the same digest, which is how a
test checks determinism "event for event".

Record format (one line, space separated, ``\\n`` terminated)::

    T_US KIND NODE FIELD...

``T_US`` is virtual time in integer microseconds of plan time. Bytes carried
by a transmission are fed into the hash as well (after the line), so two runs
that move different bytes never share a digest.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import TextIO

__all__ = ["Trace", "TraceListener"]

TraceListener = Callable[[int, str, int, tuple[object, ...]], None]
"""Called as ``listener(t_us, kind, node, fields)`` for every record."""


class Trace:
    """Incrementally hashed event trace with an optional text sink."""

    __slots__ = ("_hash", "_listener", "_sink", "counts")

    def __init__(
        self, sink: TextIO | None = None, listener: TraceListener | None = None
    ) -> None:
        self._hash = hashlib.sha256()
        self._sink = sink
        self._listener = listener
        self.counts: Counter[str] = Counter()
        """Records written so far, by kind."""

    def record(
        self,
        t_us: int,
        kind: str,
        node: int,
        *fields: object,
        data: bytes | None = None,
    ) -> None:
        """Append one record; ``data`` (if any) is hashed but not written out."""
        if fields:
            line = f"{t_us} {kind} {node} {' '.join([str(f) for f in fields])}\n"
        else:
            line = f"{t_us} {kind} {node}\n"
        self._hash.update(line.encode())
        if data is not None:
            self._hash.update(data)
        self.counts[kind] += 1
        if self._sink is not None:
            self._sink.write(line)
        if self._listener is not None:
            self._listener(t_us, kind, node, fields)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 over every record so far (the run's fingerprint)."""
        return self._hash.hexdigest()
