"""A WAL checkpoint the disk refuses (SQLITE_FULL when the WAL is copied
into the database) is not a failed sync: the segments and the WAL are
synced, every commit stays durable in the WAL, so the store counts it
(take_checkpoint_failures) and tries again when next due. Any other
checkpoint error still fails (test_store_segments)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.test_store_segments import BIG, payload, rec


class _FullAtCheckpoint:
    """The store's connection, but ``wal_checkpoint`` fails with
    SQLITE_FULL while ``full[0]``; records the checkpoints tried."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.full = [True]
        self.tried = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if "wal_checkpoint" in sql:
            self.tried += 1
            if self.full[0]:
                exc = sqlite3.OperationalError("database or disk is full")
                exc.sqlite_errorcode = sqlite3.SQLITE_FULL
                raise exc
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def _full_checkpoints(
    s: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> _FullAtCheckpoint:
    proxy = _FullAtCheckpoint(s._db)
    monkeypatch.setattr(s, "_db", proxy)
    return proxy


def test_a_group_sync_goes_on_when_the_checkpoint_finds_the_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = SqliteStore(tmp_path / "b.db", deferred_sync=True)
    real = s._db
    disk = _full_checkpoints(s, monkeypatch)
    with s.transaction():
        s.put(rec("before", BIG), payload(1))
    s._since_checkpoint = s._checkpoint_every  # due at end_sync
    s.begin_sync()()
    s.end_sync()  # no StoreError: the checkpoint's failure is counted
    assert disk.tried == 1
    failed, why = s.take_checkpoint_failures()
    assert failed == 1
    assert "full" in why
    assert s.take_checkpoint_failures() == (0, why)  # reset by the take
    # The store goes on: a later transaction and sync succeed.
    with s.transaction():
        s.put(rec("after", BIG), payload(2))
    s.begin_sync()()
    s.end_sync()
    assert disk.tried == 1  # not due again yet
    # Space returns: the next checkpoint when due succeeds.
    disk.full[0] = False
    s._since_checkpoint = s._checkpoint_every
    s.begin_sync()()
    s.end_sync()
    assert disk.tried == 2
    assert s.take_checkpoint_failures()[0] == 0
    monkeypatch.setattr(s, "_db", real)
    s.close()
    s2 = SqliteStore(tmp_path / "b.db")
    assert s2.get("before") == payload(1)
    assert s2.get("after") == payload(2)
    s2.close()


def test_a_transaction_goes_on_when_its_checkpoint_finds_the_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without group commit the checkpoint comes before a transaction: that
    # transaction is not refused for it.
    s = SqliteStore(tmp_path / "b.db")
    real = s._db
    disk = _full_checkpoints(s, monkeypatch)
    s._since_checkpoint = s._checkpoint_every  # due at the next transaction
    with s.transaction():
        s.put(rec("k", BIG), payload(1))
    assert disk.tried == 1
    assert s.take_checkpoint_failures()[0] == 1
    monkeypatch.setattr(s, "_db", real)
    s.close()
    s2 = SqliteStore(tmp_path / "b.db")
    assert s2.get("k") == payload(1)
    s2.close()
