"""Agent forwarding: contact plan routing, holding, contacts, volume, MTU, retries."""

from __future__ import annotations

from typing import Any

import pytest

from dcis.dtn.agent import timers
from dcis.dtn.agent.actions import Action, Deliver, Schedule, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7 import canonical
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.bpv7.flags import BundleFlags
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan
from tests.unit.agent.helpers import Net, events, link, of
from tests.unit.bpv7.test_bundle_parts import _non_canonical

S = 1000  # ms per second; plan epoch 0, so plan time t s == DTN time t*S ms


def agents(
    n: int, plan: ContactPlan | None = None, config: AgentConfig | None = None
) -> dict[int, Agent]:
    out = {}
    for i in range(1, n + 1):
        a = Agent(node=i, store=MemoryStore(), plan=plan, config=config)
        a.register(f"ipn:{i}.1")
        out[i] = a
    return out


def send(a: Agent, to: int, payload: bytes, **kw: Any) -> tuple[str, list[Action]]:
    """``a`` originates ``payload`` from ipn:1.1 to ipn:<to>.1 at 1 s."""
    return a.send(
        source="ipn:1.1", destination=f"ipn:{to}.1", payload=payload, now=S, **kw
    )


def test_three_hops_that_never_coexist_deliver_once_by_contact_plan() -> None:
    # 1 -> 2 -> 3 -> 4, each contact after the previous one closed.
    c12 = Contact(1, 2, 10, 20, 1000)
    c23 = Contact(2, 3, 30, 40, 1000)
    c34 = Contact(3, 4, 50, 60, 1000)
    decoy = Contact(2, 5, 30, 40, 1000)  # a contact that leads nowhere useful
    plan = ContactPlan([c12, c23, c34, decoy])
    ag = agents(5, plan)
    net = Net(ag)
    key, acts = send(ag[1], 4, b"p" * 100, lifetime_ms=3_600_000)
    net.pump(1, acts)
    assert of(acts, Transmit) == []
    for c, t in ((c12, 10), (c23, 30), (c34, 50)):
        net.at(t * S).start(c)
        if c is c23:
            net.at(t * S).start(decoy)
        net.at((t + 10) * S).end(c)
    assert [(n, d.bundle_key, d.payload) for n, d in net.delivered] == [
        (4, key, b"p" * 100)
    ]
    # each hop held it until the next had it, then let it go
    assert [len(a.store) for a in ag.values()] == [0, 0, 0, 0, 0]
    hops = [(n, t.neighbor) for n, t in net.transmitted]
    assert hops == [(1, 2), (2, 3), (3, 4)]
    assert ag[2].counters["forwarded"] == 1
    assert ag[5].counters["received"] == 0


def test_without_plan_waits_for_a_contact_with_the_destination() -> None:
    ag = agents(3)
    net = Net(ag)
    k, acts = send(ag[1], 3, b"x", lifetime_ms=60_000)
    net.pump(1, acts)
    net.at(2 * S).start(link(1, 2))  # not the destination: nothing goes
    assert net.transmitted == []
    c13 = link(1, 3)
    net.at(3 * S).start(c13)
    assert [d.bundle_key for _, d in net.delivered] == [k]


def test_bundles_sent_while_contact_open_go_at_once() -> None:
    ag = agents(2)
    net = Net(ag)
    net.at(S).start(link(1, 2))
    k, acts = send(ag[1], 2, b"x", lifetime_ms=60_000)
    net.pump(1, acts)
    assert [d.bundle_key for _, d in net.delivered] == [k]


def test_contact_end_keeps_unsent_bundles_for_the_next_contact() -> None:
    ag = agents(2, config=AgentConfig(window=1))
    a = ag[1]
    keys = [send(a, 2, b"x", lifetime_ms=60_000)[0] for _ in range(3)]
    c1 = link(1, 2)
    acts = a.on_contact_start(c1, 2 * S)
    (tx,) = of(acts, Transmit)  # window of 1
    a.on_contact_end(c1, 3 * S)
    a.on_transmit_done(tx.tx_id, False, 3 * S)
    assert all(a.holds(k) for k in keys)
    net = Net(ag)
    net.at(4 * S).start(link(1, 2))
    assert sorted(d.bundle_key for _, d in net.delivered) == sorted(keys)
    assert len(a.store) == 0


