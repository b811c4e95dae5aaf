"""UDP datagrams recorded from a live HDTN (bpgen-async, bpsink-async), no BPSec.

tests/vectors/hdtn_udp_bundles.hex holds HDTN's bpgen bundles to our
dtn-node and our bundles that HDTN's bpsink counted (its header says which
HDTN commit, configuration and commands made them). What must hold without
HDTN present:

- every datagram is one bare bundle that decodes and re-encodes byte for
  byte (HDTN writes CRC-32C on the primary and every block, a hop count
  block (limit 100), no previous node or age block, bpgen's 64-byte payload);
- a running node whose neighbour 2 is ``ack = "none"`` takes HDTN's
  datagrams from an ephemeral source port (matched by IP), delivers them, and
  sends nothing back to that port; towards HDTN it sends bare bundles.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.bpv7 import CrcType, decode_bundle_untrusted, encode_bundle
from dcis.dtn.bpv7.flags import BlockType
from dcis.dtn.cl.udp import AckMode, BareBundle, decode_datagram_untrusted
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from tests.fakes.fakenet import FakeNet
from tests.interop.ion_vectors import direction, load

pytestmark = pytest.mark.interop

V = load("hdtn_udp_bundles.hex")
FROM_HDTN = {k: v for k, v in V.items() if direction(k) == "hdtn>dcis"}
TO_HDTN = {k: v for k, v in V.items() if direction(k) == "dcis>hdtn"}
UNIX_AT_DTN_EPOCH = 946_684_800


def test_the_capture_has_both_directions() -> None:
    assert len(FROM_HDTN) == 3
    assert len(TO_HDTN) == 2


@pytest.mark.parametrize("name", list(V))
def test_every_datagram_is_a_bare_bundle_that_reencodes_byte_for_byte(
    name: str,
) -> None:
    data = V[name]
    assert isinstance(decode_datagram_untrusted(data), BareBundle)
    assert encode_bundle(decode_bundle_untrusted(data)) == data


def test_hdtn_bundle_fields() -> None:
    seqs = []
    for data in FROM_HDTN.values():
        b = decode_bundle_untrusted(data)
        p = b.primary
        assert int(p.flags) == 0x04  # must not fragment
        assert p.crc_type is CrcType.CRC32C
        assert (str(p.source), str(p.destination), str(p.report_to)) == (
            "ipn:2.1",
            "ipn:1.5",
            "dtn:none",
        )
        assert p.lifetime_ms == 1_000_000  # bpgen's default
        assert [(c.type_code, c.number) for c in b.blocks] == [
            (BlockType.HOP_COUNT, 2),
            (BlockType.PAYLOAD, 1),
        ]
        assert all(c.crc_type is CrcType.CRC32C for c in b.blocks)
        assert b.blocks[0].data == bytes.fromhex("82186400")  # limit 100, count 0
        assert b.previous_node is None
        assert len(b.payload) == 64  # --bundle-size=64
        seqs.append(struct.unpack_from("<Q", b.payload)[0])  # bpgen's sequence
    assert seqs == [seqs[0] + i for i in range(3)]


def test_what_we_sent_hdtn_is_a_bare_bundle_of_ours() -> None:
    for data in TO_HDTN.values():
        b = decode_bundle_untrusted(data)
        assert str(b.primary.source) == "ipn:1.1"
        assert str(b.primary.destination) == "ipn:2.1"
        assert data[0] == 0x9F  # a bundle, never a DCiS segment
        assert b.payload.startswith(b"DCiS node 1 to HDTN bpsink")


async def test_hdtn_datagrams_from_an_ephemeral_port_reach_the_endpoint(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNet(seed=0)
    induct = net.socket()  # HDTN's UDP induct: where our bundles would go
    induct.bind(("127.0.0.1", 0))
    outduct = net.socket()  # bpgen's outduct: an ephemeral source port
    outduct.bind(("127.0.0.1", 0))
    port = net.free_port()
    first = decode_bundle_untrusted(next(iter(FROM_HDTN.values())))
    start = (first.primary.creation.time_ms + 50) / 1000 + UNIX_AT_DTN_EPOCH
    cfg = NodeConfig(
        node=1,
        listen=("127.0.0.1", port),
        store_path=str(tmp_path / "n1.db"),
        store_synchronous="NORMAL",
        neighbours=(
            NeighbourConfig(node=2, address=induct.getsockname(), ack=AckMode.NONE),
        ),
    )
    try:
        async with (
            open_node(cfg, udp_socket=net.socket, clock=lambda: start) as node,
            node.endpoint("ipn:1.5") as inbox,
        ):
            got = []
            for data in FROM_HDTN.values():
                outduct.sendto(data, ("127.0.0.1", port))
                with trio.fail_after(30):
                    got.append(await inbox.receive())
            assert [g.payload for g in got] == [
                decode_bundle_untrusted(d).payload for d in FROM_HDTN.values()
            ]
            assert {g.source for g in got} == {"ipn:2.1"}
            with trio.move_on_after(5) as waited:
                await outduct.wait_readable()
            assert waited.cancelled_caught  # no ACK, nothing to the ephemeral port
            with trio.move_on_after(5) as waited:
                await induct.wait_readable()
            assert waited.cancelled_caught  # nor to HDTN's induct
    finally:
        induct.close()
        outduct.close()
