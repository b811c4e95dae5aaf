"""TCPCLv4 (RFC 9174) sans-I/O: the RFC's session sequences, byte layouts, refusals,
termination, keepalives, and what a misbehaving peer gets."""

from __future__ import annotations

import struct

import pytest

from dcis.dtn.cl.tcpcl4.messages import (
    ContactFlags,
    ContactHeader,
    ExtensionItem,
    KeepAlive,
    Limits,
    MsgReject,
    RefuseReason,
    RejectReason,
    SegmentFlags,
    SessInit,
    SessTerm,
    TermFlags,
    TermReason,
    XferAck,
    XferRefuse,
    XferSegment,
    decode_contact_header_untrusted,
    decode_message_untrusted,
    encode_contact_header,
    encode_message,
)
from dcis.dtn.cl.tcpcl4.session import (
    TRANSITIONS,
    BundleReceived,
    Input,
    ProtocolProblem,
    Session,
    SessionClosed,
    SessionConfig,
    SessionEstablished,
    StartTls,
    State,
    TransferAcked,
    TransferFailed,
    TransferTooLarge,
)
from dcis.dtn.errors import DecodeError, InvalidArgument
from tests.unit.cl.tcpcl4_pair import Pair

LIM = Limits()


def msgs(data: bytes, limits: Limits = LIM) -> list[object]:
    out = []
    while data:
        got = decode_message_untrusted(data, limits)
        assert got is not None
        m, n = got
        out.append(m)
        data = data[n:]
    return out


# -- wire layouts, field by field from RFC 9174 sections 4 to 6 ---------------


def test_contact_header_bytes() -> None:
    assert encode_contact_header(ContactHeader()) == b"dtn!\x04\x00"
    assert encode_contact_header(ContactHeader(ContactFlags.CAN_TLS)) == b"dtn!\x04\x01"
    assert decode_contact_header_untrusted(b"dtn!\x04\x01") == ContactHeader(
        ContactFlags.CAN_TLS
    )
    assert decode_contact_header_untrusted(b"dtn") is None
    with pytest.raises(DecodeError, match="magic"):
        decode_contact_header_untrusted(b"GET / HTTP/1.1")
    with pytest.raises(DecodeError, match="magic"):
        decode_contact_header_untrusted(b"dx")


def test_sess_init_bytes() -> None:
    m = SessInit(
        keepalive_s=60, segment_mru=0x10000, transfer_mru=0x100000, node_id="ipn:1.0"
    )
    expected = (
        b"\x07"  # SESS_INIT
        + b"\x00\x3c"  # keepalive 60 s
        + (0x10000).to_bytes(8, "big")  # segment MRU
        + (0x100000).to_bytes(8, "big")  # transfer MRU
        + b"\x00\x07ipn:1.0"  # node id length and data
        + b"\x00\x00\x00\x00"  # no session extension items
    )
    assert encode_message(m) == expected
    assert msgs(expected) == [m]


def test_segment_ack_refuse_term_reject_keepalive_bytes() -> None:
    seg = XferSegment(
        flags=SegmentFlags.START | SegmentFlags.END,
        transfer_id=7,
        data=b"abc",
        extensions=(ExtensionItem(1, (3).to_bytes(8, "big")),),
    )
    raw = encode_message(seg)
    assert raw == (
        b"\x01\x03" + (7).to_bytes(8, "big")
        + b"\x00\x00\x00\x0d" + b"\x00\x00\x01\x00\x08" + (3).to_bytes(8, "big")
        + (3).to_bytes(8, "big") + b"abc"
    )  # fmt: skip
    ack = XferAck(flags=SegmentFlags.END, transfer_id=7, length=3)
    assert encode_message(ack) == b"\x02\x01" + (7).to_bytes(8, "big") + (3).to_bytes(
        8, "big"
    )
    ref = XferRefuse(reason=RefuseReason.NO_RESOURCES, transfer_id=7)
    assert encode_message(ref) == b"\x03\x02" + (7).to_bytes(8, "big")
    term = SessTerm(flags=TermFlags.REPLY, reason=TermReason.IDLE_TIMEOUT)
    assert encode_message(term) == b"\x05\x01\x01"
    rej = MsgReject(reason=RejectReason.UNEXPECTED, header=0x07)
    assert encode_message(rej) == b"\x06\x03\x07"
    assert encode_message(KeepAlive()) == b"\x04"
    assert msgs(raw + encode_message(ack) + b"\x04" + encode_message(term)) == [
        seg,
        ack,
        KeepAlive(),
        term,
    ]
    # a middle segment carries no extension list
    mid = XferSegment(flags=SegmentFlags.NONE, transfer_id=7, data=b"xy")
    assert (
        encode_message(mid)
        == b"\x01\x00" + (7).to_bytes(8, "big") + (2).to_bytes(8, "big") + b"xy"
    )


