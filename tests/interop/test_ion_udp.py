"""UDP datagrams recorded from a live ION node (ION 4.1.3, BPv7, udpcli/udpclo).

tests/vectors/ion_udp_bundles.hex holds every datagram of one session between
ION node 1 and our dtn-node 2 (``ack = "none"``), both directions, as tcpdump
saw them. What we must do with them:

- decode every ION bundle exactly (ION's CRC-16, its block 193, its bundle
  age block, anonymous ``dtn:none`` sources) and re-encode it byte for byte;
  build the same bytes from the fields with our own encoder (the CRC-16 and
  CBOR encodings are fixed by RFC 9171);
- through the UDP CL: an ION datagram is a bare bundle, and towards a
  neighbour configured ``none`` we send bare bundles, never a DCiS segment;
- through the agent: deliver ION's bundles to the local endpoint, answer
  bptrace's report requests with the status reports we sent ION (udp-08,
  udp-12), read ION's own status report (udp-09), and relay an ION bundle
  exactly as we did on the wire (udp-10: only the previous node changes).
"""

from __future__ import annotations

import random

import pytest

from dcis.dtn.agent.actions import Ack, Deliver, Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7 import (
    BlockType,
    BundleFlags,
    CrcType,
    IpnEid,
    StatusReason,
    StatusReport,
    decode_admin_record_untrusted,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
    parse_eid,
)
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.flags import BlockFlags
from dcis.dtn.cl.udp import (
    AckMode,
    BareBundle,
    SendDatagram,
    UdpLink,
    decode_datagram_untrusted,
)
from tests.interop.ion_vectors import direction, entry, load
from tests.unit.agent.helpers import link, of

pytestmark = pytest.mark.interop

V = load("ion_udp_bundles.hex")
FROM_ION = {k: v for k, v in V.items() if direction(k) == "ion>dcis"}
TO_ION = {k: v for k, v in V.items() if direction(k) == "dcis>ion"}

# ION's block 193 as it put it in every bundle (ION's own extension block,
# flag "replicate in every fragment"); we keep it as an opaque block.
ION_BLOCK_193 = bytes.fromhex("8400010000")

# tag -> (flags, source, report-to, lifetime ms, payload) of ION's bundles
ION_BUNDLES = {
    "udp-01": (0x44, "dtn:none", "dtn:none", 300_000, b"hello from ION 1"),
    "udp-02": (0x44, "dtn:none", "dtn:none", 300_000, b"second ION bundle"),
    "udp-03": (0x44, "dtn:none", "dtn:none", 5_000, b"third ION bundle with ttl"),
    "udp-06": (
        0x40,
        "ipn:1.2",
        "ipn:1.2",
        300_000,
        b"file payload from ION bpsendfile\n",
    ),
    "udp-07": (0x34040, "ipn:1.2", "ipn:1.2", 60_000, b"traced bundle\x00"),
}


def test_the_capture_has_both_directions() -> None:
    assert len(V) == 12
    assert sorted(k.split()[0] for k in FROM_ION) == [
        "udp-01",
        "udp-02",
        "udp-03",
        "udp-06",
        "udp-07",
        "udp-09",
    ]
    assert len(TO_ION) == 6


@pytest.mark.parametrize("name", list(V))
def test_every_datagram_is_a_bare_bundle_that_reencodes_byte_for_byte(
    name: str,
) -> None:
    data = V[name]
    dg = decode_datagram_untrusted(data)
    assert isinstance(dg, BareBundle)
    bundle = decode_bundle_untrusted(data)
    assert encode_bundle(bundle) == data


