"""Contacts and ranges: the two kinds of entries in a contact plan.

Times are seconds on the plan's clock (plan time 0 is the plan's reference
time, ION's ``@``); a driver maps them to DTN time with the plan epoch.
Nodes are ipn node numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dcis.dtn.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Contact:
    """A scheduled transmission opportunity from ``frm`` to ``to``.

    ``rate_bytes_s`` is the data rate in bytes per second; ``confidence`` is
    the probability the contact happens (1.0 = scheduled).
    """

    frm: int
    to: int
    start_s: float
    end_s: float
    rate_bytes_s: float
    confidence: float = 1.0

    def __post_init__(self) -> None:
        if self.frm < 0 or self.to < 0:
            raise InvalidArgument(
                f"node numbers must be >= 0, got {self.frm}->{self.to}"
            )
        if self.end_s < self.start_s:
            raise InvalidArgument(
                f"contact {self.frm}->{self.to} ends ({self.end_s}) before it starts ({self.start_s})"
            )
        if self.rate_bytes_s < 0:
            raise InvalidArgument(
                f"contact {self.frm}->{self.to} has negative rate {self.rate_bytes_s}"
            )
        if not 0.0 <= self.confidence <= 1.0:
            raise InvalidArgument(
                f"contact confidence must be in [0, 1], got {self.confidence}"
            )

    @property
    def volume_bytes(self) -> float:
        """Bytes the contact can carry over its whole window."""
        return (self.end_s - self.start_s) * self.rate_bytes_s


@dataclass(frozen=True, slots=True)
class Range:
    """One-way light time ``owlt_s`` from ``frm`` to ``to`` during [start_s, end_s]."""

    frm: int
    to: int
    start_s: float
    end_s: float
    owlt_s: float

    def __post_init__(self) -> None:
        if self.end_s < self.start_s:
            raise InvalidArgument(f"range {self.frm}->{self.to} ends before it starts")
        if not 0 <= self.owlt_s < math.inf:  # NaN fails too
            raise InvalidArgument(
                f"range {self.frm}->{self.to} has light time {self.owlt_s}:"
                " not a finite number >= 0"
            )
