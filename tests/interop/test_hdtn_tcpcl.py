"""TCPCLv4 byte streams recorded from a live HDTN (tests/vectors/hdtn_tcpcl4.hex).

HDTN's bpgen connected to our ``tcpcl_listen`` and sent four bundles; our
node connected to HDTN's bpsink and sent two (one of 300,000 bytes in two
segments, cut to HDTN's 200,000-byte segment MRU), which bpsink counted.
Without HDTN, our sans-I/O session machine must:

- as the passive side, fed HDTN's stream, deliver HDTN's four bundles
  whole and answer with exactly the bytes our daemon sent HDTN (contact
  header, SESS_INIT, one XFER_ACK per transfer, the SESS_TERM reply);
- as the active side, fed bpsink's answers, see both of our transfers
  acknowledged (HDTN acknowledges every segment) and nothing fail.
"""

from __future__ import annotations

import pytest

from dcis.dtn.bpv7 import decode_bundle_untrusted
from dcis.dtn.cl.tcpcl4.messages import (
    CONTACT_HEADER_BYTES,
    Limits,
    SegmentFlags,
    SessInit,
    XferAck,
    decode_message_untrusted,
)
from dcis.dtn.cl.tcpcl4.session import (
    BundleReceived,
    Session,
    SessionClosed,
    SessionConfig,
    TransferAcked,
    TransferFailed,
)
from tests.interop.ion_vectors import entry, load

pytestmark = pytest.mark.interop

V = load("hdtn_tcpcl4.hex")


def _messages(stream: bytes) -> list[object]:
    out: list[object] = []
    buf = stream[CONTACT_HEADER_BYTES:]
    while buf:
        got = decode_message_untrusted(buf, Limits())
        assert got is not None
        m, n = got
        out.append(m)
        buf = buf[n:]
    return out


def test_hdtn_announces_itself_as_ipn_2_0_with_its_configured_mru() -> None:
    for tag in ("t_gen-01", "t_sink-03"):
        stream = entry(V, tag)
        assert stream[:6] == b"dtn!\x04\x00"  # version 4, no TLS offered
        init = _messages(stream)[0]
        assert isinstance(init, SessInit)
        assert init.node_id == "ipn:2.0"
        assert init.segment_mru == 200_000  # tcpclV4MyMaxRxSegmentSizeBytes
        assert init.keepalive_s == 15


def test_as_passive_side_we_take_hdtns_bundles_and_answer_as_recorded() -> None:
    ours = _messages(entry(V, "t_gen-02"))
    our_init = ours[0]
    assert isinstance(our_init, SessInit)
    s = Session(
        SessionConfig(
            node_id="ipn:1.0",
            keepalive_s=our_init.keepalive_s,
            segment_mru=our_init.segment_mru,
            transfer_mru=our_init.transfer_mru,
        ),
        active=False,
    )
    s.start(0)
    stream = entry(V, "t_gen-01")
    events = []
    seqs = []
    for i in range(len(stream)):  # byte by byte; each bundle acked once stored
        for e in s.receive_data(stream[i : i + 1], 0):
            events.append(e)
            if not isinstance(e, BundleReceived):
                continue
            b = decode_bundle_untrusted(e.data)
            assert (str(b.primary.source), str(b.primary.destination)) == (
                "ipn:2.1",
                "ipn:1.5",
            )
            assert len(b.payload) == 64
            seqs.append(int.from_bytes(b.payload[:8], "little"))
            s.ack_transfer(e.transfer_id, 0)
    assert len(seqs) == 4
    assert seqs == [seqs[0] + i for i in range(4)]
    assert any(isinstance(e, SessionClosed) for e in events)  # HDTN ended it
    assert s.data_to_send() == entry(V, "t_gen-02")


def test_as_active_side_bpsinks_acks_complete_both_transfers() -> None:
    hdtn = _messages(entry(V, "t_sink-03"))
    acks = [m for m in hdtn if isinstance(m, XferAck)]
    # HDTN acknowledged each segment: transfer 0 whole, transfer 1 in two
    assert [(a.transfer_id, bool(a.flags & SegmentFlags.END)) for a in acks] == [
        (0, True),
        (1, False),
        (1, True),
    ]
    lengths = {a.transfer_id: a.length for a in acks if a.flags & SegmentFlags.END}
    assert lengths[1] > 300_000  # the 300,000-byte file and its bundle's blocks
    assert acks[1].length == 200_000  # first segment cut to HDTN's MRU
    stream = entry(V, "t_sink-03")
    got = decode_message_untrusted(stream[CONTACT_HEADER_BYTES:], Limits())
    assert got is not None
    init_end = CONTACT_HEADER_BYTES + got[1]
    s = Session(SessionConfig(node_id="ipn:1.0"), active=True)
    s.start(0)
    s.data_to_send()
    s.receive_data(stream[:init_end], 0)  # contact header and SESS_INIT
    assert s.established
    for tid in (0, 1):
        assert s.send_bundle(bytes(lengths[tid]), 0) == tid
    s.data_to_send()
    events = s.receive_data(stream[init_end:], 0)
    assert [e.transfer_id for e in events if isinstance(e, TransferAcked)] == [0, 1]
    assert not any(isinstance(e, TransferFailed) for e in events)
