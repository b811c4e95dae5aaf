"""A store failure under a read of app sends: the node logs it, answers
with an error (never "ok" for a bundle not stored) and serves on; what it
acknowledged before is still stored (spec/node.md, "Failure containment";
spec/appapi.md, ``send``). Under trio's MockClock, a NORMAL store (no sync
thread)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcis.dtn.agent.store import StoreError
from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.client.trio_client import TrioClient
from dcis.dtn.runtime import Node, NodeConfig, open_node
from dcis.dtn.storage.sqlite_store import SqliteStore


@asynccontextmanager
async def _node_and_app(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[Node, SqliteStore, TrioClient]]:
    caplog.set_level(logging.INFO)
    sock = str(tmp_path / "n1.sock")
    cfg = NodeConfig(
        node=1,
        app_socket=sock,
        store_path=str(tmp_path / "n1.db"),
        store_synchronous="NORMAL",
    )
    async with open_node(cfg) as node, open_trio_client(sock) as app:
        assert node.agent is not None
        store = node.agent.store
        assert isinstance(store, SqliteStore)
        yield node, store, app


def _refuse_rows_once(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """SQLite refuses the next batch of rows as a transaction closes: that
    transaction rolls back as a whole. Returns the failure left to raise."""
    flush_rows = store._flush_rows
    failures = [StoreError("database or disk is full")]

    def refuse_once() -> None:
        if failures and store._rows:
            raise failures.pop()
        flush_rows()

    monkeypatch.setattr(store, "_flush_rows", refuse_once)
    return failures


async def _send_in_one_read(
    app: TrioClient, payloads: list[bytes]
) -> dict[bytes, str | ClientError]:
    """Send ``payloads`` at once (the client writes them together: one
    read, one transaction at the node); each one's key or error."""
    results: dict[bytes, str | ClientError] = {}

    async def send(payload: bytes) -> None:
        try:
            results[payload] = await app.send("ipn:2.1", payload)
        except ClientError as exc:
            results[payload] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for p in payloads:
                nursery.start_soon(send, p)
    return results


def _one_appapi_handler_error(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    assert node.status()["counters"]["handler_errors"] == 1
    logged = [r for r in caplog.records if r.getMessage() == "handler_error"]
    assert len(logged) == 1
    assert "appapi" in str(logged[0].__dict__)


async def test_a_store_error_under_app_sends_is_answered_logged_and_recovered(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite refuses the read's batched rows as its transaction closes (a
    full disk, an I/O error): the transaction is rolled back as a whole,
    though the agent's memory holds both sends."""
    async with _node_and_app(tmp_path, caplog) as (node, store, app):
        before = await app.send("ipn:2.1", b"acknowledged before")
        failures = _refuse_rows_once(store, monkeypatch)
        results = await _send_in_one_read(app, [b"first", b"second"])
        assert failures == []  # the store did fail
        for r in results.values():
            # main: "the node closed the connection", and no recover (the
            # StoreError came out of the handler's nursery as a group)
            assert isinstance(r, ClientError), "a send answered ok was not stored"
            assert str(r).startswith("store error: ")
        _one_appapi_handler_error(node, caplog)
        # Rebuilt from the store: no bundle the store does not hold.
        assert [r.key for r in store.records()] == [before]
        assert node.status()["stored"] == 1
        # The node, and this connection, serve on.
        with trio.fail_after(10):
            after = await app.send("ipn:2.1", b"after")
        assert [r.key for r in store.records()] == [before, after]
        assert node.status()["stored"] == 2


async def test_a_send_the_store_fails_is_logged_and_answered_store_error(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store raises for one put and keeps its transaction: that send is
    answered with the error (and logged, as any request's store error),
    the other one of the read is stored and answered "ok"."""
    async with _node_and_app(tmp_path, caplog) as (node, store, app):
        put = store.put

        def put_failing_bad(rec: Any, data: Any, **kw: Any) -> None:
            if b"bad payload" in bytes(data):
                raise StoreError("disk I/O error")
            put(rec, data, **kw)

        monkeypatch.setattr(store, "put", put_failing_bad)
        results = await _send_in_one_read(app, [b"bad payload", b"good payload"])
        bad, good = results[b"bad payload"], results[b"good payload"]
        assert isinstance(bad, ClientError)
        assert str(bad).startswith("store error: ")  # main: the bare message
        assert isinstance(good, str)
        _one_appapi_handler_error(node, caplog)  # main: not logged
        assert [r.key for r in store.records()] == [good]
        assert node.status()["stored"] == 1
