"""A received bundle given as a view of the driver's read buffer
(``Received.data``, the MTCP receive path since the sixth round): the agent
and the stores keep none of the view, so bytes written into the buffer after
the call change nothing stored, delivered or forwarded."""

from __future__ import annotations

import pytest

from dcis.dtn.agent.actions import Deliver, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import BundleStore
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle, make_bundle

from .helpers import link, of, receive_as_views

# 100 B rows go inline in SQLite (batched until the commit), 64 KB ones to a
# segment file (written at once).
SIZES = (100, 64_000)


def _frames(dest: int) -> list[bytes]:
    return [
        encode_bundle(
            make_bundle(
                source="ipn:1.1",
                destination=f"ipn:{dest}.1",
                payload=bytes([i + 1]) * n,
                creation_ms=1_000,
                sequence=i,
                hop_limit=8,
                previous_node="ipn:1.0",
            )
        )
        for i, n in enumerate(SIZES)
    ]


def _receive_views(a: Agent, frames: list[bytes]) -> list[Deliver | Transmit]:
    return [
        x
        for x in receive_as_views(a, frames, now=1_500)
        if isinstance(x, Deliver | Transmit)
    ]


@pytest.mark.parametrize("keep", [0, 8])
def test_a_delivered_bundle_received_as_a_view_is_stored_and_delivered_whole(
    view_store: BundleStore, keep: int
) -> None:
    a = Agent(node=2, store=view_store, config=AgentConfig(keep_decoded=keep))
    a.register("ipn:2.1")
    frames = _frames(2)
    got = of(_receive_views(a, frames), Deliver)
    assert [d.payload for d in got] == [bytes([i + 1]) * n for i, n in enumerate(SIZES)]
    for d, f in zip(got, frames, strict=True):
        assert view_store.get(d.bundle_key) == f  # the received bytes, not the buffer's
    # Delivered again from the store or the kept copy: the same.
    assert of(a.redeliver([d.bundle_key for d in got], 1_600), Deliver) == got


@pytest.mark.parametrize("keep", [0, 8])
def test_a_forwarded_bundle_received_as_a_view_is_sent_as_it_came(
    view_store: BundleStore, keep: int
) -> None:
    a = Agent(node=2, store=view_store, config=AgentConfig(keep_decoded=keep))
    frames = _frames(3)
    assert not _receive_views(a, frames)  # no contact yet: stored
    txs = of(a.on_contact_start(link(2, 3), 2_000), Transmit)
    sent = sorted(
        (decode_bundle_untrusted(t.data) for t in txs), key=lambda b: len(b.payload)
    )
    assert [b.payload for b in sent] == [
        bytes([i + 1]) * n for i, n in enumerate(SIZES)
    ]
