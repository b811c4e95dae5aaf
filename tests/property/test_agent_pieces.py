"""Stateful test of fragmentation at transmission and of fragments held
unacknowledged until their bundle is whole (spec/agent.md "Forwarding",
"Delivery and reassembly"): node 1 sends bundles larger than the link MTU
to node 2 over contacts that open and close, with or without a volume
bound; any transmission may be lost or reach node 2, whose Ack may come at
once, later (a held piece: when its bundle is whole or its hold ends) or
never (the CL gives up waiting); either node may restart (a new agent on
the same store: what was in flight or held is forgotten, as after kill -9)
and time passes. After every step:

- each stored bundle of both nodes rests in one location that agrees with
  the agent's queues and pieces (``check_locations``);
- while no contact bounded the volume, node 1 stores only the bundles its
  application sent -- the MTU alone never makes it store a fragment;
- nothing is lost: every bundle sent is held by node 1 (whole, or as
  fragments a volume-bound contact made it store), or by node 2 (fragments
  awaiting the rest), or expired (all or a piece of it), or was delivered
  at node 2 -- once, with the bytes sent.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dcis.dtn.agent.actions import Ack, Action, Deliver, Event, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.routing.contact import Contact
from tests.unit.agent.helpers import check_locations

MTU = 300
CFG = AgentConfig(max_bundle_bytes=MTU, window=8, retry_delay_ms=100, keep_decoded=8)
# Node 2 holds fragments received over "t" (at most 4,000 bytes of them).
RX_CFG = replace(CFG, hold_fragments_ms={"t": 3_000}, hold_fragments_bytes=4_000)
LIFE = 20_000  # a few ticks: some bundles expire mid-send


class Pieces(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000
        self.store = MemoryStore()
        self.tx = Agent(node=1, store=self.store, config=CFG)
        self.rx_store = MemoryStore()
        self.rx = Agent(node=2, store=self.rx_store, config=RX_CFG)
        self.rx.register("ipn:2.1")
        # CL token -> the transmission node 2 got and has not acknowledged
        # (tokens unique over the run, as the UDP CL's random ones are)
        self.awaiting: dict[int, Transmit] = {}
        self.next_token = 1
        self.contact: Contact | None = None
        self.bounded = False  # a contact with a volume bound was opened
        self.sent: dict[str, bytes] = {}
        self.delivered: dict[str, bytes] = {}
        self.inflight: list[Transmit] = []
        self.expired: set[str] = set()  # keys (of bundles or fragments)

    def take(self, actions: list[Action]) -> None:
        self.inflight += [a for a in actions if isinstance(a, Transmit)]
        self.expired |= {
            a.bundle_key
            for a in actions
            if isinstance(a, Event) and a.kind == "expired"
        }

    @rule(
        size=st.sampled_from([100, 400, 700, 1_200]) | st.integers(1, 1_500),
        fill=st.integers(0, 255),
    )
    def send(self, size: int, fill: int) -> None:
        payload = bytes((fill + i) % 256 for i in range(size))
        key, actions = self.tx.send(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=payload,
            lifetime_ms=LIFE,
            now=self.now,
        )
        self.sent[key] = payload
        self.take(actions)

    @precondition(lambda self: self.contact is None)
    @rule(volume=st.sampled_from([None, 250, 700, 5_000]))
    def contact_start(self, volume: int | None) -> None:
        s = self.now / 1000
        if volume is None:
            c = Contact(1, 2, s, float("inf"), 0.0)
        else:
            # open for one second at ``volume`` bytes per second
            c = Contact(1, 2, s, s + 1, float(volume))
            self.bounded = True
        self.contact = c
        self.take(self.tx.on_contact_start(c, self.now))

    @precondition(lambda self: self.contact is not None)
    @rule()
    def contact_end(self) -> None:
        assert self.contact is not None
        c, self.contact = self.contact, None
        self.take(self.tx.on_contact_end(c, self.now))

    def rx_take(self, actions: list[Action]) -> None:
        """Node 2's actions: its Acks complete node 1's transmissions, its
        deliveries are recorded and confirmed."""
        self.expired |= {
            a.bundle_key
            for a in actions
            if isinstance(a, Event) and a.kind == "expired"
        }
        for a in actions:
            if isinstance(a, Ack):
                t = self.awaiting.pop(a.cl_token, None)
                if t is not None:
                    self.take(self.tx.on_transmit_done(t.tx_id, True, self.now))
            elif isinstance(a, Deliver):
                assert a.bundle_key not in self.delivered, "delivered twice"
                self.delivered[a.bundle_key] = a.payload
                self.rx_take(self.rx.on_delivered(a.bundle_key, self.now))

    @precondition(lambda self: self.contact is not None)
    @rule()
    def contact_overlaps(self) -> None:
        # A second contact to node 2 opens while one is open (overlapping
        # plan contacts): it replaces the first, whose end is then ignored.
        assert self.contact is not None
        old = self.contact
        s = self.now / 1000
        self.contact = Contact(1, 2, s, float("inf"), 0.0)
        self.take(self.tx.on_contact_start(self.contact, self.now))
        self.take(self.tx.on_contact_end(old, self.now))

    @precondition(lambda self: bool(self.inflight))
    @rule(i=st.integers(0, 1_000), arrives=st.booleans())
    def transmit(self, i: int, arrives: bool) -> None:
        t = self.inflight.pop(i % len(self.inflight))
        if not arrives:
            self.take(self.tx.on_transmit_done(t.tx_id, False, self.now))
            return
        # Node 2 gets it; its Ack comes once it holds it durably.
        token = self.next_token
        self.next_token += 1
        self.awaiting[token] = t
        self.rx_take(
            self.rx.on_receive(
                cla="t", neighbor=1, data=t.data, now=self.now, cl_token=token
            )
        )

    @precondition(lambda self: bool(self.inflight))
    @rule()
    def burst(self) -> None:
        # Everything in flight reaches node 2, in order (a quiet link).
        for _ in range(64):
            if not self.inflight:
                break
            self.transmit(0, True)

    @precondition(lambda self: bool(self.awaiting))
    @rule(i=st.integers(0, 1_000))
    def ack_timeout(self, i: int) -> None:
        # The CL gave up waiting for node 2's Ack.
        token = sorted(self.awaiting)[i % len(self.awaiting)]
        t = self.awaiting.pop(token)
        self.take(self.tx.on_transmit_done(t.tx_id, False, self.now))

    @rule(dt=st.integers(1, 5_000))
    def tick(self, dt: int) -> None:
        self.now += dt
        self.take(self.tx.on_tick(self.now))
        self.rx_take(self.rx.on_tick(self.now))

    @rule()
    def restart(self) -> None:
        # kill -9 of node 1: a new agent on its store; the driver forgot
        # what was in flight (node 2 may still get none of it). A restart
        # takes time: bundles created after it never share a creation
        # millisecond (and so a key) with those created before.
        self.now += 1
        self.tx = Agent(node=1, store=self.store, config=CFG)
        self.inflight.clear()
        self.awaiting.clear()  # late Acks name tokens the new driver never made
        self.take(self.tx.recover(self.now))
        if self.contact is not None:
            self.take(self.tx.on_contact_start(self.contact, self.now))

    @rule()
    def restart_node2(self) -> None:
        # kill -9 of node 2: what it held unacknowledged is gone.
        self.rx = Agent(node=2, store=self.rx_store, config=RX_CFG)
        self.rx.register("ipn:2.1")
        self.rx_take(self.rx.recover(self.now))

    @invariant()
    def held_within_bound(self) -> None:
        held = self.rx._held
        assert self.rx._held_bytes == sum(g.nbytes for g in held.values())
        assert self.rx._held_bytes <= RX_CFG.hold_fragments_bytes

    @invariant()
    def locations_agree(self) -> None:
        check_locations(self.tx)
        check_locations(self.rx)

    @invariant()
    def the_mtu_alone_stores_no_fragment(self) -> None:
        if not self.bounded:
            assert set(self.tx._entries) <= set(self.sent)

    @invariant()
    def nothing_is_lost(self) -> None:
        held = [*self.tx._entries, *self.rx._entries]
        for key, payload in self.sent.items():
            if key in self.delivered:
                assert self.delivered[key] == payload, key
                continue
            if any(k == key or k.startswith(key + "|") for k in self.expired):
                continue  # its lifetime ended (all of it, or a piece)
            if key in held:
                continue
            # Held in fragments (node 1's stored ones, node 2's awaiting the
            # rest): together they must still hold every payload byte -- a
            # fragment at node 2 does not make up for a piece node 1 dropped.
            covered = 0
            for off, length in sorted(
                (int(k.split("|")[3]), int(k.split("|")[4]))
                for k in held
                if k.startswith(key + "|")
            ):
                if off > covered:
                    break
                covered = max(covered, off + length)
            assert covered >= len(payload), (key, covered, len(payload))


Pieces.TestCase.settings = settings(stateful_step_count=50, deadline=None)
test_agent_pieces = Pieces.TestCase
