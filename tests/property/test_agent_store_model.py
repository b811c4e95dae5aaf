"""SqliteStore against a dict model (hypothesis stateful): puts, deletes,
state changes, delivered keys, transactions rolled back, reopen after close."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dtn.agent.store import BundleState, SqliteStore, StoredBundle, StoreFull

KEYS = st.sampled_from([f"k{i}" for i in range(8)])
LIMIT = 200


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "s.db"
        self.store = SqliteStore(self.path, limit_bytes=LIMIT)
        self.bundles: dict[str, tuple[StoredBundle, bytes]] = {}
        self.delivered: dict[str, int] = {}

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    def used(self) -> int:
        return sum(len(d) for _, d in self.bundles.values())

    @rule(key=KEYS, size=st.integers(0, 90), expiry=st.integers(0, 100))
    def put(self, key: str, size: int, expiry: int) -> None:
        data = bytes([len(key)]) * size
        rec = StoredBundle(
            key=key,
            destination="ipn:2.1",
            expiry_ms=expiry,
            state=BundleState.PENDING,
            size_bytes=size,
            received_ms=0,
        )
        if key in self.bundles:
            return
        if self.used() + size > LIMIT:
            try:
                self.store.put(rec, data)
            except StoreFull:
                return
            raise AssertionError("StoreFull expected")
        self.store.put(rec, data)
        self.bundles[key] = (rec, data)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.store.delete(key) == (key in self.bundles)
        self.bundles.pop(key, None)

    @rule(key=KEYS, state=st.sampled_from(BundleState))
    def set_state(self, key: str, state: BundleState) -> None:
        self.store.set_state(key, state)
        if key in self.bundles:
            rec, data = self.bundles[key]
            self.bundles[key] = (
                StoredBundle(
                    **{**{f: getattr(rec, f) for f in rec.__slots__}, "state": state}
                ),
                data,
            )

    @rule(key=KEYS, expiry=st.integers(0, 100))
    def mark(self, key: str, expiry: int) -> None:
        self.store.mark_delivered(key, expiry)
        self.delivered[key] = max(expiry, self.delivered.get(key, expiry))

    @rule(now=st.integers(0, 120))
    def purge(self, now: int) -> None:
        gone = [k for k, e in self.delivered.items() if e < now]
        assert self.store.purge_delivered(now) == len(gone)
        for k in gone:
            del self.delivered[k]

    @rule(key=KEYS)
    def rolled_back(self, key: str) -> None:
        try:
            with self.store.transaction(durable=False):
                self.store.delete(key)
                self.store.mark_delivered(key + "x", 5)
                raise RuntimeError("abort")
        except RuntimeError:
            pass

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = SqliteStore(self.path, limit_bytes=LIMIT)

    @invariant()
    def agrees(self) -> None:
        assert self.store.used_bytes == self.used()
        assert len(self.store) == len(self.bundles)
        assert {r.key: r for r in self.store.records()} == {
            k: r for k, (r, _) in self.bundles.items()
        }
        for k, (_, d) in self.bundles.items():
            assert self.store.get(k) == d
        for k in self.delivered:
            assert self.store.is_delivered(k)


StoreModel.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None
)
test_sqlite_store_matches_model = StoreModel.TestCase