def test_failed_transmission_is_retried_after_backoff() -> None:
    ag = agents(2, config=AgentConfig(retry_delay_ms=500))
    a = ag[1]
    net = Net(ag)
    net.drop = 1
    k, acts = send(a, 2, b"x", lifetime_ms=60_000)
    net.pump(1, acts)
    net.at(S).start(link(1, 2))
    assert len(net.transmitted) == 1
    assert net.delivered == []
    assert a.holds(k)
    deadline = a.next_deadline()
    assert deadline is not None
    assert S + 500 <= deadline <= S + 550
    net.at(S + 100).tick()
    assert len(net.transmitted) == 1  # still backing off
    net.at(deadline).tick()
    assert [d.bundle_key for _, d in net.delivered] == [k]
    assert a.counters["transmit_failed"] == 1


def test_contact_volume_bounds_what_is_sent() -> None:
    # 1 s at 300 B/s: room for one ~150-byte bundle, not two.
    ag = agents(2)
    a = ag[1]
    keys = [
        send(
            a, 2, b"v" * 100, lifetime_ms=600_000, flags=BundleFlags.MUST_NOT_FRAGMENT
        )[0]
        for _ in range(2)
    ]
    c = Contact(1, 2, 10, 11, 300)
    acts = a.on_contact_start(c, 10 * S)
    assert len(of(acts, Transmit)) == 1
    assert (
        sum(a.holds(k) for k in keys) == 2
    )  # the second waits, the first awaits its ack


def test_fragments_to_fit_the_remaining_volume_and_reassembles() -> None:
    ag = agents(2)
    a = ag[1]
    net = Net(ag)
    payload = bytes(range(256)) * 4  # 1024 bytes
    k, acts = send(a, 2, payload, lifetime_ms=600_000)
    net.pump(1, acts)
    c = Contact(1, 2, 10, 11, 600)  # 600 bytes of volume
    net.at(10 * S).start(c)
    assert a.counters["fragmented"] == 1
    sent = [decode_bundle_untrusted(t.data) for _, t in net.transmitted]
    assert len(sent) == 1
    assert sent[0].is_fragment
    assert len(net.transmitted[0][1].data) <= 600
    assert net.delivered == []  # only part of it arrived
    net.at(11 * S).end(c)
    net.at(20 * S).start(link(1, 2))
    assert [(d.bundle_key, d.payload) for _, d in net.delivered] == [(k, payload)]
    assert ag[2].counters["reassembled"] == 1
    assert len(a.store) == 0
    assert len(ag[2].store) == 0


def test_fragments_to_the_link_mtu_and_reassembles() -> None:
    ag = agents(2, config=AgentConfig(max_bundle_bytes=300))
    net = Net(ag)
    payload = bytes(i % 251 for i in range(2000))
    k, acts = send(ag[1], 2, payload, lifetime_ms=600_000)
    net.pump(1, acts)
    net.at(2 * S).start(link(1, 2))
    assert len(net.transmitted) >= 7
    assert all(len(t.data) <= 300 for _, t in net.transmitted)
    assert [(d.bundle_key, d.payload) for _, d in net.delivered] == [(k, payload)]


def test_must_not_fragment_is_sent_whole_over_the_mtu() -> None:
    ag = agents(2, config=AgentConfig(max_bundle_bytes=300))
    net = Net(ag)
    k, acts = send(
        ag[1], 2, b"z" * 1000, lifetime_ms=600_000, flags=BundleFlags.MUST_NOT_FRAGMENT
    )
    net.pump(1, acts)
    net.at(2 * S).start(link(1, 2))
    assert len(net.transmitted) == 1
    assert not decode_bundle_untrusted(net.transmitted[0][1].data).is_fragment
    assert [d.bundle_key for _, d in net.delivered] == [k]


