"""Agent promises found wanting in review: expiry at the exact lifetime,
plan changes under booked bundles, volume of failed transmissions."""

from __future__ import annotations

from dtn.agent.actions import Deliver, Transmit
from dtn.agent.agent import Agent
from dtn.agent.store import MemoryStore
from tests.unit.agent.helpers import events, link, of

S = 1000  # ms per second; plan epoch 0


def _send(a: Agent, dst: str, *, lifetime_ms: int, now: int, size: int = 100) -> str:
    key, _ = a.send(
        source=f"ipn:{a.node}.1",
        destination=dst,
        payload=b"x" * size,
        lifetime_ms=lifetime_ms,
        now=now,
    )
    return key


def test_bundle_is_not_transmitted_at_or_after_its_expiry_without_a_tick() -> None:
    # The contact opens at the very millisecond the lifetime ends (the driver
    # runs contact events before timers): the bundle must expire, not go.
    a = Agent(node=1, store=MemoryStore())
    key = _send(a, "ipn:2.1", lifetime_ms=10 * S, now=S)
    acts = a.on_contact_start(link(1, 2), 11 * S)
    assert of(acts, Transmit) == []
    assert [e.bundle_key for e in events(acts, "expired")] == [key]
    assert not a.holds(key)
    assert a.counters["expired"] == 1


def test_bundle_is_not_delivered_on_register_after_its_expiry() -> None:
    a = Agent(node=1, store=MemoryStore())
    key = _send(a, "ipn:1.7", lifetime_ms=10 * S, now=S)
    acts = a.register("ipn:1.7", now=20 * S)
    assert of(acts, Deliver) == []
    assert [e.bundle_key for e in events(acts, "expired")] == [key]
    assert not a.holds(key)


def test_register_without_now_still_delivers_held_bundles() -> None:
    a = Agent(node=1, store=MemoryStore())
    key = _send(a, "ipn:1.7", lifetime_ms=10 * S, now=S)
    assert [d.bundle_key for d in of(a.register("ipn:1.7"), Deliver)] == [key]
