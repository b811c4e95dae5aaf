"""Review of the MTCP receive views (``Received.data`` a memoryview of the
driver's read buffer): every reception path -- delivery, forwarding,
reassembly of fragments received in separate reads, duplicates and
variants, unprocessable blocks (kept or discarded), ION's zero-numbered
blocks, status reports, undecodable input -- keeps no view of the buffer
past the call (the buffer can be resized: no export is left, not even in a
kept exception or action) and nothing it keeps changes when the buffer is
overwritten."""

from __future__ import annotations

import dataclasses

import pytest

from dcis.dtn.agent.actions import Deliver, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import BundleStore
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.flags import BlockFlags, BundleFlags, CrcType
from dcis.dtn.bpv7.fragment import fragment_bundle

from .helpers import events, link, of, receive_as_views


def _bundle(dest: str, payload: bytes, seq: int, **kw: object) -> Bundle:
    return make_bundle(
        source="ipn:1.1",
        destination=dest,
        payload=payload,
        creation_ms=1_000,
        sequence=seq,
        hop_limit=8,
        previous_node="ipn:1.0",
        **kw,  # type: ignore[arg-type]
    )


def _pattern(n: int, tag: int) -> bytes:
    return bytes((tag * 31 + i * 7) & 0xFF for i in range(n))


@pytest.mark.parametrize("keep", [0, 64])
def test_fragments_received_as_views_in_separate_reads_reassemble_intact(
    view_store: BundleStore, keep: int
) -> None:
    a = Agent(node=2, store=view_store, config=AgentConfig(keep_decoded=keep))
    a.register("ipn:2.1")
    payload = _pattern(200_000, 1)
    whole = _bundle("ipn:2.1", payload, 7)
    frags = [encode_bundle(f) for f in fragment_bundle(whole, 45_000)]
    got: list[Deliver] = []
    for i, f in enumerate(frags):  # one read each, the buffer reused between
        got += of(receive_as_views(a, [f], now=1_500 + i), Deliver)
    (d,) = got
    assert d.payload == payload
    assert of(a.redeliver([d.bundle_key], 2_000), Deliver)[0].payload == payload


@pytest.mark.parametrize("keep", [0, 64])
def test_every_reception_path_keeps_no_view(view_store: BundleStore, keep: int) -> None:
    a = Agent(node=2, store=view_store, config=AgentConfig(keep_decoded=keep))
    a.register("ipn:2.1")
    local = _bundle(
        "ipn:2.1",
        _pattern(3_000, 2),
        1,
        report_to="ipn:1.2",
        flags=BundleFlags.REPORT_RECEPTION | BundleFlags.REPORT_DELIVERY,
    )
    fwd = _bundle(
        "ipn:3.1",
        _pattern(70_000, 3),
        2,
        report_to="ipn:1.2",
        flags=BundleFlags.REPORT_RECEPTION | BundleFlags.REPORT_FORWARDING,
    )
    unknown = CanonicalBlock(20, 9, data=b"opaque", crc_type=CrcType.NONE)
    kept_block = _bundle("ipn:3.1", _pattern(500, 4), 3, extra_blocks=[unknown])
    dropped_block = _bundle(
        "ipn:3.1",
        _pattern(500, 5),
        4,
        extra_blocks=[
            dataclasses.replace(unknown, flags=BlockFlags.DISCARD_IF_UNPROCESSABLE)
        ],
    )
    # ION 4.1.3: an extension block numbered 0 (renumbered on reception).
    head = bytes((0x85, 20, 9, 0, 0))
    zero = _bundle("ipn:3.1", _pattern(400, 6), 5, extra_blocks=[unknown])
    raw = bytearray(encode_bundle(zero))
    at = raw.index(head)
    raw[at + 2] = 0
    variant = _bundle("ipn:3.1", _pattern(70_000, 9), 2)  # fwd's key, other bytes
    frames = [
        encode_bundle(local),
        encode_bundle(fwd),
        encode_bundle(kept_block),
        encode_bundle(dropped_block),
        bytes(raw),
        b"\x9f\x88garbage",
    ]
    acts = receive_as_views(a, frames, now=1_500)
    assert [d.payload for d in of(acts, Deliver)] == [local.payload]
    assert len(events(acts, "dropped")) == 1
    # Duplicates and a variant, in a later read of the same buffer.
    acts += receive_as_views(
        a, [encode_bundle(fwd), encode_bundle(local), encode_bundle(variant)], 1_600
    )
    assert len(events(acts, "variant")) == 1
    # Status reports built from the received bundles decode and name them.
    reports = [
        decode_bundle_untrusted(t.data) for t in of(acts, Transmit)
    ]  # none yet: no contact
    assert not reports
    txs = of(a.on_contact_start(link(2, 1), 2_000), Transmit)
    txs += of(a.on_contact_start(link(2, 3), 2_000), Transmit)
    sent = [decode_bundle_untrusted(t.data) for t in txs]
    by_payload = {b.payload: b for b in sent if not b.is_admin_record}
    for b in (fwd, kept_block, dropped_block, zero, variant):
        assert b.payload in by_payload
    assert by_payload[kept_block.payload].block_of_type(20) is not None
    assert by_payload[dropped_block.payload].block_of_type(20) is None
    assert any(b.is_admin_record for b in sent)
    # What the store holds decodes to what was sent (no buffer bytes).
    for rec in list(a.store.records()):
        data = a.store.get(rec.key)
        assert data is not None
        assert b"\xee" * 64 not in data
        decode_bundle_untrusted(data)
