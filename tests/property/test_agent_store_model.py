"""SqliteStore against a dict model (hypothesis stateful): puts, deletes,
state changes, delivered keys, transactions rolled back, reopen after close
and after a crash (``kill -9``: no close, no last sync).

Bundles over 40 bytes go to segment files of ~100 bytes, so rotation of full
segments, reuse of small emptied ones (under 50 bytes: ``segment_reclaim_bytes``)
and removal of emptied segments run too, with a bound on the bytes the
segment files hold; a second machine uses group commit (``deferred_sync``)
with syncs interleaved."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dcis.dtn.agent.store import BundleState, StoredBundle, StoreFull
from dcis.dtn.storage.sqlite_store import SqliteStore

KEYS = st.sampled_from([f"k{i}" for i in range(8)])
LIMIT = 200
SEGMENT = 100
RECLAIM = 50
BIGGEST = 90  # the largest bundle put


class StoreModel(RuleBasedStateMachine):
    DEFERRED = False

    def open(self) -> SqliteStore:
        return SqliteStore(
            self.path,
            limit_bytes=LIMIT,
            inline_max_bytes=40,
            segment_bytes=SEGMENT,
            segment_reclaim_bytes=RECLAIM,
            deferred_sync=self.DEFERRED,
        )

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "s.db"
        self.store = self.open()
        self.bundles: dict[str, tuple[StoredBundle, bytes]] = {}
        self.delivered: dict[str, int] = {}

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    def used(self) -> int:
        return sum(len(d) for _, d in self.bundles.values())

    @rule(
        key=KEYS,
        size=st.sampled_from([0, 40, 41, 60, BIGGEST]) | st.integers(0, BIGGEST),
        expiry=st.integers(0, 100),
    )
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
        self.store = self.open()
        assert self.store.dropped_at_open == []
        # Only segments something points into survive a reopen.
        seg_dir = Path(str(self.path) + ".segments")
        on_disk = len(list(seg_dir.iterdir())) if seg_dir.exists() else 0
        assert on_disk <= len(self.bundles)

    @rule()
    def crash(self) -> None:
        # kill -9: the process dies holding its fds -- no last sync, no
        # checkpoint, dead segments not yet removed; the page cache keeps
        # every write. Reopening must find every bundle and only them.
        store = self.store
        segs = store._segs
        assert segs is not None
        segs.close()
        if store._wal_fd is not None:
            os.close(store._wal_fd)
        store._db.close()
        store._unlock()
        self.store = self.open()
        assert self.store.dropped_at_open == []
        assert self.store.corrupt_at_open == []
        seg_dir = Path(str(self.path) + ".segments")
        on_disk = len(list(seg_dir.iterdir())) if seg_dir.exists() else 0
        assert on_disk <= len(self.bundles)

    @rule()
    def sync(self) -> None:
        self.store.begin_sync()()
        self.store.end_sync()

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

    @invariant()
    def segment_files_are_bounded(self) -> None:
        # Disk held: segments rows point into, the active one (never past
        # SEGMENT plus one bundle; emptied, under RECLAIM unless rolled-back
        # puts grew it), and dead ones only until the next sync.
        segs = self.store._segs
        assert segs is not None
        seg_dir = Path(str(self.path) + ".segments")
        sizes = (
            {int(p.name[:-4]): p.stat().st_size for p in seg_dir.iterdir()}
            if seg_dir.exists()
            else {}
        )
        active = segs._active
        assert sizes.get(active, 0) < SEGMENT + BIGGEST
        assert set(sizes) - {active} <= set(segs._live) | segs._dead
        assert len(sizes) <= len(self.bundles) + 1 + len(segs._dead)

    @invariant()
    def emptied_segments_go(self) -> None:
        # Without group commit a segment is removed by the commit that
        # empties it: on disk are the segments rows point into, plus the
        # one being appended to.
        if self.DEFERRED:
            return
        seg_dir = Path(str(self.path) + ".segments")
        on_disk = {p.name for p in seg_dir.iterdir()} if seg_dir.exists() else set()
        live = {
            f"{seg:08d}.seg"
            for (seg,) in self.store._db.execute(
                "SELECT DISTINCT seg FROM bundles WHERE seg IS NOT NULL"
            )
        }
        active = f"{self.store._segs._active:08d}.seg"  # type: ignore[union-attr]
        assert on_disk - {active} == live - {active}


StoreModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
test_sqlite_store_matches_model = StoreModel.TestCase


class DeferredStoreModel(StoreModel):
    DEFERRED = True


DeferredStoreModel.TestCase.settings = StoreModel.TestCase.settings
test_sqlite_store_with_group_commit_matches_model = DeferredStoreModel.TestCase
