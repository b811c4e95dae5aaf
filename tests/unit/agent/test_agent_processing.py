"""Agent bundle processing: lifetime, hop count, bundle age, previous node,
unprocessable blocks, status reports (RFC 9171 sections 4.4, 5, 6.1)."""

from __future__ import annotations

from typing import Any

from dcis.dtn.agent.actions import Ack, Action, Deliver, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.admin import (
    StatusReason,
    StatusReport,
    decode_admin_record_untrusted,
)
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.flags import BlockFlags, BundleFlags, CrcType
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan
from tests.unit.agent.helpers import Net, events, link, of

S = 1000
T0 = 1_000_000


def relay() -> Agent:
    return Agent(node=2, store=MemoryStore())


def to3(**fields: Any) -> Bundle:
    """A one-byte bundle ipn:1.1 -> ipn:3.1 created at T0; ``fields`` override."""
    return make_bundle(
        **{
            "source": "ipn:1.1",
            "destination": "ipn:3.1",
            "payload": b"x",
            "creation_ms": T0,
            **fields,
        }
    )


def receive(b: Agent, data: bytes, *, now: int = T0) -> list[Action]:
    """Hand ``data`` to ``b`` from neighbour 1 (CL token 1); the actions."""
    return b.on_receive(cla="t", neighbor=1, data=data, now=now, cl_token=1)


def forward_once(b: Agent, data: bytes, *, now: int, to: int = 3) -> Bundle:
    """Feed ``data`` to relay ``b`` and open a contact to ``to``; the bundle as sent."""
    receive(b, data, now=now)
    (tx,) = of(b.on_contact_start(link(2, to), now), Transmit)
    return decode_bundle_untrusted(tx.data)


def test_expires_at_creation_plus_lifetime() -> None:
    a = Agent(node=1, store=MemoryStore())
    k, _ = a.send(
        source="ipn:1.1", destination="ipn:2.1", payload=b"x", lifetime_ms=5_000, now=T0
    )
    assert a.next_deadline() == T0 + 5_000
    assert events(a.on_tick(T0 + 4_999), "expired") == []
    assert a.holds(k)
    (ev,) = events(a.on_tick(T0 + 5_000), "expired")
    assert ev.bundle_key == k
    assert not a.holds(k)
    assert len(a.store) == 0
    assert a.counters["expired"] == 1
    assert a.next_deadline() is None


def test_expired_on_arrival_is_acked_not_stored_nor_delivered() -> None:
    b = Agent(node=2, store=MemoryStore())
    b.register("ipn:2.1")
    data = encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"x",
            creation_ms=T0,
            lifetime_ms=1_000,
        )
    )
    acts = b.on_receive(cla="t", neighbor=1, data=data, now=T0 + 1_000, cl_token=3)
    assert of(acts, Deliver) == []
    assert of(acts, Ack) == [Ack(1, 3)]
    assert len(events(acts, "expired")) == 1
    assert len(b.store) == 0


def test_in_flight_bundle_is_not_delivered_after_expiry() -> None:
    ag = {1: Agent(node=1, store=MemoryStore()), 2: Agent(node=2, store=MemoryStore())}
    ag[2].register("ipn:2.1")
    ag[1].send(
        source="ipn:1.1", destination="ipn:2.1", payload=b"x", lifetime_ms=1_000, now=T0
    )
    (tx,) = of(ag[1].on_contact_start(link(1, 2), T0 + 10), Transmit)
    late = ag[2].on_receive(
        cla="t", neighbor=1, data=tx.data, now=T0 + 1_000, cl_token=1
    )
    assert of(late, Deliver) == []


def test_previous_node_hop_count_and_age_are_updated_on_forwarding() -> None:
    b = relay()
    src = to3(
        creation_ms=0,  # no clock at the source: the age block rules
        lifetime_ms=60_000,
        bundle_age_ms=500,
        previous_node="ipn:1.0",
        hop_limit=5,
        hop_count=2,
    )
    receive(b, encode_bundle(src))
    (tx,) = of(b.on_contact_start(link(2, 3), T0 + 300), Transmit)
    out = decode_bundle_untrusted(tx.data)
    assert out.previous_node == IpnEid(2, 0)
    assert out.bundle_age_ms == 800
    assert out.hop_count is not None
    assert (out.hop_count.limit, out.hop_count.count) == (5, 3)
    assert out.payload == b"x"
    assert out.primary == src.primary


def test_age_based_lifetime_expires_relative_to_receipt() -> None:
    b = relay()
    src = to3(creation_ms=0, lifetime_ms=10_000, bundle_age_ms=4_000)
    receive(b, encode_bundle(src))
    assert b.next_deadline() == T0 + 6_000


def test_previous_node_block_is_added_when_missing() -> None:
    b = relay()
    out = forward_once(b, encode_bundle(to3()), now=T0 + 1)
    assert out.previous_node == IpnEid(2, 0)


def test_hop_limit_reached_deletes_instead_of_forwarding() -> None:
    b = relay()
    acts = receive(b, encode_bundle(to3(hop_limit=2, hop_count=2)))
    assert of(acts, Ack) == [Ack(1, 1)]
    acts = b.on_contact_start(link(2, 3), T0 + 1)
    assert of(acts, Transmit) == []
    assert len(events(acts, "deleted")) == 1
    assert len(b.store) == 0