@pytest.mark.parametrize("tag", list(ION_BUNDLES))
def test_ion_bundle_fields(tag: str) -> None:
    flags, source, report_to, lifetime, payload = ION_BUNDLES[tag]
    b = decode_bundle_untrusted(entry(V, tag))
    p = b.primary
    assert int(p.flags) == flags
    assert p.crc_type is CrcType.CRC16  # ION's default
    assert (str(p.source), str(p.destination), str(p.report_to)) == (
        source,
        "ipn:2.1",
        report_to,
    )
    assert p.lifetime_ms == lifetime
    assert p.creation.time_ms > 0  # ION has a clock
    assert [(c.type_code, c.number) for c in b.blocks] == [
        (BlockType.PREVIOUS_NODE, 2),
        (193, 3),
        (BlockType.BUNDLE_AGE, 4),
        (BlockType.PAYLOAD, 1),
    ]
    assert b.previous_node == IpnEid(1, 0)
    assert b.bundle_age_ms is not None
    assert b.bundle_age_ms < 1_000
    assert b.payload == payload
    assert all(c.crc_type is CrcType.NONE for c in b.blocks)


@pytest.mark.parametrize("tag", list(ION_BUNDLES))
def test_our_encoder_builds_ions_bytes_from_the_fields(tag: str) -> None:
    """Where RFC 9171 fixes the bytes (deterministic CBOR, CRC-16/X-25 of the
    primary block), our encoder, given ION's field values, writes ION's
    bytes exactly."""
    ion = decode_bundle_untrusted(entry(V, tag))
    p = ion.primary
    age = ion.bundle_age_ms
    assert age is not None
    ours = make_bundle(
        source=p.source,
        destination=p.destination,
        report_to=p.report_to,
        payload=ion.payload,
        creation_ms=p.creation.time_ms,
        sequence=p.creation.sequence,
        lifetime_ms=p.lifetime_ms,
        flags=BundleFlags(int(p.flags)),
        crc_type=CrcType.CRC16,
        block_crc_type=CrcType.NONE,
        payload_crc_type=CrcType.NONE,
    )
    blocks = (
        CanonicalBlock(
            BlockType.PREVIOUS_NODE,
            2,
            BlockFlags(0x10),
            CrcType.NONE,
            bytes.fromhex("8202820100"),
        ),
        CanonicalBlock(193, 3, BlockFlags(0x01), CrcType.NONE, ION_BLOCK_193),
        CanonicalBlock(
            BlockType.BUNDLE_AGE, 4, BlockFlags(0x01), CrcType.NONE, ion.blocks[2].data
        ),
        CanonicalBlock(
            BlockType.PAYLOAD, 1, BlockFlags(0x01), CrcType.NONE, ion.payload
        ),
    )
    rebuilt = type(ours)(primary=ours.primary, blocks=blocks)
    assert encode_bundle(rebuilt) == entry(V, tag)


def test_towards_a_none_neighbour_we_send_bare_bundles_only() -> None:
    udp = UdpLink(local_node=2, neighbor=1, ack_mode=AckMode.NONE, rng=random.Random(1))
    for tag in ("udp-04", "udp-05", "udp-11"):
        data = entry(V, tag)
        out = udp.transmit(7, data, now_s=0.0)
        sends = [o for o in out if isinstance(o, SendDatagram)]
        assert [s.data for s in sends] == [data]  # the bytes ION accepted
    assert udp.in_flight == 0  # nothing waits for an ACK ION never sends


def test_ion_bundles_are_delivered_and_never_acked() -> None:
    agent = Agent(node=2, store=MemoryStore())
    agent.register("ipn:2.1")
    got = []
    for tag in ION_BUNDLES:
        data = entry(V, tag)
        b = decode_bundle_untrusted(data)
        now = b.primary.creation.time_ms + 20  # as on the wire: within ms
        acts = agent.on_receive(cla="udp", neighbor=1, data=data, now=now)
        assert of(acts, Ack) == []  # no CL token: ION takes no ACKs
        got += [(d.source, d.payload, d.creation_ms) for d in of(acts, Deliver)]
    assert got == [
        (src, payload, decode_bundle_untrusted(entry(V, tag)).primary.creation.time_ms)
        for tag, (_, src, _, _, payload) in ION_BUNDLES.items()
    ]


