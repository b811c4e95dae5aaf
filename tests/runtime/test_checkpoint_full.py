"""A WAL checkpoint the disk refuses at a group-commit sync (SQLITE_FULL as
the WAL is copied into the database) does not stop the daemon: the
segments and the WAL are synced then, nothing acknowledged is at risk. A
warning, the ``checkpoints_failed`` counter, and the checkpoint is tried
again when next due (spec/agent.md, "A late write that fails"). Peer and
clock as in test_ack_at_delivery."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.runtime import open_node
from tests.runtime.test_ack_at_delivery import _ack, _config, _peer, _send, _sync
from tests.unit.agent.test_store_checkpoint_full import _full_checkpoints


async def test_a_checkpoint_the_disk_refuses_does_not_stop_the_daemon(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock = _peer()
    cfg = _config(tmp_path, sock.getsockname()[1])
    async with open_node(cfg) as n2:
        store = n2._deferred
        assert store is not None
        disk = _full_checkpoints(store, monkeypatch)
        store._since_checkpoint = store._checkpoint_every  # due at end_sync
        await _send(sock, n2, token=7)
        await _sync(n2)  # the sync's checkpoint fails: the node goes on
        assert disk.tried == 1
        counters = n2.status()["counters"]
        assert counters["checkpoints_failed"] == 1
        with trio.fail_after(30):  # virtual: never fires without a jump
            assert await _ack(sock) == (7,)  # synced: acknowledged
        # Space returns: the next checkpoint when due succeeds.
        disk.full[0] = False
        store._since_checkpoint = store._checkpoint_every
        await _send(sock, n2, token=8)
        await _sync(n2)
        assert disk.tried == 2
        with trio.fail_after(30):
            assert await _ack(sock) == (8,)
        assert n2.status()["counters"]["checkpoints_failed"] == 1
    sock.close()
