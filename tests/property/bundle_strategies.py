"""Hypothesis strategies for BPv7 bundles (shared by the bundle property tests)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from dcis.dtn.bpv7 import (
    DTN_NONE,
    BlockFlags,
    BlockType,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    CrcType,
    CreationTimestamp,
    DtnEid,
    Eid,
    HopCount,
    IpnEid,
    PrimaryBlock,
    encode_bundle_age,
    encode_hop_count,
    encode_previous_node,
)

U64 = st.integers(0, 2**64 - 1)
SMALL = st.integers(0, 300)  # exercises the 1-, 2- and 3-byte CBOR heads
UINT = st.one_of(SMALL, U64)

# RFC 9171 4.2.5.1.1 (VCHAR): no whitespace or control characters; we also
# accept printable non-ASCII (spec/bundle.md).
_CONTROL_OR_SPACE = "".join(map(chr, [*range(0x21), *range(0x7F, 0xA0)]))
_name = st.text(
    st.characters(codec="utf-8", exclude_characters="/" + _CONTROL_OR_SPACE),
    min_size=1,
    max_size=12,
)
_demux = st.text(
    st.characters(codec="utf-8", exclude_characters=_CONTROL_OR_SPACE), max_size=16
)

eids: st.SearchStrategy[Eid] = st.one_of(
    st.builds(IpnEid, UINT, UINT),
    st.builds(lambda n, d: DtnEid(f"//{n}/{d}"), _name, _demux),
    st.just(DTN_NONE),
)
crc_types = st.sampled_from(list(CrcType))


@st.composite
def primaries(draw: st.DrawFn, *, fragment: bool | None = None) -> PrimaryBlock:
    flags = draw(UINT) & ~int(BundleFlags.IS_FRAGMENT)
    is_frag = draw(st.booleans()) if fragment is None else fragment
    off = total = None
    if is_frag:
        flags |= BundleFlags.IS_FRAGMENT
        off, total = draw(UINT), draw(UINT)
    return PrimaryBlock(
        flags=BundleFlags(flags),
        crc_type=draw(crc_types),
        destination=draw(eids),
        source=draw(eids),
        report_to=draw(eids),
        creation=CreationTimestamp(draw(UINT), draw(UINT)),
        lifetime_ms=draw(UINT),
        fragment_offset=off,
        total_adu_length=total,
    )


block_flags = st.one_of(st.sampled_from(list(BlockFlags)), UINT.map(BlockFlags))
_unknown_types = st.one_of(st.integers(2, 300), U64.filter(lambda t: t > 0)).filter(
    lambda t: (
        t
        not in (
            BlockType.PAYLOAD,
            BlockType.PREVIOUS_NODE,
            BlockType.BUNDLE_AGE,
            BlockType.HOP_COUNT,
        )
    )
)


@st.composite
def extension_block(draw: st.DrawFn, number: int) -> CanonicalBlock:
    kind = draw(st.sampled_from(["prev", "age", "hop", "unknown", "unknown"]))
    if kind == "prev":
        t, data = BlockType.PREVIOUS_NODE, encode_previous_node(draw(eids))
    elif kind == "age":
        t, data = BlockType.BUNDLE_AGE, encode_bundle_age(draw(UINT))
    elif kind == "hop":
        t, data = (
            BlockType.HOP_COUNT,
            encode_hop_count(HopCount(draw(st.integers(0, 255)), draw(UINT))),
        )
    else:
        t, data = draw(_unknown_types), draw(st.binary(max_size=40))
    return CanonicalBlock(t, number, draw(block_flags), draw(crc_types), data)


_ONCE = (BlockType.PREVIOUS_NODE, BlockType.BUNDLE_AGE, BlockType.HOP_COUNT)


@st.composite
def bundles(
    draw: st.DrawFn,
    *,
    fragment: bool | None = None,
    max_payload: int = 600,
    min_payload: int = 0,
) -> Bundle:
    primary = draw(primaries(fragment=fragment))
    numbers = draw(
        st.lists(
            st.one_of(st.integers(2, 40), U64.filter(lambda n: n >= 2)),
            unique=True,
            max_size=5,
        )
    )
    blocks = []
    once: set[int] = set()
    for n in numbers:
        block = draw(extension_block(n))
        if block.type_code in _ONCE:
            # RFC 9171 4.4: at most one previous node, age and hop count block.
            if block.type_code in once:
                continue
            once.add(block.type_code)
        blocks.append(block)
    payload = draw(st.binary(min_size=min_payload, max_size=max_payload))
    if primary.fragment_offset is not None and primary.total_adu_length is not None:
        # RFC 9171 5.8: the fragment's bytes lie inside the original ADU.
        offset = min(primary.fragment_offset, 2**64 - 1 - len(payload))
        total = max(primary.total_adu_length, offset + len(payload))
        primary = replace(primary, fragment_offset=offset, total_adu_length=total)
    blocks.append(
        CanonicalBlock(
            BlockType.PAYLOAD, 1, draw(block_flags), draw(crc_types), payload
        )
    )
    return Bundle(primary, tuple(blocks))