def test_previous_hop_is_excluded_from_routing() -> None:
    # Node 2 got the bundle from 1. The plan's only way on from 2 is back
    # to 1 (then 1 -> 3): 2 must not bounce it back, it holds it instead.
    c21 = Contact(2, 1, 20, 30, 1000)
    plan = ContactPlan([c21, Contact(1, 3, 40, 50, 1000)])
    b = Agent(node=2, store=MemoryStore(), plan=plan)
    data = encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:3.1",
            payload=b"x",
            creation_ms=S,
            lifetime_ms=3_600_000,
        )
    )
    acts = b.on_receive(cla="t", neighbor=1, data=data, now=2 * S, cl_token=1)
    assert of(acts, Transmit) == []
    assert of(b.on_contact_start(c21, 20 * S), Transmit) == []
    # a bundle that did not come from 1 does take that route
    data2 = encode_bundle(
        make_bundle(
            source="ipn:7.1",
            destination="ipn:3.1",
            payload=b"y",
            creation_ms=S,
            lifetime_ms=3_600_000,
        )
    )
    acts = b.on_receive(cla="t", neighbor=7, data=data2, now=21 * S, cl_token=2)
    assert [t.neighbor for t in of(acts, Transmit)] == [1]


def test_plan_change_reroutes_held_bundles() -> None:
    plan = ContactPlan([Contact(1, 2, 0, 100, 1000)])
    ag = agents(3, plan)
    a = ag[1]
    net = Net(ag)
    k, acts = send(a, 3, b"x", lifetime_ms=3_600_000)
    net.pump(1, acts)
    c12 = Contact(1, 2, 0, 100, 1000)
    net.at(2 * S).start(c12)
    assert net.transmitted == []  # no route to 3 yet
    plan.add_contact(Contact(2, 3, 0, 100, 1000))
    net.at(3 * S).tick()
    assert [t.neighbor for _, t in net.transmitted] == [2]
    net.at(4 * S).start(Contact(2, 3, 0, 100, 1000))
    assert [d.bundle_key for _, d in net.delivered] == [k]


def test_next_deadline_and_schedule_follow_the_earliest_expiry() -> None:
    a = Agent(node=1, store=MemoryStore())
    assert a.next_deadline() is None
    _, acts = send(a, 2, b"", lifetime_ms=5_000)
    assert of(acts, Schedule) == [Schedule(6 * S)]
    _, acts = send(a, 2, b"", lifetime_ms=1_000)
    assert of(acts, Schedule) == [Schedule(2 * S)]
    _, acts = send(a, 2, b"", lifetime_ms=9_000)
    assert of(acts, Schedule) == []  # nothing earlier
    acts = a.on_tick(2 * S)
    assert len(events(acts, "expired")) == 1
    assert a.next_deadline() == 6 * S


def test_memory_follows_stored_bundles_not_bundles_handled() -> None:
    ag = agents(2)
    net = Net(ag)
    net.at(S).start(link(1, 2))
    for _ in range(5_000):
        net.pump(
            1,
            send(ag[1], 2, b"m", lifetime_ms=86_400_000)[1],
        )
    assert len(net.delivered) == 5_000
    assert ag[1].stored == 0
    # lazily deleted entries were compacted
    assert len(ag[1]._expiry) <= timers.EXPIRY_SLACK + 2


def test_mtu_too_small_to_fragment_usefully_sends_whole() -> None:
    ag = agents(2, config=AgentConfig(max_bundle_bytes=64))
    net = Net(ag)
    k, acts = send(ag[1], 2, b"q" * 500, lifetime_ms=600_000)
    net.pump(1, acts)
    net.at(2 * S).start(link(1, 2))
    assert len(net.transmitted) == 1  # not hundreds of 1-byte fragments
    assert [d.bundle_key for _, d in net.delivered] == [k]


def test_no_sliver_fragments_when_little_volume_is_left() -> None:
    ag = agents(2)
    a = ag[1]
    send(a, 2, b"w" * 1000, lifetime_ms=600_000)
    # ~140 bytes of volume: less than headers + a 64-byte piece
    acts = a.on_contact_start(Contact(1, 2, 10, 11, 140), 10 * S)
    assert of(acts, Transmit) == []
    assert a.counters["fragmented"] == 0


