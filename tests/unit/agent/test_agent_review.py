"""Agent promises found wanting in review: expiry at the exact lifetime,
plan changes under booked bundles, volume of failed transmissions."""

from __future__ import annotations

import importlib

import pytest

from dcis.dtn.agent.actions import Deliver, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan
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


def test_failed_transmission_gives_its_volume_back_to_the_contact() -> None:
    # Room for two ~1 KB bundles on the contact; the first transmission
    # fails: it must be retried on the same contact (the bytes it did not
    # deliver do not count against the volume twice).
    c = Contact(1, 2, 10, 11, 2_300)
    a = Agent(node=1, store=MemoryStore(), config=AgentConfig(retry_delay_ms=100))
    k1 = _send(a, "ipn:2.1", lifetime_ms=3_600 * S, now=S, size=1000)
    k2 = _send(a, "ipn:2.1", lifetime_ms=3_600 * S, now=S, size=1000)
    first = of(a.on_contact_start(c, 10 * S), Transmit)
    assert len(first) == 2
    a.on_transmit_done(first[1].tx_id, True, 10 * S + 10)
    a.on_transmit_done(first[0].tx_id, False, 10 * S + 20)
    retry = of(a.on_tick(10 * S + 200), Transmit)
    assert [decode_bundle_untrusted(t.data).bundle_key for t in retry] == [k1]
    assert a.counters["fragmented"] == 0
    assert not a.holds(k2)


def test_failed_transmission_on_a_plan_contact_keeps_one_booking() -> None:
    # CGR books the contact's volume once per bundle: a retry on the same
    # contact after a failure must not book it again.
    c12 = Contact(1, 2, 10, 20, 350)  # 3,500 B of volume
    plan = ContactPlan([c12, Contact(2, 3, 30, 40, 10_000)])
    a = Agent(
        node=1,
        store=MemoryStore(),
        plan=plan,
        config=AgentConfig(retry_delay_ms=100),
    )
    k1 = _send(a, "ipn:3.1", lifetime_ms=3_600 * S, now=S, size=1000)
    (tx,) = of(a.on_contact_start(c12, 10 * S), Transmit)
    a.on_transmit_done(tx.tx_id, False, 10 * S + 10)
    (tx2,) = of(a.on_tick(10 * S + 200), Transmit)
    assert decode_bundle_untrusted(tx2.data).bundle_key == k1
    a.on_transmit_done(tx2.tx_id, True, 10 * S + 300)
    # one ~1 KB bundle booked (routes ask for whole KiB): a second one fits
    k2, acts = a.send(
        source="ipn:1.1",
        destination="ipn:3.1",
        payload=b"y" * 1000,
        lifetime_ms=3_600 * S,
        now=11 * S,
    )
    sent = of(acts, Transmit)
    assert [decode_bundle_untrusted(t.data).bundle_key for t in sent] == [k2]


def test_a_full_contact_does_not_rescan_the_whole_queue_per_bundle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 400 bundles queued for a contact with room for one: every later bundle
    # routed to that neighbour (and every transmit outcome) serves the queue
    # again. The work per call must be bounded by the window, not by the
    # queue's length (no decode of every queued bundle each time).
    a = Agent(node=1, store=MemoryStore(), config=AgentConfig(window=8))
    for _ in range(400):
        _send(a, "ipn:2.1", lifetime_ms=3_600 * S, now=S, size=1000)
    c = Contact(1, 2, 10, 11, 1_200)
    assert len(of(a.on_contact_start(c, 10 * S), Transmit)) == 1
    decodes = 0
    real = decode_bundle_untrusted

    def counting(data: bytes | memoryview) -> Bundle:
        nonlocal decodes
        decodes += 1
        return real(data)

    # Every agent module that decodes stored bundles (the agent is split by
    # concern: dcis.dtn.agent.{entries,reception,delivery,forwarding,reports}).
    patched = 0
    for mod in ("agent", "entries", "reception", "delivery", "forwarding", "reports"):
        name = f"dcis.dtn.agent.{mod}"
        if hasattr(importlib.import_module(name), "decode_bundle_untrusted"):
            monkeypatch.setattr(f"{name}.decode_bundle_untrusted", counting)
            patched += 1
    assert patched >= 1
    for i in range(20):
        _send(a, "ipn:2.1", lifetime_ms=3_600 * S, now=10 * S + i, size=1000)
    assert decodes <= 20 * (8 + 2)
    assert a.stored == 420  # one in flight, the rest held for the next contact


