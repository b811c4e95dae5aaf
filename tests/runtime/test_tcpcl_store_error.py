"""A store failure while a TCPCL transfer is stored (a transaction SQLite
rolled back, e.g. on SQLITE_FULL) refuses that transfer (XFER_REFUSE: the
sender keeps the bundle), logs a handler error and rebuilds the agent from
the store -- it does not escape into the session and stop the node. A
later transfer is accepted. Clock and peer as in test_late_write_tcpcl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcis.dtn.agent.store import StoreError
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.runtime import Node, open_node
from tests.runtime.test_ack_at_delivery import _config, _peer, _sync


def _wire(node: Node, payload: bytes) -> bytes:
    return encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.5",
            payload=payload,
            creation_ms=node.now_ms(),
            lifetime_ms=3_600_000,
        )
    )


async def test_a_store_error_refuses_the_tcpcl_transfer_and_the_node_goes_on(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock = _peer()
    cfg = _config(tmp_path, sock.getsockname()[1])
    async with open_node(cfg) as n2:
        assert n2.agent is not None
        store = n2.agent.store
        put = store.put
        failures = [StoreError("database or disk is full")]

        def put_once_broken(*args: Any, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return put(*args, **kwargs)

        monkeypatch.setattr(store, "put", put_once_broken)
        recovers = 0
        recover = n2.agent.recover

        def counting_recover(*args: Any, **kwargs: Any) -> Any:
            nonlocal recovers
            recovers += 1
            return recover(*args, **kwargs)

        monkeypatch.setattr(n2.agent, "recover", counting_recover)

        answers: list[bool] = []
        n2._tcpcl_receive(1, _wire(n2, b"first"), answers.append)
        assert failures == []  # the store did fail
        assert answers == [False]  # XFER_REFUSE: node 1 keeps it
        assert n2.status()["counters"]["handler_errors"] == 1
        assert recovers == 1  # the agent was rebuilt from the store

        # The node goes on: the next transfer is accepted once durable.
        later: list[bool] = []
        n2._tcpcl_receive(1, _wire(n2, b"second"), later.append)
        await _sync(n2)
        assert later == [True]
        assert n2.status()["counters"]["handler_errors"] == 1
    sock.close()