def test_unrouted_bundles_are_retried_when_booked_volume_is_given_back() -> None:
    # One contact 1 -> 2 with room for two ~1 KB bundles, then 2 -> 3. Three
    # bundles for 3: the third finds no route until the first (short-lived)
    # expires and gives its booked volume back.
    c12 = Contact(1, 2, 10, 11, 2100)
    plan = ContactPlan([c12, Contact(2, 3, 20, 30, 10_000)])
    a = Agent(
        node=1,
        store=MemoryStore(),
        plan=plan,
        config=AgentConfig(reroute_interval_ms=2_000),
    )
    short, _ = send(a, 3, b"a" * 900, lifetime_ms=5_000)
    k2, _ = send(a, 3, b"b" * 900, lifetime_ms=3_600_000)
    k3, _ = send(a, 3, b"c" * 900, lifetime_ms=3_600_000)
    assert a.next_deadline() == 3 * S  # first retry of the unrouted one
    t = S
    while (nxt := a.next_deadline()) is not None and nxt < 10 * S:
        t = nxt
        a.on_tick(t)
    assert not a.holds(short)
    sent = of(a.on_contact_start(c12, 10 * S), Transmit)
    assert sorted(decode_bundle_untrusted(tx.data).bundle_key for tx in sent) == sorted(
        [k2, k3]
    )


def test_an_anonymous_bundle_is_never_fragmented() -> None:
    # A dtn:none source gives no unique bundle id (RFC 9171 5.8), so its
    # fragments could never be reassembled: the relay sends it whole.
    ag = agents(3, config=AgentConfig(max_bundle_bytes=300))
    net = Net(ag)
    anon = make_bundle(
        source="dtn:none",
        destination="ipn:3.1",
        payload=b"a" * 1000,
        creation_ms=0,
        lifetime_ms=600_000,
    )
    net.pump(
        2, ag[2].on_receive(cla="udp", neighbor=1, data=encode_bundle(anon), now=S)
    )
    net.at(2 * S).start(link(2, 3))
    sent = [decode_bundle_untrusted(t.data) for _, t in net.transmitted]
    assert len(sent) == 1
    assert not sent[0].is_fragment
    assert [d.payload for _, d in net.delivered] == [b"a" * 1000]


def test_window_bytes_holds_back_large_bundles_but_not_small_ones() -> None:
    # 64 transmissions may be in flight but only 10 KB of them: a new one
    # starts only while fewer than 10,000 bytes are in flight, so one bundle
    # larger than that still goes (alone), and completions let the rest go.
    ag = agents(2, config=AgentConfig(window=64, window_bytes=10_000))
    a = ag[1]
    keys = [send(a, 2, b"s" * 100, lifetime_ms=60_000)[0] for _ in range(20)]
    keys += [send(a, 2, b"L" * 4_000, lifetime_ms=60_000)[0] for _ in range(5)]
    keys.append(send(a, 2, b"H" * 30_000, lifetime_ms=60_000)[0])
    inflight: dict[int, int] = {}
    sent = 0

    def take(acts: list[Action]) -> None:
        nonlocal sent
        for t in of(acts, Transmit):
            assert sum(inflight.values()) < 10_000  # room when it started
            inflight[t.tx_id] = len(t.data)
            sent += 1

    take(a.on_contact_start(link(1, 2), 2 * S))
    assert 21 <= sent < 26  # every small one, not every large one
    assert sum(inflight.values()) >= 10_000
    while inflight:
        tx = min(inflight)
        del inflight[tx]
        take(a.on_transmit_done(tx, True, 3 * S))
    assert sent == 26
    assert not any(a.holds(k) for k in keys)


def test_window_bytes_must_be_positive() -> None:
    with pytest.raises(InvalidArgument):
        AgentConfig(window_bytes=0)


