"""The membership service, driven directly through a fake ServiceContext."""

from __future__ import annotations

import math
import tracemalloc
from dataclasses import replace

import pytest

from dcis.consensus.membership.service import MembershipConfig, MembershipService
from dcis.consensus.membership.sim import DictState, credentials_for
from dcis.consensus.membership.view import MemberState, Resources
from dcis.consensus.membership.wire import Kind, Message, Status, encode_message
from dcis.dtn.bpv7.eid import parse_eid
from dcis.dtn.node.service import Inbound
from tests.unit.consensus.membership.helpers import CREDS, T0, decode, make, sign

A, S, U, D, L = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.UNREACHABLE,
    MemberState.DEAD,
    MemberState.LEFT,
)


def test_refuses_to_start_without_credentials() -> None:
    h = make()
    with pytest.raises(ValueError, match="credentials"):
        MembershipService().start(replace(h.ctx, credentials=None), T0)


def test_incarnation_is_persisted_and_grows_across_restarts() -> None:
    state = DictState()
    h = make(state=state)
    assert h.svc.incarnation == 1
    h2 = make(state=state, incarnation=1)
    assert h2.svc.incarnation == 2


def test_learns_a_member_and_its_resources() -> None:
    h = make()
    res = Resources(
        store_free_bytes=10,
        store_total_bytes=20,
        cpu_load=0.5,
        battery_pct=80.0,
        sunlit=True,
        temperature_c=12.5,
    )
    h.push(2, sign(2, 1, Status.ALIVE, resources=res))
    m = h.svc.members()[2]
    assert (m.state, m.incarnation, m.resources, m.last_heard_ms) == (A, 1, res, T0)
    assert h.svc.live() == {1, 2}


def test_forged_replayed_revoked_and_unknown_are_dropped_and_counted() -> None:
    h = make(revoked=frozenset({5}))
    good = sign(2, 3, Status.ALIVE)
    h.push(2, replace(good, incarnation=4))  # signature no longer matches
    assert h.svc.counters["dropped_forged"] == 1
    assert 2 not in h.svc.members()
    other_op = credentials_for([2], seed=99)
    h.push(2, sign(2, 4, Status.ALIVE, creds=other_op))  # another operator's cert
    assert h.svc.counters["dropped_forged"] == 2
    assert 2 not in h.svc.members()
    h.push(2, good)
    h.push(2, sign(2, 2, Status.ALIVE))  # older incarnation: a replay
    assert h.svc.counters["dropped_stale"] == 1
    assert h.svc.members()[2].incarnation == 3
    h.push(5, sign(5, 1, Status.ALIVE))
    h.push(2, sign(2, 3, Status.DEAD, signer=5))
    assert h.svc.counters["dropped_revoked"] == 2
    assert 5 not in h.svc.members()
    assert h.svc.state_of(2) == A
    h.push(2, sign(2, 3, Status.SUSPECT, signer=6))  # 6's certificate never seen
    assert h.svc.counters["dropped_unknown_signer"] == 1
    assert h.svc.state_of(2) == A


def test_a_suspicion_about_me_is_refuted_with_a_higher_incarnation() -> None:
    h = make()
    h.push(2, sign(2, 1, Status.ALIVE))
    h.push(2, sign(1, 1, Status.SUSPECT, signer=2))
    assert h.svc.incarnation == 2
    assert h.svc.counters["refutations"] == 1
    assert h.ctx.state.get("inc") == (2).to_bytes(8, "big")
    out = h.bundle(2, Message(kind=Kind.PING, seq=9))
    ups = decode(out[0]).updates
    assert any(
        u.subject == 1 and u.status == Status.ALIVE and u.incarnation == 2 for u in ups
    )
    assert h.svc.local_health == 1  # Lifeguard: refuting raises local health


def _members(h, *nodes: int) -> None:  # type: ignore[no-untyped-def]
    for n in nodes:
        h.push(n, sign(n, 1, Status.ALIVE))


def test_probe_cycle_to_dead_then_suspicion_timeout() -> None:
    cfg = MembershipConfig(
        seeds=(),
        period_ms=1000,
        probe_timeout_ms=200,
        indirect_k=2,
        push_pull_periods=1000,
        reconnect_periods=1000,
    )
    h = make(config=cfg)
    _members(h, 2, 3, 4)
    seen: list[tuple[int, Kind]] = []
    # Three probe rounds, then Lifeguard's longest suspicion: 6 x 4 periods.
    for _ in range(80):
        for s in h.advance(1000):
            seen.append((int(s.destination[4:].split(".")[0]), decode(s).kind))
    # 2 never answers; 3 and 4 neither: someone is suspected, then dead.
    kinds = {k for _, k in seen}
    assert Kind.PING in kinds
    assert Kind.PING_REQ in kinds
    assert any(t.new == S for t in h.svc.transitions)
    assert {h.svc.state_of(n) for n in (2, 3, 4)} == {D}
    assert h.svc.counters["refutations"] == 0


