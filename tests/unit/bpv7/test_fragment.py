"""Fragmentation (RFC 9171 5.8) and reassembly by example."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from dcis.dtn.bpv7 import (
    DTN_NONE,
    BlockFlags,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    CrcType,
    Reassembler,
    decode_bundle_untrusted,
    encode_bundle,
    fragment_bundle,
    make_bundle,
    reassemble,
)
from dcis.dtn.bpv7.fragment import fragment_at
from dcis.dtn.errors import InvalidArgument

REPL = CanonicalBlock(192, 5, BlockFlags.MUST_REPLICATE, CrcType.CRC16, b"rep")
ONCE = CanonicalBlock(193, 6, BlockFlags.NONE, CrcType.NONE, b"once")


def original() -> Bundle:
    return make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=bytes(range(100)),
        creation_ms=42,
        hop_limit=9,
        extra_blocks=[REPL, ONCE],
    )


def test_fragments_carry_offsets_and_replicate_exactly_must_replicate_blocks() -> None:
    frags = fragment_bundle(original(), 30)
    assert [f.primary.fragment_offset for f in frags] == [0, 30, 60, 90]
    assert all(f.primary.total_adu_length == 100 for f in frags)
    assert all(f.primary.flags & BundleFlags.IS_FRAGMENT for f in frags)
    assert [len(f.payload) for f in frags] == [30, 30, 30, 10]
    assert [b.number for b in frags[0].blocks] == [2, 5, 6, 1]
    for f in frags[1:]:
        assert f.blocks == (REPL, f.payload_block)
    # Each fragment is a valid bundle on the wire.
    for f in frags:
        assert decode_bundle_untrusted(encode_bundle(f)) == f
    assert len({f.bundle_key for f in frags}) == 4


def test_every_fragment_of_a_bundle_with_no_creation_time_carries_its_age() -> None:
    # RFC 9171 4.4.2: a bundle whose creation time is 0 MUST carry a bundle
    # age block, and each fragment is such a bundle. Without it a later hop
    # counts the fragment's age from its own arrival and keeps it past its
    # lifetime. With a creation time the age block stays in the first only.
    def make(creation_ms: int) -> Bundle:
        return make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=bytes(range(100)),
            creation_ms=creation_ms,
            bundle_age_ms=50_000,
            extra_blocks=[REPL, ONCE],
        )

    for f in [*fragment_bundle(make(0), 30), fragment_at(make(0), 60, 40)]:
        assert f.bundle_age_ms == 50_000
        assert decode_bundle_untrusted(encode_bundle(f)) == f
    later = fragment_bundle(make(42), 30)
    assert later[0].bundle_age_ms == 50_000
    assert all(f.bundle_age_ms is None for f in later[1:])
    assert reassemble(fragment_bundle(make(0), 30)) == make(0)


def test_reassemble_any_order_and_fragments_of_fragments() -> None:
    b = original()
    frags = fragment_bundle(b, [10, 50, 40])
    refrag = [*fragment_bundle(frags[1], 7), frags[2], frags[0]]
    assert refrag[0].primary.fragment_offset == 10
    assert reassemble(reversed(refrag)) == b


def test_incomplete_and_mixed_sets_rejected() -> None:
    frags = fragment_bundle(original(), 30)
    with pytest.raises(InvalidArgument, match="incomplete"):
        reassemble(frags[:2])
    with pytest.raises(InvalidArgument, match="offset 0"):
        reassemble(frags[1:])
    other = fragment_bundle(
        make_bundle(
            source="ipn:9.1", destination="ipn:2.1", payload=bytes(100), creation_ms=42
        ),
        30,
    )
    with pytest.raises(InvalidArgument, match="does not belong"):
        reassemble([*frags[:2], *other[2:]])


def test_must_not_fragment_and_bad_sizes() -> None:
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"abc",
        creation_ms=1,
        flags=BundleFlags.MUST_NOT_FRAGMENT,
    )
    with pytest.raises(InvalidArgument, match="MUST_NOT_FRAGMENT"):
        fragment_bundle(b, 1)
    assert fragment_bundle(b, 3) == [b]
    with pytest.raises(InvalidArgument, match="sum to"):
        fragment_bundle(original(), [10, 10])
    with pytest.raises(InvalidArgument, match=">= 1"):
        fragment_bundle(original(), 0)


def test_one_fragment_at_a_time_is_the_fragment_of_a_whole_split() -> None:
    # What a sender cutting a bundle as it transmits makes, piece by piece
    # (the agent's fragmentation at transmission): the same fragments,
    # offsets relative to the ADU for a fragment of a fragment too.
    b = original()
    sizes = [30, 30, 30, 10]
    offsets = [0, 30, 60, 90]
    assert [fragment_at(b, o, s) for o, s in zip(offsets, sizes, strict=True)] == (
        fragment_bundle(b, sizes)
    )
    middle = fragment_bundle(b, [10, 50, 40])[1]
    assert [fragment_at(middle, 0, 20), fragment_at(middle, 20, 30)] == (
        fragment_bundle(middle, [20, 30])
    )
    assert fragment_at(middle, 20, 30).primary.fragment_offset == 30
    for off, size in ((0, 0), (-1, 5), (95, 6), (100, 1)):
        with pytest.raises(InvalidArgument, match="within"):
            fragment_at(b, off, size)
    mnf = replace(b, primary=replace(b.primary, flags=BundleFlags.MUST_NOT_FRAGMENT))
    with pytest.raises(InvalidArgument, match="MUST_NOT_FRAGMENT"):
        fragment_at(mnf, 0, 10)


def test_reassembler_collects_by_original_id() -> None:
    r = Reassembler()
    b = original()
    frags = fragment_bundle(b, 25)
    assert r.add(frags[3]) is None
    assert r.add(frags[0]) is None
    assert r.add(frags[0]) is None  # duplicate
    assert r.pending_keys == [b.original_key]
    assert r.add(frags[2]) is None
    assert r.add(frags[1]) == b
    assert len(r) == 0


def test_reassembler_bounds_pending() -> None:
    r = Reassembler(max_pending=2)
    for src in (1, 2, 3):
        f = fragment_bundle(
            make_bundle(
                source=f"ipn:{src}.1",
                destination="ipn:9.1",
                payload=bytes(10),
                creation_ms=1,
            ),
            5,
        )[0]
        r.add(f)
    assert len(r) == 2
    assert r.dropped == ["ipn:1.1|1|0"]


def test_reassembler_bounds_pending_bytes() -> None:
    r = Reassembler(max_pending_bytes=100)
    firsts = [
        fragment_bundle(
            make_bundle(
                source=f"ipn:{s}.1",
                destination="ipn:9.1",
                payload=bytes(120),
                creation_ms=1,
            ),
            60,
        )[0]
        for s in (1, 2, 3)
    ]
    for f in firsts:
        assert r.add(f) is None
    assert r.pending_keys == ["ipn:3.1|1|0"]
    assert r.dropped == ["ipn:1.1|1|0", "ipn:2.1|1|0"]
    assert r.pending_bytes == 60
    r.discard("ipn:3.1|1|0")
    assert r.pending_bytes == 0


def test_empty_payload_is_not_fragmented() -> None:
    b = make_bundle(source="ipn:1.1", destination="ipn:2.1", payload=b"", creation_ms=1)
    assert fragment_bundle(b, []) == [b]
    assert fragment_bundle(b, 10) == [b]


def _one_byte_pieces(payload_len: int, src: int = 1) -> list[Bundle]:
    b = make_bundle(
        source=f"ipn:{src}.1",
        destination="ipn:9.1",
        payload=bytes(range(256)) * (payload_len // 256) + bytes(payload_len % 256),
        creation_ms=1,
    )
    return fragment_bundle(b, 1)


def test_reassembler_ignores_empty_fragments() -> None:
    # An empty fragment covers nothing; holding it would let a peer grow the
    # reassembler without bound while pending_bytes stays 0.
    first = _one_byte_pieces(10_000)[0]
    r = Reassembler()
    for off in range(0, 5000):
        empty = Bundle(
            replace(first.primary, fragment_offset=off),
            (*first.blocks[:-1], replace(first.payload_block, data=b"")),
        )
        assert r.add(empty) is None
    assert r.pending_fragments == 0


def test_reassembler_drops_a_single_bundle_over_the_byte_bound() -> None:
    # Overlapping fragments of distinct (offset, length) of ONE bundle must not
    # grow past max_pending_bytes either.
    r = Reassembler(max_pending_bytes=100)
    b = make_bundle(
        source="ipn:1.1", destination="ipn:9.1", payload=bytes(1000), creation_ms=1
    )
    for size in (60, 61, 62):
        assert r.add(fragment_bundle(b, size)[0]) is None
        assert r.pending_bytes <= 100
    assert r.dropped == [b.original_key]
    assert len(r) <= 1


def test_reassembler_bounds_fragment_count() -> None:
    r = Reassembler(max_pending_fragments=50)
    pieces = _one_byte_pieces(1000)
    for f in pieces[:200]:
        assert r.add(f) is None
    assert r.pending_fragments <= 50
    assert r.dropped


def test_reassembler_many_small_fragments_any_order() -> None:
    pieces = _one_byte_pieces(3000)
    whole = reassemble(pieces)
    random.Random(7).shuffle(pieces)
    r = Reassembler()
    out = [r.add(f) for f in pieces]
    assert out[-1] == whole
    assert all(x is None for x in out[:-1])
    assert len(r) == 0
    assert r.pending_bytes == 0
    assert r.pending_fragments == 0


def test_reassembler_completes_a_bundle_larger_than_the_byte_bound() -> None:
    # The bound is on what *incomplete* bundles hold: the fragment that
    # completes a bundle is not refused for pushing past it.
    r = Reassembler(max_pending_bytes=100)
    b = make_bundle(
        source="ipn:1.1", destination="ipn:9.1", payload=bytes(150), creation_ms=1
    )
    first, second = fragment_bundle(b, [90, 60])
    assert r.add(first) is None
    assert r.add(second) == b
    assert r.dropped == []
    assert r.pending_bytes == 0


def test_fragments_of_anonymous_bundles_are_never_reassembled() -> None:
    # RFC 9171 4.2.3: a bundle whose source is the null endpoint is not
    # uniquely identifiable, so it must not be fragmented: fragments of two
    # such bundles created in the same millisecond would share one ID and
    # be reassembled into one corrupt payload.
    named = fragment_bundle(
        make_bundle(
            source="ipn:1.1", destination="ipn:9.1", payload=bytes(100), creation_ms=1
        ),
        30,
    )
    forged = [Bundle(replace(f.primary, source=DTN_NONE), f.blocks) for f in named]
    r = Reassembler()
    assert [r.add(f) for f in forged] == [None] * len(forged)
    assert len(r) == 0
    with pytest.raises(InvalidArgument, match="null"):
        reassemble(forged)


def test_flags_without_a_name_survive_fragmentation_and_reassembly() -> None:
    # Bits RFC 9171 4.2.3 leaves unassigned are carried as the source set
    # them: the reassembled bundle is the one fragmented, byte for byte.
    b = original()
    unassigned = 1 << 30
    b = Bundle(replace(b.primary, flags=b.primary.flags | unassigned), b.blocks)
    frags = [decode_bundle_untrusted(encode_bundle(f)) for f in fragment_bundle(b, 30)]
    assert all(int(f.primary.flags) & unassigned for f in frags)
    whole = reassemble(frags)
    assert int(whole.primary.flags) & unassigned
    assert encode_bundle(whole) == encode_bundle(b)
