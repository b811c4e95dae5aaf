"""A read of app requests whose store transaction SQLite rolls back: each
request's answer matches what the node holds afterwards (spec/appapi.md,
``send``) -- a register/unregister took effect and is answered "ok", a
send is answered "store error" and is neither stored nor delivered, a
confirmation of the read is undone (the bundle comes again) -- and the
failure is logged once, not once per request. Under trio's MockClock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcis.dtn.agent.store import StoreError
from dcis.dtn.appapi.wire import encode_delivered
from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.client.trio_client import TrioClient
from tests.runtime.test_app_sends_store_error import _node_and_app, _refuse_rows_once


async def _in_one_read(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run ``calls`` at once (the client writes their requests together:
    one read at the node); each one's result or ClientError."""
    results: list[Any] = [None] * len(calls)

    async def run(n: int) -> None:
        try:
            results[n] = await calls[n]()
        except ClientError as exc:
            results[n] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for n in range(len(calls)):
                nursery.start_soon(run, n)
    return results


def _store_error(r: Any) -> bool:
    return isinstance(r, ClientError) and str(r).startswith("store error: ")


async def _nothing_comes(app: TrioClient) -> None:
    with trio.move_on_after(30):
        b = await app.receive()
        raise AssertionError(f"unexpected bundle {b.payload!r}")


async def test_a_register_in_a_rolled_back_read_is_answered_as_it_stands(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _node_and_app(tmp_path, caplog) as (node, store, app):
        sock = str(tmp_path / "n1.sock")
        await app.register("ipn:1.6")
        failures = _refuse_rows_once(store, monkeypatch)
        reg, unreg, ping, sent = await _in_one_read(
            lambda: app.register("ipn:1.5"),
            lambda: app._request({"type": "unregister", "endpoint": "ipn:1.6"}),
            app.ping,
            lambda: app.send("ipn:2.1", b"rolled back"),
        )
        assert failures == []  # the store did fail
        assert _store_error(sent)
        # integ: ClientError("store error: ...") for all three, yet
        # node._subs == ["ipn:1.5"] and bundles to ipn:1.5 came.
        assert reg == "ipn:1.5"
        assert isinstance(unreg, dict)
        assert unreg["type"] == "ok"
        assert isinstance(ping, float)
        assert list(node._subs) == ["ipn:1.5"]
        async with open_trio_client(sock) as other:
            with trio.fail_after(10):
                await other.send("ipn:1.5", b"for 1.5")
                await other.send("ipn:1.6", b"for 1.6")
                assert (await app.receive()).payload == b"for 1.5"
        await _nothing_comes(app)  # 1.6's is held for its next registration
        assert node.status()["stored"] == 1


async def test_a_rolled_back_read_applies_none_of_its_actions_nor_confirmations(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _node_and_app(tmp_path, caplog) as (node, store, app):
        await app.register("ipn:1.8")
        with trio.fail_after(10):
            old = await app.send("ipn:1.8", b"old")
            b = await app._next_bundle()  # pushed, not yet confirmed
        assert b.bundle_key == old
        # Its confirmation goes with the next requests: one read.
        app._confirms.append(encode_delivered(old))
        failures = _refuse_rows_once(store, monkeypatch)
        released: list[str] = []  # keys whose held hop ACKs may go
        release = node._release_confirmed

        def spy(keys: list[str]) -> None:
            released.extend(keys)
            release(keys)

        monkeypatch.setattr(node, "_release_confirmed", spy)
        results = await _in_one_read(
            lambda: app.send("ipn:1.8", b"new1"),
            lambda: app.send("ipn:1.8", b"new2"),
        )
        assert failures == []
        assert all(_store_error(r) for r in results)
        assert released == []  # no confirmation of the read counts
        # The confirmation rolled back: the bundle is still stored and
        # comes again after the rebuild -- not lost.
        assert [r.key for r in store.records()] == [old]
        with trio.fail_after(10):
            again = await app.receive()
        assert (again.bundle_key, again.payload) == (old, b"old")
        # No Deliver of the read's sends (never stored) reaches the app.
        await _nothing_comes(app)
        assert [r.key for r in store.records()] == []


async def test_a_rolled_back_read_of_many_sends_logs_one_error(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A put that poisons SQLite's transaction makes every later put of
    the read raise too, and the commit fail: one logged error, the others
    counted in handler_errors_unlogged."""
    async with _node_and_app(tmp_path, caplog) as (node, store, app):
        put = store.put
        poisoned = [False]

        def put_poisoned(rec: Any, data: Any, **kw: Any) -> None:
            if poisoned[0]:
                raise StoreError("disk I/O error")
            put(rec, data, **kw)
            poisoned[0] = True  # the first put went wrong inside SQLite

        monkeypatch.setattr(store, "put", put_poisoned)
        failures = _refuse_rows_once(store, monkeypatch)
        payloads = [b"p%d" % n for n in range(20)]
        results = await _in_one_read(
            *[lambda p=p: app.send("ipn:2.1", p) for p in payloads]
        )
        assert failures == []
        assert all(_store_error(r) for r in results)
        counters = node.status()["counters"]
        logged = [r for r in caplog.records if r.getMessage() == "handler_error"]
        # integ: 19 (one per later put) + 1 (the commit) == 20 logged
        assert (counters["handler_errors"], len(logged)) == (1, 1)
        assert counters["handler_errors_unlogged"] == 19
        # The next read logs its own first error again.
        with trio.fail_after(10):
            with pytest.raises(ClientError, match="store error"):
                await app.send("ipn:2.1", b"next read")
        assert node.status()["counters"]["handler_errors"] == 2
        poisoned[0] = False
        with trio.fail_after(10):
            await app.send("ipn:2.1", b"after")
        assert node.status()["stored"] == 1
