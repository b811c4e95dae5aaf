"""Interop with pyd3tn (µD3TN's Python BPv7 implementation), both directions.

pyd3tn -> us: bundles pyd3tn builds (CRC-16 and CRC-32C, hop count, previous
node, bundle age, fragments, status reports) decode here field for field, and
our re-encoding is byte-identical to pyd3tn's.
us -> pyd3tn: our bundles parse in pyd3tn, field for field, and the CRCs we
wrote equal the CRCs pyd3tn computes for the same blocks (pyd3tn's parser does
not check CRCs itself, so the test recomputes them with pyd3tn's code).
pyd3tn rejects block types outside its own enum, so our bundles sent to it
carry only the RFC 9171 extension blocks.
"""

from __future__ import annotations

from typing import Any

import pytest

from dcis.dtn.bpv7 import (
    BlockType,
    Bundle,
    BundleFlags,
    CrcType,
    DtnEid,
    HopCount,
    IpnEid,
    StatusKind,
    StatusReason,
    StatusReport,
    decode_admin_record_untrusted,
    decode_bundle_untrusted,
    encode_bundle,
    fragment_bundle,
    make_bundle,
    make_status_report,
    parse_eid,
)

b7 = pytest.importorskip("pyd3tn.bundle7")
pytestmark = pytest.mark.interop

UNIX_2024 = 1_704_067_200  # 2024-01-01T00:00:00Z
DTN_MS_2024 = (UNIX_2024 - 946_684_800) * 1000

CRC_PAIRS = [
    (b7.CRCType.CRC16, b7.CRCType.CRC16),
    (b7.CRCType.CRC32, b7.CRCType.CRC32),
    (b7.CRCType.CRC32, b7.CRCType.CRC16),
    (b7.CRCType.CRC16, b7.CRCType.NONE),
    (b7.CRCType.NONE, b7.CRCType.CRC32),
]


def their_crc(block: Any) -> int | None:
    return None if block.crc_type == b7.CRCType.NONE else int(block.calculate_crc())


# --- pyd3tn -> us -------------------------------------------------------------


@pytest.mark.parametrize(("crc_primary", "crc_canonical"), CRC_PAIRS)
@pytest.mark.parametrize(
    "extras",
    [
        {},
        {"hop_limit": 30, "hop_count": 4},
        {"previous_node_eid": "ipn:9.0"},
        {"bundle_age": 12.5},
        {
            "hop_limit": 255,
            "hop_count": 0,
            "previous_node_eid": "dtn://relay/",
            "bundle_age": 3,
        },
    ],
)
def test_pyd3tn_bundles_decode_field_for_field(
    crc_primary: Any, crc_canonical: Any, extras: dict[str, Any]
) -> None:
    theirs = b7.create_bundle7(
        "ipn:1.5",
        "dtn://ground/telemetry",
        b"payload from pyd3tn" * 7,
        report_to_eid="ipn:1.0",
        crc_type_primary=crc_primary,
        crc_type_canonical=crc_canonical,
        creation_timestamp=UNIX_2024,
        sequence_number=17,
        lifetime=3600,
        flags=b7.BundleProcFlag.REPORT_DELIVERY,
        **extras,
    )
    raw = bytes(theirs)
    ours = decode_bundle_untrusted(raw)
    p, tp = ours.primary, theirs.primary_block
    assert p.flags == BundleFlags.REPORT_DELIVERY == int(tp.bundle_proc_flags)
    assert int(p.crc_type) == int(tp.crc_type)
    assert p.source == IpnEid(1, 5)
    assert p.destination == DtnEid("//ground/telemetry")
    assert p.report_to == IpnEid(1, 0)
    assert p.creation.time_ms == DTN_MS_2024 == tp.creation_time[0]
    assert p.creation.sequence == 17
    assert p.lifetime_ms == 3_600_000
    assert ours.payload == theirs.payload_block.data
    assert [(b.type_code, b.number, int(b.crc_type)) for b in ours.blocks] == [
        (int(t.block_type), t.block_number, int(t.crc_type)) for t in theirs
    ][1:]
    if "hop_limit" in extras:
        assert ours.hop_count == HopCount(extras["hop_limit"], extras["hop_count"])
    else:
        assert ours.hop_count is None
    if "previous_node_eid" in extras:
        assert ours.previous_node == parse_eid(extras["previous_node_eid"])
    if "bundle_age" in extras:
        assert ours.bundle_age_ms == int(extras["bundle_age"] * 1000)
    # Both encoders are canonical: our re-encoding is their bytes exactly.
    assert encode_bundle(ours) == raw


@pytest.mark.parametrize(("crc_primary", "crc_canonical"), CRC_PAIRS[:2])
def test_pyd3tn_fragments_decode_and_reassemble(
    crc_primary: Any, crc_canonical: Any
) -> None:
    data = bytes(range(256)) * 4
    pieces = []
    for off in range(0, len(data), 300):
        raw = b7.serialize_bundle7(
            "ipn:3.1",
            "ipn:4.1",
            data[off : off + 300],
            crc_type_primary=crc_primary,
            crc_type_canonical=crc_canonical,
            creation_timestamp=UNIX_2024,
            sequence_number=2,
            flags=b7.BundleProcFlag.IS_FRAGMENT,
            fragment_offset=off,
            total_adu_length=len(data),
            hop_limit=10,
        )
        f = decode_bundle_untrusted(raw)
        assert f.is_fragment
        assert (f.primary.fragment_offset, f.primary.total_adu_length) == (
            off,
            len(data),
        )
        assert encode_bundle(f) == raw
        pieces.append(f)
    from dcis.dtn.bpv7 import reassemble

    whole = reassemble(reversed(pieces))
    assert whole.payload == data
    assert not whole.is_fragment


