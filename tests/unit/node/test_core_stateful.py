"""NodeCore under a random mix of inputs and restarts (hypothesis stateful).

Node 1 (an app) sends bundles to a counting service on node 2 over a link
that opens and closes; node 2 restarts now and then on the same store (a
disk: bundles and service state survive, memory does not); the service
sometimes fails, and node 2's disk sometimes fails the service's state
commits. The model is the set of bundles sent. Invariants: the service's
durable count equals the number of distinct bundles it kept (no bundle
counted twice, even across restarts), a failed call left nothing behind,
every bundle sent is counted or still held by one of the nodes, a bundle
node 2 took in was acknowledged (no action lost to a failing commit), and
once the disk heals the service's input drains without a restart.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dcis.dtn.agent.actions import Ack, Action, Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore, StoreError
from dcis.dtn.node import IdleService, Inbound, NodeCore, Send, ServiceContext
from dcis.dtn.routing.contact import Contact

OPEN = float("inf")
UP_12 = Contact(1, 2, 0.0, OPEN, 0.0)
UP_21 = Contact(2, 1, 0.0, OPEN, 0.0)


class Counting(IdleService):
    """Keeps the keys of the bundles it got in ctx.state; fails on payloads
    starting with b"!" after writing (the write must vanish)."""

    service = 30

    def __init__(self) -> None:
        self.ctx: ServiceContext | None = None

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self.ctx = ctx
        return []

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        assert self.ctx is not None
        state = self.ctx.state
        keys = json.loads(state.get("keys") or b"[]")
        keys.append(inbound.bundle_key)
        state.put("keys", json.dumps(keys).encode())
        state.put("n", str(len(keys)).encode())
        if inbound.payload.startswith(b"!"):
            raise RuntimeError("fails after writing")
        return []


class Disk(MemoryStore):
    """Node 2's store: its service-state writes fail while ``broken``."""

    broken = False

    def service_put(self, service: int, key: str, value: bytes) -> None:
        if self.broken:
            raise StoreError("disk I/O error")
        super().service_put(service, key, value)

    def service_delete(self, service: int, key: str) -> None:
        if self.broken:
            raise StoreError("disk I/O error")
        super().service_delete(service, key)


class NodeCoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000
        self.a = NodeCore(Agent(node=1, store=MemoryStore()), node=1)
        self.a.start(self.now)
        self.a.register("ipn:1.1")
        self.store_b = Disk()
        self.incarnation = 0
        self.up = False
        self.pending: list[Transmit] = []
        self.sent: dict[str, bytes] = {}
        self._start_b()

    def _start_b(self) -> None:
        self.incarnation += 1
        self.svc = Counting()
        self.b = NodeCore(
            Agent(node=2, store=self.store_b),
            node=2,
            services=[self.svc],
            incarnation=self.incarnation,
        )
        self.b.start(self.now, recover=self.incarnation > 1)
        if self.up:
            self.b.on_contact_start(UP_21, self.now)

    def _from_a(self, actions: list[Action]) -> None:
        self.pending += [t for t in actions if isinstance(t, Transmit)]

    @rule(payload=st.binary(min_size=1, max_size=20))
    def send(self, payload: bytes) -> None:
        key, actions = self.a.send(
            source="ipn:1.1",
            destination="ipn:2.30",
            payload=payload,
            lifetime_ms=10**9,
            now=self.now,
        )
        self.sent[key] = payload
        self._from_a(actions)

    @rule()
    def link_up(self) -> None:
        if not self.up:
            self.up = True
            self._from_a(self.a.on_contact_start(UP_12, self.now))
            self.b.on_contact_start(UP_21, self.now)

    @rule()
    def link_down(self) -> None:
        if self.up:
            self.up = False
            self._from_a(self.a.on_contact_end(UP_12, self.now))
            self.b.on_contact_end(UP_21, self.now)

    @precondition(lambda self: bool(self.pending))
    @rule(deliver=st.booleans(), dupe=st.booleans())
    def carry_one(self, deliver: bool, dupe: bool) -> None:
        t = self.pending.pop(0)
        acked = False
        before = {k for k in self.sent if self._at_b(k)}
        if deliver and self.up:
            for _ in range(2 if dupe else 1):
                got = self.b.on_receive(
                    cla="t", neighbor=1, data=t.data, now=self.now, cl_token=t.tx_id
                )
                acked = acked or any(isinstance(x, Ack) for x in got)
        # A bundle node 2 took in was acknowledged: nothing the call
        # produced is lost when the service's commit fails in it.
        taken = {k for k in self.sent if self._at_b(k)} - before
        assert acked or not taken, taken
        self._from_a(self.a.on_transmit_done(t.tx_id, acked, self.now))

    def _at_b(self, key: str) -> bool:
        return (
            self.b.agent.holds(key)  # type: ignore[attr-defined]
            or self.store_b.is_delivered(key)
            or key in set(self._state("keys") or [])
        )

    @rule(broken=st.booleans())
    def disk(self, broken: bool) -> None:
        self.store_b.broken = broken

    @rule()
    def heal_and_settle(self) -> None:
        # The disk heals: the retried commits and the bundles that waited
        # go through at the node's own deadlines, no restart needed.
        self.store_b.broken = False
        for _ in range(50):
            at = self.b.next_deadline()
            if at is None or at > self.now + 60_000:
                break
            self.now = max(self.now, at)
            self.b.on_tick(self.now)
        for key, payload in self.sent.items():
            if self.b.agent.holds(key):  # type: ignore[attr-defined]
                raise AssertionError(f"{key} ({payload!r}) still waits at node 2")

    @rule(ms=st.integers(1, 5_000))
    def tick(self, ms: int) -> None:
        self.now += ms
        self._from_a(self.a.on_tick(self.now))
        self.b.on_tick(self.now)

    @rule()
    def restart_b(self) -> None:
        self.b.stop()
        self._start_b()

    def _state(self, key: str) -> Any:
        raw = self.store_b.service_get(30, key)
        return None if raw is None else json.loads(raw)

    @invariant()
    def counted_once_and_failures_leave_nothing(self) -> None:
        keys = self._state("keys") or []
        assert len(keys) == len(set(keys))
        assert (self._state("n") or 0) == len(keys)
        for k in keys:
            assert not self.sent[k].startswith(b"!")

    @invariant()
    def nothing_lost(self) -> None:
        counted = set(self._state("keys") or [])
        for key, payload in self.sent.items():
            if key in counted:
                continue
            held = self.a.agent.holds(key) or self.b.agent.holds(key)  # type: ignore[attr-defined]
            failed = payload.startswith(b"!") and self.store_b.is_delivered(key)
            assert held or failed, key


TestNodeCore = NodeCoreMachine.TestCase
