"""SecurityPolicy inside real agents: protect at send, check at the destination.

Two or three ``dcis.dtn.agent.Agent`` objects joined by hand (Transmit data fed to
the next agent's ``on_receive``): a sealed bundle is delivered as plaintext,
a keyless relay forwards it, fragments are checked once reassembled, and a
rejected bundle yields a deletion status report with RFC 9172's reason code
when it asked for one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dcis.crypto import NodeIdentity, OperatorKey
from dcis.dtn.agent.actions import Action, Deliver, Event, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.security import NoCertificate, SecurityPolicy
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7 import Bundle, decode_bundle_untrusted, encode_bundle
from dcis.dtn.bpv7.admin import (
    StatusReason,
    StatusReport,
    decode_admin_record_untrusted,
)
from dcis.dtn.bpv7.flags import BlockType, BundleFlags
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan
from tests.unit.bpsec.helpers import certify

OP = OperatorKey.generate(entropy=b"agent test operator".ljust(32, b"."))
IDS = {
    n: NodeIdentity.generate(n, entropy=f"agent node {n}".encode().ljust(32, b"."))
    for n in (1, 2, 3)
}
T0 = 10_000_000
PAYLOAD = bytes(range(256)) * 12  # 3 KB


CERTS = [certify(OP, IDS[n], not_after_ms=10**12) for n in (1, 3)]


def secure_agent(n: int, **kw: object) -> Agent:
    pol = SecurityPolicy(
        identity=IDS[n], operator_public=OP.public_key, certificates=CERTS
    )
    a = Agent(node=n, store=MemoryStore(), security=pol, **kw)  # type: ignore[arg-type]
    a.register(f"ipn:{n}.1")
    return a


def open_link(a: Agent, to: int) -> None:
    a.on_contact_start(Contact(a.node, to, 0, float("inf"), 0), T0)


def transmits(actions: list[Action]) -> list[Transmit]:
    return [x for x in actions if isinstance(x, Transmit)]


def send_1_to_3(a: Agent, payload: bytes = PAYLOAD, **kw: Any) -> list[Action]:
    """``a`` sends ``payload`` ipn:1.1 -> ipn:3.1 (60 s lifetime) at T0."""
    _, acts = a.send(
        source="ipn:1.1",
        destination="ipn:3.1",
        payload=payload,
        lifetime_ms=60_000,
        now=T0,
        **kw,
    )
    return acts


def relay(frm: Agent, to: Agent, actions: list[Action]) -> list[Action]:
    """Feed every Transmit in ``actions`` to ``to``; return what ``to`` did."""
    out: list[Action] = []
    for i, t in enumerate(transmits(actions)):
        out += to.on_receive(
            cla="t", neighbor=frm.node, data=t.data, now=T0, cl_token=i
        )
        frm.on_transmit_done(t.tx_id, True, T0)
    return out


def test_sealed_end_to_end_through_a_keyless_relay() -> None:
    hops = [Contact(1, 2, 0, 1e9, 1e6), Contact(2, 3, 0, 1e9, 1e6)]
    plan = ContactPlan(hops)
    a, c = secure_agent(1, plan=plan), secure_agent(3)
    b = Agent(node=2, store=MemoryStore(), plan=plan)  # a relay: no policy, no keys
    b.register("ipn:2.1")
    a.on_contact_start(hops[0], T0)
    b.on_contact_start(hops[1], T0)
    acts = send_1_to_3(a)
    (tx,) = transmits(acts)
    assert PAYLOAD[:64] not in tx.data
    at_b = relay(a, b, acts)
    assert not [x for x in at_b if isinstance(x, Deliver)]
    at_c = relay(b, c, at_b)
    (d,) = [x for x in at_c if isinstance(x, Deliver)]
    assert (d.payload, d.source) == (PAYLOAD, "ipn:1.1")
    # The relay's copy was the sealed one, byte for byte the same payload block.
    relayed = decode_bundle_untrusted(transmits(at_b)[0].data)
    assert relayed.block_of_type(BlockType.BCB) is not None


def test_fragments_are_checked_once_reassembled() -> None:
    a, c = secure_agent(1, config=AgentConfig(max_bundle_bytes=1200)), secure_agent(3)
    open_link(a, 3)
    acts = send_1_to_3(a)
    assert len(transmits(acts)) >= 3
    out = relay(a, c, acts)
    (d,) = [x for x in out if isinstance(x, Deliver)]
    assert d.payload == PAYLOAD
    pol = c.security
    assert isinstance(pol, SecurityPolicy)
    assert pol.counters["accepted"] == 1


def test_rejected_bundle_gets_a_deletion_report_with_the_rfc9172_reason() -> None:
    a, c = secure_agent(1), secure_agent(3)
    open_link(a, 3)
    open_link(c, 1)
    acts = send_1_to_3(a, flags=BundleFlags.REPORT_DELETION)
    (tx,) = transmits(acts)
    sealed = decode_bundle_untrusted(tx.data)
    pb = sealed.payload_block
    forged = Bundle(
        sealed.primary,
        (*sealed.blocks[:-1], dataclasses.replace(pb, data=b"\x00" + pb.data[1:])),
    )
    out = c.on_receive(
        cla="t", neighbor=1, data=encode_bundle(forged), now=T0, cl_token=1
    )
    assert not [x for x in out if isinstance(x, Deliver)]
    assert [x for x in out if isinstance(x, Event) and x.kind == "deleted"]
    (report_tx,) = transmits(out)
    report = decode_bundle_untrusted(report_tx.data)
    assert str(report.primary.destination) == "ipn:1.1"
    record = decode_admin_record_untrusted(report.payload)
    assert isinstance(record, StatusReport)
    assert record.deleted.asserted
    assert record.reason == StatusReason.FAILED_SECURITY_OPERATION
    assert record.subject_key == sealed.bundle_key
    # The status report itself reaches node 1, unprotected, and is accepted
    # there as an administrative record.
    back = a.on_receive(cla="t", neighbor=3, data=report_tx.data, now=T0, cl_token=2)
    assert [x for x in back if isinstance(x, Deliver)]


def test_plain_bundle_to_a_secure_node_is_missing_security() -> None:
    plain_sender = Agent(node=1, store=MemoryStore())
    plain_sender.register("ipn:1.1")
    c = secure_agent(3)
    open_link(plain_sender, 3)
    open_link(c, 1)
    acts = send_1_to_3(plain_sender, b"hello", flags=BundleFlags.REPORT_DELETION)
    out = relay(plain_sender, c, acts)
    assert not [x for x in out if isinstance(x, Deliver)]
    record = decode_admin_record_untrusted(
        decode_bundle_untrusted(transmits(out)[0].data).payload
    )
    assert isinstance(record, StatusReport)
    assert record.reason == StatusReason.MISSING_SECURITY_OPERATION


def test_send_to_an_uncertified_destination_raises() -> None:
    a = secure_agent(1)
    with pytest.raises(NoCertificate):
        a.send(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"x",
            lifetime_ms=60_000,
            now=T0,
        )
    # Local delivery needs no protection.
    _, acts = a.send(
        source="ipn:1.1",
        destination="ipn:1.1",
        payload=b"x",
        lifetime_ms=60_000,
        now=T0,
    )
    assert [x for x in acts if isinstance(x, Deliver)]