def test_an_ion_bundle_past_its_lifetime_is_not_delivered() -> None:
    data = entry(V, "udp-03")  # bpsource -t5: 5-second lifetime
    b = decode_bundle_untrusted(data)
    agent = Agent(node=2, store=MemoryStore())
    agent.register("ipn:2.1")
    now = b.primary.creation.time_ms + 6_000
    acts = agent.on_receive(cla="udp", neighbor=1, data=data, now=now)
    assert of(acts, Deliver) == []


def _report(data: bytes) -> StatusReport:
    b = decode_bundle_untrusted(data)
    assert b.is_admin_record
    rec = decode_admin_record_untrusted(b.payload)
    assert isinstance(rec, StatusReport)
    return rec


def test_bptrace_gets_the_status_reports_ion_accepted() -> None:
    trace = entry(V, "udp-07")
    subject = decode_bundle_untrusted(trace)
    agent = Agent(node=2, store=MemoryStore())
    agent.register("ipn:2.1")
    agent.on_contact_start(link(2, 1), 0)
    now = subject.primary.creation.time_ms + 18
    acts = agent.on_receive(cla="udp", neighbor=1, data=trace, now=now)
    (deliver,) = of(acts, Deliver)
    reports = [
        decode_bundle_untrusted(t.data)
        for t in of(acts, Transmit)
        if decode_bundle_untrusted(t.data).is_admin_record
    ]
    assert reports, "a reception report was asked for (bptrace rcv)"
    acts += agent.on_delivered(deliver.bundle_key, now + 1)
    sent = [
        t.data
        for t in of(acts, Transmit)
        if decode_bundle_untrusted(t.data).is_admin_record
    ]
    ours = [_report(d) for d in sent]
    theirs = [_report(entry(V, "udp-08")), _report(entry(V, "udp-12"))]
    for mine, recorded in zip(ours, theirs, strict=True):
        # Same subject, same assertions; times are those of this run.
        assert mine.subject_key == recorded.subject_key == subject.bundle_key
        for kind in ("received", "forwarded", "delivered", "deleted"):
            a, r = getattr(mine, kind), getattr(recorded, kind)
            assert a.asserted == r.asserted
            # The subject set "status time requested" (0x40): times present.
            assert (a.time_ms is not None) == a.asserted
        assert mine.reason == recorded.reason == StatusReason.NO_INFO
    for d in sent:
        b = decode_bundle_untrusted(d)
        assert b.primary.destination == parse_eid("ipn:1.2")  # bptrace's report-to
        assert not b.primary.flags & BundleFlags.STATUS_TIME_REQUESTED


def test_ions_own_status_report_decodes() -> None:
    rec = _report(entry(V, "udp-09"))
    subject = decode_bundle_untrusted(entry(V, "udp-07"))
    assert rec.subject_key == subject.bundle_key
    assert rec.forwarded.asserted
    assert rec.forwarded.time_ms is not None
    assert not (rec.received.asserted)
    assert not (rec.delivered.asserted)
    assert not (rec.deleted.asserted)
    assert rec.reason == StatusReason.NO_INFO


def test_relaying_an_ion_bundle_changes_only_the_previous_node() -> None:
    ion = entry(V, "udp-09")
    agent = Agent(node=2, store=MemoryStore())
    now = 849_850_351_592
    acts = agent.on_receive(cla="udp", neighbor=1, data=ion, now=now)
    assert of(acts, Transmit) == []  # no contact yet
    # Forwarded with no dwell time: the bundle age block keeps ION's value.
    (tx,) = of(agent.on_contact_start(link(2, 1), now), Transmit)
    assert tx.neighbor == 1
    assert tx.data == entry(V, "udp-10")  # what ION received from us
    diff = [i for i, (a, b) in enumerate(zip(ion, tx.data, strict=True)) if a != b]
    assert len(diff) == 1
    assert (ion[diff[0]], tx.data[diff[0]]) == (1, 2)
