"""Agent core: send, receive, store-before-ack, delivery, duplicates, bad input."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dcis.dtn.agent.actions import Ack, Deliver, Schedule, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig, Received
from dcis.dtn.agent.store import BundleStore, MemoryStore, StoreFull
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.storage.sqlite_store import SqliteStore
from dcis.dtn.time import DtnTime
from tests.unit.agent.helpers import events, link, of

T0 = DtnTime(1_000_000)
StoreFactory = Callable[..., BundleStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StoreFactory]:
    made: list[BundleStore] = []

    def factory(name: str = "s", limit_bytes: int = 1 << 24) -> BundleStore:
        s: BundleStore
        if request.param == "memory":
            s = MemoryStore(limit_bytes=limit_bytes)
        else:
            s = SqliteStore(tmp_path / f"{name}.db", limit_bytes=limit_bytes)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


def test_direct_exchange_delivers_once_and_removes_from_sender(
    make_store: StoreFactory,
) -> None:
    a = Agent(node=1, store=make_store("a"))
    b = Agent(node=2, store=make_store("b"))
    b.register("ipn:2.7")
    key, acts = a.send(
        source="ipn:1.1",
        destination="ipn:2.7",
        payload=b"hi",
        lifetime_ms=60_000,
        now=T0,
    )
    assert key == "ipn:1.1|1000000|0"
    assert a.holds(key)
    assert of(acts, Transmit) == []  # no contact yet: held
    assert of(acts, Schedule) == [Schedule(DtnTime(T0 + 60_000))]
    acts = a.on_contact_start(link(1, 2), T0 + 10)
    (tx,) = of(acts, Transmit)
    assert tx.neighbor == 2
    sent = decode_bundle_untrusted(tx.data)
    assert sent.previous_node == IpnEid(1, 0)
    assert sent.hop_count is not None
    assert sent.hop_count.count == 1
    racts = b.on_receive(cla="udp", neighbor=1, data=tx.data, now=T0 + 20, cl_token=42)
    (dl,) = of(racts, Deliver)
    assert (
        dl.endpoint,
        dl.source,
        dl.payload,
        dl.creation_ms,
        dl.sequence,
        dl.bundle_key,
    ) == (
        "ipn:2.7",
        "ipn:1.1",
        b"hi",
        T0,
        0,
        key,
    )
    assert of(racts, Ack) == [Ack(1, 42)]
    # the sender keeps the bundle until the next hop has it
    assert a.holds(key)
    a.on_transmit_done(tx.tx_id, True, T0 + 30)
    assert not a.holds(key)
    assert a.store.get(key) is None
    assert a.counters["forwarded"] == 1
    b.on_delivered(key, T0 + 40)
    assert not b.holds(key)
    assert b.counters["delivered"] == 1
    # the same bundle again: acknowledged, not delivered again
    again = b.on_receive(cla="udp", neighbor=1, data=tx.data, now=T0 + 50, cl_token=43)
    assert of(again, Deliver) == []
    assert of(again, Ack) == [Ack(1, 43)]
    assert b.counters["duplicates"] == 1


def test_duplicate_while_held_is_acked_not_stored_twice(
    make_store: StoreFactory,
) -> None:
    b = Agent(node=2, store=make_store())
    data = encode_bundle(
        make_bundle(
            source="ipn:1.1", destination="ipn:3.1", payload=b"x", creation_ms=T0
        )
    )
    first = b.on_receive(cla="udp", neighbor=1, data=data, now=T0 + 1, cl_token=1)
    second = b.on_receive(cla="udp", neighbor=1, data=data, now=T0 + 2, cl_token=2)
    assert of(first, Ack) == [Ack(1, 1)]
    assert of(second, Ack) == [Ack(1, 2)]
    assert len(b.store) == 1
    assert b.counters["duplicates"] == 1


def test_junk_is_dropped_with_reason_and_not_acked(make_store: StoreFactory) -> None:
    b = Agent(node=2, store=make_store())
    for junk in (b"", b"\x00", b"\x9f\xff", b"hello world"):
        acts = b.on_receive(cla="udp", neighbor=1, data=junk, now=T0, cl_token=9)
        (ev,) = events(acts, "dropped")
        assert ev.detail
        assert of(acts, Ack) == []
    assert b.counters["dropped"] == 4
    assert len(b.store) == 0


def test_store_full_refuses_send_and_receive_keeps_stored(
    make_store: StoreFactory,
) -> None:
    store = make_store(limit_bytes=300)
    a = Agent(node=1, store=store)
    k1, _ = a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"a" * 150,
        lifetime_ms=60_000,
        now=T0,
    )
    with pytest.raises(StoreFull, match="store full"):
        a.send(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"b" * 150,
            lifetime_ms=60_000,
            now=T0,
        )
    assert a.counters["refused"] == 1
    data = encode_bundle(
        make_bundle(
            source="ipn:9.1", destination="ipn:2.1", payload=b"c" * 200, creation_ms=T0
        )
    )
    acts = a.on_receive(cla="udp", neighbor=9, data=data, now=T0, cl_token=5)
    (ev,) = events(acts, "refused")
    assert "store full" in ev.detail
    assert of(acts, Ack) == []  # not taken: the previous hop keeps it
    assert a.holds(k1)
    assert len(store) == 1
    # the held bundle still leaves normally
    (tx,) = of(a.on_contact_start(link(1, 2), T0 + 1), Transmit)
    a.on_transmit_done(tx.tx_id, True, T0 + 2)
    assert len(store) == 0


def test_receive_many_acks_all_after_one_commit(make_store: StoreFactory) -> None:
    b = Agent(node=2, store=make_store())
    batch = [
        Received(
            "udp",
            1,
            encode_bundle(
                make_bundle(
                    source="ipn:1.1",
                    destination="ipn:3.1",
                    payload=b"x",
                    creation_ms=T0,
                    sequence=i,
                )
            ),
            i,
        )
        for i in range(5)
    ]
    acts = b.on_receive_many(batch, T0 + 1)
    assert [a.cl_token for a in of(acts, Ack)] == [0, 1, 2, 3, 4]
    assert len(b.store) == 5


def test_unregistered_endpoint_is_held_until_register(make_store: StoreFactory) -> None:
    b = Agent(node=2, store=make_store())
    data = encode_bundle(
        make_bundle(
            source="ipn:1.1", destination="ipn:2.5", payload=b"x", creation_ms=T0
        )
    )
    acts = b.on_receive(cla="udp", neighbor=1, data=data, now=T0, cl_token=1)
    assert of(acts, Deliver) == []
    assert of(acts, Ack) == [Ack(1, 1)]
    (dl,) = of(b.register("ipn:2.5"), Deliver)
    assert dl.payload == b"x"


def test_send_validates_arguments() -> None:
    a = Agent(node=1, store=MemoryStore())
    with pytest.raises(InvalidArgument):
        a.send(
            source="ipn:2.1", destination="ipn:3.1", payload=b"", lifetime_ms=1, now=T0
        )
    with pytest.raises(InvalidArgument):
        a.send(
            source="ipn:1.1", destination="ipn:3.1", payload=b"", lifetime_ms=0, now=T0
        )
    with pytest.raises(InvalidArgument):
        a.send(
            source="ipn:1.1",
            destination="nonsense",
            payload=b"",
            lifetime_ms=10,
            now=T0,
        )
    with pytest.raises(InvalidArgument):
        Agent(node=0, store=MemoryStore())
    with pytest.raises(InvalidArgument):
        AgentConfig(window=0)


def test_sequence_numbers_are_unique_within_a_millisecond() -> None:
    a = Agent(node=1, store=MemoryStore())
    keys = {
        a.send(
            source="ipn:1.1", destination="ipn:3.1", payload=b"", lifetime_ms=10, now=T0
        )[0]
        for _ in range(10)
    }
    assert len(keys) == 10
