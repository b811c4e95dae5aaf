"""A statement error after which SQLite has rolled the whole transaction
back (SQLITE_FULL does): the store's transaction block fails as a whole --
nothing written before or after it commits (spec/node.md, "Known limit")."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.agent.store import BundleState, StoredBundle, StoreError
from dcis.dtn.storage.sqlite_store import SqliteStore


class _FullOnce:
    """The store's connection, but the statement writing ``b"boom"`` (and
    an ``executemany`` of rows holding it) fails as SQLITE_FULL does: SQLite
    rolls the transaction back, then raises. ``begin_fails``: a
    ``BEGIN`` after that raises an I/O error."""

    def __init__(self, db: sqlite3.Connection, *, begin_fails: bool = False) -> None:
        self._db = db
        self._begin_fails = begin_fails
        self._boomed = False

    def _boom(self) -> None:
        self._db.execute("ROLLBACK")
        self._boomed = True
        raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if b"boom" in params:
            self._boom()
        if self._begin_fails and self._boomed and sql.startswith("BEGIN"):
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        rows = list(rows)
        if any(b"boom" in row for row in rows):
            self._boom()
        return self._db.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _full_store(
    tmp_path: Path, *, begin_fails: bool = False
) -> tuple[SqliteStore, sqlite3.Connection]:
    """A store holding service key "kept", its connection wrapped in
    _FullOnce; returns the store and its real connection."""
    store = SqliteStore(str(tmp_path / "s.db"))
    store.service_put(1, "kept", b"0")
    real = store._db
    store._db = _FullOnce(real, begin_fails=begin_fails)  # type: ignore[assignment]
    return store, real


def _assert_rolled_back_as_a_whole(
    store: SqliteStore, real: sqlite3.Connection, block: Callable[[], None]
) -> None:
    """``block`` fails as "rolled back"; with the real connection back,
    only "kept" (written before it) is there."""
    with pytest.raises(StoreError, match="rolled back"):
        block()
    store._db = real
    assert store.service_keys(1) == ["kept"]


def _assert_next_transaction_commits(store: SqliteStore) -> None:
    """The store goes on: the next transaction commits. Closes it."""
    with store.transaction():
        store.service_put(1, "next", b"3")
    assert store.service_keys(1) == ["kept", "next"]
    store.close()


def test_a_write_sqlite_rolled_back_fails_the_whole_transaction(
    tmp_path: Path,
) -> None:
    store, real = _full_store(tmp_path)

    def block() -> None:
        with store.transaction():
            store.service_put(1, "before", b"1")
            with pytest.raises(StoreError):
                store.service_put(1, "failing", b"boom")
            with pytest.raises(StoreError, match="earlier write"):
                store.service_put(1, "after", b"2")  # must not commit on its own

    _assert_rolled_back_as_a_whole(store, real, block)
    _assert_next_transaction_commits(store)


def test_later_writes_are_refused_when_no_new_transaction_begins(
    tmp_path: Path,
) -> None:
    store, real = _full_store(tmp_path, begin_fails=True)

    def block() -> None:
        with store.transaction():
            store.service_put(1, "before", b"1")
            with pytest.raises(StoreError):
                store.service_put(1, "failing", b"boom")
            # Autocommit now (the BEGIN failed): refused, not committed.
            with pytest.raises(StoreError, match="earlier write"):
                store.service_put(1, "after", b"2")
            with pytest.raises(StoreError, match="earlier write"):
                store.put(_rec("late"), b"x")

    _assert_rolled_back_as_a_whole(store, real, block)
    assert len(store) == 0
    _assert_next_transaction_commits(store)


def test_a_failed_batch_of_rows_refuses_the_blocks_later_writes(
    tmp_path: Path,
) -> None:
    store, real = _full_store(tmp_path, begin_fails=True)

    def block() -> None:
        with store.transaction():
            store.put(_rec("x"), b"boom")  # batched: written by _flush_rows
            with pytest.raises(StoreError):
                store.get("x")  # flushes the rows: SQLite rolls back
            with pytest.raises(StoreError, match="earlier write"):
                store.service_put(1, "after", b"2")
            store.discard("x")
            store.mark_delivered("y", 1)

    _assert_rolled_back_as_a_whole(store, real, block)
    assert "x" not in store
    assert len(store) == 0
    assert not store.is_delivered("y")
    store.close()


def _rec(key: str) -> StoredBundle:
    return StoredBundle(
        key=key,
        destination="ipn:2.1",
        expiry_ms=10**9,
        state=BundleState.PENDING,
        size_bytes=4 if key == "x" else 1,
        received_ms=0,
    )
