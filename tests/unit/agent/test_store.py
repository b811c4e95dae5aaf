"""The bundle store: both implementations behave the same behind BundleStore."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcis.dtn.agent.store import (
    BundleState,
    BundleStore,
    MemoryStore,
    StoredBundle,
    StoreError,
    StoreFull,
)
from dcis.dtn.errors import DtnError, InvalidArgument
from dcis.dtn.storage.sqlite_store import SqliteStore


def rec(
    key: str,
    size: int,
    *,
    expiry_ms: int = 10_000,
    state: BundleState = BundleState.PENDING,
) -> StoredBundle:
    return StoredBundle(
        key=key,
        destination="ipn:2.1",
        expiry_ms=expiry_ms,
        state=state,
        size_bytes=size,
        received_ms=5,
        prev_node=7,
        frag_group=None,
    )


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BundleStore]:
    s: BundleStore
    if request.param == "memory":
        s = MemoryStore(limit_bytes=1000)
    else:
        s = SqliteStore(tmp_path / "bundles.db", limit_bytes=1000)
    yield s
    s.close()


def test_implementations_satisfy_the_protocol(store: BundleStore) -> None:
    assert isinstance(store, BundleStore)


def test_put_get_delete_track_bytes(store: BundleStore) -> None:
    store.put(rec("a", 3), b"abc")
    store.put(rec("b", 2), b"xy")
    assert store.get("a") == b"abc"
    assert store.record("b") == rec("b", 2)
    assert "a" in store
    assert "zz" not in store
    assert len(store) == 2
    assert store.used_bytes == 5
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.get("a") is None
    assert store.record("a") is None
    assert store.used_bytes == 2
    assert len(store) == 1


def test_put_rejects_duplicate_key_and_bad_size(store: BundleStore) -> None:
    store.put(rec("a", 3), b"abc")
    with pytest.raises(InvalidArgument, match="already stored"):
        store.put(rec("a", 3), b"abc")
    with pytest.raises(InvalidArgument, match="size_bytes"):
        store.put(rec("b", 4), b"abc")
    assert store.used_bytes == 3


def test_store_full_refuses_with_reason_and_keeps_everything(
    store: BundleStore,
) -> None:
    store.put(rec("a", 600), b"a" * 600)
    with pytest.raises(StoreFull) as info:
        store.put(rec("b", 401), b"b" * 401)
    assert isinstance(info.value, DtnError)
    assert "600 of 1000 bytes used" in str(info.value)
    assert info.value.needed_bytes == 401
    assert "b" not in store
    assert store.get("a") == b"a" * 600
    store.put(rec("c", 400), b"c" * 400)  # exactly fills it
    assert store.used_bytes == 1000
    # force (replacing bundles already held) may exceed the bound
    store.put(rec("d", 10), b"d" * 10, force=True)
    assert store.used_bytes == 1010


def test_set_state_and_records(store: BundleStore) -> None:
    store.put(rec("a", 1), b"a")
    store.put(rec("b", 1), b"b")
    store.set_state("a", BundleState.DELIVERING)
    store.set_state("missing", BundleState.DELIVERING)  # no-op
    states = {r.key: r.state for r in store.records()}
    assert states == {"a": BundleState.DELIVERING, "b": BundleState.PENDING}


def test_delivered_keys_expire(store: BundleStore) -> None:
    store.mark_delivered("k1", 100)
    store.mark_delivered("k2", 200)
    store.mark_delivered("k1", 300)  # a later expiry wins
    assert store.is_delivered("k1")
    assert store.purge_delivered(250) == 1
    assert not store.is_delivered("k2")
    assert store.is_delivered("k1")
    assert store.purge_delivered(301) == 1
    assert not store.is_delivered("k1")


def test_transaction_groups_writes(store: BundleStore) -> None:
    with store.transaction():
        store.put(rec("a", 1), b"a")
        with store.transaction():
            store.put(rec("b", 1), b"b")
        store.mark_delivered("x", 5)
    assert len(store) == 2
    assert store.is_delivered("x")


def test_sqlite_rollback_on_exception(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "b.db", limit_bytes=100)
    s.put(rec("keep", 1), b"k")

    def failing_batch() -> None:
        with s.transaction():
            s.put(rec("a", 1), b"a")
            s.delete("keep")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_batch()
    assert "a" not in s
    assert s.get("keep") == b"k"
    assert s.used_bytes == 1
    assert len(s) == 1
    s.close()


def test_sqlite_reopen_keeps_bundles_and_accounting(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    s = SqliteStore(path, limit_bytes=100)
    s.put(rec("a", 3, state=BundleState.REASSEMBLY), b"abc")
    s.mark_delivered("d", 99)
    s.close()
    s2 = SqliteStore(path, limit_bytes=100)
    assert s2.used_bytes == 3
    assert len(s2) == 1
    assert list(s2.records()) == [rec("a", 3, state=BundleState.REASSEMBLY)]
    assert s2.is_delivered("d")
    s2.close()


def test_sqlite_survives_kill_9(tmp_path: Path) -> None:
    """A bundle whose put() returned is there after the process is killed."""
    path = tmp_path / "b.db"
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        from dcis.dtn.agent.store import SqliteStore, StoredBundle, BundleState
        s = SqliteStore({str(path)!r}, limit_bytes=10**6)
        for i in range(50):
            s.put(StoredBundle(key=f"k{{i}}", destination="ipn:2.1", expiry_ms=1, state=BundleState.PENDING,
                               size_bytes=3, received_ms=0), b"abc")
        with s.transaction(durable=False):  # no fsync, but survives kill -9
            s.delete("k0")
        with s.transaction():
            s.put(StoredBundle(key="batch", destination="ipn:2.1", expiry_ms=1, state=BundleState.PENDING,
                               size_bytes=1, received_ms=0), b"z")
        sys.stdout.write("stored\\n"); sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout == "stored\n"
    assert proc.returncode == -9
    s = SqliteStore(path, limit_bytes=10**6)
    assert len(s) == 50
    assert s.get("batch") == b"z"
    assert "k0" not in s
    assert s.used_bytes == 148
    s.close()


def test_sqlite_rejects_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SqliteStore(path)


def test_negative_limit_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        MemoryStore(limit_bytes=-1)
    with pytest.raises(InvalidArgument):
        SqliteStore(tmp_path / "x.db", limit_bytes=-1)


def test_the_memory_store_joins_parts() -> None:
    s = MemoryStore()
    s.put(
        StoredBundle(
            key="k",
            destination="ipn:2.1",
            expiry_ms=10**9,
            state=BundleState.PENDING,
            size_bytes=6,
            received_ms=0,
        ),
        (b"ab", b"cd", b"ef"),
    )
    assert s.get("k") == b"abcdef"


def _deletes(s: SqliteStore) -> list[str]:
    """Every DELETE statement ``s`` runs from now on, as SQLite traces it."""
    seen: list[str] = []
    s._db.set_trace_callback(
        lambda sql: seen.append(sql) if sql.startswith("DELETE FROM bundles") else None
    )
    return seen


def test_sqlite_discards_of_a_block_are_one_statement(tmp_path: Path) -> None:
    # 300 discards (more than one chunk, the second padded) in one block:
    # two DELETEs, not 300; reads inside the block already see them gone;
    # a segment-held bundle's file goes once its row has.
    s = SqliteStore(tmp_path / "b.db", limit_bytes=1 << 20, inline_max_bytes=4)
    with s.transaction():
        for i in range(301):
            s.put(rec(f"k{i}", 5), b"%05d" % i)
    seen = _deletes(s)
    with s.transaction(durable=False):
        for i in range(300):
            s.discard(f"k{i}")
        s.discard("never-stored")
        assert seen == []
        assert s.used_bytes == 5
        assert len(s) == 1
        assert len(seen) == 2
        assert "k7" not in s
        assert s.get("k7") is None
        assert s.record("k8") is None
        s.discard("k300")
        s.put(rec("k300", 2), b"ab")  # stored again after its discard
    assert len(seen) == 3
    assert s.used_bytes == 2
    assert len(s) == 1
    assert s.get("k300") == b"ab"
    assert [r.key for r in s.records()] == ["k300"]
    s.close()
    s = SqliteStore(tmp_path / "b.db", limit_bytes=1 << 20, inline_max_bytes=4)
    assert [r.key for r in s.records()] == ["k300"]
    assert s.used_bytes == 2
    s.close()


def test_sqlite_discards_roll_back_with_their_block(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "b.db", limit_bytes=100)
    with s.transaction():
        s.put(rec("a", 1), b"a")
        s.put(rec("b", 1), b"b")

    def failing_block() -> None:
        with s.transaction():
            s.discard("a")
            s.put(rec("c", 1), b"c")  # the discard is written before this put
            s.discard("c")  # a row of this very block
            assert "c" not in s
            assert len(s) == 1
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_block()
    assert s.get("a") == b"a"
    assert "c" not in s
    assert s.used_bytes == 2
    assert len(s) == 2
    s.discard("b")  # outside a block: at once
    assert "b" not in s
    assert s.used_bytes == 1
    s.close()


def test_sqlite_every_read_and_put_in_a_block_sees_its_discards(
    tmp_path: Path,
) -> None:
    # Each read right after a discard of the key it reads (no count or
    # put in between to write the queue first): get, get_unchecked,
    # record, set_state, delete and records() see it gone; a put that only
    # fits once a discarded bundle left is taken; a key stored, discarded,
    # stored again and discarded again in one block commits.
    s = SqliteStore(tmp_path / "b.db", limit_bytes=30, inline_max_bytes=4)
    with s.transaction():
        for k in "abcdefg":
            s.put(rec(k, 4), k.encode() * 4)
    with s.transaction():
        s.discard("a")
        assert s.get("a") is None
        s.discard("b")
        assert s.get_unchecked("b") is None
        s.discard("c")
        assert s.record("c") is None
        s.discard("d")
        s.set_state("d", BundleState.DELIVERING)  # no row to change
        assert s.record("d") is None
        s.discard("e")
        assert s.delete("e") is False  # already gone
        s.discard("f")
        assert [r.key for r in s.records()] == ["g"]
        s.discard("g")
        s.put(rec("big", 30), b"x" * 30)  # fits only once "g" left
        s.discard("big")
        s.put(rec("big", 30), b"y" * 30)
        s.discard("big")
        s.put(rec("big", 30), b"z" * 30)
    assert [r.key for r in s.records()] == ["big"]
    assert s.get("big") == b"z" * 30
    assert (len(s), s.used_bytes) == (1, 30)
    s.close()