def test_pyd3tn_status_report_decodes() -> None:
    report = b7.BundleStatusReport(
        b7.StatusCode.DELIVERED_BUNDLE,
        b7.ReasonCode.NO_INFO,
        b7.EID("ipn:1.5"),
        b7.CreationTimestamp(UNIX_2024, 3),
        fragment_offset=10,
        total_payload_length=20,
    )
    r = decode_admin_record_untrusted(report.data)
    assert isinstance(r, StatusReport)
    assert r.delivered.asserted
    assert not r.received.asserted
    assert r.reason == StatusReason.NO_INFO
    assert r.source == IpnEid(1, 5)
    assert (r.creation.time_ms, r.creation.sequence) == (DTN_MS_2024, 3)
    assert (r.fragment_offset, r.payload_length) == (10, 20)


# --- us -> pyd3tn -------------------------------------------------------------


def ours_variants() -> list[Bundle]:
    out = []
    for crc in (CrcType.CRC16, CrcType.CRC32C):
        for block_crc in (CrcType.NONE, CrcType.CRC16, CrcType.CRC32C):
            out.append(
                make_bundle(
                    source="ipn:2.1",
                    destination="dtn://sat-7/store",
                    report_to="ipn:2.0",
                    payload=b"\x00\x01ours" * 50,
                    creation_ms=DTN_MS_2024 + 123,
                    sequence=9,
                    lifetime_ms=60_000,
                    flags=BundleFlags.REPORT_RECEPTION
                    | BundleFlags.STATUS_TIME_REQUESTED,
                    crc_type=crc,
                    block_crc_type=block_crc,
                    previous_node="ipn:8.0",
                    bundle_age_ms=4500,
                    hop_limit=16,
                    hop_count=3,
                )
            )
    return out


@pytest.mark.parametrize(
    "ours",
    ours_variants(),
    ids=lambda b: f"{b.primary.crc_type.name}-{b.blocks[0].crc_type.name}",
)
def test_our_bundles_parse_in_pyd3tn_with_crcs_that_check(ours: Bundle) -> None:
    theirs = b7.Bundle.parse(encode_bundle(ours))
    tp = theirs.primary_block
    assert str(tp.source) == "ipn:2.1"
    assert str(tp.destination) == "dtn://sat-7/store"
    assert str(tp.report_to) == "ipn:2.0"
    assert tp.creation_time[0] == DTN_MS_2024 + 123
    assert tp.creation_time.sequence_number == 9
    assert tp.lifetime == 60_000
    assert int(tp.bundle_proc_flags) == int(ours.primary.flags)
    assert theirs.payload_block.data == ours.payload
    # CRCs: what we wrote equals what pyd3tn computes over the same fields.
    assert tp.crc_provided == their_crc(tp)
    for blk in [*theirs.blocks, theirs.payload_block]:
        assert blk.crc_provided == their_crc(blk)
    by_type = {int(b.block_type): b for b in theirs.blocks}
    import cbor2

    assert cbor2.loads(by_type[BlockType.HOP_COUNT].data) == [16, 3]
    assert cbor2.loads(by_type[BlockType.BUNDLE_AGE].data) == 4500
    assert (
        str(b7.EID.from_cbor(cbor2.loads(by_type[BlockType.PREVIOUS_NODE].data)))
        == "ipn:8.0"
    )
    # And pyd3tn's own encoding of what it parsed is our bytes.
    assert bytes(theirs) == encode_bundle(ours)


def test_our_fragments_parse_in_pyd3tn() -> None:
    b = make_bundle(
        source="ipn:2.1",
        destination="ipn:3.1",
        payload=bytes(range(200)),
        creation_ms=DTN_MS_2024,
        hop_limit=5,
    )
    for f in fragment_bundle(b, 64):
        theirs = b7.Bundle.parse(encode_bundle(f))
        assert theirs.is_fragmented
        assert theirs.primary_block.fragment_offset == f.primary.fragment_offset
        assert theirs.primary_block.total_payload_length == 200
        assert theirs.primary_block.crc_provided == their_crc(theirs.primary_block)
        assert theirs.payload_block.data == f.payload


def test_our_status_report_parses_in_pyd3tn() -> None:
    subject = make_bundle(
        source="ipn:2.1",
        destination="ipn:3.1",
        report_to="ipn:2.0",
        payload=b"x",
        creation_ms=DTN_MS_2024,
        sequence=5,
    )
    rb = make_status_report(
        subject,
        {StatusKind.RECEIVED, StatusKind.FORWARDED},
        reason=StatusReason.NO_KNOWN_ROUTE,
        now_ms=DTN_MS_2024 + 1,
        source=IpnEid(3, 0),
    )
    assert rb is not None
    theirs = b7.Bundle.parse(encode_bundle(rb))
    assert theirs.primary_block.has_flag(b7.BundleProcFlag.ADMINISTRATIVE_RECORD)
    rec = b7.Bundle.parse_administrative_record(theirs.payload_block.data)
    assert rec["record_type"] == b7.RecordType.BUNDLE_STATUS_REPORT
    info, reason, source, ts = rec["record_data"][:4]
    assert [i[0] for i in info] == [True, True, False, False]
    assert reason == StatusReason.NO_KNOWN_ROUTE
    assert str(source) == "ipn:2.1"
    assert list(ts) == [DTN_MS_2024, 5]
