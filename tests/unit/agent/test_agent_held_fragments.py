"""Fragments held in memory, unacknowledged, until their bundle is whole
(dcis.dtn.agent.held; spec/agent.md "Delivery and reassembly"): over a CL
that retransmits until acknowledged, the receiver stores the whole bundle
once and acknowledges every piece with it; anything unusual takes the
ordinary way (each fragment stored and acknowledged)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dcis.dtn.agent import held
from dcis.dtn.agent.actions import Ack, Action, Deliver, Schedule
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.entries import MAX_VARIANTS
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.helpers import check_locations, events, of
from tests.unit.security.test_agent_security import PAYLOAD as SECURE_PAYLOAD
from tests.unit.security.test_agent_security import (
    T0,
    open_link,
    secure_agent,
    send_1_to_3,
    transmits,
)
from tests.unit.security.test_content_duplicates import forge

PAYLOAD = bytes(i % 251 for i in range(30_000))
CFG = AgentConfig(hold_fragments_ms={"udp": 200}, keep_decoded=64)


class PutCountingStore(MemoryStore):
    puts = 0

    def put(self, *args: object, **kw: object) -> None:
        self.puts += 1
        super().put(*args, **kw)  # type: ignore[arg-type]


def _whole(seq: int = 0) -> Bundle:
    return make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=PAYLOAD,
        creation_ms=1_000,
        sequence=seq,
        lifetime_ms=3_600_000,
    )


def _pieces(seq: int = 0) -> list[bytes]:
    return [encode_bundle(f) for f in fragment_bundle(_whole(seq), 10_000)]


def _node2(config: AgentConfig = CFG) -> Agent:
    a = Agent(node=2, store=PutCountingStore(), config=config)
    a.register("ipn:2.1")
    return a


def _rx(a: Agent, data: bytes, token: int, now: int, cla: str = "udp") -> list[Action]:
    return a.on_receive(cla=cla, neighbor=1, data=data, now=now, cl_token=token)


def test_pieces_are_acknowledged_once_the_whole_bundle_is_stored() -> None:
    a = _node2()
    p0, p1, p2 = _pieces()
    for i, data in ((2, p2), (0, p0)):
        acts = _rx(a, data, i, 2_000 + i)
        assert of(acts, Ack) == []
        assert of(acts, Deliver) == []
        assert len(a.store) == 0  # held, not stored
        check_locations(a)
    acts = _rx(a, p1, 1, 2_010)
    (d,) = of(acts, Deliver)
    assert d.payload == PAYLOAD
    assert d.bundle_key == _whole().bundle_key
    # Every piece acknowledged, after the one store write of the whole.
    assert sorted(x.cl_token for x in of(acts, Ack)) == [0, 1, 2]
    assert a.store.puts == 1  # type: ignore[attr-defined]
    assert a.counters["reassembled"] == 1
    assert not a._held
    assert not a._held_due  # no timer left behind
    a.on_delivered(d.bundle_key, 2_020)
    assert len(a.store) == 0
    # A piece sent again (its Ack was lost) is a duplicate, acknowledged.
    assert of(_rx(a, p0, 9, 2_030), Ack) == [Ack(1, 9)]


def test_a_group_not_whole_in_time_is_stored_and_acknowledged() -> None:
    a = _node2()
    p0, p1, p2 = _pieces()
    acts = _rx(a, p0, 0, 2_000)
    assert Schedule(2_200) in acts  # the hold ends then
    _rx(a, p1, 1, 2_050)
    assert of(a.on_tick(2_199), Ack) == []
    acts = a.on_tick(2_200)
    assert sorted(x.cl_token for x in of(acts, Ack)) == [0, 1]
    assert len(a.store) == 2  # stored as fragments, the ordinary way
    check_locations(a)
    # The last piece joins them the ordinary way.
    acts = _rx(a, p2, 2, 2_300)
    assert [d.payload for d in of(acts, Deliver)] == [PAYLOAD]
    assert of(acts, Ack) == [Ack(1, 2)]


def test_copies_of_a_held_piece_are_all_acknowledged() -> None:
    a = _node2()
    p0, p1, p2 = _pieces()
    _rx(a, p0, 0, 2_000)
    _rx(a, p0, 5, 2_001)  # the CL retransmitted it (our Ack was not sent yet)
    _rx(a, p1, 1, 2_002)
    acts = _rx(a, p2, 2, 2_003)
    assert sorted(x.cl_token for x in of(acts, Ack)) == [0, 1, 2, 5]
    assert len(of(acts, Deliver)) == 1


def test_only_acknowledged_transfers_over_the_named_cl_are_held() -> None:
    # No token (best effort: nobody retransmits) or another CL: each
    # fragment is stored as it comes.
    for cla, token in (("udp", None), ("ltp", 7)):
        a = _node2()
        p0 = _pieces()[0]
        acts = a.on_receive(cla=cla, neighbor=1, data=p0, now=2_000, cl_token=token)
        assert len(a.store) == 1
        assert of(acts, Ack) == ([] if token is None else [Ack(1, token)])
    a = _node2(AgentConfig())  # the default holds nothing
    assert of(_rx(a, _pieces()[0], 3, 2_000), Ack) == [Ack(1, 3)]


def test_the_byte_bound_stores_what_does_not_fit() -> None:
    a = _node2(replace(CFG, hold_fragments_bytes=25_000))
    p0, p1, p2 = _pieces()
    assert of(_rx(a, p0, 0, 2_000), Ack) == []
    assert of(_rx(a, p1, 1, 2_001), Ack) == []
    # The third would pass the bound: the group is stored and acknowledged
    # (and, all pieces being there, reassembled the ordinary way).
    acts = _rx(a, p2, 2, 2_002)
    assert sorted(x.cl_token for x in of(acts, Ack)) == [0, 1, 2]
    assert [d.payload for d in of(acts, Deliver)] == [PAYLOAD]
    assert a._held_bytes == 0


def test_a_restart_forgets_held_pieces_none_of_them_acknowledged() -> None:
    store = MemoryStore()
    a = Agent(node=2, store=store, config=CFG)
    a.register("ipn:2.1")
    p0, p1, p2 = _pieces()
    _rx(a, p0, 0, 2_000)
    _rx(a, p1, 1, 2_001)
    b = Agent(node=2, store=store, config=CFG)  # kill -9, restart
    b.register("ipn:2.1")
    assert of(b.recover(2_100), Ack) == []
    assert len(store) == 0
    got: list[Action] = []
    for i, data in enumerate((p0, p1, p2)):  # the sender sends them again
        got += _rx(b, data, 10 + i, 2_200 + i)
    assert [d.payload for d in of(got, Deliver)] == [PAYLOAD]
    assert sorted(x.cl_token for x in of(got, Ack)) == [10, 11, 12]


def test_a_held_piece_with_other_content_goes_the_ordinary_way() -> None:
    a = _node2()
    p0, p1, p2 = _pieces()
    forged = fragment_bundle(replace_payload(_whole(), b"\x00" * len(PAYLOAD)), 10_000)
    _rx(a, p0, 0, 2_000)
    acts = _rx(a, encode_bundle(forged[0]), 1, 2_001)
    # What was held is stored and acknowledged; the differing copy is not
    # acknowledged (its sender sends it again), nothing is held any more.
    assert of(acts, Ack) == [Ack(1, 0)]
    assert events(acts, "dropped")
    assert not a._held
    assert len(a.store) == 1
    # Sent again: kept apart as a variant, acknowledged; the genuine
    # pieces still make the bundle.
    assert of(_rx(a, encode_bundle(forged[0]), 4, 2_002), Ack) == [Ack(1, 4)]
    acts = _rx(a, p1, 2, 2_003) + _rx(a, p2, 3, 2_004)
    assert [d.payload for d in of(acts, Deliver)] == [PAYLOAD]
    check_locations(a)


def test_a_full_store_refuses_the_whole_and_acknowledges_nothing() -> None:
    a = Agent(node=2, store=MemoryStore(limit_bytes=20_000), config=CFG)
    a.register("ipn:2.1")
    acts: list[Action] = []
    for i, data in enumerate(_pieces()):
        acts += _rx(a, data, i, 2_000 + i)
    assert of(acts, Ack) == []
    assert events(acts, "refused")
    assert not a._held
    assert len(a.store) == 0


def replace_payload(b: Bundle, payload: bytes) -> Bundle:
    return make_bundle(
        source=str(b.primary.source),
        destination=str(b.primary.destination),
        payload=payload,
        creation_ms=b.primary.creation.time_ms,
        sequence=b.primary.creation.sequence,
        lifetime_ms=b.primary.lifetime_ms,
    )


def test_pieces_stored_at_the_end_of_their_hold_are_stored_durably(
    tmp_path: Path,
) -> None:
    # on_tick commits relaxed; the pieces it stores there are acknowledged,
    # so that commit must be a durable one (the group commit's generation
    # moves: the daemon sends the Acks only after the sync covering it).
    store = SqliteStore(tmp_path / "n2.db", synchronous="FULL", deferred_sync=True)
    a = Agent(node=2, store=store, config=CFG)
    a.register("ipn:2.1")
    p0 = _pieces()[0]
    _rx(a, p0, 0, 2_000)
    gen = store.write_generation
    acts = a.on_tick(2_200)
    assert of(acts, Ack) == [Ack(1, 0)]
    assert store.write_generation > gen


def test_a_bound_reached_stores_and_acknowledges_the_piece_at_once() -> None:
    # Room for one piece: the first piece of a second bundle does not fit,
    # so it is stored and acknowledged now, the first bundle's piece stays
    # held (its Ack withheld).
    a = _node2(replace(CFG, hold_fragments_bytes=15_000))
    assert of(_rx(a, _pieces(0)[0], 0, 2_000), Ack) == []
    assert of(_rx(a, _pieces(1)[0], 1, 2_001), Ack) == [Ack(1, 1)]
    assert a.store.puts == 1  # type: ignore[attr-defined]
    assert 0 < a._held_bytes <= 15_000
    # Another piece of the held bundle that does not fit either: the held
    # group is stored too, each piece acknowledged.
    acts = _rx(a, _pieces(0)[1], 2, 2_002)
    assert sorted(x.cl_token for x in of(acts, Ack)) == [0, 2]
    assert a._held_bytes == 0
    check_locations(a)


def test_the_bound_counts_what_a_tiny_piece_costs_in_memory() -> None:
    # A peer sending the first tiny piece of many bundles: each held piece
    # costs ~1 KB of Python objects whatever its wire size, so the bound
    # counts that too -- 64 KiB holds at most 64 pieces, not ~800 of 80
    # bytes; the rest are stored and acknowledged at once.
    a = _node2(replace(CFG, hold_fragments_bytes=64 * 1024))
    acked = 0
    for seq in range(200):
        whole = make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"xy",
            creation_ms=1_000,
            sequence=seq,
            lifetime_ms=3_600_000,
        )
        first = encode_bundle(fragment_bundle(whole, 1)[0])
        acked += len(of(_rx(a, first, seq, 2_000 + seq), Ack))
    assert 0 < len(a._held) <= 64 * 1024 // held.HELD_PIECE_OVERHEAD
    assert acked == 200 - len(a._held)
    assert a._held_bytes <= 64 * 1024
    check_locations(a)


def test_the_bound_counts_the_acks_of_copies_of_a_held_piece() -> None:
    # A peer sending one piece again and again (a new token each time):
    # every copy's Ack waits with the piece, so the bound counts them;
    # past it a copy is dropped unacknowledged, and when the hold ends
    # every copy held is acknowledged and each one sent again after that
    # is a duplicate, acknowledged.
    bound = 16 * 1024
    a = _node2(replace(CFG, hold_fragments_bytes=bound))
    p0 = _pieces()[0]
    _rx(a, p0, 0, 2_000)
    for token in range(1, 1_001):
        assert of(_rx(a, p0, token, 2_001), Ack) == []
    waiting = sum(len(v) for g in a._held.values() for v in g.acks.values())
    room = bound - len(p0) - held.HELD_PIECE_OVERHEAD
    assert waiting == 1 + room // held.HELD_COPY_OVERHEAD
    assert a._held_bytes <= bound
    acts = a.on_tick(2_200)
    assert sorted(x.cl_token for x in of(acts, Ack)) == list(range(waiting))
    assert a._held_bytes == 0
    assert of(_rx(a, p0, 1_000, 2_300), Ack) == [Ack(1, 1_000)]
    check_locations(a)


def test_a_copy_with_other_content_stored_meanwhile_does_not_hide_a_held_piece() -> (
    None
):
    # A forger who saw a held piece sends a copy with its key and other
    # bytes as a bare bundle (no token: stored at once). The held genuine
    # piece, when its hold ends, is kept apart as a variant -- never
    # acknowledged as a "duplicate" of the forgery and dropped: the
    # security policy then picks the genuine combination.
    tx = secure_agent(1, config=AgentConfig(max_bundle_bytes=1200))
    rx = secure_agent(3, config=AgentConfig(hold_fragments_ms={"udp": 200}))
    open_link(tx, 3)
    frags = [t.data for t in transmits(send_1_to_3(tx))]
    assert len(frags) >= 3
    got = rx.on_receive(cla="udp", neighbor=1, data=frags[0], now=T0, cl_token=0)
    assert of(got, Ack) == []  # held
    got += rx.on_receive(cla="udp", neighbor=9, data=forge(frags[0]), now=T0 + 1)
    for i, data in enumerate(frags[1:], 1):
        got += rx.on_receive(cla="udp", neighbor=1, data=data, now=T0 + 2, cl_token=i)
    got += rx.on_tick(T0 + 200)  # the hold of the first piece ends
    assert Ack(1, 0) in of(got, Ack)
    assert [d.payload for d in of(got, Deliver)] == [SECURE_PAYLOAD]


def test_a_held_piece_past_the_bound_of_differing_copies_is_not_acknowledged() -> None:
    a = _node2()
    p0 = _pieces()[0]
    _rx(a, p0, 0, 2_000)
    b = decode_bundle_untrusted(p0)
    pb = b.payload_block
    for i in range(1, MAX_VARIANTS + 2):  # the key, then MAX_VARIANTS apart
        copy = Bundle(
            b.primary, (*b.blocks[:-1], replace(pb, data=bytes([i]) + pb.data[1:]))
        )
        a.on_receive(cla="bare", neighbor=9, data=encode_bundle(copy), now=2_001)
    acts = a.on_tick(2_200)
    # No room to keep the genuine piece apart: refused, not acknowledged
    # (its sender sends it again).
    assert of(acts, Ack) == []
    assert events(acts, "refused")
    assert not a._held
    check_locations(a)


def test_holds_of_other_lengths_end_in_deadline_order() -> None:
    # Groups held over CLs with other hold times end in deadline order,
    # not in the order they came; a group released early leaves no timer.
    a = _node2(replace(CFG, hold_fragments_ms={"udp": 200, "slow": 500}))
    _rx(a, _pieces(0)[0], 0, 2_000, cla="slow")  # ends at 2_500
    _rx(a, _pieces(1)[0], 1, 2_010)  # ends at 2_210
    got: list[Action] = []
    for i, data in enumerate(_pieces(2)):  # whole at once: released
        got += _rx(a, data, 10 + i, 2_020)
    assert len(of(got, Deliver)) == 1
    assert held.held_deadline(a) == 2_210
    assert of(a.on_tick(2_209), Ack) == []
    assert of(a.on_tick(2_210), Ack) == [Ack(1, 1)]
    assert held.held_deadline(a) == 2_500
    assert of(a.on_tick(2_499), Ack) == []
    assert of(a.on_tick(2_500), Ack) == [Ack(1, 0)]
    assert held.held_deadline(a) is None
    assert a._held_due == []
    check_locations(a)


def test_forged_pieces_that_complete_a_held_group_lose_no_genuine_piece() -> None:
    # A forger who saw the first piece sends forged copies of the others
    # before they come: the held group is whole, the security policy
    # refuses it. The genuine first piece is acknowledged -- so it must be
    # kept (as on the ordinary path), and the genuine rest, when it comes,
    # makes the bundle.
    tx = secure_agent(1, config=AgentConfig(max_bundle_bytes=1200))
    rx = secure_agent(3, config=AgentConfig(hold_fragments_ms={"udp": 200}))
    open_link(tx, 3)
    frags = [t.data for t in transmits(send_1_to_3(tx))]
    assert len(frags) >= 3
    got = rx.on_receive(cla="udp", neighbor=1, data=frags[0], now=T0, cl_token=0)
    for i, data in enumerate(frags[1:], 1):
        got += rx.on_receive(
            cla="udp", neighbor=9, data=forge(data), now=T0 + 1, cl_token=100 + i
        )
    for i, data in enumerate(frags[1:], 1):
        got += rx.on_receive(cla="udp", neighbor=1, data=data, now=T0 + 2, cl_token=i)
    got += rx.on_tick(T0 + 300)  # any hold still running ends
    assert Ack(1, 0) in of(got, Ack)
    assert [d.payload for d in of(got, Deliver)] == [SECURE_PAYLOAD]
