"""Review of udp-parts (reviewer A): tests for the defects found (the
first, NEED rounds that did not draw the next NEED, is in
test_udp_link_parts.py).

- Range bookkeeping of a partial is not counted in ``max_partial_bytes``:
  tiny parts at alternate offsets hold one Python list entry pair per part.
- A late part of a transfer already delivered starts a new partial of the
  whole ``total``.
"""

from __future__ import annotations

import tracemalloc

from dcis.dtn.cl.udp import (
    PART_OVERHEAD_BYTES,
    PartSegment,
)
from dcis.dtn.cl.udp_parts import PartAssembler

MTU = 200
CHUNK = MTU - PART_OVERHEAD_BYTES


def test_range_bookkeeping_stays_within_the_partial_bytes_bound() -> None:
    total = 200_000
    rx = PartAssembler(
        max_transfer_bytes=total, max_partial_bytes=total, idle_timeout_s=60
    )
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # One byte every other byte: refused (chunks under 512 bytes but
        # the last), nothing held.
        for off in range(2, 2_000, 2):
            r = rx.on_part(PartSegment(9, 1, off, total, b"x"), 0.0)
            assert r.dropped is not None
        assert rx.partial_count == 0
        # The smallest chunks taken, one every other slot (each a new range).
        for off in range(512, total - 1024, 1024):
            r = rx.on_part(PartSegment(9, 1, off, total, b"x" * 512), 0.0)
            assert r.dropped is None
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert rx.partial_count == 1
    assert held <= 2 * total, f"{held} bytes held for a {total}-byte partial"


def test_a_late_part_of_a_delivered_transfer_holds_nothing() -> None:
    data = b"\x9f" + bytes(1999)
    rx = PartAssembler(
        max_transfer_bytes=2000, max_partial_bytes=2000, idle_timeout_s=60
    )
    assert rx.on_part(PartSegment(1, 7, 1000, 2000, data[1000:]), 0.0).need
    assert rx.on_part(PartSegment(1, 7, 0, 2000, data[:1000]), 0.0).whole == bytearray(
        data
    )
    # A second NEED round (the first NEED was answered twice) arrives late.
    late = rx.on_part(PartSegment(1, 7, 0, 2000, data[:1000]), 1.0)
    assert late.whole is None
    assert (rx.partial_count, rx.partial_bytes) == (0, 0)
