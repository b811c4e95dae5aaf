"""Review of udp-parts (runtime side): attacks on PART/NEED handling that the
branch's tests do not try. Both fail on udp-parts (review-b findings)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import cbor2
import pytest
import trio
import trio.testing

from dcis.dtn.bpv7.crc import crc32c
from dcis.dtn.cl.udp import (
    DCIS_TAG,
    AckMode,
    DataSegment,
    NeedSegment,
    PartSegment,
    decode_datagram_untrusted,
    encode_part_segments,
)
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime.config import Limits
from tests.fakes.fakenet import Address, FakeNet


def _crc_null_pattern() -> bytes:
    """Five bytes ``d`` (not all zero) such that XORing ``d`` into any message
    at any position leaves its CRC-32C unchanged (``d`` is a multiple of the
    generator polynomial): found by Gaussian elimination over GF(2)."""
    width = 5
    zero = crc32c(bytes(width + 3))

    def delta(bits: int) -> int:
        return crc32c(bits.to_bytes(width, "big") + bytes(3)) ^ zero

    rows: list[tuple[int, int]] = []  # (delta, combination of input bits)
    for bit in range(8 * width):
        v, comb = delta(1 << bit), 1 << bit
        for rv, rc in rows:
            if v ^ rv < v:
                v, comb = v ^ rv, comb ^ rc
        if v == 0:
            d = comb.to_bytes(width, "big")
            assert crc32c(d + bytes(9)) == crc32c(bytes(width + 9))
            return d
        rows.append((v, comb))
        rows.sort(reverse=True)
    raise AssertionError("33+ vectors in 32 dimensions are dependent")


def _pair(net: FakeNet) -> tuple[NodeConfig, NodeConfig]:
    p1, p2 = net.free_port(), net.free_port()
    return (
        NodeConfig(
            node=1,
            listen=("127.0.0.1", p1),
            neighbours=(
                NeighbourConfig(node=2, address=("127.0.0.1", p2), ack=AckMode.ON),
            ),
            max_tries=8,
        ),
        NodeConfig(
            node=2,
            listen=("127.0.0.1", p2),
            neighbours=(
                NeighbourConfig(node=1, address=("127.0.0.1", p1), ack=AckMode.ON),
            ),
            max_tries=8,
        ),
    )


async def test_a_sniffing_forger_cannot_replace_a_transfer_without_security(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # spec/udpcl.md, threat model: an on-path observer without security gets
    # "nothing from reading alone", and a copy under a genuine key is kept
    # apart. A forger who reads part 1 of a transfer sends it again, from
    # its own address, in node 1's name, with payload bytes changed by a
    # pattern that keeps the CRC-32C. The datagram is a duplicate of a held
    # range, so the assembler overwrites the genuine bytes (REWRITE); the
    # transfer completes with the forged payload, node 2 acknowledges the
    # genuine token, and node 1 deletes the genuine bundle.
    net = FakeNet(seed=3)
    c1, c2 = _pair(net)
    null = _crc_null_pattern()
    forger: Address = ("127.0.0.1", 6666)
    part1: list[PartSegment] = []
    dropped: set[int] = set()

    def hook(data: bytes, src: Address, dst: Address) -> bytes | None:
        if src != c1.listen:
            return data
        dg = decode_datagram_untrusted(data)
        if not isinstance(dg, PartSegment):
            return data
        if dg.offset and not part1:
            part1.append(dg)  # the genuine part 1 goes on and is held
            return data
        if part1 and dg.offset > part1[0].offset and dg.token not in dropped:
            # Part 2 is lost once (the transfer stays open for a NEED
            # round), and the forger's copy of part 1 arrives meanwhile.
            dropped.add(dg.token)
            p = part1[0]
            chunk = bytearray(p.chunk)
            mid = len(chunk) // 2
            chunk[mid : mid + len(null)] = bytes(
                a ^ b for a, b in zip(chunk[mid : mid + len(null)], null, strict=True)
            )
            whole = bytes(p.offset) + bytes(chunk)  # only this part is sent
            (forged, _, _) = encode_part_segments(
                sender=1,
                token=p.token,
                bundle=b"\x9f" + whole[1:] + bytes(p.total - len(whole)),
                chunk_bytes=p.offset,
            )[1]
            net.inject(b"".join(forged), forger, dst)
            return None
        return data

    net.hook = hook
    payload = hashlib.sha256(b"genuine").digest() * 6_000  # 192 KB: 3+ parts
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
        n2.endpoint("ipn:2.1") as inbox,
    ):
        await n1.send("ipn:2.1", payload, source="ipn:1.1")
        with trio.fail_after(600):
            got = await inbox.receive()
    assert part1, "the scenario did not happen"
    assert dropped, "the scenario did not happen"
    assert got.payload == payload, "a forged transfer was delivered and acknowledged"


async def test_parts_from_an_unknown_sender_are_not_a_need_amplifier(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An unknown sender number without a link key (any node without
    # [security], or with it and a sender that has no certificate): the
    # NEED goes to the datagram's source address, which an off-path attacker
    # chooses. 64 one-byte parts leave 64 gaps; then every 1-byte copy of
    # the last part (a duplicate: no progress) is answered by a full NEED
    # of 64 ranges, ~20 times its size, towards the spoofed victim.
    net = FakeNet(seed=1)
    _, c2 = _pair(net)
    victim = net.socket()
    victim.bind(("127.0.0.1", 0))
    total = 200_000
    sent = 0
    received = 0

    def hook(data: bytes, src: Address, dst: Address) -> bytes | None:
        nonlocal received
        if dst == victim.getsockname():
            received += len(data)
        return data

    net.hook = hook

    def part(offset: int) -> None:
        nonlocal sent
        dg = bytes(cbor2.dumps(cbor2.CBORTag(DCIS_TAG, [2, 7, 1, offset, total, b"x"])))
        seg = decode_datagram_untrusted(dg)
        assert isinstance(seg, PartSegment)
        assert seg.total == total
        sent += len(dg)
        net.inject(dg, victim.getsockname(), c2.listen)

    async with open_node(c2, udp_socket=net.socket) as n2:
        for i in range(64):
            part(1_000 + 2 * i)
        for _ in range(100):
            part(total - 1)
            await trio.sleep(0.001)
        await trio.sleep(1)
        needs = n2.status()["counters"]["needs_out"]
    while True:
        try:
            data, _ = victim.recvfrom(70_000)
        except BlockingIOError:
            break
        assert isinstance(decode_datagram_untrusted(data), NeedSegment)
    assert needs <= 1 or received <= sent, (
        f"{needs} NEEDs, {received} bytes to the spoofed address for {sent} sent"
    )


@pytest.mark.parametrize("whole", [False, True], ids=["fragments", "parts"])
async def test_a_lossy_transfer_completes_over_a_long_light_time(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, whole: bool
) -> None:
    # A 10 s one-way light time (plan range; every datagram delayed 10 s)
    # and one part lost once. The sender's RTO allows for the light time
    # (2 * 10 s + ack_timeout_s), but the receiver forgets a partial after
    # ack_timeout_s * 2**max_tries = 16 s without progress, and a NEED round
    # takes 20 s: the held bytes are gone before the missing part arrives.
    # The transfer never completes (nor falls back to fragments): each
    # later round finds the receiver holding what arrived last only.
    # Fragments (transfers off) get through in the same 120 s.
    net = FakeNet(seed=4)
    c1, c2 = _pair(net)
    plan = tmp_path / "far.ionrc"
    plan.write_text(
        "a contact +0 +100000 1 2 100000000\n"
        "a contact +0 +100000 2 1 100000000\n"
        "a range +0 +100000 1 2 10\n",
        encoding="utf-8",
    )
    c1, c2 = (
        dataclasses.replace(
            c,
            plan=str(plan),
            max_tries=4,
            limits=Limits() if whole else Limits(udp_max_transfer_bytes=0),
        )
        for c in (c1, c2)
    )
    lost: list[int] = []

    async def later(data: bytes, src: Address, dst: Address) -> None:
        await trio.sleep(10)
        net.inject(data, src, dst)

    def hook(data: bytes, src: Address, dst: Address) -> bytes | None:
        dg = decode_datagram_untrusted(data)
        part = isinstance(dg, PartSegment) and dg.offset > 0
        fragment = isinstance(dg, DataSegment) and len(dg.bundle) > 1000
        if (part or fragment) and not lost:
            lost.append(1)
            return None
        trio.lowlevel.spawn_system_task(later, data, src, dst)
        return None

    net.hook = hook
    payload = hashlib.sha256(b"far").digest() * 6_000
    async with (
        open_node(c1, udp_socket=net.socket) as n1,
        open_node(c2, udp_socket=net.socket) as n2,
        n2.endpoint("ipn:2.1") as inbox,
    ):
        await n1.send("ipn:2.1", payload, source="ipn:1.1")
        with trio.move_on_after(120):
            got = await inbox.receive()
            assert got.payload == payload
            return
        c = n2.status()["counters"]
    raise AssertionError(f"not delivered: {c}")
