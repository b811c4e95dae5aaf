"""A durable write joining a relaxed transaction (FULL store): the
checkpoint after its COMMIT syncs the WAL. When that checkpoint fails the
transaction is committed all the same: its bundles keep their counts and
segment references (a committed bundle is never lost). SQLITE_FULL there is
a counted checkpoint failure; any other error raises, after the
bookkeeping."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.agent.store import StoreError
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.test_store_segments import BIG, payload, rec


class _FailingCheckpoint:
    """The store's connection, but ``wal_checkpoint`` raises with ``code``."""

    def __init__(self, db: sqlite3.Connection, code: int) -> None:
        self.db = db
        self.code = code
        self.tried = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if "wal_checkpoint" in sql:
            self.tried += 1
            exc = sqlite3.OperationalError("checkpoint refused")
            exc.sqlite_errorcode = self.code
            raise exc
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def _joined_commit(s: SqliteStore) -> None:
    with s.transaction(durable=False):
        s.put(rec("a", BIG), payload(1))
        with s.transaction():  # durable: joins the relaxed block
            s.service_put(1, "state", b"v")


def _check_committed(s: SqliteStore, db: Path) -> None:
    assert len(s) == 1
    assert s.used_bytes == BIG
    assert s._segs is not None
    assert s._segs._live  # "a" keeps its segment
    # Other bundles come and go: "a"'s segment stays.
    with s.transaction():
        s.put(rec("b", BIG), payload(2))
    s.discard("b")
    assert s.get("a") == payload(1)
    s.close()
    s2 = SqliteStore(db)
    assert s2.dropped_at_open == []
    assert s2.get("a") == payload(1)
    assert s2.service_keys(1) == ["state"]
    s2.close()


def test_a_full_disk_at_the_joined_checkpoint_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db)
    real = s._db
    disk = _FailingCheckpoint(real, sqlite3.SQLITE_FULL)
    monkeypatch.setattr(s, "_db", disk)
    _joined_commit(s)  # no StoreError: committed, the WAL is synced
    assert disk.tried == 1
    assert s.take_checkpoint_failures()[0] == 1
    monkeypatch.setattr(s, "_db", real)
    _check_committed(s, db)


def test_another_error_at_the_joined_checkpoint_raises_after_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db)
    real = s._db
    monkeypatch.setattr(s, "_db", _FailingCheckpoint(real, sqlite3.SQLITE_IOERR))
    with pytest.raises(StoreError):
        _joined_commit(s)
    assert s.take_checkpoint_failures()[0] == 0
    monkeypatch.setattr(s, "_db", real)
    _check_committed(s, db)
