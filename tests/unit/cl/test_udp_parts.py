"""PartAssembler: reassembly of PART segments (dcis.dtn.cl.udp_parts).

Examples: completion in any order (and from real decoded datagrams, whose
chunks are views), duplicates, the NEED ranges (and their cap), refused
parts (too big, conflicting total, no room), eviction of the least
recently progressed, expiry; and an h2-style sweep: every pair of
``TRANSFER_TRANSITIONS`` reached on a real assembler, with the next state
and the outcome its effect promises.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.cl.udp import (
    MAX_NEED_RANGES,
    MIN_PART_CHUNK_BYTES,
    PartSegment,
    decode_datagram_untrusted,
    encode_part_segments,
)
from dcis.dtn.cl.udp_parts import (
    TRANSFER_TRANSITIONS,
    PartAssembler,
    PartResult,
    TransferEffect,
    TransferInput,
    TransferState,
    _fill,
)
from dcis.dtn.errors import InvalidArgument

BUNDLE = b"\x9f" + bytes(range(256)) * 4 + b"\xff"  # 1026 bytes


def asm(**kw: float) -> PartAssembler:
    args: dict[str, float] = {
        "max_transfer_bytes": 10_000,
        "max_partial_bytes": 3_000,
        "idle_timeout_s": 10.0,
    }
    args.update(kw)
    return PartAssembler(
        int(args["max_transfer_bytes"]),
        int(args["max_partial_bytes"]),
        args["idle_timeout_s"],
        int(args.get("max_transfers", 256)),
        # Small chunks unless a test says otherwise (the default, 512, is
        # tested below).
        int(args.get("min_chunk_bytes", 1)),
    )


def part(
    start: int, end: int, *, data: bytes = BUNDLE, token: int = 7, sender: int = 1
) -> PartSegment:
    return PartSegment(sender, token, start, len(data), data[start:end])


def cuts(n: int, size: int = 100) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


@pytest.mark.parametrize("seed", range(8))
def test_completes_in_any_order(seed: int) -> None:
    a = asm()
    ranges = cuts(len(BUNDLE))
    random.Random(seed).shuffle(ranges)
    results = [a.on_part(part(s, e), float(i)) for i, (s, e) in enumerate(ranges)]
    assert all(r.whole is None for r in results[:-1])
    assert results[-1] == PartResult(whole=bytearray(BUNDLE))
    assert (a.partial_count, a.partial_bytes, a.next_deadline()) == (0, 0, None)
    assert a.counters.completed == 1
    assert a.counters.parts_in == len(ranges)
    assert a.counters.duplicates == 0


def test_completes_from_decoded_datagrams() -> None:
    a = asm()
    segs = encode_part_segments(
        sender=3, token=2**63 + 5, bundle=BUNDLE, chunk_bytes=300
    )
    got = []
    for bufs, _, _ in reversed(segs):
        seg = decode_datagram_untrusted(b"".join(bufs))
        assert isinstance(seg, PartSegment)
        got.append(a.on_part(seg, 0.0))
    assert got[-1].whole == bytearray(BUNDLE)
    assert got[0].need == ((0, 900),)  # the last chunk came first


def test_one_part_transfer_is_never_partial() -> None:
    a = asm(max_partial_bytes=10)
    r = a.on_part(part(0, len(BUNDLE)), 0.0)
    assert r.whole == bytearray(BUNDLE)
    assert a.partial_count == 0
    assert a.counters.completed == 1


def test_duplicates_are_written_again_and_counted() -> None:
    a = asm()
    data = bytearray(BUNDLE)
    assert a.on_part(part(100, 300), 0.0) == PartResult()
    assert a.on_part(part(100, 200), 1.0) == PartResult()  # inside: a duplicate
    assert a.on_part(part(200, 300), 1.0) == PartResult()  # touching its end
    assert a.counters.duplicates == 2
    forged = bytearray(BUNDLE)
    forged[250:400] = b"\x00" * 150  # overlapping and adding bytes: not a duplicate
    assert a.on_part(part(250, 400, data=bytes(forged)), 2.0) == PartResult()
    assert a.counters.duplicates == 2
    a.on_part(part(0, 100), 3.0)
    r = a.on_part(part(400, len(BUNDLE)), 4.0)
    # The first copy of each byte is kept: 250..300 as first held, only
    # 300..400 from the overlapping chunk.
    data[300:400] = b"\x00" * 100
    assert r.whole == data


def test_need_lists_the_gaps_when_the_last_chunk_arrives() -> None:
    a = asm()
    assert a.on_part(part(100, 200), 0.0).need == ()
    r = a.on_part(part(1000, len(BUNDLE)), 0.0)
    assert r.need == ((0, 100), (200, 1000))
    assert a.on_part(part(400, 500), 0.0).need == ()  # not the last
    # The sender's probe (the last part again) is answered too.
    assert a.on_part(part(1000, len(BUNDLE)), 0.0).need == (
        (0, 100),
        (200, 400),
        (500, 1000),
    )
    assert a.counters.needs == 2


@pytest.mark.parametrize("first", [0, 1])
def test_need_is_capped_to_the_first_ranges(first: int) -> None:
    """Every other chunk of 10 bytes, from the first or the second, and the
    last: gaps from 0 or from 10, the first MAX_NEED_RANGES of them."""
    a = asm()
    data = bytes(2000)
    chunks = cuts(2000, 10)
    for s, e in [*chunks[first::2], chunks[-1]]:
        r = a.on_part(part(s, e, data=data), 0.0)
    gap = 10 * (1 - first)
    assert r.need == tuple(
        (s, s + 10) for s in range(gap, gap + 20 * MAX_NEED_RANGES, 20)
    )


def test_refused_parts() -> None:
    a = asm(max_transfer_bytes=1_000)
    r = a.on_part(part(0, len(BUNDLE)), 0.0)  # 1026 > 1000, even in one part
    assert r.whole is None
    assert r.dropped is not None
    assert "1026" in r.dropped
    a = asm(max_partial_bytes=1_000)
    assert a.on_part(part(0, 100), 0.0).dropped is not None
    assert a.partial_count == 0
    a = asm()
    a.on_part(part(0, 100), 0.0)
    other = PartSegment(1, 7, 100, 2000, BUNDLE[100:200])
    assert a.on_part(other, 0.0).dropped == "total 2000, first said 1026"
    assert a.partial_bytes == len(BUNDLE)
    c = a.counters
    assert (c.dropped_too_big, c.dropped_no_room, c.dropped_conflict) == (0, 0, 1)
    with pytest.raises(InvalidArgument):
        a.on_part(PartSegment(1, 7, 2000, len(BUNDLE), b"x"), 0.0)
    with pytest.raises(InvalidArgument):
        a.on_part(PartSegment(1, 7, 5, len(BUNDLE), b""), 0.0)


def test_eviction_takes_the_least_recently_progressed() -> None:
    a = asm(max_partial_bytes=2 * len(BUNDLE))
    a.on_part(part(0, 100, token=1), 0.0)
    a.on_part(part(0, 100, token=2), 1.0)
    a.on_part(part(0, 100, token=1), 2.0)  # a duplicate is no progress
    a.on_part(part(100, 200, token=1), 3.0)  # token 2 is now the oldest
    a.on_part(part(0, 100, token=3), 4.0)
    assert a.counters.evicted == 1
    assert a.partial_count == 2
    # Token 1 kept its bytes; token 2 starts afresh.
    assert a.on_part(part(200, len(BUNDLE), token=1), 5.0).whole == bytearray(BUNDLE)
    assert a.on_part(part(100, len(BUNDLE), token=2), 5.0).need == ((0, 100),)
    b = asm(max_transfers=1)
    b.on_part(part(0, 100, token=1), 0.0)
    b.on_part(part(0, 100, token=2), 0.0)
    assert (b.partial_count, b.counters.evicted) == (1, 1)


def test_expiry_forgets_partials_without_progress() -> None:
    a = asm()
    a.on_part(part(0, 100, token=1), 0.0)
    a.on_part(part(0, 100, token=2), 4.0)
    a.on_part(part(0, 100, token=1), 6.0)  # duplicate: the deadline stays
    assert a.next_deadline() == 10.0
    assert a.expire(9.9) == 0
    assert a.expire(10.0) == 1
    assert a.next_deadline() == 14.0
    assert a.expire(100.0) == 1
    assert (a.partial_count, a.partial_bytes, a.counters.expired) == (0, 0, 2)
    assert a.next_deadline() is None


@pytest.mark.parametrize(
    "kw",
    [
        {"max_transfer_bytes": 0},
        {"max_transfer_bytes": 2**32},
        {"max_partial_bytes": 0},
        {"max_transfers": 0},
        {"idle_timeout_s": 0.0},
        {"idle_timeout_s": math.inf},
        {"idle_timeout_s": math.nan},
    ],
)
def test_bad_arguments(kw: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        asm(**kw)


def held(a: PartAssembler) -> TransferState:
    present = a.partial_count > 0
    return TransferState.ASSEMBLING if present else TransferState.ABSENT


def drive(
    state: TransferState, event: TransferInput
) -> tuple[PartAssembler, TransferState, PartResult | int]:
    """An assembler with token 7 in ``state`` and what applying ``event``
    gave: the assembler, its state before, the result (or count)."""
    a = asm(
        max_transfer_bytes=2_000,
        max_partial_bytes=1_500,
        max_transfers=1,
        min_chunk_bytes=20,
    )
    if event is TransferInput.SMALL and state is TransferState.ABSENT:
        return a, held(a), a.on_part(part(0, 10), 0.0)
    if event is TransferInput.LATE:
        a.on_part(part(0, 100), 0.0)
        a.on_part(part(100, len(BUNDLE)), 0.0)  # completed
        return a, held(a), a.on_part(part(0, 100), 1.0)
    if event is TransferInput.TOO_BIG:
        return a, held(a), a.on_part(part(0, 10, data=bytes(2001)), 0.0)
    if event is TransferInput.NO_ROOM:
        return a, held(a), a.on_part(part(0, 10, data=bytes(1600)), 0.0)
    first = part(0, 100)
    if event is TransferInput.FIRST_PART:
        return a, held(a), a.on_part(first, 0.0)
    if event is TransferInput.COMPLETE and state is TransferState.ABSENT:
        return a, held(a), a.on_part(part(0, len(BUNDLE)), 0.0)
    a.on_part(first, 0.0)
    before = held(a)
    if event is TransferInput.PART:
        return a, before, a.on_part(part(100, 200), 1.0)
    if event is TransferInput.DUPLICATE:
        return a, before, a.on_part(part(0, 50), 1.0)
    if event is TransferInput.COMPLETE:
        return a, before, a.on_part(part(100, len(BUNDLE)), 1.0)
    if event is TransferInput.CONFLICT:
        return a, before, a.on_part(PartSegment(1, 7, 0, 999, b"x" * 30), 1.0)
    if event is TransferInput.SMALL:
        return a, before, a.on_part(part(100, 110), 1.0)
    if event is TransferInput.IDLE:
        return a, before, a.expire(10.0)
    return a, before, a.on_part(part(0, 100, token=8), 1.0)  # EVICT


@pytest.mark.parametrize(("pair", "step"), list(TRANSFER_TRANSITIONS.items()))
def test_every_transition(
    pair: tuple[TransferState, TransferInput],
    step: tuple[TransferState, TransferEffect],
) -> None:
    state, event = pair
    a, before, out = drive(state, event)
    assert before is state
    after, effect = step
    c = a.counters
    if event is TransferInput.EVICT:  # the evicted one is token 7, not the new one
        assert (c.evicted, a.partial_count) == (1, 1)
        return
    assert held(a) is after
    if effect is TransferEffect.DELIVER:
        assert isinstance(out, PartResult)
        assert out.whole == bytearray(BUNDLE)
    elif effect is TransferEffect.DROP:
        assert isinstance(out, PartResult)
        assert out.dropped
        assert (
            c.dropped_too_big
            + c.dropped_no_room
            + c.dropped_conflict
            + c.dropped_small
            + c.dropped_late
            == 1
        )
    elif effect is TransferEffect.FORGET:
        assert (out, c.expired) == (1, 1)
    else:
        assert out == PartResult()
        assert c.duplicates == (effect is TransferEffect.KEEP)


@given(
    st.lists(st.integers(0, 64), min_size=0, max_size=8, unique=True).map(sorted),
    st.integers(0, 63),
    st.integers(1, 64),
)
def test_a_chunk_fills_only_the_bytes_not_held_yet(
    bounds: list[int], off: int, length: int
) -> None:
    # Held ranges (flat bounds, an even count) hold 0xAA; a chunk of 0x55
    # writes only where nothing was held: the first copy of a byte is kept.
    have = bounds[: len(bounds) // 2 * 2]
    end = min(off + length, 64)
    buf = bytearray(64)
    for lo, hi in zip(have[::2], have[1::2], strict=True):
        buf[lo:hi] = b"\xaa" * (hi - lo)
    want = bytearray(buf)
    for i in range(off, end):
        if not any(lo <= i < hi for lo, hi in zip(have[::2], have[1::2], strict=True)):
            want[i] = 0x55
    _fill(buf, have, off, end, b"\x55" * (end - off))
    assert buf == want


def test_a_small_chunk_is_refused_unless_it_ends_the_transfer() -> None:
    a = asm(min_chunk_bytes=MIN_PART_CHUNK_BYTES)
    total = 4 * MIN_PART_CHUNK_BYTES
    data = b"\x9f" + bytes(range(256)) * (total // 256)
    data = data[:total]

    def p(lo: int, hi: int) -> PartSegment:
        return PartSegment(1, 9, lo, total, data[lo:hi])

    assert a.on_part(p(0, 511), 0.0).dropped is not None  # refused, nothing held
    assert a.partial_count == 0
    assert a.on_part(p(0, 512), 0.0) == PartResult()
    assert a.on_part(p(600, 700), 0.0).dropped is not None  # inside: still refused
    assert a.counters.dropped_small == 2
    assert a.on_part(p(512, total - 10), 0.0) == PartResult()
    got = a.on_part(p(total - 10, total), 0.0)  # the last may be short
    assert got.whole == data


def test_a_late_part_of_a_completed_transfer_holds_nothing() -> None:
    # A reordered or duplicated middle part after its transfer completed
    # starts nothing (no buffer of its total); the last part still does,
    # as the sender's probe after a lost ACK, and is answered with a NEED.
    a = asm(idle_timeout_s=10.0)
    total = 300
    data = b"\x9f" + bytes(total - 1)

    def p(lo: int, hi: int) -> PartSegment:
        return PartSegment(1, 9, lo, total, data[lo:hi])

    a.on_part(p(0, 100), 0.0)
    a.on_part(p(100, 200), 0.0)
    assert a.on_part(p(200, 300), 0.0).whole == data
    assert a.on_part(p(100, 200), 1.0).dropped is not None
    assert a.partial_bytes == 0
    assert a.counters.dropped_late == 1
    assert a.on_part(p(200, 300), 2.0).need == ((0, 200),)  # the probe
    a.expire(15.0)  # the probe's partial and the completion are forgotten
    assert a.partial_bytes == 0
    assert a.on_part(p(100, 200), 16.0) == PartResult()  # a new transfer again
