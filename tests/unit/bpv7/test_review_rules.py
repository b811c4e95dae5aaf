"""Decoder and constructor rules found missing in review (RFC 9171 4.3.1, 5.8)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dcis.dtn.bpv7 import decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.bpv7.bundle import Bundle
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.errors import DecodeError, InvalidArgument


def _fragments() -> list[Bundle]:
    b = make_bundle(
        source="ipn:1.1", destination="ipn:2.1", payload=bytes(100), creation_ms=5
    )
    return fragment_bundle(b, 30)


def _bytes_without_checks(b: Bundle) -> bytes:
    # encode_bundle does not re-validate, so an inconsistent object can be
    # built with object.__new__ to produce the bytes a hostile peer would send.
    return encode_bundle(b)


def _inconsistent(offset: int, total: int) -> Bundle:
    last = _fragments()[-1]
    primary = replace(last.primary, fragment_offset=offset, total_adu_length=total)
    out = object.__new__(Bundle)
    object.__setattr__(out, "primary", primary)
    object.__setattr__(out, "blocks", last.blocks)
    return out


@pytest.mark.parametrize(
    ("offset", "total"), [(90, 50), (0, 5), (2**64 - 1, 2**64 - 1)]
)
def test_fragment_past_total_adu_length_is_a_decode_error(
    offset: int, total: int
) -> None:
    data = _bytes_without_checks(_inconsistent(offset, total))
    with pytest.raises(DecodeError) as info:
        decode_bundle_untrusted(data)
    assert "total ADU length" in str(info.value)


def test_fragment_ending_exactly_at_total_adu_length_decodes() -> None:
    for f in _fragments():
        assert decode_bundle_untrusted(encode_bundle(f)) == f


def test_bundle_constructor_rejects_fragment_past_total_adu_length() -> None:
    last = _fragments()[-1]
    primary = replace(last.primary, fragment_offset=90, total_adu_length=50)
    with pytest.raises(InvalidArgument, match="total ADU length"):
        Bundle(primary, last.blocks)


@pytest.mark.parametrize("block_type", [6, 7, 10])
def test_second_previous_node_age_or_hop_count_block_is_malformed(
    block_type: int,
) -> None:
    # RFC 9171 4.4.1-4.4.3: at most one occurrence of each. Two hop count
    # blocks would let nodes disagree on which one limits the bundle.
    from dcis.dtn.bpv7 import CanonicalBlock, HopCount, IpnEid
    from dcis.dtn.bpv7.canonical import (
        encode_bundle_age,
        encode_hop_count,
        encode_previous_node,
    )

    data = {
        6: encode_previous_node(IpnEid(3, 0)),
        7: encode_bundle_age(5),
        10: encode_hop_count(HopCount(10, 1)),
    }[block_type]
    base = make_bundle(
        source="ipn:1.1", destination="ipn:2.1", payload=b"x", creation_ms=5
    )
    blocks = (
        CanonicalBlock(block_type, 2, data=data),
        CanonicalBlock(block_type, 3, data=data),
        *base.blocks,
    )
    with pytest.raises(InvalidArgument, match="at most one"):
        Bundle(base.primary, blocks)
    raw = _bytes_without_checks(_unchecked(base, blocks))
    with pytest.raises(DecodeError, match="at most one"):
        decode_bundle_untrusted(raw)


def _unchecked(base: Bundle, blocks: tuple[object, ...]) -> Bundle:
    out = object.__new__(Bundle)
    object.__setattr__(out, "primary", base.primary)
    object.__setattr__(out, "blocks", blocks)
    return out
