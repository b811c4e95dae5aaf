"""Fragments held in memory, unacknowledged, until their bundle is whole
(dcis.dtn.agent.held; spec/agent.md "Delivery and reassembly"): over a CL
that retransmits until acknowledged, the receiver stores the whole bundle
once and acknowledges every piece with it; anything unusual takes the
ordinary way (each fragment stored and acknowledged)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dcis.dtn.agent.actions import Ack, Action, Deliver, Schedule
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import Bundle, encode_bundle, make_bundle
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.helpers import check_locations, events, of

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