def test_an_ack_keeps_a_member_alive_and_lowers_local_health() -> None:
    cfg = MembershipConfig(seeds=(), push_pull_periods=1000)
    h = make(config=cfg)
    _members(h, 2)
    h.svc._lhm = 2  # as after two missed acks
    for _ in range(50):
        for s in h.advance(100):
            m = decode(s)
            if m.kind == Kind.PING:
                h.bundle(2, Message(kind=Kind.ACK, seq=m.seq))
    assert h.svc.state_of(2) == A
    assert h.svc.local_health == 0


def test_plan_aware_no_route_means_unreachable_never_suspect() -> None:
    far = {2}

    def arrival(src: int, dst: int, at: int, size: int) -> int | None:
        return None if dst in far else at + 10

    h = make(config=MembershipConfig(seeds=(), push_pull_periods=1000), arrival=arrival)
    _members(h, 2)
    sent = h.advance(120_000)
    assert h.svc.state_of(2) == U
    assert not any(s.destination == "ipn:2.16" for s in sent)
    assert all(t.new != S for t in h.svc.transitions)
    assert 2 in h.svc.live()
    far.clear()  # the plan opens a path: probed again, alive on the ack
    for _ in range(5000):
        for s in h.advance(20):
            m = decode(s)
            if m.kind == Kind.PING and s.destination == "ipn:2.16":
                h.bundle(2, Message(kind=Kind.ACK, seq=m.seq))
    assert h.svc.state_of(2) == A


def test_plain_swim_baseline_suspects_the_same_silence() -> None:
    h = make(
        config=MembershipConfig(seeds=(), plan_aware=False, push_pull_periods=1000),
        arrival=lambda *a: None,
    )
    _members(h, 2)
    h.advance(120_000)
    assert h.svc.state_of(2) == D


def test_probe_timeout_comes_from_the_plan_round_trip() -> None:
    def arrival(src: int, dst: int, at: int, size: int) -> int | None:
        return at + 8_000  # 8 s each way

    cfg = MembershipConfig(seeds=(), probe_timeout_ms=500, push_pull_periods=1000)
    h = make(config=cfg, arrival=arrival)
    _members(h, 2)
    out = h.advance(1000)
    assert [decode(s).kind for s in out] == [Kind.PING]
    assert out[0].lifetime_ms == 16_500
    # No ping-req before the 16 s round trip + 0.5 s is over.
    assert not any(decode(s).kind == Kind.PING_REQ for s in h.advance(15_000))


def test_dead_is_final_for_an_incarnation_but_a_restart_rejoins() -> None:
    h = make()
    _members(h, 2, 3)
    h.push(3, sign(2, 1, Status.DEAD, signer=3))
    assert h.svc.state_of(2) == D
    h.push(3, sign(2, 1, Status.ALIVE))  # stale full-state sync
    h.push(3, sign(2, 1, Status.SUSPECT, signer=3))
    assert h.svc.state_of(2) == D
    h.bundle(2, Message(kind=Kind.ACK, seq=1))
    assert h.svc.state_of(2) == D
    h.push(2, sign(2, 2, Status.ALIVE))
    assert h.svc.state_of(2) == A
    assert h.svc.members()[2].incarnation == 2


def test_tombstones_expire_and_the_floor_blocks_revival() -> None:
    h = make(config=MembershipConfig(seeds=(), tombstone_ms=60_000))
    _members(h, 2, 3)
    h.push(2, sign(2, 1, Status.LEFT))
    assert h.svc.state_of(2) == L
    h.advance(61_000)
    assert h.svc.state_of(2) is None
    assert 2 not in h.svc.members()
    h.push(3, sign(2, 1, Status.ALIVE))  # a stale full-state sync
    assert h.svc.state_of(2) is None
    assert h.svc.counters["dropped_stale"] >= 1
    h.push(2, sign(2, 2, Status.ALIVE))
    assert h.svc.state_of(2) == A


def test_leave_tells_others() -> None:
    h = make()
    _members(h, 2)
    out = h.svc.leave(h.now)
    assert out
    assert all(decode(s).kind == Kind.PUSH for s in out)
    left = [u for s in out for u in decode(s).updates if u.subject == 1]
    assert left[0].status == Status.LEFT
    other = make(node=2)
    other.push(1, sign(1, 1, Status.ALIVE))
    other.push(1, *decode(out[0]).updates)
    assert other.svc.state_of(1) == L
    assert h.svc.state_of(1) == L
    assert 1 not in h.svc.live()