def test_a_large_bundle_goes_out_in_parts_with_its_payload_not_copied() -> None:
    # The payload block's data is handed to the CL as the decoded bundle's
    # own object (the hot copy kept at store time), between the re-encoded
    # head (primary block, the updated hop blocks) and its CRC; joined, the
    # parts are the forwarded bundle, and the next hop takes them.
    cfg = AgentConfig(keep_decoded=8)
    ag = agents(2, config=cfg)
    ag[1].on_contact_start(Contact(1, 2, 0, float("inf"), 0), S)
    payload = bytes(range(256)) * 400
    key, acts = send(ag[1], 2, payload, lifetime_ms=3_600_000)
    (tx,) = of(acts, Transmit)
    assert len(tx.parts) == 3
    assert tx.parts[1] is ag[1]._hot[key][0].payload
    assert tx.size == len(tx.data) == sum(len(p) for p in tx.parts)
    # Stored as its parts joined (one writev, no join in Python), and its
    # CRC taken from those parts, not computed again.
    assert ag[1].store.get(key) == encode_bundle(ag[1]._hot[key][0])
    assert ag[1]._hot[key][3] is not None
    assert tx.parts[2] == ag[1]._hot[key][3] + b"\xff"
    sent = decode_bundle_untrusted(tx.data)
    assert sent.payload == payload
    assert sent.previous_node is not None
    assert str(sent.previous_node) == "ipn:1.0"
    got = ag[2].on_receive(cla="mtcp", neighbor=1, data=tx.data, now=S)
    assert [d.payload for d in of(got, Deliver)] == [payload]


def test_transmit_joins_its_parts() -> None:
    assert Transmit(2, (b"ab", b"", b"cd"), 1).data == b"abcd"
    assert Transmit(2, (b"ab", b"", b"cd"), 1).size == 4
    one = b"whole"
    assert Transmit(2, (one,), 1).data is one  # not copied


def test_a_relay_recomputes_a_payload_crc_sent_over_a_non_canonical_head() -> None:
    # A bundle whose payload length came in a longer CBOR form: its CRC
    # covers that head, so the relay (which writes the shortest form) must
    # compute the CRC itself; the next hop checks it.
    ag = agents(3, config=AgentConfig(keep_decoded=8))
    ag[2].on_contact_start(Contact(2, 3, 0, float("inf"), 0), S)
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:3.1",
        payload=bytes(range(250)) * 256,
        creation_ms=S,
        lifetime_ms=3_600_000,
        hop_limit=9,
    )
    acts = ag[2].on_receive(cla="mtcp", neighbor=1, data=_non_canonical(b), now=S)
    (tx,) = of(acts, Transmit)
    assert ag[2]._hot[b.bundle_key][3] is None
    sent = decode_bundle_untrusted(tx.data)  # every CRC checked
    assert sent.payload == b.payload
    assert sent.hop_count is not None
    assert sent.hop_count.count == 1


def _crc_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes the block encoder's CRC-32C runs over from now on."""
    seen: list[int] = []
    real = canonical.crc32c_raw

    def counted(data: Any, *args: Any) -> int:
        seen.append(len(data))
        return real(data, *args)

    monkeypatch.setattr(canonical, "crc32c_raw", counted)
    return seen


@pytest.mark.parametrize("canonical_head", [True, False])
def test_a_bundle_read_back_to_be_forwarded_takes_its_payload_crc_from_the_store(
    monkeypatch: pytest.MonkeyPatch, canonical_head: bool
) -> None:
    # Not kept decoded (keep_decoded=0: a queue longer than the cache), a
    # large bundle is read back and decoded to be forwarded -- the decoder
    # checked its payload CRC over the stored bytes, so the encoder takes
    # that field rather than computing it over the payload again. Over a
    # head its sender wrote in a longer form the CRC covers that head:
    # computed, and right (the next hop checks it).
    ag = agents(3)
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:3.1",
        payload=bytes(range(250)) * 256,
        creation_ms=S,
        lifetime_ms=3_600_000,
        hop_limit=9,
    )
    data = encode_bundle(b) if canonical_head else _non_canonical(b)
    assert not of(ag[2].on_receive(cla="mtcp", neighbor=1, data=data, now=S), Transmit)
    seen = _crc_bytes(monkeypatch)
    (tx,) = of(ag[2].on_contact_start(Contact(2, 3, 0, float("inf"), 0), S), Transmit)
    assert (sum(seen) >= len(b.payload)) is not canonical_head
    sent = decode_bundle_untrusted(tx.data)  # every CRC checked
    assert sent.payload == b.payload
