"""The agent drops bundles it forwarded with the store's batched discard:
one DELETE statement for a batch of transmissions, not one per bundle."""

from __future__ import annotations

from pathlib import Path

from dcis.dtn.agent import Agent
from dcis.dtn.agent.actions import Transmit
from dcis.dtn.storage.sqlite_store import SqliteStore

from .helpers import link, of


def test_a_batch_of_forwarded_bundles_leaves_in_one_statement(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.db")
    a = Agent(node=1, store=store)
    a.on_contact_start(link(1, 2), now=1_000)
    tx: list[int] = []
    for i in range(40):
        _, actions = a.send(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"%04d" % i * 300,
            lifetime_ms=60_000,
            now=1_000 + i,
        )
        tx += [t.tx_id for t in of(actions, Transmit)]
    assert len(tx) == 40
    assert len(store) == 40
    deletes: list[str] = []
    store._db.set_trace_callback(
        lambda sql: deletes.append(sql) if sql.startswith("DELETE") else None
    )
    a.on_transmit_done_many([(t, True) for t in tx], now=2_000)
    assert len(store) == 0
    assert store.used_bytes == 0
    assert a.stored == 0
    assert len(deletes) == 1
    store.close()
