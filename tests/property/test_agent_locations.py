"""Stateful test of the agent's bundle locations (dcis.dtn.agent.location).

One agent (node 1, no plan) gets any sequence of its inputs: bundles sent to
a neighbour's node, to a registered local endpoint and to one not
registered; contacts to node 3 opening and closing; transmission outcomes;
delivery confirmations; endpoint (un)registration and redelivery;
duplicates; timers; restarts. After every input each stored bundle rests in
one location that agrees with the agent's queues (an illegal move would
have raised IllegalMove inside the agent), and no bundle is lost: every
bundle sent is either still stored or left with an event saying why.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dcis.dtn.agent.actions import Action, Deliver, Event, Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.routing.contact import Contact
from tests.unit.agent.helpers import check_locations

C13 = Contact(1, 3, 0.0, float("inf"), 0.0)
LIFE = 30_000
# Events after which a bundle is no longer stored, each a reason.
LEFT = {"forwarded", "delivered", "expired", "deleted", "dropped", "fragmented"}


class AgentLocations(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000
        self.store = MemoryStore()
        self.agent = Agent(node=1, store=self.store)
        self.agent.register("ipn:1.1")
        self.agent.register("ipn:1.5")
        self.open = False
        self.sent: dict[str, bytes] = {}
        self.left: set[str] = set()
        self.inflight: list[int] = []
        self.handed: list[str] = []

    def take(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Transmit):
                self.inflight.append(a.tx_id)
            elif isinstance(a, Deliver):
                self.handed.append(a.bundle_key)
            elif isinstance(a, Event) and a.kind in LEFT:
                self.left.add(a.bundle_key)

    @rule(dst=st.sampled_from(["ipn:3.1", "ipn:1.5", "ipn:1.6"]))
    def send(self, dst: str) -> None:
        key, actions = self.agent.send(
            source="ipn:1.1",
            destination=dst,
            payload=b"p",
            lifetime_ms=LIFE,
            now=self.now,
        )
        data = self.store.get(key)
        if data is not None:
            self.sent[key] = data
        self.take(actions)

    @rule()
    def contact_start(self) -> None:
        self.open = True
        self.take(self.agent.on_contact_start(C13, self.now))

    @rule()
    def contact_end(self) -> None:
        self.open = False
        self.take(self.agent.on_contact_end(C13, self.now))

    @precondition(lambda self: bool(self.inflight))
    @rule(i=st.integers(0, 1_000), ok=st.booleans())
    def transmit_done(self, i: int, ok: bool) -> None:
        tx = self.inflight.pop(i % len(self.inflight))
        self.take(self.agent.on_transmit_done(tx, ok, self.now))

    @precondition(lambda self: bool(self.handed))
    @rule(i=st.integers(0, 1_000))
    def delivered(self, i: int) -> None:
        key = self.handed.pop(i % len(self.handed))
        self.take(self.agent.on_delivered(key, self.now))

    @rule(ep=st.sampled_from(["ipn:1.5", "ipn:1.6"]), on=st.booleans())
    def endpoint(self, ep: str, on: bool) -> None:
        if on:
            self.take(self.agent.register(ep, now=self.now))
        else:
            self.agent.unregister(ep)

    @precondition(lambda self: bool(self.sent))
    @rule(i=st.integers(0, 1_000))
    def redeliver(self, i: int) -> None:
        key = sorted(self.sent)[i % len(self.sent)]
        self.take(self.agent.redeliver([key], self.now))

    @precondition(lambda self: bool(self.sent))
    @rule(i=st.integers(0, 1_000))
    def duplicate(self, i: int) -> None:
        data = self.sent[sorted(self.sent)[i % len(self.sent)]]
        self.take(
            self.agent.on_receive(
                cla="t", neighbor=3, data=data, now=self.now, cl_token=1
            )
        )

    @rule(dt=st.integers(1, LIFE // 2))
    def tick(self, dt: int) -> None:
        self.now += dt
        self.take(self.agent.on_tick(self.now))

    @rule()
    def restart(self) -> None:
        # A restart: a new agent on the same store; what was in flight or
        # handed over is forgotten by the driver too.
        self.agent = Agent(node=1, store=self.store)
        self.agent.register("ipn:1.1")
        self.agent.register("ipn:1.5")
        self.inflight.clear()
        self.handed.clear()
        self.take(self.agent.recover(self.now))
        if self.open:
            self.take(self.agent.on_contact_start(C13, self.now))

    @invariant()
    def locations_agree(self) -> None:
        check_locations(self.agent)

    @invariant()
    def no_bundle_is_lost(self) -> None:
        for key in self.sent:
            assert self.agent.holds(key) or key in self.left, key
            assert self.agent.holds(key) == (key in self.store)


AgentLocations.TestCase.settings = settings(stateful_step_count=12, deadline=None)
test_agent_locations = AgentLocations.TestCase
