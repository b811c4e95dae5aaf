"""Fragments recorded from a live ION node (ION 4.1.3 over UDP), both ways.

ION numbers every extension block of the fragments it makes 0 (its
copyExtensionBlocks does not copy the block number), which RFC 9171 4.1
reserves for the primary block. Our strict decoder refuses that, so until
this was found every bundle ION fragmented for us was dropped
(tests/vectors/ion_udp_fragments.hex, frag-01..03). What we must do:

- the strict decoder still says exactly what is wrong (``ZERO_BLOCK_NUMBER``);
- ``renumber_zero_blocks=True`` gives those blocks fresh numbers above the
  highest in use, and nothing else changes;
- the agent takes ION's fragments (renumbered, stored re-encoded) and
  reassembles and delivers the bundle, in any arrival order;
- our own fragments (the ones ION reassembled) decode strictly.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.agent.actions import Deliver
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7 import (
    BlockType,
    CrcType,
    IpnEid,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.canonical import ZERO_BLOCK_NUMBER, CanonicalBlock
from dcis.dtn.bpv7.fragment import reassemble
from dcis.dtn.errors import DecodeError
from tests.interop.ion_vectors import entry, load
from tests.unit.agent.helpers import events, of

pytestmark = pytest.mark.interop

V = load("ion_udp_fragments.hex")
BIG = bytes(48 + i % 10 for i in range(1500))  # big.txt of the run
ION_FIRST = ["frag-01", "frag-02", "frag-03"]
ION_SECOND = ["frag-07", "frag-08", "frag-09"]
OURS = ["frag-04", "frag-05", "frag-06"]


@pytest.mark.parametrize("tag", ION_FIRST + ION_SECOND)
def test_strict_decoding_names_the_zero_block_number(tag: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_bundle_untrusted(entry(V, tag))
    assert err.value.what == ZERO_BLOCK_NUMBER


@pytest.mark.parametrize("tag", ION_FIRST + ION_SECOND)
def test_ion_fragment_renumbered_and_nothing_else_changed(tag: str) -> None:
    data = entry(V, tag)
    b = decode_bundle_untrusted(data, renumber_zero_blocks=True)
    assert [(c.type_code, c.number) for c in b.blocks] == [
        (BlockType.PREVIOUS_NODE, 2),
        (193, 3),
        (BlockType.BUNDLE_AGE, 4),
        (BlockType.PAYLOAD, 1),
    ]
    p = b.primary
    assert p.total_adu_length == 1500
    assert p.fragment_offset in (0, 500, 1000)
    assert b.payload == BIG[p.fragment_offset : p.fragment_offset + 500]
    assert b.previous_node == IpnEid(1, 0)
    again = encode_bundle(b)
    assert decode_bundle_untrusted(again) == b  # valid now, strictly
    # Only the three block-number bytes differ (0 -> 2, 3, 4).
    diff = [(x, y) for x, y in zip(data, again, strict=True) if x != y]
    assert diff == [(0, 2), (0, 3), (0, 4)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_agent_reassembles_and_delivers_ions_fragments(
    order: tuple[int, ...],
) -> None:
    agent = Agent(node=2, store=MemoryStore())
    agent.register("ipn:2.1")
    first = decode_bundle_untrusted(entry(V, "frag-01"), renumber_zero_blocks=True)
    now = first.primary.creation.time_ms + 100
    acts = []
    for i in order:
        acts += agent.on_receive(
            cla="udp", neighbor=1, data=entry(V, ION_FIRST[i]), now=now
        )
    assert events(acts, "dropped") == []
    received = events(acts, "received")
    assert len(received) == 3
    assert all("renumbered" in e.detail for e in received)
    (d,) = of(acts, Deliver)
    assert (d.source, d.payload) == ("ipn:1.2", BIG)


def test_our_fragments_that_ion_reassembled_decode_strictly() -> None:
    frags = [decode_bundle_untrusted(entry(V, t)) for t in OURS]
    assert [f.primary.fragment_offset for f in frags] == [0, 502, 1004]
    whole = reassemble(frags)
    assert whole.payload == BIG
    assert str(whole.primary.source) == "ipn:2.1"


def test_a_payload_block_numbered_0_is_still_refused() -> None:
    good = encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"x",
            creation_ms=1,
            payload_crc_type=CrcType.NONE,
        )
    )
    # The payload block 85 01 01 00 00 41 78 -> 85 01 00 00 00 41 78
    block = bytes.fromhex("85010100004178")
    i = good.index(block)
    bad = good[:i] + bytes.fromhex("85010000004178") + good[i + len(block) :]
    with pytest.raises(DecodeError):
        decode_bundle_untrusted(bad, renumber_zero_blocks=True)


@given(
    types=st.lists(st.integers(min_value=192, max_value=255), max_size=6),
    zeroed=st.lists(st.booleans(), min_size=6, max_size=6),
    payload=st.binary(max_size=64),
)
def test_renumbering_keeps_every_block_and_makes_numbers_unique(
    types: list[int], zeroed: list[bool], payload: bytes
) -> None:
    extra = [CanonicalBlock(t, 10 + i, data=bytes([i])) for i, t in enumerate(types)]
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=payload,
        creation_ms=1,
        extra_blocks=extra,
    )
    wire = bytearray(encode_bundle(b))
    # Zero the chosen blocks' numbers on the wire (numbers 10.. are 1 byte).
    for i, block in enumerate(extra):
        if zeroed[i]:
            head = bytes([0x85, 0x18, block.type_code, block.number])
            at = wire.index(head)
            wire[at + 3] = 0
    got = decode_bundle_untrusted(bytes(wire), renumber_zero_blocks=True)
    numbers = [c.number for c in got.blocks]
    assert len(set(numbers)) == len(numbers)
    assert [(c.type_code, c.data) for c in got.blocks] == [
        (c.type_code, c.data) for c in b.blocks
    ]
    top = max(
        c.number for c in b.blocks if not (c.number >= 10 and zeroed[c.number - 10])
    )
    renumbered = [
        got.blocks[i].number
        for i, c in enumerate(b.blocks)
        if c.number >= 10 and zeroed[c.number - 10]
    ]
    assert renumbered == list(range(top + 1, top + 1 + len(renumbered)))
