"""The daemon logs the agent's routine events (a bundle delivered, ...) at
debug level only, and asks the logger about debug once per batch of
actions (``Node._apply``; spec/performance.md "Eighth round: the 1 KB
path"): the lines must still be there at debug and absent above it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dcis.dtn.runtime import NodeConfig, open_node

# A node number of its own: its logger's level is this test's alone (other
# tests set the level of the loggers of the nodes they run).
_NODE = 57
_LOGGER = f"dcis.dtn.node.{_NODE}"


async def _deliver_one(tmp_path: Path) -> str:
    async with (
        open_node(NodeConfig(node=_NODE)) as n1,
        n1.endpoint(f"ipn:{_NODE}.5") as inbox,
    ):
        key = await n1.send(f"ipn:{_NODE}.5", b"x", source=f"ipn:{_NODE}.0")
        got = await inbox.receive()
        assert got.bundle_key == key
    return key


def _delivered(caplog: pytest.LogCaptureFixture, key: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.getMessage() == "delivered" and r.fields["bundle"] == key  # type: ignore[attr-defined]
    ]


async def test_routine_events_are_logged_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=_LOGGER)
    key = await _deliver_one(tmp_path)
    lines = _delivered(caplog, key)
    assert [r.levelno for r in lines] == [logging.DEBUG]


async def test_routine_events_are_not_logged_above_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=_LOGGER)
    key = await _deliver_one(tmp_path)
    assert _delivered(caplog, key) == []
