"""The pieces a sender cuts (``fragment_at``, ``fragment_bundle``) are built
without re-validating each object (issue 18: ~20 of the ~45 us a 64 KB
piece cost): they must be exactly the fragments the validated constructors
built before -- equal values, the same field types, the same bytes -- for
any bundle (a fragment too) cut at any range."""

from __future__ import annotations

from dataclasses import fields, replace

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.bpv7 import BlockFlags, BlockType, Bundle, BundleFlags, encode_bundle
from dcis.dtn.bpv7.eid import is_null_eid
from dcis.dtn.bpv7.fragment import fragment_at, fragment_bundle, reassemble
from tests.property.bundle_strategies import bundles


def _validated_piece(b: Bundle, offset: int, size: int) -> Bundle:
    """The piece as fragment.py built it before (dataclasses.replace and
    Bundle's checks): the reference."""
    p = b.primary
    payload = b.payload
    primary = replace(
        p,
        flags=p.flags | BundleFlags.IS_FRAGMENT,
        fragment_offset=(p.fragment_offset or 0) + offset,
        total_adu_length=(
            p.total_adu_length if p.total_adu_length is not None else len(payload)
        ),
    )
    ext = b.blocks[:-1]
    no_clock = p.creation.time_ms == 0
    blocks = (
        ext
        if offset == 0
        else tuple(
            blk
            for blk in ext
            if blk.flags & BlockFlags.MUST_REPLICATE
            or (no_clock and blk.type_code == BlockType.BUNDLE_AGE)
        )
    )
    data = payload if size == len(payload) else payload[offset : offset + size]
    return Bundle(primary, (*blocks, replace(b.payload_block, data=data)))


@st.composite
def cuts(draw: st.DrawFn) -> tuple[Bundle, int, int]:
    b = draw(bundles(min_payload=1, max_payload=300))
    p = b.primary
    if p.flags & BundleFlags.MUST_NOT_FRAGMENT:
        b = Bundle(replace(p, flags=p.flags & ~BundleFlags.MUST_NOT_FRAGMENT), b.blocks)
    n = len(b.payload)
    offset = draw(st.integers(0, n - 1))
    return b, offset, draw(st.integers(1, n - offset))


def _same(got: Bundle, want: Bundle) -> None:
    assert got == want
    for obj, ref in (
        (got.primary, want.primary),
        *zip(got.blocks, want.blocks, strict=True),
    ):
        for f in fields(ref):  # type: ignore[arg-type]
            assert type(getattr(obj, f.name)) is type(getattr(ref, f.name)), f.name
    assert encode_bundle(got) == encode_bundle(want)


@given(cuts())
def test_a_piece_is_the_validated_fragment(cut: tuple[Bundle, int, int]) -> None:
    b, offset, size = cut
    _same(fragment_at(b, offset, size), _validated_piece(b, offset, size))


@given(cuts())
def test_a_split_is_the_validated_fragments(cut: tuple[Bundle, int, int]) -> None:
    b, offset, size = cut
    n = len(b.payload)
    sizes = [s for s in (offset, size, n - offset - size) if s]
    got = fragment_bundle(b, sizes)
    if len(sizes) == 1:
        assert got == [b]
        return
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for piece, start, s in zip(got, starts, sizes, strict=True):
        _same(piece, _validated_piece(b, start, s))


@st.composite
def overlapping_cover(draw: st.DrawFn) -> tuple[Bundle, list[Bundle]]:
    """A bundle and fragments of it that cover its payload, overlapping
    anywhere (pieces cut again by a sender that resends, say), in any order."""
    b = draw(bundles(fragment=False, min_payload=1, max_payload=300))
    p = b.primary
    if p.flags & BundleFlags.MUST_NOT_FRAGMENT:
        b = Bundle(replace(p, flags=p.flags & ~BundleFlags.MUST_NOT_FRAGMENT), b.blocks)
    n = len(b.payload)
    ranges = []
    end = 0
    while end < n:
        start = draw(st.integers(0, end))  # at or before the bytes covered
        size = draw(st.integers(end - start + 1, n - start))
        ranges.append((start, size))
        end = start + size
    ranges += draw(
        st.lists(
            st.integers(0, n - 1).flatmap(
                lambda o: st.tuples(st.just(o), st.integers(1, n - o))
            ),
            max_size=3,
        )
    )
    pieces = [fragment_at(b, o, s) for o, s in ranges]
    return b, draw(st.permutations(pieces))


@given(overlapping_cover())
def test_overlapping_pieces_reassemble_to_the_bundle(
    case: tuple[Bundle, list[Bundle]],
) -> None:
    b, pieces = case
    if is_null_eid(b.primary.source):
        return  # never reassembled (RFC 9171 4.2.3)
    whole = reassemble(pieces)
    assert whole == b
    assert type(whole.payload) is bytes