def test_hop_limit_exceeded_on_arrival_is_deleted_and_acked() -> None:
    b = relay()
    acts = receive(b, encode_bundle(to3(hop_limit=2, hop_count=3)))
    assert of(acts, Ack) == [Ack(1, 1)]
    assert "hop limit" in events(acts, "deleted")[0].detail
    assert len(b.store) == 0


def test_originated_bundles_carry_the_configured_hop_limit() -> None:
    a = Agent(node=1, store=MemoryStore(), config=AgentConfig(hop_limit=7))
    a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"x",
        lifetime_ms=60_000,
        now=T0,
    )
    (tx,) = of(a.on_contact_start(link(1, 2), T0), Transmit)
    hc = decode_bundle_untrusted(tx.data).hop_count
    assert hc is not None
    assert (hc.limit, hc.count) == (7, 1)


def _with_block(flags: BlockFlags) -> bytes:
    extra = CanonicalBlock(200, 5, flags, CrcType.NONE, b"opaque")
    return encode_bundle(to3(extra_blocks=[extra]))


def test_unprocessable_block_with_delete_flag_deletes_the_bundle() -> None:
    b = relay()
    acts = receive(b, _with_block(BlockFlags.DELETE_BUNDLE_IF_UNPROCESSABLE))
    assert of(acts, Ack) == [Ack(1, 1)]
    assert len(events(acts, "deleted")) == 1
    assert len(b.store) == 0


def test_unprocessable_block_with_discard_flag_is_removed() -> None:
    out = forward_once(
        relay(), _with_block(BlockFlags.DISCARD_IF_UNPROCESSABLE), now=T0
    )
    assert out.block_of_type(200) is None
    assert out.payload == b"x"


def test_unprocessable_block_without_flags_is_forwarded_unchanged() -> None:
    out = forward_once(relay(), _with_block(BlockFlags.NONE), now=T0)
    blk = out.block_of_type(200)
    assert blk is not None
    assert blk.data == b"opaque"


def _reports(agent: Agent) -> list[StatusReport]:
    out = []
    for rec in agent.store.records():
        data = agent.store.get(rec.key)
        assert data is not None
        b = decode_bundle_untrusted(data)
        if b.is_admin_record:
            r = decode_admin_record_untrusted(b.payload)
            assert isinstance(r, StatusReport)
            out.append(r)
    return out


def test_reception_forwarding_and_delivery_reports_when_asked() -> None:
    up = [Contact(f, t, 0, 100_000, 1e6) for f, t in ((1, 2), (2, 3), (2, 1), (3, 1))]
    plan = ContactPlan(up)
    ag = {i: Agent(node=i, store=MemoryStore(), plan=plan) for i in (1, 2, 3)}
    ag[3].register("ipn:3.1")
    ag[1].register("ipn:1.1")
    net = Net(ag)
    flags = (
        BundleFlags.REPORT_RECEPTION
        | BundleFlags.REPORT_FORWARDING
        | BundleFlags.REPORT_DELIVERY
    )
    k, acts = ag[1].send(
        source="ipn:1.1",
        destination="ipn:3.1",
        payload=b"x",
        lifetime_ms=600_000,
        now=T0,
        flags=flags,
    )
    net.pump(1, acts)
    net.at(T0 + 1).start(up[0])
    net.at(T0 + 2).start(up[1])
    assert [d.bundle_key for n, d in net.delivered if n == 3] == [k]
    # the source forwarded it too, and reported that to itself
    (own,) = [
        decode_admin_record_untrusted(d.payload) for n, d in net.delivered if n == 1
    ]
    assert isinstance(own, StatusReport)
    assert own.forwarded.asserted
    r2 = _reports(ag[2])  # held at 2 until a contact back to 1 opens
    assert {(r.subject_key, r.received.asserted, r.forwarded.asserted) for r in r2} == {
        (k, True, False),
        (k, False, True),
    }
    r3 = _reports(ag[3])
    assert {(r.subject_key, r.received.asserted, r.delivered.asserted) for r in r3} == {
        (k, True, False),
        (k, False, True),
    }
    # the reports reach the source's endpoint like any bundle
    net.at(T0 + 3).start(up[2])
    net.at(T0 + 3).start(up[3])
    got = [decode_admin_record_untrusted(d.payload) for n, d in net.delivered if n == 1]
    assert len(got) == 5


def test_no_reports_unless_asked() -> None:
    b = relay()
    forward_once(b, encode_bundle(to3(report_to="ipn:1.1")), now=T0)
    assert b.counters["status_reports"] == 0


def test_deletion_report_on_expiry_with_reason() -> None:
    b = relay()
    src = to3(
        lifetime_ms=1_000,
        report_to="ipn:1.1",
        flags=BundleFlags.REPORT_DELETION | BundleFlags.STATUS_TIME_REQUESTED,
    )
    receive(b, encode_bundle(src))
    b.on_tick(T0 + 1_000)
    (r,) = _reports(b)
    assert r.deleted.asserted
    assert r.deleted.time_ms == T0 + 1_000
    assert r.reason == StatusReason.LIFETIME_EXPIRED
    assert r.subject_key == src.bundle_key


def test_reports_are_never_sent_about_reports() -> None:
    b = relay()
    report_like = to3(
        source="ipn:1.0",
        payload=b"\x82\x01\x80",
        report_to="ipn:1.0",
        flags=BundleFlags.ADMIN_RECORD | BundleFlags.REPORT_RECEPTION,
    )
    receive(b, encode_bundle(report_like))
    assert b.counters["status_reports"] == 0
