"""SqliteStore.savepoint (a nested block whose statements commit all or
none) and SqliteStore.when_settled (the outcome of the open transaction,
told to whoever wrote into it from a nested block): what NodeCore's
service state commits rely on (spec/node.md, "Failure containment")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.agent.store import StoreError
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.test_store_rolled_back_by_sqlite import _full_store, _rec


class _Refuses:
    """A connection on which a statement writing ``b"no"`` fails alone
    (SQLite keeps the transaction open)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if b"no" in params:
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def refusing(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "s.db")
    store._db = _Refuses(store._db)  # type: ignore[assignment]
    return store


def in_savepoint(store: SqliteStore, *writes: tuple[str, bytes]) -> None:
    """Write service 1's ``writes`` in one savepoint block (a bundle
    for key ``"x"`` first)."""
    with store.savepoint():
        for key, value in writes:
            if key == "x":
                store.put(_rec("x"), value)
            else:
                store.service_put(1, key, value)


def test_a_failed_savepoint_undoes_its_own_writes_only(tmp_path: Path) -> None:
    store = refusing(tmp_path)
    outcome: list[bool] = []
    with store.transaction():
        store.service_put(1, "before", b"1")
        store.when_settled(outcome.append)
        with pytest.raises(StoreError):
            in_savepoint(store, ("in", b"2"), ("failing", b"no"))
        in_savepoint(store, ("after", b"3"))
    assert store.service_keys(1) == ["after", "before"]
    assert outcome == [True]
    store.close()


def test_a_savepoint_that_made_bundle_writes_fails_the_transaction(
    tmp_path: Path,
) -> None:
    # Bundle writes are batched until the commit: a savepoint cannot undo
    # them, so the whole transaction must not commit.
    store = refusing(tmp_path)
    outcome: list[bool] = []

    def block() -> None:
        with store.transaction():
            store.when_settled(outcome.append)
            with pytest.raises(StoreError):
                in_savepoint(store, ("x", b"data"), ("failing", b"no"))
            assert outcome == [False]  # told at once

    with pytest.raises(StoreError, match="rolled back"):
        block()
    assert len(store) == 0
    assert store.service_keys(1) == []
    store.close()


def test_settled_false_as_soon_as_sqlite_rolls_the_transaction_back(
    tmp_path: Path,
) -> None:
    store, real = _full_store(tmp_path)
    outcome: list[bool] = []

    def block() -> None:
        with store.transaction():
            store.when_settled(outcome.append)
            with pytest.raises(StoreError):
                in_savepoint(store, ("failing", b"boom"))
            assert outcome == [False]
            store.when_settled(outcome.append)  # too late: told at once
            assert outcome == [False, False]

    with pytest.raises(StoreError, match="rolled back"):
        block()
    assert outcome == [False, False]
    store._db = real
    assert store.service_keys(1) == ["kept"]
    store.close()


def test_settled_on_commit_rollback_and_never_outside(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    outcome: list[bool] = []
    with pytest.raises(InvalidArgument):
        store.when_settled(outcome.append)

    def failing_block() -> None:
        with store.transaction():
            store.when_settled(outcome.append)
            raise RuntimeError("the block fails")

    with pytest.raises(RuntimeError):
        failing_block()
    assert outcome == [False]
    with store.savepoint():  # outside a transaction: one of its own
        store.service_put(1, "k", b"v")
        store.when_settled(outcome.append)
    assert outcome == [False, True]
    assert store.service_keys(1) == ["k"]
    store.close()
