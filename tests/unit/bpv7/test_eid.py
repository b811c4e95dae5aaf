"""Endpoint IDs: parse, format, wire form."""

from __future__ import annotations

import pytest

from dcis.dtn.bpv7.eid import DTN_NONE, DtnEid, IpnEid, encode_eid, parse_eid, read_eid
from dcis.dtn.errors import DecodeError, InvalidArgument


@pytest.mark.parametrize(
    ("text", "eid"),
    [
        ("dtn:none", DTN_NONE),
        ("dtn://node/svc", DtnEid("//node/svc")),
        ("dtn://node/", DtnEid("//node/")),
        ("dtn://node/a/b?c", DtnEid("//node/a/b?c")),
        ("ipn:5.1", IpnEid(5, 1)),
        ("ipn:0.7", IpnEid(0, 7)),
        ("ipn:18446744073709551615.0", IpnEid(2**64 - 1, 0)),
    ],
)
def test_parse_format_wire_round_trip(text: str, eid: IpnEid | DtnEid) -> None:
    assert parse_eid(text) == eid
    assert str(eid) == text
    raw = encode_eid(eid)
    assert read_eid(raw, 0, len(raw), "t") == (eid, len(raw))


def test_wire_forms_per_rfc9171() -> None:
    assert encode_eid(DTN_NONE) == bytes.fromhex("820100")
    assert encode_eid(IpnEid(5, 1)) == bytes.fromhex("8202820501")
    assert encode_eid(DtnEid("//a/b")) == bytes.fromhex("82016" + "5") + b"//a/b"


def test_node_ids() -> None:
    assert IpnEid(5, 1).node_id == 5
    assert DtnEid("//sat-3/inbox").node_id == "dtn://sat-3/"
    assert DTN_NONE.is_none


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ipn:5", "ipn EID must be"),
        ("ipn:a.1", "ipn EID must be"),
        ("ipn:-1.1", "ipn EID must be"),
        ("ipn:18446744073709551616.0", "0..2\\*\\*64-1"),
        ("dtn:/x", "must be 'none' or start with '//'"),
        ("dtn:///x", "empty node name"),
        ("http://x", "unsupported EID scheme"),
        ("nothing", "no scheme"),
    ],
)
def test_bad_eids_say_why(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_eid(text)


@pytest.mark.parametrize(
    ("hexs", "message"),
    [
        ("8203820101", "unsupported EID scheme code 3"),
        ("820283010203", "ipn SSP must be"),
        ("82016161", "dtn SSP must be 0"),
        ("820162ff00", "not valid UTF-8"),
        ("8301", "2-element array"),
        ("82016a2f2f", "exceeds"),
    ],
)
def test_bad_wire_eids_raise_decode_error(hexs: str, message: str) -> None:
    raw = bytes.fromhex(hexs)
    with pytest.raises(DecodeError, match=message):
        read_eid(raw, 0, len(raw), "here")


@pytest.mark.parametrize(
    "text",
    [
        "dtn://a b/c",
        "dtn://n\n/x",
        "dtn://n/x\r\nforged log line",
        "dtn://n/\x00",
        "dtn://n/\x7f",
        "dtn://n/\x85",
    ],
)
def test_dtn_eid_with_control_or_space_characters_rejected(text: str) -> None:
    # RFC 9171 4.2.5.1.1: node-name = 1*VCHAR, demux = *VCHAR. Whitespace and
    # control characters are never part of a dtn URI, and would let a peer
    # forge log lines or break tools that print EIDs.
    with pytest.raises(InvalidArgument, match="control or space"):
        parse_eid(text)
    ssp = text[4:].encode()
    raw = b"\x82\x01" + bytes([0x60 + len(ssp)]) + ssp
    with pytest.raises(DecodeError, match="control or space"):
        read_eid(raw, 0, len(raw), "here")


def test_dtn_eid_non_ascii_printable_accepted() -> None:
    # Deliberately liberal (spec/bundle.md): internationalised names round-trip.
    eid = parse_eid("dtn://nöde/ünïcode")
    raw = encode_eid(eid)
    assert read_eid(raw, 0, len(raw), "t") == (eid, len(raw))
