"""The log service on small clusters: election, durability, partitions,
snapshots, configuration changes, client requests and bad input."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from dcis.consensus.log.api import EntryId, Level, Outcome, Put
from dcis.consensus.log.cbor import dumps
from dcis.consensus.log.roles import Role
from dcis.consensus.log.service import SERVICE_NUMBER, LogError, LogParams, LogService
from dcis.consensus.log.wire import (
    Append,
    ClientKind,
    ClientReply,
    ClientRequest,
    Entry,
    Gossip,
    Hlc,
    VoteRequest,
    decode_message_untrusted,
    encode_message,
)
from dcis.consensus.membership.view import MemberInfo, MemberState
from dcis.consensus.testing import Cluster, MemoryState
from dcis.dtn.node.service import Inbound, Send
from dcis.dtn.routing.plan import ContactPlan
from tests.sim.log_run import StaticView


class MutableView:
    """A membership view a test edits."""

    def __init__(self, nodes: list[int]) -> None:
        self.states = dict.fromkeys(nodes, MemberState.ALIVE)

    def members(self) -> Mapping[int, MemberInfo]:
        return {
            n: MemberInfo(node=n, state=s, incarnation=1)
            for n, s in self.states.items()
        }

    def live(self) -> frozenset[int]:
        return frozenset(n for n, s in self.states.items() if s != MemberState.DEAD)


def cluster(
    nodes: list[int], params: LogParams | None = None, seed: int = 1
) -> Cluster:
    view = StaticView(nodes)
    return Cluster(nodes, lambda n, inc: [LogService(view, params)], seed=seed)


def svc(c: Cluster, node: int) -> LogService:
    s = c.service(node, SERVICE_NUMBER)
    assert isinstance(s, LogService)
    return s


def submit(c: Cluster, node: int, op: Put) -> EntryId:
    eid = c.call(node, lambda s: s.submit(op, c.now_ms), SERVICE_NUMBER)  # type: ignore[attr-defined]
    assert isinstance(eid, EntryId)
    return eid


def leaders(c: Cluster) -> list[int]:
    return [n for n, _ in c.running() if svc(c, n).role == Role.LEADER]


def test_single_node_commits_alone() -> None:
    c = cluster([1])
    c.advance(5_000)
    assert leaders(c) == [1]
    eid = submit(c, 1, Put("k", b"v"))
    c.advance(c.now_ms + 10)
    assert svc(c, 1).outcome(eid) == Outcome.COMMITTED
    assert svc(c, 1).get("k") == b"v"


def test_three_nodes_elect_one_leader_and_replicate() -> None:
    c = cluster([1, 2, 3])
    c.advance(8_000)
    assert len(leaders(c)) == 1
    eid = submit(c, 2, Put("k", b"v"))
    c.advance(c.now_ms + 3_000)
    for n in (1, 2, 3):
        assert svc(c, n).outcome(eid) == Outcome.COMMITTED
        assert svc(c, n).get("k") == b"v"
    assert len({svc(c, n).state_hash() for n in (1, 2, 3)}) == 1


def test_restart_keeps_term_log_and_tentative_entries() -> None:
    c = cluster([1, 2, 3])
    c.advance(8_000)
    eid = submit(c, 1, Put("k", b"v"))
    c.advance(c.now_ms + 3_000)
    c.partition([frozenset({1}), frozenset({2, 3})])
    pending = submit(c, 1, Put("j", b"w"))
    term = svc(c, 1).term
    c.crash(1)
    c.restart(1)
    s = svc(c, 1)
    assert s.term == term
    assert s.outcome(eid) == Outcome.COMMITTED
    assert s.get("k") == b"v"
    assert s.outcome(pending) is None
    assert s.get("j", Level.TENTATIVE) == b"w"
    assert s.get("j") is None
    assert s.own_seq == 2
    c.heal()
    c.advance(c.now_ms + 10_000)
    assert svc(c, 3).outcome(pending) == Outcome.COMMITTED


def test_minority_keeps_writes_tentative_until_heal() -> None:
    c = cluster([1, 2, 3, 4, 5])
    c.advance(8_000)
    c.partition([frozenset({1, 2}), frozenset({3, 4, 5})])
    c.advance(c.now_ms + 10_000)
    small = submit(c, 1, Put("k", b"small"))
    big = submit(c, 4, Put("k", b"big"))
    c.advance(c.now_ms + 10_000)
    assert svc(c, 1).outcome(small) is None
    assert (
        svc(c, 2).get("k", Level.TENTATIVE) == b"small"
    )  # shared within the partition
    assert svc(c, 2).get("k") is None
    assert svc(c, 3).outcome(big) == Outcome.COMMITTED
    terms_before = svc(c, 1).term
    c.advance(c.now_ms + 30_000)
    assert svc(c, 1).term == terms_before  # pre-vote: no term inflation in a minority
    c.heal()
    c.advance(c.now_ms + 15_000)
    for n in (1, 2, 3, 4, 5):
        assert svc(c, n).outcome(small) == Outcome.COMMITTED
        assert svc(c, n).get("k") == b"small"  # committed after "big", on heal
        assert svc(c, n).tentative_order() == []
    assert len({svc(c, n).state_hash() for n in (1, 2, 3, 4, 5)}) == 1


def test_snapshot_compacts_and_brings_a_lagging_node_up() -> None:
    c = cluster([1, 2, 3], LogParams(snapshot_every=4))
    c.advance(8_000)
    c.crash(3)
    for i in range(20):
        submit(c, 1, Put(f"k{i}", b"v"))
        c.advance(c.now_ms + 200)
    c.advance(c.now_ms + 3_000)
    assert svc(c, 1).snap_index > 10
    assert not [
        k for k in c.states[1].keys("log/") if int(k[4:]) <= svc(c, 1).snap_index
    ]
    c.restart(3)
    c.advance(c.now_ms + 10_000)
    assert svc(c, 3).get("k19") == b"v"
    assert svc(c, 3).state_hash() == svc(c, 1).state_hash()
    c.crash(3)
    c.restart(3)  # from its own snapshot
    assert svc(c, 3).get("k0") == b"v"


def test_configuration_follows_membership_one_server_at_a_time() -> None:
    view = MutableView([1, 2, 3])
    c = Cluster([1, 2, 3, 4], lambda n, inc: [LogService(view)], seed=3)
    c.advance(8_000)
    leader = leaders(c)[0]
    assert svc(c, leader).voters() == (1, 2, 3)
    view.states[4] = MemberState.ALIVE
    submit(c, leader, Put("k", b"v"))
    c.advance(c.now_ms + 8_000)
    assert svc(c, leader).voters() == (1, 2, 3, 4)
    assert svc(c, 4).get("k") == b"v"
    victim = next(n for n in (1, 2, 3) if n != leader)
    view.states[victim] = MemberState.DEAD
    c.advance(c.now_ms + 8_000)
    assert victim not in svc(c, leader).voters()
    assert len(svc(c, leader).voters()) == 3


def test_client_requests_over_the_app_api() -> None:
    c = cluster([1])
    c.advance(5_000)
    s = svc(c, 1)

    def ask(req: ClientRequest) -> ClientReply:
        inbound = Inbound("ipn:1.17", "ipn:1.4242", encode_message(req), 0, 0, "x")
        (send,) = s.on_bundle(inbound, c.now_ms)
        assert send.destination == "ipn:1.4242"
        reply = decode_message_untrusted(send.payload)
        assert isinstance(reply, ClientReply)
        return reply

    r = ask(ClientRequest(req_id=7, kind=ClientKind.APPEND, op=Put("k", b"v")))
    assert r.ok
    assert r.entry == EntryId(1, 1)
    assert (
        ask(
            ClientRequest(req_id=8, kind=ClientKind.GET, key="k", level="tentative")
        ).value
        == b"v"
    )
    c.advance(c.now_ms + 100)
    assert ask(ClientRequest(req_id=9, kind=ClientKind.GET, key="k")).value == b"v"
    status = dict(ask(ClientRequest(req_id=10, kind=ClientKind.STATUS)).status)
    assert status["commit_index"] == 2
    assert status["members"] == [1]
    assert status["tentative_count"] == 0
    assert ask(ClientRequest(req_id=11, kind=ClientKind.APPEND)).ok is False


def test_bad_bundles_are_dropped_not_fatal() -> None:
    c = cluster([1, 2, 3])
    c.advance(8_000)
    s = svc(c, 2)
    for src, payload in [
        ("ipn:1.17", b""),
        ("ipn:1.17", b"\xff\xff"),
        ("ipn:1.17", dumps([5, 1])),
        ("dtn://x/", encode_message(Gossip(vv=(), entries=()))),
        ("ipn:9.17", encode_message(Gossip(vv=(), entries=()))),  # not a member
    ]:
        assert s.on_bundle(Inbound("ipn:2.17", src, payload, 0, 0, "k"), c.now_ms) == []
    assert s.dropped == 5
    c.advance(c.now_ms + 3_000)
    assert svc(c, 2).outcome(submit(c, 2, Put("k", b"v"))) is None
    c.advance(c.now_ms + 3_000)
    assert svc(c, 1).get("k") == b"v"


def test_bounds_on_tentative_entries() -> None:
    c = cluster([1, 2], LogParams(max_tentative=2))
    c.partition([frozenset({1}), frozenset({2})])
    submit(c, 1, Put("a", b"1"))
    submit(c, 1, Put("b", b"1"))
    with pytest.raises(LogError):
        svc(c, 1).submit(Put("c", b"1"), c.now_ms)
    with pytest.raises(LogError):
        svc(c, 1).submit(Put("x" * 2000, b"1"), c.now_ms)
    s2 = svc(c, 2)
    flood = Gossip(
        vv=(),
        entries=tuple(
            Entry(origin=1, seq=i, hlc=Hlc(i), op=Put("z", b"")) for i in range(1, 6)
        ),
    )
    s2.on_bundle(
        Inbound("ipn:2.17", "ipn:1.17", encode_message(flood), 0, 0, "k"), c.now_ms
    )
    assert len(s2.tentative) == 2
    assert s2.dropped == 3


class PlanCtx:
    """A context whose plan says the leader is out of contact until ``next_ms``."""

    def __init__(self, next_ms: int | None) -> None:
        self.node = 1
        self.incarnation = 1
        self.rng = random.Random(0)
        self.plan = ContactPlan()
        self.state = MemoryState()
        self.credentials = None
        self.next_ms = next_ms

    def earliest_arrival(self, node: int, *, at_ms: int, size: int = 0) -> int | None:
        if self.next_ms is None:
            return None
        return max(at_ms + 50, self.next_ms)


@pytest.mark.parametrize(("next_contact", "elects"), [(200_000, False), (None, True)])
def test_a_silence_the_plan_predicts_is_waited_out(
    next_contact: int | None, elects: bool
) -> None:
    s = LogService(StaticView([1, 2, 3]))
    ctx = PlanCtx(None)
    s.start(ctx, 0)
    beat = Append(term=1, prev_index=0, prev_term=0, records=(), commit=0)
    s.on_bundle(Inbound("ipn:1.17", "ipn:2.17", encode_message(beat), 0, 0, "k"), 1_000)
    assert s.leader == 2
    ctx.next_ms = next_contact
    sends = []
    now = 1_000
    while now < 20_000:  # every timer due in the next 19 s, leader silent
        sends += s.on_tick(now)
        now = max(now + 1, s.next_deadline() or now + 1)
    votes = [
        m
        for m in (decode_message_untrusted(x.payload) for x in sends)
        if isinstance(m, VoteRequest)
    ]
    assert bool(votes) == elects
    if elects:
        assert all(v.pre and v.term == 2 for v in votes)
        assert s.term == 1  # a pre-vote does not bump the term
    else:
        assert s.role == Role.FOLLOWER
        assert s.leader == 2


def test_damaged_state_is_a_typed_error_and_a_damaged_tentative_entry_is_dropped() -> (
    None
):
    from dcis.consensus.log.service import LogCorrupt

    ctx = PlanCtx(None)
    ctx.state.put("tent/1/1", b"\xff")
    s = LogService(StaticView([1, 2, 3]))
    s.start(ctx, 0)
    assert s.tentative == {}
    assert ctx.state.get("tent/1/1") is None
    ctx.state.put("log/000000000001", b"\x82\x01")
    with pytest.raises(LogCorrupt):
        LogService(StaticView([1, 2, 3])).start(ctx, 0)


class SelfOnlyView:
    """Membership that has heard of no one yet (the first moments of a node)."""

    def __init__(self, node: int) -> None:
        self.node = node

    def members(self) -> Mapping[int, MemberInfo]:
        return {
            self.node: MemberInfo(
                node=self.node, state=MemberState.ALIVE, incarnation=1
            )
        }

    def live(self) -> frozenset[int]:
        return frozenset({self.node})


def test_boot_from_the_plan_when_membership_knows_no_one_yet() -> None:
    from dcis.consensus.testing import mesh_plan

    nodes = [1, 2, 3]
    c = Cluster(
        nodes,
        lambda n, inc: [LogService(SelfOnlyView(n))],
        seed=5,
        plan=mesh_plan(nodes, duration_s=1000),
    )
    c.advance(10_000)
    assert len(leaders(c)) == 1  # not three one-node clusters
    for n in nodes:
        assert svc(c, n).voters() == (
            1,
            2,
            3,
        )  # voters membership has not heard of stay
    eid = submit(c, 2, Put("k", b"v"))
    c.advance(c.now_ms + 5_000)
    assert all(svc(c, n).outcome(eid) == Outcome.COMMITTED for n in nodes)


def test_the_best_connected_node_tends_to_lead() -> None:
    from dcis.dtn.routing.contact import Contact, Range

    # 1 - 3 - 2: node 3 reaches both others, 1 and 2 only reach 3.
    pairs = [(1, 3), (3, 1), (2, 3), (3, 2)]
    plan = ContactPlan(
        [Contact(a, b, 0.0, 1000.0, 1e6) for a, b in pairs],
        [Range(a, b, 0.0, 1000.0, 0.01) for a, b in pairs],
    )
    first_leaders = []
    for seed in range(12):
        c = Cluster(
            [1, 2, 3],
            lambda n, inc: [LogService(StaticView([1, 2, 3]))],
            seed=seed,
            plan=plan,
        )
        while not leaders(c):
            c.advance(c.now_ms + 100)
        first_leaders.append(leaders(c)[0])
    # Its election timeout has no penalty for an unreachable voter.
    assert first_leaders.count(3) >= 10, first_leaders


def test_with_security_entries_are_signed_and_forgeries_dropped() -> None:
    from dataclasses import replace

    from dcis.crypto.certificate import encode_certificate
    from dcis.crypto.keys import NodeIdentity, OperatorKey
    from dcis.dtn.node.service import NodeCredentials
    from tests.unit.bpsec.helpers import certify

    op = OperatorKey.generate(entropy=b"o" * 32)
    idents = {n: NodeIdentity.generate(n, entropy=bytes([n]) * 32) for n in (1, 2, 3)}
    far = 2**62
    creds = {
        n: NodeCredentials(
            identity=i,
            certificate=certify(op, i, not_after_ms=far),
            operator_public=op.public_key,
        )
        for n, i in idents.items()
    }
    c = Cluster(
        [1, 2, 3],
        lambda n, inc: [LogService(StaticView([1, 2, 3]))],
        seed=6,
        credentials=creds,
    )
    c.advance(8_000)
    c.partition([frozenset({1, 2}), frozenset({3})])
    eid = submit(c, 1, Put("k", b"signed"))
    c.advance(c.now_ms + 3_000)
    s2 = svc(c, 2)
    assert s2.get("k", Level.TENTATIVE) == b"signed"  # verified under 1's certificate
    entry = s2.tentative.get(eid) or svc(c, 1).tentative[eid]
    assert entry.sig
    forged = replace(entry, seq=entry.seq + 1, op=Put("k", b"forged"))
    stranger = NodeIdentity.generate(9, entropy=b"s" * 32)
    self_signed = certify(
        OperatorKey.generate(entropy=b"x" * 32), stranger, not_after_ms=far
    )
    before = s2.dropped
    for msg in [
        Gossip(
            vv=(), entries=(forged,), certs=(encode_certificate(creds[1].certificate),)
        ),
        Gossip(
            vv=(),
            entries=(replace(forged, origin=9, seq=1),),
            certs=(encode_certificate(self_signed),),
        ),
    ]:
        s2.on_bundle(
            Inbound("ipn:2.17", "ipn:1.17", encode_message(msg), 0, 0, "k"), c.now_ms
        )
    assert s2.get("k", Level.TENTATIVE) == b"signed"
    assert (
        s2.dropped == before + 3
    )  # two entries, one certificate from another operator
    c.heal()
    c.advance(c.now_ms + 10_000)
    assert svc(c, 3).outcome(eid) == Outcome.COMMITTED


class LoopCtx:
    """A context for hand-driven services: every peer one ms away."""

    def __init__(self, node: int) -> None:
        self.node = node
        self.incarnation = 1
        self.rng = random.Random(node)
        self.plan = ContactPlan()
        self.state = MemoryState()
        self.credentials = None

    def earliest_arrival(self, node: int, *, at_ms: int, size: int = 0) -> int | None:
        return at_ms + 1


def test_pipeline_recovers_a_lost_append_and_heartbeats_leave_it_alone() -> None:
    nodes = [1, 2, 3]
    view = StaticView(nodes)
    params = LogParams(heartbeat_ms=100, election_ms=1_000)
    svcs = {n: LogService(view, params) for n in nodes}
    for n, s in svcs.items():
        s.start(LoopCtx(n), 0)

    def route(frm: int, sends: list, drop: int | None = None) -> list:  # type: ignore[type-arg]
        """Deliver ``sends`` (and what they cause) at once; return those to ``drop``."""
        held = []
        queue = [(frm, s) for s in sends]
        while queue:
            src, s = queue.pop(0)
            dest = int(s.destination[4:].split(".")[0])
            if dest == drop:
                held.append(s)
                continue
            inbound = Inbound(s.destination, f"ipn:{src}.17", s.payload, 0, 0, "k")
            queue += [(dest, r) for r in svcs[dest].on_bundle(inbound, now)]
        return held

    now = 0
    while not any(s.role == Role.LEADER for s in svcs.values()):
        now += 10
        for n, s in svcs.items():
            route(n, s.on_tick(now))
    leader = next(n for n, s in svcs.items() if s.role == Role.LEADER)
    lead = svcs[leader]
    lost = next(n for n in nodes if n != leader)

    def appends(sends: list, to: int) -> list[Append]:  # type: ignore[type-arg]
        msgs = [
            decode_message_untrusted(s.payload)
            for s in sends
            if s.destination == f"ipn:{to}.17"
        ]
        return [m for m in msgs if isinstance(m, Append)]

    # An Append to one follower is lost; the next one fails there and its
    # reply backs ``next`` up: caught up at once, no timer needed.
    lead.submit(Put("a", b"1"), now)
    assert any(a.records for a in appends(route(leader, lead.on_tick(now), lost), lost))
    lead.submit(Put("b", b"2"), now)
    route(leader, lead.on_tick(now))
    assert svcs[lost].last_index == lead.last_index
    assert lead.get("b") == b"2"

    # Appends in flight, acks flowing: a heartbeat goes at ``next`` and does
    # not resend the window.
    lead.submit(Put("c", b"3"), now)
    in_flight = route(leader, lead.on_tick(now), lost)
    assert any(a.records for a in appends(in_flight, lost))
    now += params.heartbeat_ms
    beat = route(leader, lead.on_tick(now), lost)
    assert appends(beat, lost)
    assert not any(a.records for a in appends(beat, lost))
    # Nothing acknowledged for a base election timeout: the window again.
    now += params.election_ms + params.heartbeat_ms
    again = route(leader, lead.on_tick(now), lost)
    assert any(a.records for a in appends(again, lost))
    route(leader, again)
    assert svcs[lost].last_index == lead.last_index


def test_a_stream_of_submits_waits_for_replies_past_max_inflight() -> None:
    """Single submits, each ticked, while a voter answers nothing: at most
    ``max_inflight`` appends go to it; its replies then carry the rest in
    batches, and everything commits."""
    nodes = [1, 2, 3]
    view = StaticView(nodes)
    params = LogParams(heartbeat_ms=100_000, election_ms=1_000, max_inflight=2)
    svcs = {n: LogService(view, params) for n in nodes}
    for n, s in svcs.items():
        s.start(LoopCtx(n), 0)
    now = 0

    def deliver(frm: int, s: Send) -> list[tuple[int, Send]]:
        dest = int(s.destination[4:].split(".")[0])
        inbound = Inbound(s.destination, f"ipn:{frm}.17", s.payload, 0, 0, "k")
        return [(dest, r) for r in svcs[dest].on_bundle(inbound, now)]

    def run(queue: list[tuple[int, Send]]) -> None:
        while queue:
            queue += deliver(*queue.pop(0))

    while not any(s.role == Role.LEADER for s in svcs.values()):
        now += 10
        for n, s in svcs.items():
            run([(n, x) for x in s.on_tick(now)])
    leader = next(n for n, s in svcs.items() if s.role == Role.LEADER)
    lead = svcs[leader]
    held: list[Send] = []  # appends to the followers, not yet delivered
    eids = []
    for i in range(20):
        eids.append(lead.submit(Put(f"k{i}", b"v"), now))
        held += lead.on_tick(now)
    for f in (n for n in nodes if n != leader):
        to_f = [s for s in held if s.destination == f"ipn:{f}.17"]
        appends = [decode_message_untrusted(s.payload) for s in to_f]
        assert 1 <= len([a for a in appends if isinstance(a, Append)]) <= 2
    run([(leader, s) for s in held])
    assert all(lead.outcome(e) == Outcome.COMMITTED for e in eids)
    assert all(s.last_index == lead.last_index for s in svcs.values())


def test_the_tentative_view_shows_an_entry_first_seen_committed() -> None:
    """A follower that read its tentative view, then learns an entry only
    through the leader's AppendEntries (gossip of it lost or late), must
    show the committed value at the tentative level too: the dfs reads
    manifests there, and a stale view hid a committed object from a reader
    (found by the 100 MB testbed test)."""
    from dcis.consensus.log.wire import Record, RecordKind

    c = cluster([1, 2, 3])
    c.advance(8_000)
    (lead,) = leaders(c)
    f = next(n for n in (1, 2, 3) if n != lead)
    s = svc(c, f)
    assert s.get("k", Level.TENTATIVE) is None  # the view is computed now
    top = s.record_at(s.last_index)
    assert top is not None
    entry = Entry(
        origin=lead, seq=svc(c, lead).own_seq + 1, hlc=Hlc(c.now_ms), op=Put("k", b"v")
    )
    msg = Append(
        term=s.term,
        prev_index=s.last_index,
        prev_term=top.term,
        records=(Record(term=s.term, kind=RecordKind.ENTRY, entry=entry),),
        commit=s.last_index + 1,
    )
    s.on_bundle(
        Inbound(
            f"ipn:{f}.{SERVICE_NUMBER}",
            f"ipn:{lead}.{SERVICE_NUMBER}",
            encode_message(msg),
            0,
            0,
            "k",
        ),
        c.now_ms,
    )
    assert s.outcome(entry.id) == Outcome.COMMITTED
    assert s.get("k") == b"v"
    assert s.get("k", Level.TENTATIVE) == b"v"
    assert dict(s.scan("", Level.TENTATIVE)) == dict(s.scan(""))
