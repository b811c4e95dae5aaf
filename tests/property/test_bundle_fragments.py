"""Fragment any bundle at any offsets; reassemble in any order (RFC 9171 5.8)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcis.dtn.bpv7 import (
    BlockFlags,
    BlockType,
    Bundle,
    BundleFlags,
    Reassembler,
    decode_bundle_untrusted,
    encode_bundle,
    fragment_bundle,
    reassemble,
)
from dcis.dtn.bpv7.eid import IpnEid, is_null_eid
from tests.conftest import IS_CI
from tests.property.bundle_strategies import bundles


@st.composite
def cut(draw: st.DrawFn) -> tuple[Bundle, list[int]]:
    b = draw(bundles(fragment=False, min_payload=1, max_payload=300))
    p = b.primary
    b = Bundle(
        type(p)(
            **{
                **{f: getattr(p, f) for f in p.__dataclass_fields__},
                "flags": p.flags & ~BundleFlags.MUST_NOT_FRAGMENT,
                # RFC 9171 4.2.3: a bundle from a null source is never fragmented.
                "source": IpnEid(1, 1) if is_null_eid(p.source) else p.source,
            }
        ),
        b.blocks,
    )
    n = len(b.payload)
    points = (
        sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(n - 1, 12))))
        if n > 1
        else []
    )
    bounds = [0, *points, n]
    return b, [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)]


@settings(
    max_examples=500 if IS_CI else 100, suppress_health_check=[HealthCheck.too_slow]
)
@given(cut(), st.randoms(use_true_random=False))
def test_fragment_anywhere_reassemble_in_any_order(
    case: tuple[Bundle, list[int]], rnd: object
) -> None:
    b, sizes = case
    frags = fragment_bundle(b, sizes)
    assert sum(len(f.payload) for f in frags) == len(b.payload)
    # Later fragments carry the blocks flagged to be replicated, and the
    # bundle age block of a bundle with no creation time, which each of its
    # fragments must carry too (RFC 9171 4.4.2).
    no_clock = b.primary.creation.time_ms == 0
    replicated = tuple(
        blk
        for blk in b.blocks[:-1]
        if blk.flags & BlockFlags.MUST_REPLICATE
        or (no_clock and blk.type_code == BlockType.BUNDLE_AGE)
    )
    if len(frags) > 1:
        assert frags[0].blocks[:-1] == b.blocks[:-1]
        for f in frags[1:]:
            assert f.blocks[:-1] == replicated
    # through the wire, then shuffled
    wire = [decode_bundle_untrusted(encode_bundle(f)) for f in frags]
    rnd.shuffle(wire)  # type: ignore[attr-defined]
    assert reassemble(wire) == b
    r = Reassembler()
    results = [r.add(f) for f in wire]
    assert results[-1] == b
    assert all(x is None for x in results[:-1])
