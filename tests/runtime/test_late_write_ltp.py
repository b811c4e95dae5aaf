"""The LTP share of a duplicate of a bundle whose late write fails at the
sync is withheld: a duplicate's ACK names no bundle, so for an LTP
neighbour it goes as ``Durable.LTP_ACK`` and a sync that refuses a bundle
from an LTP neighbour keeps every such share back (spec/agent.md, "A late
write that fails"). Node 2 with a FULL store; the copies are handed to its
agent as the LTP engine would. Clock and disk as in test_late_write_failure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.agent import Received
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.runtime import NeighbourConfig, open_node
from dcis.dtn.runtime.ltp import LtpConfig
from tests.runtime.test_ack_at_delivery import PAYLOAD, _config, _sync, _written
from tests.runtime.test_late_write_failure import _full_disk_for


async def test_the_ltp_share_of_a_copy_of_a_refused_bundle_is_withheld(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = _full_disk_for(monkeypatch, PAYLOAD)
    cfg = _config(tmp_path, 1)
    cfg = dataclasses.replace(
        cfg,
        neighbours=(
            NeighbourConfig(node=1, address=("127.0.0.1", 1), cla="ltp", engine_id=101),
        ),
        ltp=LtpConfig(engine_id=102),
    )
    async with open_node(cfg) as n2:
        shares: list[int] = []  # the tokens whose LTP share went
        monkeypatch.setattr(n2, "_ltp_ack", shares.append)
        whole = make_bundle(
            source="ipn:1.1",
            destination="ipn:2.5",
            payload=PAYLOAD,
            creation_ms=n2.now_ms(),
            lifetime_ms=3_600_000,
        )
        wire = encode_bundle(whole)

        def receive(first_token: int) -> None:
            assert n2.agent is not None
            acts = n2.agent.on_receive_many(
                [Received("ltp", 1, wire, first_token + i) for i in (0, 1)],
                n2.now_ms(),
            )
            n2._apply(acts)

        receive(1)  # the bundle, and a copy of it from another block
        assert n2.status()["counters"]["duplicates"] == 1
        await _sync(n2)
        assert n2.status()["counters"]["late_writes_failed"] == 1
        # The copy's share, kind OTHER (not LTP_ACK) in Node._ack: [2] --
        # a block reported received whose bundle was refused.
        assert shares == []
        assert not _written(cfg)
        # Space returns: the engine's retransmission is stored and its
        # shares go after the sync that covers it.
        full[0] = False
        receive(11)
        await _sync(n2)
        assert sorted(shares) == [11, 12]
        assert _written(cfg)
