"""A statement error after which SQLite has rolled the whole transaction
back (SQLITE_FULL does): the store's transaction block fails as a whole --
nothing written before or after it commits (spec/node.md, "Known limit")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.agent.store import StoreError
from dcis.dtn.storage.sqlite_store import SqliteStore


class _FullOnce:
    """The store's connection, but the statement writing ``b"boom"`` fails
    as SQLITE_FULL does: SQLite rolls the transaction back, then raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if b"boom" in params:
            self._db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_write_sqlite_rolled_back_fails_the_whole_transaction(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    store.service_put(1, "kept", b"0")
    real = store._db
    store._db = _FullOnce(real)  # type: ignore[assignment]

    def block() -> None:
        with store.transaction():
            store.service_put(1, "before", b"1")
            with pytest.raises(StoreError):
                store.service_put(1, "failing", b"boom")
            store.service_put(1, "after", b"2")  # must not commit on its own

    with pytest.raises(StoreError, match="rolled back"):
        block()
    store._db = real
    assert store.service_keys(1) == ["kept"]
    # The store goes on: the next transaction commits.
    with store.transaction():
        store.service_put(1, "next", b"3")
    assert store.service_keys(1) == ["kept", "next"]
    store.close()
