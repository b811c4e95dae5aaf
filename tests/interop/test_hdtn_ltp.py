"""LTP segments recorded from a live HDTN (tests/vectors/hdtn_ltp.hex).

HDTN's bpgen sent three bundles to our engine, one red block each; our node
sent HDTN's bpsink a short bundle and a 2,500-byte one (a block of two
segments). Every block completed on the wire. Without HDTN:

- every segment decodes and re-encodes byte for byte;
- each of HDTN's blocks is one checkpointed, end-of-block data segment
  carrying one whole bpgen bundle (client service 1, the Bundle Protocol);
  our report claims the whole block and HDTN acknowledges it;
- HDTN's reports on our blocks claim every byte we sent, and we
  acknowledge each.
"""

from __future__ import annotations

import pytest

from dcis.dtn.bpv7 import decode_bundle_untrusted
from dcis.dtn.cl.ltp.segment import (
    DataSegment,
    ReportAckSegment,
    ReportSegment,
    decode_segment_untrusted,
    encode_segment,
)
from tests.interop.ion_vectors import direction, load

pytestmark = pytest.mark.interop

V = load("hdtn_ltp.hex")


def _segs(run: str, d: str) -> list[object]:
    return [
        decode_segment_untrusted(v)
        for k, v in V.items()
        if k.startswith(run) and direction(k) == d
    ]


@pytest.mark.parametrize("name", list(V))
def test_every_segment_reencodes_byte_for_byte(name: str) -> None:
    assert encode_segment(decode_segment_untrusted(V[name])) == V[name]


def test_hdtn_sends_each_bundle_as_one_checkpointed_block() -> None:
    data = [s for s in _segs("l_gen", "hdtn>dcis") if isinstance(s, DataSegment)]
    assert len(data) == 3
    seqs = []
    for s in data:
        assert s.client_service == 1
        assert s.offset == 0
        assert s.checkpoint_serial is not None  # the only segment: a checkpoint
        b = decode_bundle_untrusted(s.data)  # one whole bundle per block
        assert str(b.primary.source) == "ipn:2.1"
        seqs.append(int.from_bytes(b.payload[:8], "little"))
    assert seqs == [seqs[0] + i for i in range(3)]
    reports = [s for s in _segs("l_gen", "dcis>hdtn") if isinstance(s, ReportSegment)]
    acks = [s for s in _segs("l_gen", "hdtn>dcis") if isinstance(s, ReportAckSegment)]
    assert len(reports) == len(acks) == 3
    for seg, rep, ack in zip(data, reports, acks, strict=True):
        assert rep.session == seg.session == ack.session
        assert rep.upper_bound == len(seg.data)
        assert [(c.offset, c.length) for c in rep.claims] == [(0, len(seg.data))]
        assert ack.report_serial == rep.report_serial


def test_hdtns_reports_claim_every_byte_of_our_blocks() -> None:
    ours = [s for s in _segs("l_sink", "dcis>hdtn") if isinstance(s, DataSegment)]
    sizes: dict[object, int] = {}
    for s in ours:
        assert s.client_service == 1
        sizes[s.session] = max(sizes.get(s.session, 0), s.offset + len(s.data))
    assert len(sizes) == 2
    assert max(sum(1 for s in ours if s.session == k) for k in sizes) == 2
    reports = [s for s in _segs("l_sink", "hdtn>dcis") if isinstance(s, ReportSegment)]
    assert {r.session for r in reports} == set(sizes)
    for r in reports:
        assert [(c.offset, c.length) for c in r.claims] == [(0, sizes[r.session])]
    acks = [s for s in _segs("l_sink", "dcis>hdtn") if isinstance(s, ReportAckSegment)]
    assert sorted(a.report_serial for a in acks) == sorted(
        r.report_serial for r in reports
    )
