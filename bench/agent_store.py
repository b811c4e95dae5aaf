"""Bundle agent + store throughput: 1 KB bundles received, stored durably and acknowledged.

Prints bundles/s for the agent over MemoryStore (the reference, no disk),
SqliteStore(synchronous="FULL") with one commit per bundle and with
``on_receive_many`` batches, and SqliteStore(synchronous="NORMAL"); then the
full relay cycle (receive, ack, transmit, transmit done). Medians of 3 runs.
The daemon target is >= 2,000 bundles/s of 1 KB with durable storage.

    .venv/bin/python bench/agent_store.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcis.dtn.agent.actions import Ack, Transmit
from dcis.dtn.agent.agent import Agent, Received
from dcis.dtn.agent.store import BundleStore, MemoryStore
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.routing.contact import Contact
from dcis.dtn.storage.sqlite_store import SqliteStore

N = 3000
T0 = 1_000_000
PAYLOAD = b"d" * 1024
BUNDLES = [
    encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:3.1",
            payload=PAYLOAD,
            creation_ms=T0,
            sequence=i,
            lifetime_ms=3_600_000,
        )
    )
    for i in range(N)
]


def receive_each(store: BundleStore) -> float:
    a = Agent(node=2, store=store)
    t = time.perf_counter()
    for i, data in enumerate(BUNDLES):
        acts = a.on_receive(cla="udp", neighbor=1, data=data, now=T0, cl_token=i)
        assert isinstance(acts[-1], Ack) or any(isinstance(x, Ack) for x in acts)
    return N / (time.perf_counter() - t)


def receive_batched(store: BundleStore, batch: int = 32) -> float:
    a = Agent(node=2, store=store)
    t = time.perf_counter()
    for j in range(0, N, batch):
        acts = a.on_receive_many(
            [Received("udp", 1, BUNDLES[i], i) for i in range(j, min(N, j + batch))], T0
        )
        assert sum(isinstance(x, Ack) for x in acts) == min(batch, N - j)
    return N / (time.perf_counter() - t)


def relay_cycle(store: BundleStore, batch: int = 32, *, many: bool = False) -> float:
    """Receive (batched), transmit over an open link, and complete each
    transmission (one call each, or ``on_transmit_done_many`` per batch)."""
    a = Agent(node=2, store=store)
    a.on_contact_start(Contact(2, 3, 0, float("inf"), 0), T0)
    t = time.perf_counter()
    for j in range(0, N, batch):
        acts = a.on_receive_many(
            [Received("udp", 1, BUNDLES[i], i) for i in range(j, min(N, j + batch))], T0
        )
        while True:
            txs = [x for x in acts if isinstance(x, Transmit)]
            if not txs:
                break
            if many:
                acts = a.on_transmit_done_many([(tx.tx_id, True) for tx in txs], T0)
                continue
            acts = []
            for tx in txs:
                acts.extend(a.on_transmit_done(tx.tx_id, True, T0))
    assert len(store) == 0
    return N / (time.perf_counter() - t)


def median(
    fn: Callable[[BundleStore], float], make: Callable[[Path], BundleStore]
) -> float:
    rates = []
    for r in range(3):
        with tempfile.TemporaryDirectory() as d:
            store = make(Path(d) / f"b{r}.db")
            try:
                rates.append(fn(store))
            finally:
                store.close()
    return statistics.median(rates)


def main() -> int:
    mem = median(receive_each, lambda p: MemoryStore())
    rows = [
        ("receive, MemoryStore (reference)", mem),
        (
            "receive, SqliteStore FULL, commit per bundle",
            median(receive_each, lambda p: SqliteStore(p)),
        ),
        (
            "receive_many(32), SqliteStore FULL",
            median(receive_batched, lambda p: SqliteStore(p)),
        ),
        (
            "receive, SqliteStore NORMAL, commit per bundle",
            median(receive_each, lambda p: SqliteStore(p, synchronous="NORMAL")),
        ),
        ("relay cycle, MemoryStore", median(relay_cycle, lambda p: MemoryStore())),
        (
            "relay cycle (batches of 32), SqliteStore FULL",
            median(relay_cycle, lambda p: SqliteStore(p)),
        ),
        (
            "relay cycle (batches of 32, done_many), SqliteStore FULL",
            median(lambda s: relay_cycle(s, many=True), lambda p: SqliteStore(p)),
        ),
    ]
    print(
        f"agent + store, {N} bundles of {len(PAYLOAD)} B payload ({len(BUNDLES[0])} B encoded), median of 3"
    )
    for name, rate in rows:
        print(f"  {name:<58} {rate:>9,.0f} bundles/s   {rate / mem:5.2f}x reference")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
