"""Agent promises found wanting in review: expiry at the exact lifetime,
plan changes under booked bundles, volume of failed transmissions."""

from __future__ import annotations

from dtn.agent.actions import Deliver, Transmit
from dtn.agent.agent import Agent
from dtn.agent.store import MemoryStore
from dtn.bpv7.bundle import decode_bundle_untrusted
from dtn.routing.contact import Contact
from dtn.routing.plan import ContactPlan
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


def test_plan_change_removing_a_booked_contact_neither_crashes_nor_strands() -> None:
    # The bundle is routed 1 -> 2 -> 3 over c12 (booked); the plan then loses
    # c12 and gains c14 + c43: the bundle must take the new route, and its
    # expiry / removal must not trip over the contact that is gone.
    c12 = Contact(1, 2, 10, 20, 10_000)
    c23 = Contact(2, 3, 30, 40, 10_000)
    plan = ContactPlan([c12, c23])
    a = Agent(node=1, store=MemoryStore(), plan=plan)
    key = _send(a, "ipn:3.1", lifetime_ms=3_600 * S, now=S)
    plan.remove_contact(c12)
    c14 = Contact(1, 4, 12, 20, 10_000)
    plan.add_contact(c14)
    plan.add_contact(Contact(4, 3, 30, 40, 10_000))
    a.on_tick(2 * S)
    sent = of(a.on_contact_start(c14, 12 * S), Transmit)
    assert [decode_bundle_untrusted(t.data).bundle_key for t in sent] == [key]


def test_expiry_of_a_bundle_whose_booked_contact_left_the_plan() -> None:
    c12 = Contact(1, 2, 10, 20, 10_000)
    plan = ContactPlan([c12, Contact(2, 3, 30, 40, 10_000)])
    a = Agent(node=1, store=MemoryStore(), plan=plan)
    key = _send(a, "ipn:3.1", lifetime_ms=34 * S, now=S)  # arrives at 30 s
    plan.remove_contact(c12)
    acts = a.on_tick(35 * S)
    assert [e.bundle_key for e in events(acts, "expired")] == [key]
    assert a.stored == 0
