"""The daemon when the app-API transaction that holds a service request's
state commit fails at its COMMIT (spec/node.md, "Failure containment"): the
app gets no reply (the node logs the error and closes that connection),
and the service's writes -- gone with the transaction -- are retried until
durable. Under trio's MockClock."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.runtime import NodeConfig, open_node
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.runtime.test_service_failures_runtime import Answers


class _CommitFails:
    """The store's connection; the next COMMIT fails while ``armed``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.armed = False

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if self.armed and sql == "COMMIT":
            self.armed = False
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


async def test_a_request_whose_chunk_commit_fails_is_an_error_and_retried(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = Answers()
    sock = str(tmp_path / "n1.sock")
    cfg = NodeConfig(node=1, app_socket=sock, store_path=str(tmp_path / "n1.db"))
    async with open_node(cfg, services=lambda n, i: [svc]) as node:
        core = node.core
        assert core is not None
        store = core.store
        assert isinstance(store, SqliteStore)
        conn = _CommitFails(store._db)
        store._db = conn  # type: ignore[assignment]
        call_service = core.call_service

        def then_commit_fails(*args: Any, **kwargs: Any) -> Any:
            conn.armed = True  # the chunk's COMMIT, after the call
            return call_service(*args, **kwargs)

        monkeypatch.setattr(core, "call_service", then_commit_fails)
        async with open_trio_client(sock) as app:
            with pytest.raises(ClientError):
                await app.service_request(30, [b"x"])
        monkeypatch.setattr(core, "call_service", call_service)
        assert store.service_get(30, "k-x") is None
        assert core.commit_failing(30)
        # The node serves on; its timer retries the commit (after 100 ms,
        # virtual) and makes the write durable.
        await trio.sleep(1)
        assert not core.commit_failing(30)
        assert store.service_get(30, "k-x") == b"x"
        async with open_trio_client(sock) as app:
            assert await app.service_request(30, [b"y"]) == [b"ok:y"]
