"""The agent forwards a bundle it originated by splicing its stored primary
and payload blocks around the re-encoded hop blocks (issue 18); received
and secured bundles take the general path. Either way the bytes sent are
``encode_bundle_parts(update_for_forwarding(b))``."""

from __future__ import annotations

import pytest

from dcis.dtn.agent.actions import Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import (
    GATHER_PAYLOAD_BYTES,
    decode_bundle_untrusted,
    encode_bundle_parts,
)
from dcis.dtn.bpv7.processing import update_for_forwarding
from tests.unit.agent.helpers import link, of
from tests.unit.agent.test_agent_security_hook import XorPolicy

S = 1000


def _general(a: Agent, key: str, dwell_ms: int) -> tuple[bytes, ...]:
    b = a._hot[key][0]
    return encode_bundle_parts(update_for_forwarding(b, node=a.eid, dwell_ms=dwell_ms))


@pytest.mark.parametrize("size", [100, GATHER_PAYLOAD_BYTES + 5])
@pytest.mark.parametrize("sent_at", [0, S])  # 0: no creation time, an age block
def test_an_originated_bundle_is_spliced_into_the_general_paths_bytes(
    size: int, sent_at: int
) -> None:
    a = Agent(node=1, store=MemoryStore(), config=AgentConfig(keep_decoded=8))
    key, _ = a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=bytes(range(256)) * (size // 256) + b"z" * (size % 256),
        lifetime_ms=3_600_000,
        now=sent_at,
    )
    assert a._hot_splice(key) is not None  # the fast path will be taken
    at = sent_at + 2_500
    (tx,) = of(a.on_contact_start(link(1, 2), at), Transmit)
    assert tx.parts == _general(a, key, at - sent_at)
    sent = decode_bundle_untrusted(tx.data)
    assert str(sent.previous_node) == "ipn:1.0"
    assert sent.hop_count is not None
    assert sent.hop_count.count == 1
    assert sent.bundle_age_ms == (2_500 if sent_at == 0 else None)


def test_received_and_secured_bundles_take_the_general_path() -> None:
    cfg = AgentConfig(keep_decoded=8)
    one = Agent(node=1, store=MemoryStore(), config=cfg)
    two = Agent(node=2, store=MemoryStore(), config=cfg)
    key, _ = one.send(
        source="ipn:1.1",
        destination="ipn:3.1",
        payload=b"r" * 300,
        lifetime_ms=3_600_000,
        now=S,
    )
    (tx,) = of(one.on_contact_start(link(1, 3), S), Transmit)
    # Received: its stored bytes are whatever the sender wrote.
    assert of(two.on_receive(cla="t", neighbor=1, data=tx.data, now=S), Transmit) == []
    assert key in two._hot
    assert two._hot_splice(key) is None
    (fwd,) = of(two.on_contact_start(link(2, 3), 3 * S), Transmit)
    assert fwd.parts == _general(two, key, 2 * S)
    assert decode_bundle_untrusted(fwd.data).hop_count.count == 2  # type: ignore[union-attr]

    # Originated but protected (a BCB among its blocks): general path.
    sec = Agent(node=1, store=MemoryStore(), config=cfg, security=XorPolicy())
    skey, _ = sec.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"secret",
        lifetime_ms=60_000,
        now=S,
    )
    assert skey in sec._hot
    assert sec._hot_splice(skey) is None
    (stx,) = of(sec.on_contact_start(link(1, 2), 2 * S), Transmit)
    assert stx.parts == _general(sec, skey, S)
