"""Bounds on what others can make an agent hold (issue 10, "Unbounded memory")."""

from __future__ import annotations

from pathlib import Path

from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.helpers import Deliver, events, of

T0 = 1_000_000
DAY = 86_400_000


def test_a_bundle_for_another_node_is_held_at_most_max_forward_lifetime() -> None:
    from dcis.dtn.agent.store import MemoryStore

    a = Agent(
        node=2,
        store=MemoryStore(),
        config=AgentConfig(max_forward_lifetime_ms=DAY),
    )
    data = encode_bundle(
        make_bundle(
            source="ipn:9.1",
            destination="ipn:77.1",  # nobody: no route, waits
            payload=b"forever?",
            creation_ms=T0,
            lifetime_ms=2**64 - 1 - T0,
        )
    )
    a.on_receive(cla="t", neighbor=9, data=data, now=T0, cl_token=1)
    assert a.stored == 1
    assert a.next_deadline() is not None
    a.on_tick(T0 + DAY - 1)
    assert a.stored == 1
    out = a.on_tick(T0 + DAY + 1)
    assert a.stored == 0
    assert events(out, "expired")


def test_own_bundles_keep_their_lifetime() -> None:
    from dcis.dtn.agent.store import MemoryStore

    a = Agent(
        node=2, store=MemoryStore(), config=AgentConfig(max_forward_lifetime_ms=DAY)
    )
    a.register("ipn:2.1")
    data = encode_bundle(
        make_bundle(
            source="ipn:9.1",
            destination="ipn:2.5",  # for this node, not registered yet
            payload=b"mine",
            creation_ms=T0,
            lifetime_ms=10 * DAY,
        )
    )
    a.on_receive(cla="t", neighbor=9, data=data, now=T0, cl_token=1)
    a.on_tick(T0 + 2 * DAY)
    assert a.stored == 1
    assert of(a.register("ipn:2.5", now=T0 + 2 * DAY), Deliver)


def test_tombstones_are_kept_at_most_max_tombstone_ms(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    a = Agent(node=2, store=store, config=AgentConfig(max_tombstone_ms=DAY))
    a.register("ipn:2.1")
    data = encode_bundle(
        make_bundle(
            source="ipn:9.1",
            destination="ipn:2.1",
            payload=b"x",
            creation_ms=T0,
            lifetime_ms=2**63,
        )
    )
    (d,) = of(a.on_receive(cla="t", neighbor=9, data=data, now=T0, cl_token=1), Deliver)
    a.on_delivered(d.bundle_key, T0)
    assert store.delivered_count == 1
    a.on_tick(T0 + DAY + 10 * 60_000)
    assert store.delivered_count == 0
    store.close()


def test_the_number_of_bundles_held_is_bounded() -> None:
    from dcis.dtn.agent.agent import TooManyBundles
    from dcis.dtn.agent.store import MemoryStore
    from tests.unit.agent.helpers import Ack

    a = Agent(node=2, store=MemoryStore(), config=AgentConfig(max_bundles=3))
    for i in range(5):
        data = encode_bundle(
            make_bundle(
                source="ipn:9.1",
                destination="ipn:77.1",
                payload=b"tiny",
                creation_ms=T0,
                sequence=i,
            )
        )
        out = a.on_receive(cla="t", neighbor=9, data=data, now=T0, cl_token=i)
        acked = [x for x in out if isinstance(x, Ack)]
        assert acked == ([Ack(9, i)] if i < 3 else [])  # refused: not acknowledged
    assert a.stored == 3
    assert a.counters["refused"] == 2
    assert issubclass(TooManyBundles, Exception)