def test_every_prefix_needs_more_bytes() -> None:
    raw = encode_message(
        SessInit(keepalive_s=1, segment_mru=10, transfer_mru=10, node_id="dtn://x/")
    )
    for i in range(len(raw)):
        assert decode_message_untrusted(raw[:i], LIM) is None


def test_hostile_lengths_are_refused_before_buffering() -> None:
    big = b"\x01\x00" + (1).to_bytes(8, "big") + (1 << 40).to_bytes(8, "big")
    with pytest.raises(DecodeError, match="segment MRU"):
        decode_message_untrusted(big, LIM)
    nid = b"\x07" + bytes(18) + b"\xff\xff"
    with pytest.raises(DecodeError, match="node id"):
        decode_message_untrusted(nid, LIM)
    with pytest.raises(DecodeError, match="type 0x99"):
        decode_message_untrusted(b"\x99", LIM)


# -- the RFC's session sequences ----------------------------------------------


def test_session_setup_active_first_then_passive() -> None:
    pair = Pair()
    pair.start()
    # active: contact header, then SESS_INIT once the passive one answered
    assert pair.wire["a"][0] == b"dtn!\x04\x00"
    assert pair.wire["p"][0].startswith(b"dtn!\x04\x00")
    assert pair.a.established
    assert pair.p.established
    (ea,) = pair.of("a", SessionEstablished)
    (ep,) = pair.of("p", SessionEstablished)
    assert ea.peer_node_id == "ipn:2.0"
    assert ep.peer_node_id == "ipn:1.0"
    assert ea.tls is False


def test_passive_sends_nothing_before_the_active_contact_header() -> None:
    p = Session(SessionConfig(node_id="ipn:2.0"), active=False)
    p.start(0)
    assert p.data_to_send() == b""
    p.receive_data(b"dtn!\x04\x00", 0)
    assert p.data_to_send() == b"dtn!\x04\x00"  # no SESS_INIT before the active one's
    init = SessInit(
        keepalive_s=10, segment_mru=100, transfer_mru=1000, node_id="ipn:1.0"
    )
    evs = p.receive_data(encode_message(init), 0)
    assert any(isinstance(e, SessionEstablished) for e in evs)
    (mine,) = msgs(p.data_to_send())
    assert isinstance(mine, SessInit)
    assert p.keepalive_s == 10  # the smaller of 30 and 10
    assert p.peer_segment_mru == 100


