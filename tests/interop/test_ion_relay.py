"""ION relaying between two DCiS nodes, from bytes recorded live.

tests/vectors/ion_udp_relay.hex: node 2 -> ION node 1 -> node 3 and back.
What ION does to our bundle on the way, and what we must do with the result:

- ION keeps everything of ours that matters -- source, destination,
  creation timestamp, lifetime, flags, payload, our hop count block (it
  counts its hop) -- but re-encodes the primary block with CRC-16 where we
  wrote CRC-32C, sets the previous node to itself, and adds its block 193
  and a bundle age block. (By RFC 9173 3.7 a BIB whose scope covers the
  primary block, scope flag 0x1, would then no longer verify after an ION
  hop; not tried: open-source ION has only NULL crypto suites.)
- The receiving DCiS node decodes the relayed bundle, checks ION's CRC-16
  and delivers it.
"""

from __future__ import annotations

import pytest

from dcis.dtn.agent.actions import Deliver
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7 import (
    BlockType,
    CrcType,
    IpnEid,
    decode_bundle_untrusted,
    encode_bundle,
)
from tests.interop.ion_vectors import entry, load

pytestmark = pytest.mark.interop

V = load("ion_udp_relay.hex")


@pytest.mark.parametrize(
    ("ours", "relayed"), [("relay-01", "relay-02"), ("relay-03", "relay-04")]
)
def test_what_ion_changes_when_it_relays_our_bundle(ours: str, relayed: str) -> None:
    a = decode_bundle_untrusted(entry(V, ours))
    b = decode_bundle_untrusted(entry(V, relayed))
    assert encode_bundle(b) == entry(V, relayed)
    pa, pb = a.primary, b.primary
    assert (pa.crc_type, pb.crc_type) == (CrcType.CRC32C, CrcType.CRC16)
    same = (
        "version",
        "flags",
        "destination",
        "source",
        "report_to",
        "creation",
        "lifetime_ms",
    )
    assert [getattr(pa, f) for f in same] == [getattr(pb, f) for f in same]
    assert b.payload == a.payload
    assert a.hop_count is not None
    assert b.hop_count is not None
    assert (b.hop_count.limit, b.hop_count.count) == (
        a.hop_count.limit,
        a.hop_count.count + 1,
    )
    assert b.previous_node == IpnEid(1, 0)
    assert [c.type_code for c in b.blocks] == [
        BlockType.HOP_COUNT,
        BlockType.PREVIOUS_NODE,
        193,
        BlockType.BUNDLE_AGE,
        BlockType.PAYLOAD,
    ]
    # Our blocks keep their numbers; ION's come after them.
    assert [(c.type_code, c.number) for c in a.blocks if c.type_code != 1] == [
        (c.type_code, c.number) for c in b.blocks[:2]
    ]


@pytest.mark.parametrize(("relayed", "node"), [("relay-02", 3), ("relay-04", 2)])
def test_the_relayed_bundle_is_delivered(relayed: str, node: int) -> None:
    data = entry(V, relayed)
    b = decode_bundle_untrusted(data)
    agent = Agent(node=node, store=MemoryStore())
    agent.register(f"ipn:{node}.1")
    now = b.primary.creation.time_ms + 30
    acts = agent.on_receive(cla="udp", neighbor=1, data=data, now=now)
    (d,) = [a for a in acts if isinstance(a, Deliver)]
    assert d.payload == b.payload
    assert d.source == str(b.primary.source)
