"""Manifest, placement and wire messages: round trips and hostile bytes."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dfs.core import wire
from dcis.dfs.core.codec import object_hash
from dcis.dfs.core.errors import DecodeError, InvalidArgument
from dcis.dfs.core.manifest import (
    Manifest,
    Placement,
    Tombstone,
    decode_manifest_untrusted,
    decode_placement_untrusted,
    decode_record_untrusted,
    encode_manifest,
    encode_placement,
    encode_tombstone,
)

oids = st.binary(min_size=16, max_size=16)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, n))
    chunk_size = draw(st.integers(1, 1 << 20))
    chunks = draw(st.integers(1, 4))
    size = draw(
        st.integers(
            (chunks - 1) * chunk_size + (1 if chunks > 1 else 0), chunks * chunk_size
        )
    )
    hashes = tuple(draw(st.binary(min_size=32, max_size=32)) for _ in range(chunks))
    return Manifest(
        object_id=draw(oids),
        name=draw(
            st.text(
                st.characters(min_codepoint=32, exclude_categories=("Cs",)),
                min_size=1,
                max_size=20,
            )
        ),
        size=size,
        chunk_size=chunk_size,
        k=k,
        n=n,
        placement=tuple(draw(st.permutations(range(1, 20)))[:n]),
        chunk_hashes=hashes,
        block_crcs=tuple(
            tuple(draw(st.integers(0, 2**32 - 1)) for _ in range(n))
            for _ in range(chunks)
        ),
        root=object_hash(hashes),
        keys=draw(
            st.dictionaries(st.integers(0, 99), st.binary(max_size=80), max_size=3)
        ),
        writer=draw(st.integers(1, 99)),
        created_ms=draw(st.integers(0, 2**40)),
    )


@given(manifests())
def test_manifest_round_trip(m: Manifest) -> None:
    assert decode_manifest_untrusted(encode_manifest(m)) == m


@given(oids, st.integers(0, 2**40))
def test_tombstone_round_trip(oid: bytes, t: int) -> None:
    assert decode_record_untrusted(encode_tombstone(Tombstone(oid, t))) == Tombstone(
        oid, t
    )


def test_placement_round_trip_and_doubles_rejected() -> None:
    p = Placement(3, (4, 5, 6))
    assert decode_placement_untrusted(encode_placement(p), 3) == p
    with pytest.raises(DecodeError):
        decode_placement_untrusted(encode_placement(Placement(1, (4, 4, 6))), 3)
    with pytest.raises(DecodeError):
        decode_placement_untrusted(encode_placement(p), 4)


@given(st.binary())
def test_hostile_records(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_record_untrusted(data)


@given(manifests(), st.integers(0, 13), st.integers(0, 2**32))
def test_mutated_manifest_is_decode_error_or_valid(
    m: Manifest, idx: int, val: int
) -> None:
    item = cbor2.loads(encode_manifest(m))
    item[idx] = val
    with contextlib.suppress(DecodeError):
        decode_record_untrusted(cbor2.dumps(item))


def test_manifest_checks_root_and_placement() -> None:
    h = (bytes(32),)
    base = {
        "object_id": bytes(16), "name": "a", "size": 1, "chunk_size": 10, "k": 1, "n": 2,
        "placement": (1, 2), "chunk_hashes": h, "block_crcs": ((0, 0),), "root": object_hash(h),
        "keys": {}, "writer": 1, "created_ms": 0,
    }  # fmt: skip
    Manifest(**base)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Manifest(**{**base, "root": bytes(32)})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Manifest(**{**base, "placement": (1, 1)})  # type: ignore[arg-type]


messages = st.one_of(
    st.builds(
        wire.Store, oids, st.integers(0, 255), st.just(2), st.just(3), st.binary()
    ),
    st.builds(wire.Stored, oids, st.integers(0, 255)),
    st.builds(
        wire.Fetch,
        st.integers(0, 2**63),
        oids,
        st.integers(0, 255),
        st.lists(st.integers(0, 1000)).map(tuple),
    ),
    st.builds(
        wire.Block,
        st.integers(0, 2**63),
        oids,
        st.integers(0, 255),
        st.integers(0, 1000),
        st.binary(),
    ),
    st.builds(
        wire.Missing,
        st.integers(0, 2**63),
        oids,
        st.integers(0, 255),
        st.lists(st.integers(0, 1000)).map(tuple),
    ),
)


def _norm(m: wire.Message) -> wire.Message:
    if isinstance(m, wire.Store):
        return wire.Store(m.object_id, m.share, m.chunk, m.chunks, bytes(m.data))
    if isinstance(m, wire.Block):
        return wire.Block(m.req, m.object_id, m.share, m.chunk, bytes(m.data))
    return m


@given(messages)
def test_wire_round_trip(m: wire.Message) -> None:
    assert _norm(wire.decode_message_untrusted(wire.encode_message(m))) == _norm(m)


@given(st.binary())
def test_hostile_wire(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        wire.decode_message_untrusted(data)


def test_store_chunk_past_count_rejected() -> None:
    raw = wire.encode_message(wire.Store(bytes(16), 0, 3, 3, b"x"))
    with pytest.raises(DecodeError):
        wire.decode_message_untrusted(raw)


@pytest.mark.parametrize("name", ["", "a\x00b", "\ud800", "x" * 1025])
def test_bad_names_are_invalid_arguments(name: str) -> None:
    from dcis.dfs.core.manifest import check_name

    with pytest.raises(InvalidArgument):
        check_name(name)
