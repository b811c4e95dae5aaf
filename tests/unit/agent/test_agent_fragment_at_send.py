"""Fragmentation at transmission (RFC 9171 5.8; spec/agent.md "Fragmentation"):
a bundle that fits what is left of the contact but not the link's MTU stays
stored whole, as its one entry, and goes out as fragments cut as they are
sent; it leaves the store only once every piece was taken, and a piece not
taken sends the whole bundle again. Fragmenting to fit a contact's remaining
volume still stores the fragments (the later ones wait for later contacts)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dcis.dtn.agent import entries, forwarding
from dcis.dtn.agent.actions import Deliver, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.location import Location, location_of
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
)
from dcis.dtn.bpv7.eid import parse_eid
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.bpv7.processing import update_for_forwarding
from dcis.dtn.routing.contact import Contact
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.helpers import Net, check_locations, link, of

MTU = 40_000
PAYLOAD = bytes(i % 251 for i in range(100_000))  # three pieces at this MTU
CFG = AgentConfig(
    max_bundle_bytes=MTU, keep_decoded=entries.HOT_MAX_BUNDLES, retry_delay_ms=500
)


class PutCountingStore(MemoryStore):
    """Counts the bundles put (each a store row and its bytes written)."""

    puts = 0

    def put(self, *args: object, **kw: object) -> None:
        self.puts += 1
        super().put(*args, **kw)  # type: ignore[arg-type]


def _node1(config: AgentConfig = CFG, store: MemoryStore | None = None) -> Agent:
    return Agent(node=1, store=store or PutCountingStore(), config=config)


def _send(
    a: Agent, now: int = 1_000, payload: bytes = PAYLOAD, lifetime_ms: int = 3_600_000
) -> str:
    key, _ = a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=payload,
        lifetime_ms=lifetime_ms,
        now=now,
    )
    return key


def _pieces(txs: list[Transmit]) -> list[Bundle]:
    return [decode_bundle_untrusted(t.data) for t in txs]


def test_a_bundle_over_the_mtu_goes_in_pieces_and_is_stored_once() -> None:
    a = _node1()
    store = a.store
    assert isinstance(store, PutCountingStore)
    key = _send(a)
    txs = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    pieces = _pieces(txs)
    assert len(pieces) == 3
    assert all(len(t.data) <= MTU for t in txs)
    assert all(p.is_fragment and p.original_key == key for p in pieces)
    assert [p.primary.fragment_offset for p in pieces] == [
        0,
        len(pieces[0].payload),
        len(pieces[0].payload) + len(pieces[1].payload),
    ]
    assert b"".join(p.payload for p in pieces) == PAYLOAD
    # No fragment was stored: the one put is the bundle sent.
    assert store.puts == 1
    assert len(store) == 1
    assert a.counters["fragmented"] == 1
    check_locations(a)
    # In flight until every piece was taken, whatever the order.
    for t in (txs[2], txs[0]):
        a.on_transmit_done(t.tx_id, True, 2_100)
        assert location_of(a, key) is Location.IN_FLIGHT
        check_locations(a)
    a.on_transmit_done(txs[1].tx_id, True, 2_200)
    assert location_of(a, key) is Location.GONE
    assert len(store) == 0
    assert a.counters["forwarded"] == 1
    assert store.puts == 1


def test_the_pieces_are_the_fragments_a_stored_split_sent() -> None:
    # The same bytes on the wire as when the fragments were stored and each
    # forwarded: the fragments of the stored bundle, each updated for
    # forwarding (previous node, hop count) on its own.
    a = _node1()
    key = _send(a)
    b = a._load_bundle(key, [], 2_000)
    assert b is not None
    txs = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    assert a.stored == 1
    sizes = [len(p.payload) for p in _pieces(txs)]
    want = [
        encode_bundle(
            update_for_forwarding(f, node=parse_eid("ipn:1.0"), dwell_ms=1_000)
        )
        for f in fragment_bundle(b, sizes)
    ]
    assert [t.data for t in txs] == want


def test_the_window_paces_the_pieces() -> None:
    a = _node1(replace(CFG, window=2))
    key = _send(a)
    _send(a, now=1_001, payload=b"small")
    txs = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    assert len(txs) == 2  # two pieces of the first bundle
    more = of(a.on_transmit_done(txs[0].tx_id, True, 2_010), Transmit)
    assert [decode_bundle_untrusted(t.data).original_key for t in more] == [key]
    check_locations(a)
    # The last piece went: the next bundle comes after it, whole.
    last = of(a.on_transmit_done(txs[1].tx_id, True, 2_020), Transmit)
    assert len(last) == 1
    assert not decode_bundle_untrusted(last[0].data).is_fragment
    assert a.store.puts == 2  # type: ignore[attr-defined]
    a.on_transmit_done(more[0].tx_id, True, 2_030)
    assert not a.holds(key)


def test_a_piece_not_taken_sends_the_whole_bundle_again() -> None:
    a = _node1()
    key = _send(a)
    txs = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    a.on_transmit_done(txs[0].tx_id, True, 2_010)
    a.on_transmit_done(txs[1].tx_id, False, 2_020)
    assert location_of(a, key) is Location.IN_FLIGHT  # one piece still out
    a.on_transmit_done(txs[2].tx_id, True, 2_030)
    assert location_of(a, key) is Location.QUEUED
    assert a.holds(key)
    assert a.counters["transmit_failed"] == 1
    check_locations(a)
    # After the back-off, every piece goes again (the taken ones too: the
    # receiver drops what it holds as duplicates).
    again = of(a.on_tick(4_000), Transmit)
    assert [t.data for t in again] == [t.data for t in txs]
    for t in again:
        a.on_transmit_done(t.tx_id, True, 4_100)
    assert not a.holds(key)
    assert a.store.puts == 1  # type: ignore[attr-defined]


def test_a_contact_that_closes_mid_send_keeps_the_bundle_whole() -> None:
    a = _node1(replace(CFG, window=1))
    key = _send(a)
    c = link(1, 2)
    (first,) = of(a.on_contact_start(c, 2_000), Transmit)
    a.on_contact_end(c, 2_050)  # two pieces never went
    assert location_of(a, key) is Location.IN_FLIGHT
    # The piece that went was taken; the bundle stays, waiting for a route.
    assert of(a.on_transmit_done(first.tx_id, True, 2_060), Transmit) == []
    assert location_of(a, key) is Location.UNROUTED
    assert len(a.store) == 1
    check_locations(a)
    txs: list[Transmit] = of(a.on_contact_start(c, 3_000), Transmit)
    while txs:
        txs = [
            t2
            for t in txs
            for t2 in of(a.on_transmit_done(t.tx_id, True, 3_100), Transmit)
        ]
    assert not a.holds(key)


def test_a_contact_closing_with_no_piece_in_flight_reroutes_at_once() -> None:
    a = _node1(replace(CFG, window=2))
    small = _send(a, payload=b"small")
    key = _send(a, now=1_001)
    c = link(1, 2)
    t_small, first = of(a.on_contact_start(c, 2_000), Transmit)
    # The small bundle fails: the link backs off, so when the first piece
    # is taken the next ones wait, with none in flight.
    a.on_transmit_done(t_small.tx_id, False, 2_010)
    assert of(a.on_transmit_done(first.tx_id, True, 2_020), Transmit) == []
    assert location_of(a, key) is Location.IN_FLIGHT
    check_locations(a)
    a.on_contact_end(c, 2_030)
    assert location_of(a, key) is Location.UNROUTED
    assert location_of(a, small) is Location.UNROUTED
    assert len(a.store) == 2
    check_locations(a)


def test_a_restart_mid_send_sends_the_whole_bundle_again(tmp_path: Path) -> None:
    # kill -9 while pieces are out: nothing about them was stored, the whole
    # bundle is, and it goes again; the receiver delivers it once, intact.
    path = tmp_path / "n1.db"
    a = Agent(node=1, store=SqliteStore(path), config=CFG)
    key = _send(a)
    rx = Agent(node=2, store=MemoryStore(), config=CFG)
    rx.register("ipn:2.1")
    txs = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    got: list[Deliver] = []
    for t in txs[:2]:  # two pieces reached node 2; then node 1 died
        got += of(rx.on_receive(cla="t", neighbor=1, data=t.data, now=2_010), Deliver)
        a.on_transmit_done(t.tx_id, True, 2_020)
    assert got == []
    del a
    b = Agent(node=1, store=SqliteStore(path), config=CFG)
    b.recover(5_000)
    assert b.holds(key)
    again = of(b.on_contact_start(link(1, 2), 5_100), Transmit)
    assert len(again) == 3
    for t in again:
        got += of(rx.on_receive(cla="t", neighbor=1, data=t.data, now=5_200), Deliver)
        b.on_transmit_done(t.tx_id, True, 5_300)
    assert [(d.bundle_key, d.payload) for d in got] == [(key, PAYLOAD)]
    assert not b.holds(key)
    assert len(b.store) == 0


def test_volume_alone_decides_when_the_fragments_are_stored() -> None:
    # 1,000 bytes of payload, a 400-byte MTU. A contact with room for the
    # whole bundle: cut at transmission, the store holds one entry. A
    # contact with room for one piece: the fragments are stored (the rest
    # waits for a later contact), as before.
    cfg = replace(CFG, max_bundle_bytes=400)
    payload = bytes(range(250)) * 4
    ag = {
        1: _node1(cfg),
        2: Agent(node=2, store=MemoryStore(), config=cfg),
    }
    ag[2].register("ipn:2.1")
    net = Net(ag)
    key = _send(ag[1], payload=payload)
    net.at(2_000).start(Contact(1, 2, 2, 3, 5_000))
    assert ag[1].store.puts == 1  # type: ignore[attr-defined]
    assert [(d.bundle_key, d.payload) for _, d in net.delivered] == [(key, payload)]

    ag[1] = _node1(cfg)  # Net holds ``ag``: node 1 is this one now
    net.transmitted.clear()
    key2 = _send(ag[1], now=1_001, payload=payload)
    c = Contact(1, 2, 2, 3, 420)
    net.at(2_000).start(c)
    assert len(net.transmitted) == 1
    assert ag[1].stored >= 2  # the fragments not sent wait, stored
    assert not ag[1].holds(key2)
    net.at(3_000).end(c)
    net.start(link(1, 2))
    assert [d.bundle_key for _, d in net.delivered] == [key, key2]


def test_a_bundle_that_expires_mid_send_sends_no_more_pieces() -> None:
    a = _node1(replace(CFG, window=1))
    key = _send(a, lifetime_ms=5_000)
    other = _send(a, now=1_001, payload=b"next")
    (first,) = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    a.on_tick(6_000)  # its lifetime ends with a piece in flight
    assert not a.holds(key)
    assert not a._pieces
    check_locations(a)
    # The piece's outcome frees the window for the next bundle, whole.
    (nxt,) = of(a.on_transmit_done(first.tx_id, True, 6_010), Transmit)
    assert decode_bundle_untrusted(nxt.data).bundle_key == other
    assert a.counters["forwarded"] == 0


def test_a_contact_opened_over_one_mid_send_sends_the_bundle_again() -> None:
    # Two plan contacts to node 2 overlap (the runtime opens each at its
    # start; NodeCore keeps a set of open contacts per neighbour): the second
    # replaces the first's link, and the first's end is then ignored. Pieces
    # still to go on the replaced link never go on it; the bundle must not
    # wait in flight for them -- it goes again, whole, on the new contact.
    a = _node1(replace(CFG, window=1))
    key = _send(a)
    c1 = Contact(1, 2, 0.0, 10.0, 0.0)
    c2 = Contact(1, 2, 2.0, 20.0, 0.0)
    (first,) = of(a.on_contact_start(c1, 2_000), Transmit)
    assert of(a.on_contact_start(c2, 2_000), Transmit) == []
    check_locations(a)
    txs = of(a.on_transmit_done(first.tx_id, True, 2_100), Transmit)
    a.on_contact_end(c1, 2_200)  # not the open link's contact: ignored
    now = 2_200
    while not txs and now < 15_000:
        now += 500
        txs = of(a.on_tick(now), Transmit)
    assert txs, "the bundle waits in flight for pieces that never go"
    while txs:
        txs = [
            t2
            for t in txs
            for t2 in of(a.on_transmit_done(t.tx_id, True, now), Transmit)
        ]
    assert not a.holds(key)
    check_locations(a)


def _held_for_pieces(a: Agent) -> int:
    """Payload bytes of whole bundles the agent keeps to cut pieces from."""
    return sum(len(p.bundle.payload) for p in a._pieces.values() if p.bundle)


def test_a_bundle_whose_pieces_all_went_is_not_held_in_memory() -> None:
    # A next hop that takes every piece but the last of each bundle (or is
    # slow to say so) must not make this node hold a decoded copy of each of
    # those bundles: the window's bytes bound what is in flight, and only
    # the bundle still being cut is needed (a failure sends it again from
    # the store).
    payload = bytes(i % 251 for i in range(MTU))  # two pieces, the last small
    a = _node1()
    keys = [_send(a, now=1_000 + i, payload=payload) for i in range(20)]
    txs = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    lasts = []
    while txs:
        t = txs.pop(0)
        if decode_bundle_untrusted(t.data).primary.fragment_offset:
            lasts.append(t)  # the last piece: its outcome is slow to come
        else:
            txs += of(a.on_transmit_done(t.tx_id, True, 2_100), Transmit)
    assert len(lasts) == len(keys)
    assert len(a._pieces) == len(keys)  # each in flight until its last piece
    assert _held_for_pieces(a) == 0
    check_locations(a)
    for t in lasts:
        a.on_transmit_done(t.tx_id, True, 2_200)
    assert a.stored == 0


def test_no_piece_goes_once_the_bundle_s_lifetime_is_over() -> None:
    # As for a queued bundle (pump expires it, never forwards it): a piece's
    # outcome that comes after the lifetime ended, before the tick that
    # expires it, sends no further piece.
    a = _node1(replace(CFG, window=1))
    key = _send(a, lifetime_ms=5_000)
    (first,) = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    assert of(a.on_transmit_done(first.tx_id, True, 6_500), Transmit) == []
    assert not a.holds(key)
    assert a.counters["expired"] == 1
    check_locations(a)


def test_pieces_in_flight_keep_a_bounded_number_of_payloads_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A large piece goes out as a view of its bundle's payload (no copy),
    # which keeps that payload in memory until the piece's outcome. Once the
    # bundles whose pieces were all cut hold PIECE_VIEWS_MAX_BYTES that way,
    # the next pieces are copies: a next hop slow to acknowledge cannot make
    # this node hold whole payloads without bound.
    monkeypatch.setattr(forwarding, "PIECE_VIEWS_MAX_BYTES", 150_000)
    a = _node1()
    for i in range(3):
        _send(a, now=1_000 + i)
    txs = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    assert len(txs) == 9  # three bundles, three pieces each, all in flight
    views = [isinstance(t.parts[1], memoryview) for t in txs]
    # The first bundle's pieces are views; with it in flight, the others'
    # payloads (100,000 bytes more each) would pass the bound: copies.
    assert views == [True] * 3 + [False] * 6
    for t in txs:
        a.on_transmit_done(t.tx_id, True, 2_100)
    assert a.stored == 0
    _, acts = a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=PAYLOAD,
        lifetime_ms=3_600_000,
        now=3_000,
    )
    txs = of(acts, Transmit)  # none in flight now: views again
    assert [isinstance(t.parts[1], memoryview) for t in txs] == [True] * 3
