"""DTN time: milliseconds since 2000-01-01T00:00:00Z (RFC 9171 section 4.2.6).

Cores take time as a parameter; only drivers read a clock. This module holds
the type and pure conversions, never a clock read.
"""

from __future__ import annotations

from typing import NewType

DtnTime = NewType("DtnTime", int)
"""Milliseconds since the DTN epoch, 2000-01-01T00:00:00Z."""

# Seconds between the Unix epoch (1970-01-01) and the DTN epoch (2000-01-01).
DTN_EPOCH_UNIX_S = 946_684_800


def dtn_time_from_unix(unix_s: float) -> DtnTime:
    """Convert Unix seconds (e.g. a driver's ``time.time()``) to DTN time ms."""
    return DtnTime(round((unix_s - DTN_EPOCH_UNIX_S) * 1000))


def unix_from_dtn_time(t: DtnTime) -> float:
    """Convert DTN time ms to Unix seconds."""
    return t / 1000 + DTN_EPOCH_UNIX_S
