"""Stateful test of one membership service against a model of the rules it
promises (RuleBasedStateMachine): signed updates of any precedence, probes
answered or not, routes opening and closing, time passing."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dcis.consensus.membership.service import MembershipConfig
from dcis.consensus.membership.table import TRANSITIONS
from dcis.consensus.membership.view import MemberState
from dcis.consensus.membership.wire import Kind, Message, Status
from dcis.dtn.node.service import Send
from tests.unit.consensus.membership.helpers import decode, make, sign

PEERS = (2, 3, 4)
GONE = (MemberState.DEAD, MemberState.LEFT)
EDGES = {(s, new) for (s, _), (new, _) in TRANSITIONS.items()}


class MemberMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.no_route: set[int] = set()

        def arrival(src: int, dst: int, at: int, size: int) -> int | None:
            return None if dst in self.no_route else at + 10

        cfg = MembershipConfig(seeds=(), tombstone_ms=30_000, push_pull_periods=7)
        self.h = make(config=cfg, arrival=arrival)
        self.max_inc: dict[int, int] = {}
        self.gone_inc: dict[int, int] = {}
        self.revived_by_news: set[int] = set()
        self.pending: list[Send] = []
        self.ever_no_route: set[int] = set()

    def _feed(self, out: list[Send]) -> None:
        self.pending += out
        self.pending = self.pending[-50:]

    @rule(
        subject=st.sampled_from((1, *PEERS)),
        inc=st.integers(0, 4),
        status=st.sampled_from(Status),
        accuser=st.sampled_from(PEERS),
    )
    def update(self, subject: int, inc: int, status: Status, accuser: int) -> None:
        signer = subject if status in (Status.ALIVE, Status.LEFT) else accuser
        u = sign(subject, inc, status, signer=signer)
        before = self.h.svc.state_of(subject)
        self._feed(self.h.push(accuser, sign(accuser, 0, Status.ALIVE), u))
        # Only a claim it can verify (the signer's certificate known) is refuted.
        if subject != 1 and before in GONE and inc > self.gone_inc.get(subject, -1):
            self.revived_by_news.add(subject)
        if subject == 1 and status != Status.ALIVE and signer in self.h.svc._certs:
            assert (
                self.h.svc.incarnation > inc
                or self.h.svc.state_of(1) == MemberState.LEFT
            )

    @rule(ms=st.integers(1, 8_000))
    def advance(self, ms: int) -> None:
        self._feed(self.h.advance(ms))

    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        pings = [s for s in self.pending if decode(s).kind == Kind.PING]
        if not pings:
            return
        s = data.draw(st.sampled_from(pings))
        to = int(s.destination[4:].split(".")[0])
        if to in self.no_route:
            return
        self._feed(self.h.bundle(to, Message(kind=Kind.ACK, seq=decode(s).seq)))

    @rule(peer=st.sampled_from(PEERS))
    def toggle_route(self, peer: int) -> None:
        self.no_route ^= {peer}
        self.ever_no_route.add(peer)

    @invariant()
    def rules_hold(self) -> None:
        svc = self.h.svc
        for t in svc.transitions:
            if t.old is not None and t.new is not None:
                assert (t.old, t.new) in EDGES
                assert (
                    t.old not in GONE
                    or t.new in GONE
                    or t.subject in self.revived_by_news
                )
            if t.new == MemberState.UNREACHABLE:
                assert t.subject in self.ever_no_route
        svc.transitions.clear()
        # The digest kept between changes is the one it would build now.
        assert svc._digest() == b"".join(svc._records())
        members = svc.members()
        assert svc.live() <= set(members)
        assert members[1].state in (MemberState.ALIVE, MemberState.LEFT)
        for n, m in members.items():
            if n == 1:
                continue
            assert m.incarnation >= self.max_inc.get(n, 0)
            self.max_inc[n] = m.incarnation
            if m.state in GONE:
                self.gone_inc[n] = max(self.gone_inc.get(n, -1), m.incarnation)
            else:
                self.revived_by_news.discard(n)


TestMemberMachine = MemberMachine.TestCase
