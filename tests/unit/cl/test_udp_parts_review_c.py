"""Review C of the udp-parts fixes: a NEED round ends with the transfer's
last part, and a last part restarts a transfer completed moments ago (for
the sender's probe after a lost ACK). Together, every transfer repaired by
a round whose completing part is not the last one is started again by the
round's own last part: the receiver holds a buffer of ``total`` for it,
asks for everything but the last part at once, and the sender (whose ACK
comes only once the bundle is stored durably) sends the whole transfer a
second time."""

from __future__ import annotations

import random

from dcis.dtn.cl.udp import (
    MIN_PART_CHUNK_BYTES,
    PART_OVERHEAD_BYTES,
    PartSegment,
    SendDatagram,
    UdpLink,
    decode_datagram_untrusted,
)
from dcis.dtn.cl.udp_parts import PartAssembler

MTU = MIN_PART_CHUNK_BYTES + PART_OVERHEAD_BYTES
CHUNK = MTU - PART_OVERHEAD_BYTES
BIG = b"\x9f" + random.Random(1).randbytes(5 * CHUNK - 1)  # five parts


def _seg(o: object) -> PartSegment:
    assert isinstance(o, SendDatagram)
    assert isinstance(o.data, tuple)
    seg = decode_datagram_untrusted(b"".join(o.data))
    assert isinstance(seg, PartSegment)
    return seg


def test_a_repaired_transfer_is_not_started_again_by_its_rounds_last_part() -> None:
    link = UdpLink(
        local_node=1,
        neighbor=2,
        ack_timeout_s=1.0,
        max_tries=3,
        mtu_bytes=MTU,
        max_transfer_bytes=10_000,
        rng=random.Random(5),
    )
    rx = PartAssembler(
        max_transfer_bytes=len(BIG), max_partial_bytes=len(BIG), idle_timeout_s=60
    )
    first = link.transmit(7, BIG, now_s=0.0)
    needs = []
    for i, o in enumerate(first):
        if i == 1:
            continue  # part 1 lost
        r = rx.on_part(_seg(o), 0.0)
        if r.need:
            needs.append(r.need)
    assert needs == [((CHUNK, 2 * CHUNK),)]
    token = _seg(first[-1]).token
    # The round: part 1, then the last part. The ACK goes only once the
    # bundle is stored (a group commit later), the NEED at once.
    round_ = link.on_need(token, needs[0], 0.01)
    wholes = []
    later_needs = []
    for o in round_:
        r = rx.on_part(_seg(o), 0.02)
        if r.whole is not None:
            wholes.append(bytes(r.whole))
        elif r.need:
            later_needs.append(r.need)
    assert wholes == [BIG]
    # Nothing more is asked for and nothing is held for a delivered bundle ...
    assert later_needs == []
    assert (rx.partial_count, rx.partial_bytes) == (0, 0)
    # ... so the sender resends no more than the round (part 1 and the last).
    assert link.counters.parts_resent == 2