def test_query_is_answered_only_for_the_same_node() -> None:
    h = make()
    _members(h, 2)
    out = h.bundle(1, Message(kind=Kind.QUERY, seq=4), service=4242)
    assert len(out) == 1
    assert out[0].destination == "ipn:1.4242"
    ans = decode(out[0])
    assert ans.kind == Kind.ANSWER
    assert ans.seq == 4
    assert [(r.node, r.state) for r in ans.members] == [(1, "alive"), (2, "alive")]
    assert h.bundle(3, Message(kind=Kind.QUERY, seq=5), service=4242) == []
    assert h.svc.counters["dropped_query"] == 1


def test_bad_payloads_are_counted_not_raised() -> None:
    h = make()
    from dcis.dtn.node.service import Inbound

    for src, payload in (("ipn:2.16", b"\xff"), ("dtn:none", b""), ("ipn:2.16", b"")):
        assert h.svc.on_bundle(Inbound("ipn:1.16", src, payload, 0, 0, "k"), T0) == []
    assert h.svc.counters["dropped_malformed"] == 3


def test_piggyback_retransmit_limit_is_lambda_log_n() -> None:
    cfg = MembershipConfig(seeds=(), lambda_=2, max_piggyback=64)
    h = make(config=cfg)
    _members(h, 2, 3, 4)
    limit = 2 * math.ceil(math.log2(4 + 1))
    counts = 0
    for i in range(3 * limit):
        msg = decode(h.bundle(2, Message(kind=Kind.PING, seq=i))[0])
        counts += sum(1 for u in msg.updates if u.subject == 3)
    assert counts == limit


def test_relay_forwards_an_ack_or_sends_a_nack() -> None:
    h = make(config=MembershipConfig(seeds=(), push_pull_periods=1000))
    _members(h, 2, 3)
    out = h.bundle(2, Message(kind=Kind.PING_REQ, seq=77, target=3))
    (ping,) = out
    assert ping.destination == "ipn:3.16"
    fwd = h.bundle(3, Message(kind=Kind.ACK, seq=decode(ping).seq))
    assert [(s.destination, decode(s).kind, decode(s).seq) for s in fwd] == [
        ("ipn:2.16", Kind.ACK, 77)
    ]
    h.bundle(2, Message(kind=Kind.PING_REQ, seq=78, target=3))
    late = [s for s in h.advance(5_000) if decode(s).kind == Kind.NACK]
    assert [(s.destination, decode(s).seq) for s in late] == [("ipn:2.16", 78)]


def test_resources_readvertised_at_most_once_per_interval() -> None:
    h = make(config=MembershipConfig(seeds=(), resources_min_interval_ms=10_000))
    inc0 = h.svc.incarnation
    h.svc.set_resources(Resources(cpu_load=0.1), h.now)
    h.svc.set_resources(Resources(cpu_load=0.2), h.now + 1)
    h.svc.set_resources(Resources(cpu_load=0.3), h.now + 2)
    assert h.svc.incarnation == inc0 + 1
    h.advance(10_500)
    assert h.svc.incarnation == inc0 + 2
    assert h.svc.members()[1].resources.cpu_load == 0.3


def test_member_count_is_bounded() -> None:
    creds = credentials_for(range(1, 8), seed=42)
    assert creds[1].certificate == CREDS[1].certificate
    h = make(config=MembershipConfig(seeds=(), max_members=3))
    _members(h, 2, 3, 4, 5, 6)
    assert len(h.svc.members()) == 4  # 3 others + itself
    assert h.svc.counters["dropped_full"] == 2


def _from(source: str) -> Inbound:
    return Inbound(
        endpoint="ipn:1.16",
        source=source,
        payload=encode_message(Message(kind=Kind.PING)),
        creation_ms=0,
        sequence=0,
        bundle_key="k",
    )


def test_a_source_with_a_non_ascii_digit_is_dropped_not_raised() -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises: a valid ``dtn``
    source ending so is a counted drop, not an exception."""
    h = make()
    assert str(parse_eid("dtn://x.\u00b2")) == "dtn://x.\u00b2"
    assert h.svc.on_bundle(_from("dtn://x.\u00b2"), h.now) == []
    assert h.svc.counters["dropped_malformed"] == 1


def test_parsed_sources_kept_are_bounded_in_length() -> None:
    """A bundle's source is a peer's string of any length: the ids the
    service keeps parsed must not hold peer-sized strings."""
    h = make()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2048):
            h.svc.on_bundle(_from(f"dtn://n{i:05d}/" + "a" * 4000), h.now)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 << 20  # unbounded: ~8 MiB
