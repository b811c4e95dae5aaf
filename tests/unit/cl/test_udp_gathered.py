"""A bundle handed to the UDP CL in parts (issue 18: ``encode_bundle_parts``,
its payload not copied) leaves as one datagram of the same bytes as the
bundle joined: DATA segment, MAC, best effort and retransmission alike."""

from __future__ import annotations

import random

import pytest

from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.cl.udp import (
    AckMode,
    DataSegment,
    SendDatagram,
    TxDone,
    UdpLink,
    data_mac,
    decode_datagram_untrusted,
    encode_data_segment,
    encode_data_segment_parts,
)
from tests.unit.cl.udp_bundles import bundle_parts

KEY = bytes(range(32))


@pytest.mark.parametrize("size", [0, 100, 20_000, 64_000])
@pytest.mark.parametrize("mac", [False, True])
def test_segment_parts_join_to_the_segment(size: int, mac: bool) -> None:
    parts = bundle_parts(size)
    whole = b"".join(parts)
    tag = data_mac(KEY, sender=1, receiver=2, token=77, bundle=whole) if mac else None
    if mac:
        # The MAC over the parts, hashed in place, is the MAC over the bytes.
        assert tag == data_mac(KEY, sender=1, receiver=2, token=77, bundle=parts)
    got = encode_data_segment_parts(sender=1, token=77, bundle=parts, mac=tag)
    assert b"".join(got) == encode_data_segment(
        sender=1, token=77, bundle=whole, mac=tag
    )
    if len(parts) == 3:
        assert got[1] is parts[1]  # the payload object, not a copy


@pytest.mark.parametrize("mac_key", [None, KEY])
def test_a_link_sends_parts_as_the_datagram_it_sends_for_bytes(
    mac_key: bytes | None,
) -> None:
    parts = bundle_parts(64_000)
    assert len(parts) == 3
    links = [
        UdpLink(local_node=1, neighbor=2, rng=random.Random(5), mac_key=mac_key)
        for _ in range(2)
    ]
    (a,) = links[0].transmit(4, b"".join(parts), now_s=0.0)
    (b,) = links[1].transmit(4, parts, now_s=0.0)
    assert isinstance(a, SendDatagram)
    assert isinstance(b, SendDatagram)
    assert isinstance(b.data, tuple)
    assert b"".join(b.data) == a.data
    assert b.size == a.size == len(a.data)
    assert b.token == a.token
    seg = decode_datagram_untrusted(b"".join(b.data))
    assert isinstance(seg, DataSegment)
    assert seg.bundle == b"".join(parts)
    # Retransmitted as it was first sent.
    assert links[1].on_timer(1e9)[0] == b


def test_parts_over_the_mtu_fail_and_best_effort_passes_them_on() -> None:
    parts = bundle_parts(64_000)
    small = UdpLink(local_node=1, neighbor=2, mtu_bytes=10_000)
    (done,) = small.transmit(1, parts, now_s=0.0)
    assert done == TxDone(
        1, False, f"bundle of {len(b''.join(parts))} bytes exceeds the 10000-byte MTU"
    )
    bare = UdpLink(local_node=1, neighbor=2, ack_mode=AckMode.OFF)
    sent, ok = bare.transmit(2, parts, now_s=0.0)
    assert isinstance(sent, SendDatagram)
    assert sent.data == parts
    assert ok == TxDone(2, True, "best effort")
    one = bare.transmit(
        3,
        (
            encode_bundle(
                make_bundle(
                    source="ipn:1.1", destination="ipn:2.1", payload=b"x", creation_ms=5
                )
            ),
        ),
        now_s=0.0,
    )[0]
    assert isinstance(one, SendDatagram)
    assert isinstance(one.data, bytes)


@pytest.mark.parametrize("mac", [False, True])
def test_a_large_received_bundle_is_a_view_of_its_datagram(mac: bool) -> None:
    # Receiving side (issue 18): a UDP fragment of a 1 MB bundle is not
    # sliced out of its datagram -- the decoder copies its payload once.
    # A small bundle stays bytes. Same bytes, same MAC either way.
    for size, view in ((100, False), (64_000, True)):
        bundle = b"".join(bundle_parts(size))
        tag = data_mac(KEY, sender=1, receiver=2, token=5, bundle=bundle)
        datagram = encode_data_segment(
            sender=1, token=5, bundle=bundle, mac=tag if mac else None
        )
        dg = decode_datagram_untrusted(datagram)
        assert isinstance(dg, DataSegment)
        assert isinstance(dg.bundle, memoryview) is view
        if view:
            assert isinstance(dg.bundle, memoryview)
            assert dg.bundle.obj is datagram
        assert bytes(dg.bundle) == bundle
        assert data_mac(KEY, sender=1, receiver=2, token=5, bundle=dg.bundle) == tag
