"""Traffic files for the simulator: when to send which bundles.

One item per line::

    AT_SECONDS SRC_NODE DST_NODE SIZE_BYTES [COUNT]

``AT_SECONDS`` is plan time (seconds, >= 0, may be fractional); the nodes are
ipn node numbers; ``SIZE_BYTES`` is the payload size (>= 1); ``COUNT``
(default 1) sends that many bundles at the same instant. ``#`` starts a
comment; blank lines are ignored. Each bundle goes from ``ipn:SRC.1`` to
``ipn:DST.1``. Bounds (a typo must not exhaust memory): SIZE_BYTES <=
64 MiB, COUNT <= 100,000, and 1,000,000 bundles per file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dcis.dtn.errors import InvalidArgument

__all__ = ["MAX_BUNDLES", "MAX_COUNT", "MAX_SIZE_BYTES", "TrafficItem", "parse_traffic"]

MAX_SIZE_BYTES = 64 * 1024 * 1024
"""Largest payload one traffic line may ask for: each bundle is built in memory."""
MAX_COUNT = 100_000
"""Most bundles one traffic line may ask for."""
MAX_BUNDLES = 1_000_000
"""Most bundles a whole traffic file may ask for."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficItem:
    """``count`` bundles of ``size_bytes`` payload from node ``src`` to ``dst`` at plan time ``at_s``."""

    at_s: float
    src: int
    dst: int
    size_bytes: int
    count: int = 1
    line: int = 0
    """Line number in the traffic file (1-based), 0 when built in code."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.at_s) or self.at_s < 0:
            raise InvalidArgument(
                f"send time must be a finite number >= 0, got {self.at_s}"
            )
        if not (0 <= self.src < 2**64 and 0 <= self.dst < 2**64):
            raise InvalidArgument(
                f"node numbers must be in 0..2^64-1, got {self.src} -> {self.dst}"
            )
        if self.src == self.dst:
            raise InvalidArgument(
                f"source and destination are the same node ({self.src})"
            )
        if not 1 <= self.size_bytes <= MAX_SIZE_BYTES:
            raise InvalidArgument(
                f"size must be in 1..{MAX_SIZE_BYTES} bytes, got {self.size_bytes}"
            )
        if not 1 <= self.count <= MAX_COUNT:
            raise InvalidArgument(f"count must be in 1..{MAX_COUNT}, got {self.count}")


def _int_field(text: str, name: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {text!r}") from None


def parse_traffic(text: str) -> list[TrafficItem]:
    """Parse a traffic file's text into items sorted by send time (stable).

    Raises :class:`~dcis.dtn.errors.InvalidArgument` naming the 1-based line number
    of the first bad line (wrong field count, non-numeric, negative values,
    source equal to destination).
    """
    items: list[TrafficItem] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        try:
            if len(fields) not in (4, 5):
                raise InvalidArgument(
                    f"expected 'AT_SECONDS SRC_NODE DST_NODE SIZE_BYTES [COUNT]', got {len(fields)} fields"
                )
            try:
                at_s = float(fields[0])
            except ValueError:
                raise InvalidArgument(
                    f"AT_SECONDS must be a number, got {fields[0]!r}"
                ) from None
            items.append(
                TrafficItem(
                    at_s=at_s,
                    src=_int_field(fields[1], "SRC_NODE"),
                    dst=_int_field(fields[2], "DST_NODE"),
                    size_bytes=_int_field(fields[3], "SIZE_BYTES"),
                    count=_int_field(fields[4], "COUNT") if len(fields) == 5 else 1,
                    line=lineno,
                )
            )
        except InvalidArgument as exc:
            raise InvalidArgument(f"traffic line {lineno}: {exc}") from None
    if sum(it.count for it in items) > MAX_BUNDLES:
        raise InvalidArgument(
            f"the traffic asks for more than {MAX_BUNDLES} bundles in all"
        )
    items.sort(key=lambda it: it.at_s)
    return items
