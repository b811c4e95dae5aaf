"""``Agent.on_delivered_many``: a daemon's batch of app confirmations (one
store commit) has the effect of confirming the same keys one at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcis.dtn.agent.actions import Ack, Deliver, Event, Schedule, Transmit
from dcis.dtn.agent.agent import Agent, ConfirmationsInterrupted, Received
from dcis.dtn.agent.store import BundleStore, MemoryStore, StoreError
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.bpv7.flags import BundleFlags
from dcis.dtn.routing.contact import Contact
from dcis.dtn.storage.sqlite_store import SqliteStore

from .helpers import of

NOW = 2_000_000


def _frame(i: int) -> bytes:
    """Bundle ``i`` from node 1 to ipn:2.1 (odd ones ~20 KB)."""
    return encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=bytes([i]) * (100 + 20_000 * (i % 2)),
            creation_ms=1_000_000,
            sequence=i,
            lifetime_ms=3_600_000 - 1_000 * i,
        )
    )


def _agent(store: BundleStore) -> tuple[Agent, list[str]]:
    a = Agent(node=2, store=store)
    a.register("ipn:2.1")
    frames = [_frame(i) for i in range(6)]
    acts = a.on_receive_many(
        [Received("udp", 1, f, i) for i, f in enumerate(frames)], NOW
    )
    return a, [d.bundle_key for d in of(acts, Deliver)]


def _store(kind: str, path: Path) -> BundleStore:
    return MemoryStore() if kind == "memory" else SqliteStore(path)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_confirming_many_at_once_is_confirming_each_in_turn(
    kind: str, tmp_path: Path
) -> None:
    one, keys = _agent(_store(kind, tmp_path / "one.db"))
    many, keys2 = _agent(_store(kind, tmp_path / "many.db"))
    assert keys == keys2
    assert len(keys) == 6
    # Some confirmed, one twice, one unknown key; the rest stay held.
    batch = [keys[4], keys[0], keys[4], "ipn:9.9|1|1", keys[2]]
    seq: list[object] = []
    for k in batch:
        seq += one.on_delivered(k, NOW + 5)
    got = many.on_delivered_many(batch, NOW + 5)
    # The same events in the same order; the timer is set once, at the end,
    # to where the last single call left it.
    assert [a for a in got if isinstance(a, Event)] == [
        a for a in seq if isinstance(a, Event)
    ]
    assert [a.kind for a in got if isinstance(a, Event)] == ["delivered"] * 3
    sched = [a for a in seq if isinstance(a, Schedule)]
    assert [a for a in got if isinstance(a, Schedule)] == sched[-1:]
    for a in (one, many):
        assert a.store.is_delivered(keys[0])
        assert a.store.is_delivered(keys[4])
        assert not a.store.is_delivered(keys[1])
        assert sorted(r.key for r in a.store.records()) == sorted(
            [keys[1], keys[3], keys[5]]
        )
        assert a.counters["delivered"] == 3
    assert many.on_delivered_many([], NOW + 6) == []
    assert many.on_delivered_many(batch, NOW + 6) == []  # confirmed already
    one.store.close()
    many.store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_batch_with_copies_of_delivered_bundles_acks_them_as_duplicates(
    kind: str, tmp_path: Path
) -> None:
    # The batch's delivered keys are looked up together (delivered_among):
    # copies of bundles delivered before are acknowledged, not delivered
    # again; the others in the same batch are delivered.
    a, keys = _agent(_store(kind, tmp_path / "a.db"))
    a.on_delivered_many(keys[:3], NOW + 1)
    again = [_frame(i) for i in (1, 7, 0, 8)]
    acts = a.on_receive_many(
        [Received("udp", 1, f, 100 + i) for i, f in enumerate(again)], NOW + 2
    )
    assert [e.kind for e in of(acts, Event)].count("duplicate") == 2
    assert len(of(acts, Ack)) == 4
    got = [d.bundle_key for d in of(acts, Deliver)]
    assert got == ["ipn:1.1|1000000|7", "ipn:1.1|1000000|8"]
    assert a.store.delivered_among([*keys, "x", keys[0]]) == set(keys[:3])
    a.store.close()


def test_delivered_among_asks_the_sqlite_store_in_chunks(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "d.db")
    with s.transaction():
        for i in range(0, 1200, 3):
            s.mark_delivered(f"k{i}", 10**9)
    assert s.delivered_among(f"k{i}" for i in range(1200)) == {
        f"k{i}" for i in range(0, 1200, 3)
    }
    with s.transaction():
        s.mark_delivered("new", 10**9)  # batched in the open block
        assert s.delivered_among(["new", "k3", "k4"]) == {"new", "k3"}
    s.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_confirmation_that_fails_keeps_the_others(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store fails on one key of the batch: the keys confirmed before
    # and after it keep their effect -- in memory, in the store (the batch
    # is not rolled back under them) and in the actions handed back (their
    # events and their delivery reports' transmissions).
    store = _store(kind, tmp_path / "a.db")
    a = Agent(node=2, store=store)
    a.register("ipn:2.1")
    a.on_contact_start(Contact(2, 1, 0.0, float("inf"), 0.0), NOW)
    frames = [
        encode_bundle(
            make_bundle(
                source="ipn:1.1",
                destination="ipn:2.1",
                payload=bytes([i]) * 100,
                creation_ms=1_000_000,
                sequence=i,
                lifetime_ms=3_600_000,
                report_to="ipn:1.1",
                flags=BundleFlags.REPORT_DELIVERY,
            )
        )
        for i in range(3)
    ]
    acts = a.on_receive_many(
        [Received("udp", 1, f, i) for i, f in enumerate(frames)], NOW
    )
    keys = [d.bundle_key for d in of(acts, Deliver)]
    real = store.mark_delivered

    def bad_sector(key: str, until_ms: int) -> None:
        if key == keys[1]:
            raise StoreError("disk I/O error")
        real(key, until_ms)

    monkeypatch.setattr(store, "mark_delivered", bad_sector)
    with pytest.raises(ConfirmationsInterrupted) as info:
        a.on_delivered_many(keys, NOW + 5)
    exc = info.value
    assert isinstance(exc.__cause__, StoreError)
    assert exc.failed == 1
    delivered = [e.bundle_key for e in of(exc.actions, Event) if e.kind == "delivered"]
    assert delivered == [keys[0], keys[2]]
    reports = [t for t in of(exc.actions, Transmit) if t.neighbor == 1]
    assert len(reports) == 3  # the failed key was delivered too
    assert a.counters["delivered"] == 2
    assert store.is_delivered(keys[0])
    assert store.is_delivered(keys[2])
    assert {r.key for r in store.records()} >= {keys[1]}
    assert not {keys[0], keys[2]} & {r.key for r in store.records()}
    store.close()
