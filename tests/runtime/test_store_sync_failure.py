"""A group-commit sync that cannot begin (an fd of a segment cannot be
opened for it, say; a held payload's late write that fails no longer
counts: its bundle is refused, test_late_write_failure) stops the node as
a failed fsync does -- and says so in the log (``store_sync_failed``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from dcis.dtn.agent.store import StoreError
from dcis.dtn.runtime import NodeConfig, open_node
from tests.runtime.conftest import free_udp_ports


async def test_a_sync_that_cannot_begin_is_logged_and_stops_the_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="dcis.dtn.node")
    (port,) = free_udp_ports(1)
    cfg = NodeConfig(
        node=1, listen=("127.0.0.1", port), store_path=str(tmp_path / "n1.db")
    )
    stopped: BaseException | None = None
    try:
        async with open_node(cfg) as n1:
            assert n1.agent is not None
            store = n1.agent.store

            def fails() -> Callable[[], None]:
                raise StoreError("cannot write segment 1: [Errno 28] injected")

            store.begin_sync = fails  # type: ignore[method-assign]
            with trio.fail_after(30):
                await n1.send("ipn:7.1", b"x" * 5000, source="ipn:1.1")
    except BaseException as exc:  # the sync task's error, maybe in a group
        stopped = exc
    assert stopped is not None, "the node went on without its sync"
    failed = [r for r in caplog.records if r.getMessage() == "store_sync_failed"]
    assert len(failed) == 1
    assert "injected" in failed[0].fields["detail"]  # type: ignore[attr-defined]
