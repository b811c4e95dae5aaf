"""Abstract security block codec (dtn/bpsec/asb.py): round trips and hostile bytes."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.bpsec import AbstractSecurityBlock, decode_asb_untrusted, encode_asb
from dcis.dtn.bpv7 import DTN_NONE, DtnEid, IpnEid
from dcis.dtn.errors import DecodeError, InvalidArgument

u64 = st.integers(min_value=0, max_value=2**64 - 1)
values = st.recursive(
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=10)
    | st.booleans(),
    lambda inner: st.lists(inner, max_size=4).map(tuple),
    max_leaves=8,
)
items = st.lists(st.tuples(st.integers(0, 2**32), values), min_size=1, max_size=5).map(
    tuple
)
eids = st.builds(IpnEid, u64, u64) | st.just(DTN_NONE) | st.just(DtnEid("//n/s"))


@st.composite
def asbs(draw: st.DrawFn) -> AbstractSecurityBlock:
    targets = tuple(
        draw(st.lists(st.integers(0, 300), min_size=1, max_size=6, unique=True))
    )
    return AbstractSecurityBlock(
        targets=targets,
        context_id=draw(st.integers(min_value=-(2**63), max_value=2**63)),
        source=draw(eids),
        parameters=draw(st.none() | items),
        results=tuple(draw(items) for _ in targets),
    )


@given(asbs())
def test_round_trip(asb: AbstractSecurityBlock) -> None:
    data = encode_asb(asb)
    assert decode_asb_untrusted(data) == asb
    assert encode_asb(decode_asb_untrusted(data)) == data


@given(st.binary(max_size=200))
def test_hostile_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_asb_untrusted(data)


@given(st.lists(values | st.lists(values, max_size=3), min_size=0, max_size=7))
def test_hostile_cbor_sequences_raise_only_decode_error(seq: list[object]) -> None:
    data = b"".join(cbor2.dumps(list(v) if isinstance(v, tuple) else v) for v in seq)
    with contextlib.suppress(DecodeError):
        decode_asb_untrusted(data)


@given(asbs(), st.data())
def test_truncations_and_flips_raise_only_decode_error(
    asb: AbstractSecurityBlock, data: st.DataObject
) -> None:
    raw = bytearray(encode_asb(asb))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(DecodeError):
        decode_asb_untrusted(bytes(raw[:cut]))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(DecodeError):
        decode_asb_untrusted(bytes(raw))


def test_rules_of_rfc9172() -> None:
    src = IpnEid(1, 0)
    with pytest.raises(InvalidArgument):
        AbstractSecurityBlock(targets=(), context_id=1, source=src, results=())
    with pytest.raises(InvalidArgument):
        AbstractSecurityBlock(
            targets=(1, 1), context_id=1, source=src, results=((), ())
        )
    with pytest.raises(InvalidArgument):
        AbstractSecurityBlock(targets=(1,), context_id=1, source=src, results=())
    # Flags say "parameters present" but there are none: malformed.
    bad = (
        cbor2.dumps([1])
        + cbor2.dumps(1)
        + cbor2.dumps(1)
        + cbor2.dumps([2, [1, 0]])
        + cbor2.dumps([[]])
    )
    with pytest.raises(DecodeError, match="parameters"):
        decode_asb_untrusted(bad)


def test_reserved_context_flag_bits_are_refused() -> None:
    good = AbstractSecurityBlock(
        targets=(1,),
        context_id=2,
        source=IpnEid(2, 1),
        parameters=((1, b"iv"),),
        results=(((1, b"t"),),),
    )
    raw = bytearray(encode_asb(good))
    assert raw[3] == 0x01  # [1] (0x81 0x01), context id 2 (0x02), then the flags
    for bit in range(1, 5):
        bad = bytes(raw[:3]) + bytes([0x01 | 1 << bit]) + bytes(raw[4:])
        with pytest.raises(DecodeError, match="reserved"):
            decode_asb_untrusted(bad)
