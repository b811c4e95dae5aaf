"""A TCPCL copy of a bundle whose late write fails at the sync is refused
(XFER_REFUSE), not accepted: node 1 sent the bundle over UDP (stored with a
late write, its ACK waiting for the sync) and the same bundle over TCPCL
before that sync; the TCPCL copy is a duplicate. If the transfer were
accepted, node 1 would delete the bundle that node 2 forgets at the sync
(spec/agent.md, "A late write that fails"). Clock and peer as in
test_late_write_failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.agent import Received
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.cl.udp import encode_data_segment
from dcis.dtn.runtime import open_node
from tests.runtime.test_ack_at_delivery import (
    PAYLOAD,
    _config,
    _no_ack_yet,
    _peer,
    _sync,
    _written,
)
from tests.runtime.test_late_write_failure import _full_disk_for


async def test_a_tcpcl_copy_of_a_bundle_refused_at_the_sync_is_refused(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _full_disk_for(monkeypatch, PAYLOAD)
    sock = _peer()
    cfg = _config(tmp_path, sock.getsockname()[1])
    async with open_node(cfg) as n2:
        wire = encode_bundle(
            make_bundle(
                source="ipn:1.1",
                destination="ipn:2.5",
                payload=PAYLOAD,
                creation_ms=n2.now_ms(),
                lifetime_ms=3_600_000,
            )
        )
        # Over UDP: stored with a late write, its ACK waiting for the sync.
        batch: list[Received] = []
        acts = n2._on_datagram(
            encode_data_segment(sender=1, token=7, bundle=wire),
            sock.getsockname(),
            trio.current_time(),
            batch,
        )
        n2._apply(acts + n2._receive_batch(batch))
        # The same bundle over TCPCL before the sync: a duplicate.
        answers: list[bool] = []
        n2._tcpcl_receive(1, wire, answers.append)
        assert n2.status()["counters"]["duplicates"] == 1
        assert answers == []  # accepted only once durable
        await _sync(n2)
        assert n2.status()["counters"]["late_writes_failed"] == 1
        assert answers == [False]  # XFER_REFUSE: node 1 keeps it
        assert _no_ack_yet(sock)
        assert not _written(cfg)
    sock.close()