def test_fragments_of_a_bundle_delivered_whole_do_not_linger_until_expiry() -> None:
    # One fragment arrives, then the whole bundle (another path did not
    # fragment it): the whole one is delivered; the lone fragment is a
    # duplicate from then on and must not hold store space until it expires.
    whole = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"z" * 1000,
        creation_ms=S,
        lifetime_ms=3_600 * S,
    )
    first, _ = fragment_bundle(whole, [400, 600])
    a = Agent(node=2, store=MemoryStore())
    a.register("ipn:2.1")
    a.on_receive(cla="t", neighbor=1, data=encode_bundle(first), now=2 * S)
    (d,) = of(
        a.on_receive(cla="t", neighbor=1, data=encode_bundle(whole), now=3 * S),
        Deliver,
    )
    assert d.payload == b"z" * 1000
    a.on_delivered(d.bundle_key, 3 * S)
    assert a.stored == 0
    assert len(a.store) == 0


def test_a_dtn_scheme_bundle_held_before_its_endpoint_registers_is_delivered() -> None:
    # A bundle for dtn://here/app arrives before the application registers
    # (it cannot be routed: dtn: destinations are never forwarded). Once
    # dtn://here/app is registered it must be delivered, also after a restart.
    b = make_bundle(
        source="ipn:1.1",
        destination="dtn://here/app",
        payload=b"hello",
        creation_ms=S,
        lifetime_ms=3_600 * S,
    )
    store = MemoryStore()
    a = Agent(node=2, store=store)
    a.on_receive(cla="t", neighbor=1, data=encode_bundle(b), now=2 * S)
    assert a.holds(b.bundle_key)
    (d,) = of(a.register("dtn://here/app", now=3 * S), Deliver)
    assert (d.bundle_key, d.payload) == (b.bundle_key, b"hello")
    # a restart before confirmation hands it over again
    again = Agent(node=2, store=store)
    again.register("dtn://here/app")
    (d2,) = of(again.recover(4 * S), Deliver)
    assert d2.bundle_key == b.bundle_key
    again.on_delivered(d2.bundle_key, 4 * S)
    assert again.stored == 0


def test_clockless_bundle_expires_by_its_age_and_carries_its_dwell_on() -> None:
    # Creation time 0: the lifetime runs from the age block. 5 s old on
    # arrival with a 10 s lifetime: it may be forwarded 4 s later (age 9 s),
    # but not 5 s later.
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:3.1",
        payload=b"a",
        creation_ms=0,
        lifetime_ms=10 * S,
        bundle_age_ms=5 * S,
    )
    for wait_s, goes in ((4, True), (5, False)):
        a = Agent(node=2, store=MemoryStore())
        a.on_receive(cla="t", neighbor=1, data=encode_bundle(b), now=100 * S)
        sent = of(a.on_contact_start(link(2, 3), (100 + wait_s) * S), Transmit)
        if goes:
            (tx,) = sent
            assert decode_bundle_untrusted(tx.data).bundle_age_ms == 9 * S
        else:
            assert sent == []
            assert a.counters["expired"] == 1


def test_a_bundle_sent_on_an_earlier_contact_than_booked_gives_the_booking_back() -> (
    None
):
    # k1 is booked on the later contact C2 (C1 looked full to the router),
    # but C1's real volume carries it. C2's volume must not stay charged
    # for it: a later bundle must still find C2 for itself.
    c1 = Contact(1, 2, 10, 20, 200)  # 2,000 B
    c2 = Contact(1, 2, 30, 40, 210)  # 2,100 B: room for one ~1 KB booking
    plan = ContactPlan([c1, c2])
    a = Agent(node=1, store=MemoryStore(), plan=plan)
    _send(a, "ipn:2.1", lifetime_ms=3_600 * S, now=S, size=500)  # books C1
    _send(a, "ipn:2.1", lifetime_ms=3_600 * S, now=S, size=1000)  # books C2
    sent = of(a.on_contact_start(c1, 10 * S), Transmit)
    assert len(sent) == 2  # both went on C1
    for tx in sent:
        a.on_transmit_done(tx.tx_id, True, 11 * S)
    a.on_contact_end(c1, 20 * S)
    _send(a, "ipn:2.1", lifetime_ms=3_600 * S, now=21 * S, size=1000)
    # routed over C2 (no reroute timer pending): the next deadline is expiry
    assert a.next_deadline() == 3_621 * S