def test_one_bundle_in_many_segments_with_cumulative_acks() -> None:
    pair = Pair(SessionConfig(node_id="ipn:1.0", max_segment_bytes=1000))
    pair.start()
    data = bytes(range(256)) * 10  # 2560 bytes: 3 segments
    tid = pair.a.send_bundle(data, 0)
    assert tid == 0
    pair.run()
    (got,) = pair.of("p", BundleReceived)
    assert got.data == data
    assert pair.of("a", TransferAcked) == [TransferAcked(0)]
    wire = msgs(b"".join(pair.wire["a"][2:]))
    segs = [m for m in wire if isinstance(m, XferSegment)]
    assert [len(s.data) for s in segs] == [1000, 1000, 560]
    assert segs[0].flags == SegmentFlags.START
    assert segs[0].extensions == (ExtensionItem(1, struct.pack(">Q", 2560)),)
    assert segs[-1].flags == SegmentFlags.END
    acks = [m for m in msgs(b"".join(pair.wire["p"][2:])) if isinstance(m, XferAck)]
    assert [a.length for a in acks] == [1000, 2000, 2560]
    assert acks[-1].flags == SegmentFlags.END
    assert pair.a.send_bundle(b"x", 0) == 1  # ids increase
    (one,) = [m for m in msgs(pair.a.data_to_send()) if isinstance(m, XferSegment)]
    assert one.flags == SegmentFlags.START | SegmentFlags.END
    assert one.extensions == ()  # no Transfer Length item for one segment (5.2.5.1)


def test_final_ack_waits_for_the_store() -> None:
    pair = Pair(auto_ack=False)
    pair.start()
    pair.a.send_bundle(b"hello", 0)
    pair.run()
    (got,) = pair.of("p", BundleReceived)
    assert pair.of("a", TransferAcked) == []  # not stored yet: not acknowledged
    assert pair.a.in_flight == 1
    pair.p.ack_transfer(got.transfer_id, 0)
    pair.run()
    assert pair.of("a", TransferAcked) == [TransferAcked(0)]
    assert pair.a.in_flight == 0


def test_refused_transfer_fails_at_the_sender() -> None:
    pair = Pair(auto_ack=False)
    pair.start()
    pair.a.send_bundle(b"hello", 0)
    pair.run()
    pair.p.refuse_transfer(0, 0)
    pair.run()
    (f,) = pair.of("a", TransferFailed)
    assert "refused" in f.reason
    # "completed" means the peer already holds it: a success
    pair.a.send_bundle(b"again", 0)
    pair.run()
    pair.p.refuse_transfer(1, 0, RefuseReason.COMPLETED)
    pair.run()
    assert TransferAcked(1) in pair.of("a", TransferAcked)


def test_transfer_mru_and_length_extension_are_enforced() -> None:
    pair = Pair(p=SessionConfig(node_id="ipn:2.0", transfer_mru=100))
    pair.start()
    with pytest.raises(TransferTooLarge):
        pair.a.send_bundle(bytes(101), 0)
    # a peer that lies: declares 10 bytes and sends 20
    p = pair.p
    seg = XferSegment(
        flags=SegmentFlags.START | SegmentFlags.END,
        transfer_id=5,
        data=bytes(20),
        extensions=(ExtensionItem(1, (10).to_bytes(8, "big")),),
    )
    p.receive_data(encode_message(seg), 0)
    (ref,) = [m for m in msgs(p.data_to_send()) if isinstance(m, XferRefuse)]
    assert ref.reason == RefuseReason.NOT_ACCEPTABLE
    # declares more than the transfer MRU: refused at once, its segments drained
    seg = XferSegment(
        flags=SegmentFlags.START,
        transfer_id=6,
        data=bytes(5),
        extensions=(ExtensionItem(1, (1000).to_bytes(8, "big")),),
    )
    p.receive_data(encode_message(seg), 0)
    p.receive_data(
        encode_message(
            XferSegment(flags=SegmentFlags.END, transfer_id=6, data=bytes(5))
        ),
        0,
    )
    out = msgs(p.data_to_send())
    assert out == [XferRefuse(reason=RefuseReason.NO_RESOURCES, transfer_id=6)]
    # an unknown critical transfer extension
    seg = XferSegment(
        flags=SegmentFlags.START | SegmentFlags.END,
        transfer_id=7,
        data=b"x",
        extensions=(ExtensionItem(0x77, b"", critical=True),),
    )
    p.receive_data(encode_message(seg), 0)
    assert msgs(p.data_to_send()) == [
        XferRefuse(reason=RefuseReason.EXTENSION_FAILURE, transfer_id=7)
    ]
    assert p.established


