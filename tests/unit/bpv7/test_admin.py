"""Status reports: encode/decode and the report bundle a node sends."""

from __future__ import annotations

from typing import Any

import pytest

from dcis.dtn.bpv7 import (
    Bundle,
    BundleFlags,
    CreationTimestamp,
    IpnEid,
    StatusAssertion,
    StatusKind,
    StatusReason,
    StatusReport,
    UnknownAdminRecord,
    decode_admin_record_untrusted,
    decode_bundle_untrusted,
    encode_admin_record,
    encode_bundle,
    fragment_bundle,
    make_bundle,
    make_status_report,
)
from dcis.dtn.errors import DecodeError


def test_report_bundle_goes_to_report_to_with_times_when_requested() -> None:
    subject = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        report_to="ipn:1.0",
        payload=b"x",
        creation_ms=1000,
        sequence=4,
        flags=BundleFlags.REPORT_DELIVERY | BundleFlags.STATUS_TIME_REQUESTED,
    )
    rb = make_status_report(
        subject, {StatusKind.DELIVERED}, now_ms=5000, source=IpnEid(2, 0)
    )
    assert rb is not None
    rb = decode_bundle_untrusted(encode_bundle(rb))
    assert rb.is_admin_record
    assert rb.primary.destination == IpnEid(1, 0)
    r = decode_admin_record_untrusted(rb.payload)
    assert isinstance(r, StatusReport)
    assert r.delivered == StatusAssertion(True, 5000)
    assert r.received == StatusAssertion()
    assert r.reason == StatusReason.NO_INFO
    assert r.subject_key == subject.bundle_key


def test_report_on_fragment_carries_offset_and_length_and_no_time() -> None:
    subject = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        report_to="ipn:1.0",
        payload=b"abcdef",
        creation_ms=9,
    )
    frag = fragment_bundle(subject, 4)[1]
    rb = make_status_report(
        frag,
        {StatusKind.DELETED},
        reason=StatusReason.LIFETIME_EXPIRED,
        now_ms=7,
        source=IpnEid(3, 0),
    )
    assert rb is not None
    r = decode_admin_record_untrusted(rb.payload)
    assert isinstance(r, StatusReport)
    assert (r.fragment_offset, r.payload_length) == (4, 2)
    assert r.deleted == StatusAssertion(True, None)
    assert r.subject_key == frag.bundle_key


def test_rfc9171_wire_form_and_unknown_reason_kept() -> None:
    r = StatusReport(
        received=StatusAssertion(True),
        reason=77,
        source=IpnEid(1, 1),
        creation=CreationTimestamp(5, 0),
    )
    raw = encode_admin_record(r)
    assert raw == bytes.fromhex(
        "8201" + "84" + "84" + "81f5" + "81f4" * 3 + "184d" + "8202820101" + "820500"
    )
    assert decode_admin_record_untrusted(raw) == r


def test_unknown_record_type_kept_opaque() -> None:
    raw = bytes.fromhex("8203a16161820102")  # type 3 (BIBE), some map
    r = decode_admin_record_untrusted(raw)
    assert r == UnknownAdminRecord(3, bytes.fromhex("a16161820102"))
    assert encode_admin_record(r) == raw


@pytest.mark.parametrize(
    ("hexs", "message"),
    [
        ("", "truncated"),
        ("820183", "must have 4 or 6"),
        ("8201848481f581f481f481f4", "truncated"),
        ("8201848481f6", "expected a boolean"),
        ("82018484820400", "expected a boolean"),
        ("82039f", "indefinite"),
        ("8203" + "81" * 40, "nested deeper"),
    ],
)
def test_bad_records_named(hexs: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_admin_record_untrusted(bytes.fromhex(hexs))


def _received_report(**fields: Any) -> Bundle | None:
    """Node 2's "received" report about a bundle ipn:1.1 -> ipn:2.1 with ``fields``."""
    subject = make_bundle(
        source="ipn:1.1", destination="ipn:2.1", payload=b"x", creation_ms=1, **fields
    )
    return make_status_report(
        subject, {StatusKind.RECEIVED}, now_ms=1, source=IpnEid(2, 0)
    )


@pytest.mark.parametrize(
    "fields",
    [
        {},  # report-to defaults to dtn:none
        {"report_to": "ipn:1.0", "flags": BundleFlags.ADMIN_RECORD},
        # RFC 9758 3.4: ipn:0.0 is the null endpoint of the ipn scheme, like
        # dtn:none; a report sent there would only be routed to nowhere.
        {"report_to": "ipn:0.0", "flags": BundleFlags.REPORT_RECEPTION},
    ],
    ids=["dtn-none", "about-a-report", "ipn-null"],
)
def test_no_report_to_null_endpoints_or_about_reports(fields: dict[str, Any]) -> None:
    assert _received_report(**fields) is None


def test_ipn_0_x_other_than_the_null_endpoint_is_reported_to() -> None:
    # ipn:0.x with x != 0 is an ordinary (if unusual) endpoint: reported to.
    report = _received_report(report_to="ipn:0.5")
    assert report is not None
    assert report.primary.destination == IpnEid(0, 5)


def test_is_null_eid() -> None:
    from dcis.dtn.bpv7 import DTN_NONE, is_null_eid, parse_eid

    assert is_null_eid(DTN_NONE)
    assert is_null_eid(parse_eid("ipn:0.0"))
    assert not is_null_eid(parse_eid("ipn:0.1"))
    assert not is_null_eid(parse_eid("dtn://n/"))
