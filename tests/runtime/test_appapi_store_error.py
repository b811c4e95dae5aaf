"""A store failure that escapes an app request (a transaction SQLite rolled
back under it) is logged and the agent rebuilt from the store -- its memory
may hold confirmations or deletions whose rows were rolled back
(spec/node.md, "Failure containment", known limit) -- and the app gets an
error; the node serves the next request. Under trio's MockClock."""

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
from tests.runtime.test_service_failures_runtime import Answers


async def test_a_store_error_in_an_app_request_is_logged_and_recovered(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sock = str(tmp_path / "n1.sock")
    cfg = NodeConfig(node=1, app_socket=sock)
    async with (
        open_node(cfg, services=lambda n, i: [Answers()]) as node,
        open_trio_client(sock) as app,
    ):
        core = node.core
        assert core is not None
        call_service = core.call_service
        failures = [StoreError("database or disk is full")]

        def call_once_broken(*args: Any, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return call_service(*args, **kwargs)

        monkeypatch.setattr(core, "call_service", call_once_broken)
        recovers = 0
        recover = core.recover

        def counting_recover(*args: Any, **kwargs: Any) -> Any:
            nonlocal recovers
            recovers += 1
            return recover(*args, **kwargs)

        monkeypatch.setattr(core, "recover", counting_recover)

        with pytest.raises(ClientError):
            await app.service_request(30, [b"x"])
        assert failures == []  # the store did fail
        assert recovers == 1  # the agent was rebuilt from the store
        assert node.status()["counters"]["handler_errors"] == 1
        logged = [r for r in caplog.records if r.getMessage() == "handler_error"]
        assert len(logged) == 1
        assert logged[0].levelname == "ERROR"
        assert "appapi" in str(logged[0].__dict__)
        # The node serves on.
        assert await app.service_request(30, [b"y"]) == [b"ok:y"]
        assert node.status()["counters"]["handler_errors"] == 1