def test_sess_term_is_answered_with_reply_and_the_same_reason() -> None:
    pair = Pair()
    pair.start()
    pair._handle("a", pair.a.terminate(0, TermReason.BUSY))
    pair.run()
    wire_p = msgs(b"".join(pair.wire["p"][-1:]))
    assert wire_p == [SessTerm(flags=TermFlags.REPLY, reason=TermReason.BUSY)]
    assert pair.a.closed
    assert pair.p.closed
    with pytest.raises(InvalidArgument):
        pair.a.send_bundle(b"x", 0)


def test_queued_transfers_fail_when_the_session_ends_and_a_started_one_finishes() -> (
    None
):
    pair = Pair(SessionConfig(node_id="ipn:1.0", max_segment_bytes=10))
    pair.start()
    pair.a.send_bundle(bytes(30), 0)
    pair.a.send_bundle(bytes(30), 0)
    first = pair.a.data_to_send(15)  # part of the first transfer only
    pair.p.receive_data(first, 0)
    pair._handle("a", pair.a.terminate(0))
    pair.run()
    assert [e.transfer_id for e in pair.of("a", TransferFailed)] == [1]
    assert pair.of("a", TransferAcked) == [TransferAcked(0)]
    assert pair.a.closed
    assert pair.p.closed


def test_keepalives_and_idle_timeout() -> None:
    pair = Pair(
        SessionConfig(node_id="ipn:1.0", keepalive_s=5),
        SessionConfig(node_id="ipn:2.0", keepalive_s=10),
    )
    pair.start()
    assert pair.a.keepalive_s == pair.p.keepalive_s == 5
    assert pair.a.next_deadline() == 5000
    pair.a.on_tick(5000)
    assert pair.a.data_to_send() == b"\x04"
    # the peer sent nothing for 10 s (twice the interval): idle, SESS_TERM, closed
    evs = pair.a.on_tick(10_000)
    assert any(isinstance(e, SessionClosed) for e in evs)
    assert msgs(pair.a.data_to_send()) == [
        SessTerm(flags=TermFlags.NONE, reason=TermReason.IDLE_TIMEOUT)
    ]


def test_setup_timeout() -> None:
    a = Session(SessionConfig(node_id="ipn:1.0", setup_timeout_ms=100), active=True)
    a.start(0)
    assert a.next_deadline() == 100
    assert a.on_tick(99) == []
    (ev,) = a.on_tick(100)
    assert isinstance(ev, SessionClosed)
    assert a.closed


def test_tls_is_negotiated_only_when_both_offer_it() -> None:
    both = Pair(
        SessionConfig(node_id="ipn:1.0", can_tls=True),
        SessionConfig(node_id="ipn:2.0", can_tls=True),
    )
    both.start()
    assert both.of("a", StartTls)
    assert both.of("p", StartTls)
    assert both.a.tls
    assert both.a.established
    one = Pair(SessionConfig(node_id="ipn:1.0", can_tls=True))
    one.start()
    assert not one.of("a", StartTls)
    assert one.a.established
    assert not one.a.tls
    strict = Pair(SessionConfig(node_id="ipn:1.0", can_tls=True, require_tls=True))
    strict.start()
    assert strict.a.closed
    assert "TLS" in (strict.a.close_reason or "")


def test_version_mismatch_gets_sess_term() -> None:
    p = Session(SessionConfig(node_id="ipn:2.0"), active=False)
    p.start(0)
    evs = p.receive_data(b"dtn!\x03\x00", 0)
    assert isinstance(evs[-1], SessionClosed)
    out = p.data_to_send()
    assert out[:6] == b"dtn!\x04\x00"
    assert msgs(out[6:]) == [
        SessTerm(flags=TermFlags.NONE, reason=TermReason.VERSION_MISMATCH)
    ]


def test_not_a_tcpcl_peer_is_closed_without_a_word() -> None:
    p = Session(SessionConfig(node_id="ipn:2.0"), active=False)
    p.start(0)
    evs = p.receive_data(b"GET / HTTP/1.1\r\n", 0)
    assert isinstance(evs[-1], SessionClosed)
    assert p.data_to_send() == b""


