"""Bundles back to back in LTP blocks: cut at bundle boundaries, never crash."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.cl.ltp.aggregate import aggregate, split_block_untrusted


def bundle(i: int, size: int) -> bytes:
    b = make_bundle(
        source=f"ipn:1.{i}",
        destination="ipn:2.1",
        payload=bytes([i % 256]) * size,
        creation_ms=1000 + i,
        sequence=i,
        lifetime_ms=60_000,
    )
    return encode_bundle(b)


def test_several_bundles_split_back() -> None:
    bs = [bundle(i, n) for i, n in enumerate([0, 1, 23, 24, 255, 256, 70_000])]
    got, err = split_block_untrusted(aggregate(bs))
    assert err is None
    assert got == bs
    for raw in got:
        decode_bundle_untrusted(raw)


def test_one_bundle_per_block() -> None:
    b = bundle(1, 10)
    assert split_block_untrusted(b) == ([b], None)


def test_garbage_after_good_bundles_keeps_the_good_ones() -> None:
    bs = [bundle(1, 5), bundle(2, 6)]
    got, err = split_block_untrusted(aggregate(bs) + b"\x01\x02")
    assert got == bs
    assert err is not None
    got, err = split_block_untrusted(aggregate(bs)[:-3])
    assert got == bs[:1]
    assert err is not None


@given(st.binary(max_size=400))
def test_hostile_blocks_never_raise(raw: bytes) -> None:
    got, err = split_block_untrusted(b"\x9f" + raw)
    assert b"".join(got) == (b"\x9f" + raw)[: sum(map(len, got))]
    assert err is not None or sum(map(len, got)) == len(raw) + 1
