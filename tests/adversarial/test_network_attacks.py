"""A hostile network against live daemons: forged ACKs, forged bundles and
fragments reusing genuine keys, spoofed bare datagrams, the 2^63 sender.

The attacker first holds node 2's address while node 2 is down, so it sees
every DATA segment node 1 sends (tokens, and the primary blocks in the
clear) -- the strongest position short of breaking the keys. It answers
each with forged ACKs; then node 2 comes up and the attacker races the
genuine retransmissions with forged copies of every bundle and fragment it
saw, hostile DCiS segments and junk. Afterwards every bundle node 1
acknowledged to its application reaches node 2's application exactly once,
intact, and both daemons still run.
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

import cbor2
import pytest

from dcis.dtn.bpv7.bundle import Bundle, decode_bundle_untrusted, encode_bundle
from dcis.dtn.cl.udp import (
    DCIS_TAG,
    DataSegment,
    PartSegment,
    decode_datagram_untrusted,
    encode_ack_segment,
    encode_data_segment,
    encode_need_segment,
)
from dcis.dtn.client import Client
from dcis.tools.testbed import make_keystores
from tests.adversarial.conftest import Daemon, collect, ports, wait_for

pytestmark = pytest.mark.slow


def _payload(i: int) -> bytes:
    # Some fit a 1200-byte datagram, some are fragmented.
    head = f"{i:04d}|".encode()
    return head + random.Random(i).randbytes(300 + 900 * (i % 3))


def _part(sender: int, token: int, offset: int, total: int, chunk: bytes) -> bytes:
    """A PART segment as the encoder writes it, whatever its fields say."""
    body = [2, sender, token, offset, total, chunk]
    return bytes(cbor2.dumps(cbor2.CBORTag(DCIS_TAG, body)))


def _forge(bundle: bytes) -> bytes:
    """The same key (primary block untouched), other payload bytes."""
    b = decode_bundle_untrusted(bundle)
    pb = b.payload_block
    data = bytes([pb.data[0] ^ 0xA5]) + pb.data[1:]
    return encode_bundle(
        Bundle(
            b.primary,
            (
                *b.blocks[:-1],
                type(pb)(pb.type_code, pb.number, pb.flags, pb.crc_type, data),
            ),
        )
    )


@pytest.mark.parametrize("parts", [False, True], ids=["fragments", "parts"])
@pytest.mark.parametrize("secure", [True, False], ids=["security", "no-security"])
def test_a_sniffing_forger_loses_no_acknowledged_bundle(
    tmp_path: Path, daemons: list[Daemon], secure: bool, parts: bool
) -> None:
    # Bundles over the 1,200-byte MTU go as fragments (transfers off) or
    # whole in PART segments (the default towards an ack = "on" peer).
    p1, p2, pa = ports(3)
    keys = make_keystores(tmp_path / "keys", [1, 2]) if secure else {}
    extra = "mtu_bytes = 1200" + (
        "" if parts else "\n[limits]\nudp_max_transfer_bytes = 0"
    )
    n1 = Daemon(tmp_path, 1, p1, {2: p2}, keystore=keys.get(1), extra=extra)
    n2 = Daemon(tmp_path, 2, p2, {1: p1}, keystore=keys.get(2))
    daemons += [n1, n2]
    n1.start()
    spy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spy.bind(("127.0.0.1", p2))  # node 2's address, node 2 being down
    spy.settimeout(0.1)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", pa))
    n = 12
    with Client(n1.socket) as c:
        for i in range(n):
            c.send("ipn:2.1", _payload(i), source="ipn:1.1")  # ok = acknowledged
    seen: dict[bytes, DataSegment] = {}
    seen_parts: dict[tuple[int, int], PartSegment] = {}
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        try:
            data, _ = spy.recvfrom(70_000)
        except TimeoutError:
            continue
        dg = decode_datagram_untrusted(data)
        assert isinstance(dg, DataSegment | PartSegment)
        if isinstance(dg, DataSegment):
            seen[dg.bundle] = dg
        else:
            seen_parts[(dg.token, dg.offset)] = dg
            # Ask for every byte again, from elsewhere: refused.
            need = encode_need_segment(sender=2, token=dg.token, ranges=[(0, dg.total)])
            other.sendto(need, ("127.0.0.1", p1))
            if secure:
                spy.sendto(need, ("127.0.0.1", p1))  # no MAC: refused too
        ack = encode_ack_segment(sender=2, tokens=[dg.token, dg.token ^ 1, 0])
        other.sendto(ack, ("127.0.0.1", p1))  # right tokens, wrong address
        if secure:
            # From node 2's own address, but without node 2's MAC. (Without
            # security an attacker owning the neighbour's address can ACK:
            # spec/udpcl.md, threat model.)
            spy.sendto(ack, ("127.0.0.1", p1))
    assert seen or seen_parts, "node 1 sent nothing to its neighbour"
    assert bool(seen_parts) == parts
    st = n1.status()
    assert st["counters"]["forwarded"] == 0  # no forged ACK deleted anything
    assert st["counters"]["acks_refused"] > 0
    if parts:
        assert st["counters"]["needs_refused"] > 0  # a NEED from elsewhere
    if secure:
        assert st["counters"]["mac_failures"] > 0
    spy.close()
    n2.start()
    target = ("127.0.0.1", p2)
    rng = random.Random(5)
    for dg in seen.values():
        forged = _forge(dg.bundle)
        if secure:
            # Key collisions, bare (anyone may send a bare bundle): the
            # destination keeps them apart and its policy refuses them.
            other.sendto(forged, target)
            # In node 1's name without its MAC: dropped unacknowledged.
            other.sendto(encode_data_segment(sender=1, token=1, bundle=forged), target)
        other.sendto(
            encode_data_segment(sender=2**63, token=7, bundle=dg.bundle), target
        )
        other.sendto(
            encode_data_segment(sender=2**64 - 1, token=7, bundle=forged), target
        )
        other.sendto(b"\x9f" + rng.randbytes(rng.randrange(1, 300)), target)
        other.sendto(rng.randbytes(rng.randrange(1, 300)), target)
    for part in seen_parts.values():
        bad = bytes([part.chunk[0] ^ (0x5A if part.offset else 0)]) + bytes(
            part.chunk[1:]
        )
        bad = bad[:-1] + bytes([bad[-1] ^ 0xA5])
        forged_parts = [
            # Another sender's transfer under the same token: kept apart,
            # never completed, dropped when idle.
            (3, part.token, part.offset, part.total + 1, bad),
            (2**63, part.token, part.offset, part.total, bad),  # refused at decode
        ]
        if secure:
            # In node 1's name without its MAC: dropped before reassembly.
            forged_parts.append((1, part.token, part.offset, part.total, bad))
        for sender, token, offset, total, chunk in forged_parts:
            other.sendto(_part(sender, token, offset, total, chunk), target)
    got = collect(n2.socket, "ipn:2.1", n, timeout_s=90)
    payloads = sorted(b.payload for b in got)
    assert payloads == sorted(_payload(i) for i in range(n))  # once each, intact
    assert n1.alive()
    assert n2.alive()
    wait_for(lambda: n1.status()["stored"] == 0, 30, "node 1 still holds bundles")
    assert n2.non_json_lines() == []
    other.close()
