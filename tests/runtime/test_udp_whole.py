"""A bundle larger than a UDP datagram crosses a UDP link whole, in PART
segments, between DCiS nodes (issue 18: fragmentation only where the link
requires it, RFC 9171 5.8), and survives loss, duplication and reordering
by selective repeat (NEED segments); with transfers off, or towards a peer
that does not take our segments, it is fragmented as before.

Nodes over tests/fakes' FakeNet under trio's MockClock, memory stores; a
hook on the net decodes every datagram that crosses it."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.bpv7.bundle import decode_bundle_untrusted
from dcis.dtn.bpv7.flags import BundleFlags
from dcis.dtn.cl.udp import (
    AckMode,
    BareBundle,
    DataSegment,
    NeedSegment,
    PartSegment,
    decode_datagram_untrusted,
    encode_part_segments,
)
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime.config import Limits
from tests.fakes.fakenet import Address, FakeNet

MB = 1_000_000


def _payload(n: int, salt: int) -> bytes:
    seed = hashlib.sha256(b"whole %d" % salt).digest()
    return (seed * (n // len(seed) + 1))[:n]


class _Tap:
    """Counts, per kind, what crosses the net; decodes every bundle sent in
    one datagram and counts the fragments among them."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    def __call__(self, data: bytes, src: Address, dst: Address) -> bytes:
        dg = decode_datagram_untrusted(data)
        self.kinds[type(dg).__name__] += 1
        if isinstance(dg, DataSegment | BareBundle):
            b = decode_bundle_untrusted(bytes(dg.bundle))
            if b.primary.flags & BundleFlags.IS_FRAGMENT:
                self.kinds["fragment"] += 1
        return data


async def _line_of_three(
    tmp_path: Path,
    net: FakeNet,
    payloads: list[bytes],
    limits: Limits,
    ack: AckMode = AckMode.ON,
) -> tuple[list[bytes], dict[str, int]]:
    """Nodes 1 - 2 - 3 (node 2 forwards); node 1 sends ``payloads`` to node
    3's endpoint; returns what node 3 received and node 1's UDP counters."""
    plan = tmp_path / "line.ionrc"
    plan.write_text(
        "".join(
            f"a contact +0 +100000 {a} {b} 100000000\n"
            for a, b in ((1, 2), (2, 1), (2, 3), (3, 2))
        ),
        encoding="utf-8",
    )
    ports = [net.free_port() for _ in range(3)]
    configs = [
        NodeConfig(
            node=i,
            listen=("127.0.0.1", ports[i - 1]),
            neighbours=tuple(
                NeighbourConfig(node=j, address=("127.0.0.1", ports[j - 1]), ack=ack)
                for j in (i - 1, i + 1)
                if 1 <= j <= 3
            ),
            plan=str(plan),
            max_tries=8,
            limits=limits,
        )
        for i in (1, 2, 3)
    ]
    got: list[bytes] = []
    async with (
        open_node(configs[0], udp_socket=net.socket) as n1,
        open_node(configs[1], udp_socket=net.socket),
        open_node(configs[2], udp_socket=net.socket) as n3,
        n3.endpoint("ipn:3.1") as inbox,
    ):
        for p in payloads:
            await n1.send("ipn:3.1", p, source="ipn:1.1")
        with trio.fail_after(3_600):
            while len(got) < len(payloads):
                got.append((await inbox.receive()).payload)
        udp = n1.status()["neighbours"]["2"]
    return got, udp


async def test_large_bundles_cross_udp_whole_under_loss_dupes_and_reordering(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    net = FakeNet(seed=5, drop=0.1, dupe=0.05, delay=0.1, max_delay_s=0.05)
    tap = _Tap()
    net.hook = tap
    payloads = [_payload(MB, i) for i in range(4)] + [_payload(3 * MB + 17, 9)]
    got, udp = await _line_of_three(tmp_path, net, payloads, Limits())
    assert sorted(got) == sorted(payloads)
    assert tap.kinds["fragment"] == 0  # never cut at the bundle layer
    assert tap.kinds[PartSegment.__name__] >= 2 * 16 * len(payloads)  # two hops
    # Loss was repaired part by part: NEEDs asked for the missing ranges.
    assert tap.kinds[NeedSegment.__name__] > 0
    assert udp["transfers"] >= len(payloads)
    assert udp["needs"] > 0


@pytest.mark.parametrize(
    ("limits", "ack"),
    [(Limits(udp_max_transfer_bytes=0), AckMode.ON), (Limits(), AckMode.AUTO)],
)
async def test_udp_fragments_without_transfers(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    limits: Limits,
    ack: AckMode,
) -> None:
    net = FakeNet(seed=2)
    tap = _Tap()
    net.hook = tap
    payloads = [_payload(MB, 1)]
    got, _ = await _line_of_three(tmp_path, net, payloads, limits, ack)
    assert got == payloads
    assert tap.kinds[PartSegment.__name__] == 0
    assert tap.kinds["fragment"] >= 2 * 16


async def test_a_transfer_left_incomplete_is_dropped_when_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A sender that never finishes (one part of four, from an address no
    # neighbour has): the node holds it only until the idle timeout, even
    # with no later datagram, and never hands anything to the agent.
    net = FakeNet(seed=1)
    port = net.free_port()
    cfg = NodeConfig(node=2, listen=("127.0.0.1", port), max_tries=2)
    rogue = net.socket()
    rogue.bind(("127.0.0.1", 0))
    bundle = b"\x9f" + bytes(199_999)
    (first, _, _), *_rest = encode_part_segments(
        sender=7, token=11, bundle=bundle, chunk_bytes=60_000
    )
    async with open_node(cfg, udp_socket=net.socket) as node:
        rogue.sendmsg(first, (), 0, ("127.0.0.1", port))
        await trio.sleep(0.1)
        held = node.status()["counters"]
        assert held["udp_partial_bytes"] == len(bundle)
        await trio.sleep(cfg.ack_timeout_s * 2**cfg.max_tries + 1)
        after = node.status()["counters"]
    assert after["udp_partial_bytes"] == 0
    assert after["udp_parts_unknown_expired"] == 1  # a stranger's pool
    assert after["received"] == 0