def test_unknown_message_type_gets_msg_reject_then_sess_term() -> None:
    pair = Pair()
    pair.start()
    evs = pair.p.receive_data(b"\x42junk", 0)
    assert isinstance(evs[-1], SessionClosed)
    assert msgs(pair.p.data_to_send()) == [
        MsgReject(reason=RejectReason.TYPE_UNKNOWN, header=0x42),
        SessTerm(flags=TermFlags.NONE, reason=TermReason.UNKNOWN),
    ]


def test_unexpected_messages_get_msg_reject_and_the_session_goes_on() -> None:
    pair = Pair()
    pair.start()
    init = SessInit(keepalive_s=1, segment_mru=1, transfer_mru=1, node_id="ipn:9.0")
    evs = pair.p.receive_data(encode_message(init), 0)
    assert any(isinstance(e, ProtocolProblem) for e in evs)
    stray = XferSegment(flags=SegmentFlags.NONE, transfer_id=99, data=b"x")
    pair.p.receive_data(encode_message(stray), 0)
    assert msgs(pair.p.data_to_send()) == [
        MsgReject(reason=RejectReason.UNEXPECTED, header=0x07),
        MsgReject(reason=RejectReason.UNEXPECTED, header=0x01),
    ]
    assert pair.p.established
    # before the session: a transfer message ends it
    q = Session(SessionConfig(node_id="ipn:2.0"), active=False)
    q.start(0)
    q.receive_data(b"dtn!\x04\x00" + encode_message(KeepAlive()), 0)
    assert q.closed


def test_oversized_segment_ends_the_session_with_resource_exhaustion() -> None:
    pair = Pair(p=SessionConfig(node_id="ipn:2.0", segment_mru=100))
    pair.start()
    head = b"\x01\x02" + (0).to_bytes(8, "big") + bytes(4) + (10**9).to_bytes(8, "big")
    evs = pair.p.receive_data(head, 0)
    assert isinstance(evs[-1], SessionClosed)
    assert msgs(pair.p.data_to_send()) == [
        SessTerm(flags=TermFlags.NONE, reason=TermReason.RESOURCE_EXHAUSTION)
    ]


def test_critical_session_extension_and_empty_node_id_end_setup() -> None:
    for init in (
        SessInit(keepalive_s=1, segment_mru=10, transfer_mru=10, node_id="ipn:1.0",
                 extensions=(ExtensionItem(9, b"", critical=True),)),
        SessInit(keepalive_s=1, segment_mru=10, transfer_mru=10, node_id=""),
        SessInit(keepalive_s=1, segment_mru=0, transfer_mru=10, node_id="ipn:1.0"),
    ):  # fmt: skip
        p = Session(SessionConfig(node_id="ipn:2.0"), active=False)
        p.start(0)
        p.receive_data(b"dtn!\x04\x00" + encode_message(init), 0)
        assert p.closed
        out = msgs(p.data_to_send()[6:])
        assert out == [
            SessTerm(flags=TermFlags.NONE, reason=TermReason.CONTACT_FAILURE)
        ]


def test_byte_at_a_time_gives_the_same_result() -> None:
    pair = Pair(SessionConfig(node_id="ipn:1.0", max_segment_bytes=7))
    pair.start()
    pair.a.send_bundle(b"0123456789abcdef", 0)
    pair.run(chunk=1)
    (got,) = pair.of("p", BundleReceived)
    assert got.data == b"0123456789abcdef"
    assert pair.of("a", TransferAcked) == [TransferAcked(0)]


def test_transition_table_covers_fail_from_every_state_and_nothing_leaves_closed() -> (
    None
):
    for s in State:
        assert TRANSITIONS[(s, Input.FAIL)] is State.CLOSED
    assert {k for k in TRANSITIONS if k[0] is State.CLOSED} == {
        (State.CLOSED, Input.FAIL)
    }


