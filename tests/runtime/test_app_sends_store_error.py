"""A store failure under a read of app sends (SQLite refusing the batched
rows as the read's transaction closes -- a full disk, an I/O error): the
read's transaction is rolled back as a whole, so nothing of it was stored.
The node logs it, rebuilds the agent from the store (its memory holds the
rolled-back sends) and answers each send with an error; it serves on, and
what it acknowledged before is still stored (spec/node.md, "Failure
containment"). Under trio's MockClock."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcis.dtn.agent.store import StoreError
from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.runtime import NodeConfig, open_node


async def test_a_store_error_under_app_sends_is_answered_logged_and_recovered(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sock = str(tmp_path / "n1.sock")
    cfg = NodeConfig(
        node=1,
        app_socket=sock,
        store_path=str(tmp_path / "n1.db"),
        store_synchronous="NORMAL",
    )
    async with open_node(cfg) as node, open_trio_client(sock) as app:
        before = await app.send("ipn:2.1", b"acknowledged before")
        assert node.agent is not None
        store = node.agent.store
        flush_rows = store._flush_rows  # type: ignore[attr-defined]
        failures = [StoreError("database or disk is full")]

        def refuse_once() -> None:
            if failures and store._rows:  # type: ignore[attr-defined]
                raise failures.pop()
            flush_rows()

        store._flush_rows = refuse_once  # type: ignore[attr-defined]
        results: list[str | ClientError] = []

        async def send(payload: bytes) -> None:
            try:
                results.append(await app.send("ipn:2.1", payload))
            except ClientError as exc:
                results.append(exc)

        with trio.fail_after(10):
            # Two sends in one read: one transaction, refused as a whole.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, b"first")
                nursery.start_soon(send, b"second")
        assert failures == []  # the store did fail
        assert len(results) == 2
        for r in results:
            assert isinstance(r, ClientError), "a send answered ok was not stored"
            assert "store error" in str(r)
        counters = node.status()["counters"]
        assert counters["handler_errors"] == 1
        logged = [r for r in caplog.records if r.getMessage() == "handler_error"]
        assert len(logged) == 1
        assert "appapi" in str(logged[0].__dict__)
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
) -> None:
    # The store raises for one put and keeps its transaction: that send is
    # answered with the error (and logged, as any request's store error),
    # the other of the read is stored and answered "ok".
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
        put = store.put

        def put_failing_bad(rec: Any, data: Any, **kw: Any) -> None:
            if b"bad payload" in bytes(data):
                raise StoreError("disk I/O error")
            put(rec, data, **kw)

        store.put = put_failing_bad  # type: ignore[method-assign]
        results: dict[bytes, str | ClientError] = {}

        async def send(payload: bytes) -> None:
            try:
                results[payload] = await app.send("ipn:2.1", payload)
            except ClientError as exc:
                results[payload] = exc

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, b"bad payload")
                nursery.start_soon(send, b"good payload")
        bad, good = results[b"bad payload"], results[b"good payload"]
        assert isinstance(bad, ClientError)
        assert str(bad).startswith("store error: ")
        assert isinstance(good, str)
        assert node.status()["counters"]["handler_errors"] == 1
        logged = [r for r in caplog.records if r.getMessage() == "handler_error"]
        assert len(logged) == 1
        assert "appapi" in str(logged[0].__dict__)
        assert [r.key for r in store.records()] == [good]
        assert node.status()["stored"] == 1
