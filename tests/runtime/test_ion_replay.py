"""ION's recorded UDP datagrams replayed into a running node (FakeNet, MockClock).

The bytes are the ones a live ION 4.1.3 node sent (tests/vectors/
ion_udp_bundles.hex, ion_udp_fragments.hex), sent here from an ephemeral
port as ION's udpclo does, to a node whose neighbour 1 is ``ack = "none"``
at another address (ION's udpcli). The node's wall clock is set to the
capture's, so the bundles are inside their lifetimes. What must happen: the
node recognises ION by its IP address, delivers every bundle, reassembles
ION's fragments (whose extension blocks are all numbered 0), sends the
status reports bptrace asked for to ION's configured address as bare
bundles, and sends nothing to the ephemeral port.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.bpv7 import (
    StatusReport,
    decode_admin_record_untrusted,
    decode_bundle_untrusted,
)
from dcis.dtn.cl.udp import AckMode
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from tests.fakes.fakenet import FakeNet
from tests.interop.ion_vectors import entry, load

pytestmark = pytest.mark.interop

UNIX_AT_DTN_EPOCH = 946_684_800
BIG = bytes(48 + i % 10 for i in range(1500))


@pytest.fixture
def net() -> FakeNet:
    return FakeNet(seed=0)


def _clock_at(data: bytes) -> float:
    """Unix seconds 50 ms after ``data``'s (a bundle's) creation time."""
    b = decode_bundle_untrusted(data, renumber_zero_blocks=True)
    return (b.primary.creation.time_ms + 50) / 1000 + UNIX_AT_DTN_EPOCH


def _config(tmp_path: Path, port: int, ion_udpcli: tuple[str, int]) -> NodeConfig:
    return NodeConfig(
        node=2,
        listen=("127.0.0.1", port),
        store_path=str(tmp_path / "n2.db"),
        store_synchronous="NORMAL",  # virtual clock: no fsync thread
        neighbours=(NeighbourConfig(node=1, address=ion_udpcli, ack=AckMode.NONE),),
    )


async def test_ions_bundles_and_reports_through_a_running_node(
    tmp_path: Path, net: FakeNet, autojump_clock: trio.testing.MockClock
) -> None:
    v = load("ion_udp_bundles.hex")
    udpcli = net.socket()  # ION's induct: where our bundles must go
    udpcli.bind(("127.0.0.1", 0))
    udpclo = net.socket()  # ION's outduct: an ephemeral source port
    udpclo.bind(("127.0.0.1", 0))
    port = net.free_port()
    cfg = _config(tmp_path, port, udpcli.getsockname())
    tags = ["udp-01", "udp-02", "udp-03", "udp-06", "udp-07"]
    start = _clock_at(entry(v, "udp-01"))
    try:
        async with (
            open_node(cfg, udp_socket=net.socket, clock=lambda: start) as node,
            node.endpoint("ipn:2.1") as inbox,
        ):
            got = []
            for tag in tags:
                udpclo.sendto(entry(v, tag), ("127.0.0.1", port))
                with trio.fail_after(30):
                    got.append(await inbox.receive())
            assert [(g.source, g.payload) for g in got] == [
                (
                    str(decode_bundle_untrusted(entry(v, t)).primary.source),
                    decode_bundle_untrusted(entry(v, t)).payload,
                )
                for t in tags
            ]
            # bptrace (udp-07) asked for reception and delivery reports:
            # they go to ION's udpcli, bare.
            subject = decode_bundle_untrusted(entry(v, "udp-07")).bundle_key
            kinds = set()
            with trio.fail_after(30):
                while kinds != {"received", "delivered"}:
                    await udpcli.wait_readable()
                    data, _ = udpcli.recvfrom(65535)
                    assert data[0] == 0x9F
                    b = decode_bundle_untrusted(data)
                    rec = decode_admin_record_untrusted(b.payload)
                    assert isinstance(rec, StatusReport)
                    assert rec.subject_key == subject
                    kinds |= {
                        k for k in ("received", "delivered") if getattr(rec, k).asserted
                    }
            # Nothing ever goes to the ephemeral port ION sent from.
            with trio.move_on_after(5) as waited:
                await udpclo.wait_readable()
            assert waited.cancelled_caught
    finally:
        udpcli.close()
        udpclo.close()


async def test_ions_fragments_are_reassembled_by_a_running_node(
    tmp_path: Path, net: FakeNet, autojump_clock: trio.testing.MockClock
) -> None:
    f = load("ion_udp_fragments.hex")
    udpcli = net.socket()
    udpcli.bind(("127.0.0.1", 0))
    udpclo = net.socket()
    udpclo.bind(("127.0.0.1", 0))
    port = net.free_port()
    cfg = _config(tmp_path, port, udpcli.getsockname())
    start = _clock_at(entry(f, "frag-01"))
    try:
        async with (
            open_node(cfg, udp_socket=net.socket, clock=lambda: start) as node,
            node.endpoint("ipn:2.1") as inbox,
        ):
            for tag in ("frag-03", "frag-01", "frag-02"):
                udpclo.sendto(entry(f, tag), ("127.0.0.1", port))
            with trio.fail_after(30):
                got = await inbox.receive()
            assert (got.source, got.payload) == ("ipn:1.2", BIG)
    finally:
        udpcli.close()
        udpclo.close()