def test_config_checks() -> None:
    with pytest.raises(InvalidArgument):
        SessionConfig(node_id="")
    with pytest.raises(InvalidArgument):
        SessionConfig(node_id="ipn:1.0", keepalive_s=70_000)
    with pytest.raises(InvalidArgument):
        SessionConfig(node_id="ipn:1.0", require_tls=True)


# -- what dtn7-rs does on the wire (read from its source, rebuilt here) --------
# It sends a zero-length START segment carrying its "bundle id" under transfer
# extension type 1 (the RFC's Transfer Length type) as a string, waits for the
# ACK, then sends the data segments without START; its XFER_ACKs carry each
# segment's length, not the cumulative one.


def test_receives_a_dtn7_rs_style_transfer() -> None:
    pair = Pair()
    pair.start()
    p = pair.p
    bid = b"dtn://node1/-742917342394-0"
    start = XferSegment(
        flags=SegmentFlags.START,
        transfer_id=1,
        data=b"",
        extensions=(ExtensionItem(1, bid),),
    )
    evs = p.receive_data(encode_message(start), 0)
    assert any(isinstance(e, ProtocolProblem) for e in evs)
    assert msgs(p.data_to_send()) == [
        XferAck(flags=SegmentFlags.START, transfer_id=1, length=0)
    ]
    p.receive_data(
        encode_message(
            XferSegment(flags=SegmentFlags.NONE, transfer_id=1, data=b"abc")
        ),
        0,
    )
    evs = p.receive_data(
        encode_message(XferSegment(flags=SegmentFlags.END, transfer_id=1, data=b"def")),
        0,
    )
    (got,) = [e for e in evs if isinstance(e, BundleReceived)]
    assert got.data == b"abcdef"
    p.ack_transfer(1, 0)
    # the same item marked critical is refused
    crit = XferSegment(
        flags=SegmentFlags.START,
        transfer_id=2,
        data=b"",
        extensions=(ExtensionItem(1, bid, critical=True),),
    )
    p.receive_data(encode_message(crit), 0)
    assert XferRefuse(reason=RefuseReason.EXTENSION_FAILURE, transfer_id=2) in msgs(
        p.data_to_send()
    )


def test_a_non_cumulative_end_ack_completes_the_transfer() -> None:
    a = Session(SessionConfig(node_id="ipn:1.0", max_segment_bytes=4), active=True)
    a.start(0)
    init = SessInit(
        keepalive_s=30, segment_mru=64000, transfer_mru=1 << 20, node_id="dtn://node2/"
    )
    a.receive_data(b"dtn!\x04\x00" + encode_message(init), 0)
    assert a.established
    a.send_bundle(b"0123456789", 0)
    a.data_to_send()
    a.receive_data(
        encode_message(XferAck(flags=SegmentFlags.START, transfer_id=0, length=4)), 0
    )
    a.receive_data(
        encode_message(XferAck(flags=SegmentFlags.NONE, transfer_id=0, length=4)), 0
    )
    evs = a.receive_data(
        encode_message(XferAck(flags=SegmentFlags.END, transfer_id=0, length=2)), 0
    )
    assert TransferAcked(0) in evs
    assert any(isinstance(e, ProtocolProblem) for e in evs)


def test_acks_leave_in_segment_order_while_a_final_ack_waits_for_the_store() -> None:
    pair = Pair(auto_ack=False)
    pair.start()
    pair.a.send_bundle(b"first", 0)
    pair.a.send_bundle(b"second", 0)
    pair.p.receive_data(pair.a.data_to_send(), 0)
    assert pair.p.data_to_send() == b""  # the first's answer holds the line
    pair.p.ack_transfer(1, 0)  # the second is stored first ...
    assert pair.p.data_to_send() == b""  # ... but its ACK waits behind the first
    pair.p.ack_transfer(0, 0)
    acks = msgs(pair.p.data_to_send())
    assert [(a.transfer_id, a.length) for a in acks] == [(0, 5), (1, 6)]  # type: ignore[attr-defined]
