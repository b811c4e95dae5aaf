"""Duplicates by content, not by key alone (issue 10, "Data loss").

A copy that shares a genuine bundle's key (source, creation time, sequence,
and for a fragment offset and length) but not its content must never make
the genuine one a "duplicate" that is acknowledged and dropped: it is kept
apart (bounded) until security or reassembly settles which is genuine. Each
test fails on the agent that compared keys only.
"""

from __future__ import annotations

import dataclasses

from dcis.dtn.agent.actions import Ack, Action, Deliver, Event
from dcis.dtn.agent.agent import MAX_VARIANTS, Agent, AgentConfig, content_digest
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7 import Bundle, decode_bundle_untrusted, encode_bundle
from tests.unit.security.test_agent_security import (
    PAYLOAD,
    T0,
    open_link,
    secure_agent,
    send_1_to_3,
    transmits,
)


def forge(data: bytes) -> bytes:
    """The same bundle key, one payload byte changed (what an attacker who
    saw the primary block in the clear can make)."""
    b = decode_bundle_untrusted(data)
    pb = b.payload_block
    flipped = bytes([pb.data[0] ^ 0x55]) + pb.data[1:]
    return encode_bundle(
        Bundle(b.primary, (*b.blocks[:-1], dataclasses.replace(pb, data=flipped)))
    )


def acks(actions: list[Action]) -> list[Ack]:
    return [x for x in actions if isinstance(x, Ack)]


def delivered(actions: list[Action]) -> list[Deliver]:
    return [x for x in actions if isinstance(x, Deliver)]


def keyless_relay() -> Agent:
    r = Agent(node=2, store=MemoryStore())
    open_link(r, 3)
    return r


def test_a_forgery_first_at_a_keyless_relay_does_not_drop_the_genuine_bundle() -> None:
    a, c = secure_agent(1), secure_agent(3)
    open_link(a, 3)
    (tx,) = transmits(send_1_to_3(a))
    r = keyless_relay()
    out = r.on_receive(cla="t", neighbor=9, data=forge(tx.data), now=T0, cl_token=1)
    assert acks(out) == [Ack(9, 1)]
    out_genuine = r.on_receive(cla="t", neighbor=1, data=tx.data, now=T0, cl_token=2)
    # Acknowledged because it is held, not because it was taken for a copy.
    assert acks(out_genuine) == [Ack(1, 2)]
    assert r.counters["duplicates"] == 0
    assert r.counters["variants"] == 1
    sent = transmits(out) + transmits(out_genuine)
    assert len(sent) == 2  # both go on: the destination tells them apart
    got: list[Deliver] = []
    for i, t in enumerate(sent):
        got += delivered(
            c.on_receive(cla="t", neighbor=2, data=t.data, now=T0, cl_token=i)
        )
    assert [d.payload for d in got] == [PAYLOAD]


def test_a_forged_fragment_at_offset_0_does_not_spoil_reassembly() -> None:
    a, c = secure_agent(1, config=AgentConfig(max_bundle_bytes=1200)), secure_agent(3)
    open_link(a, 3)
    frags = transmits(send_1_to_3(a))
    assert len(frags) >= 3
    first = frags[0].data
    assert decode_bundle_untrusted(first).primary.fragment_offset == 0
    got: list[Deliver] = []
    out = c.on_receive(cla="t", neighbor=9, data=forge(first), now=T0, cl_token=99)
    got += delivered(out)
    for i, t in enumerate(frags):
        out = c.on_receive(cla="t", neighbor=1, data=t.data, now=T0, cl_token=i)
        got += delivered(out)
        assert Ack(1, i) in acks(out)
    assert [d.payload for d in got] == [PAYLOAD]
    assert c.counters["reassembled"] == 1


def test_a_failed_reassembly_deletes_nothing() -> None:
    a, c = secure_agent(1, config=AgentConfig(max_bundle_bytes=1200)), secure_agent(3)
    open_link(a, 3)
    frags = transmits(send_1_to_3(a))
    # Only forged copies of the first fragment, then the genuine rest: the
    # security policy refuses every combination; every fragment stays.
    c.on_receive(cla="t", neighbor=9, data=forge(frags[0].data), now=T0, cl_token=0)
    for i, t in enumerate(frags[1:], 1):
        c.on_receive(cla="t", neighbor=1, data=t.data, now=T0, cl_token=i)
    assert c.stored == len(frags)
    # The genuine first fragment arrives late: the bundle is delivered.
    out = c.on_receive(cla="t", neighbor=1, data=frags[0].data, now=T0, cl_token=50)
    assert [d.payload for d in delivered(out)] == [PAYLOAD]


def test_the_same_bytes_again_are_a_duplicate() -> None:
    a = secure_agent(1)
    open_link(a, 3)
    (tx,) = transmits(send_1_to_3(a))
    r = keyless_relay()
    r.on_receive(cla="t", neighbor=1, data=tx.data, now=T0, cl_token=1)
    stored = r.stored
    out = r.on_receive(cla="t", neighbor=1, data=tx.data, now=T0 + 5, cl_token=2)
    assert acks(out) == [Ack(1, 2)]
    assert r.counters["duplicates"] == 1
    assert r.stored == stored


def test_differing_copies_are_bounded_and_the_excess_is_not_acknowledged() -> None:
    a = secure_agent(1)
    open_link(a, 3)
    (tx,) = transmits(send_1_to_3(a))
    r = Agent(node=2, store=MemoryStore())  # no contact: all stay held
    r.on_receive(cla="t", neighbor=1, data=tx.data, now=T0, cl_token=0)
    b = decode_bundle_untrusted(tx.data)
    pb = b.payload_block
    for i in range(1, MAX_VARIANTS + 2):
        data = encode_bundle(
            Bundle(
                b.primary,
                (
                    *b.blocks[:-1],
                    dataclasses.replace(pb, data=bytes([i]) + pb.data[1:]),
                ),
            )
        )
        out = r.on_receive(cla="t", neighbor=9, data=data, now=T0, cl_token=i)
        if i <= MAX_VARIANTS:
            assert acks(out) == [Ack(9, i)]
        else:
            assert acks(out) == []
            assert [x for x in out if isinstance(x, Event) and x.kind == "refused"]
    assert r.stored == 1 + MAX_VARIANTS


def test_content_digest_ignores_what_each_hop_rewrites() -> None:
    a = secure_agent(1)
    open_link(a, 3)
    (tx,) = transmits(send_1_to_3(a))
    r = keyless_relay()
    (fwd,) = transmits(
        r.on_receive(cla="t", neighbor=1, data=tx.data, now=T0 + 7, cl_token=0)
    )
    x, y = decode_bundle_untrusted(tx.data), decode_bundle_untrusted(fwd.data)
    assert x.previous_node != y.previous_node
    assert content_digest(x) == content_digest(y)
    assert content_digest(x) != content_digest(decode_bundle_untrusted(forge(tx.data)))
