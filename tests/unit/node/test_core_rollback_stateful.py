"""NodeCore on a SQLite disk whose transactions fail after a service's
state commit joined them (hypothesis stateful).

Node 1 sends bundles to a log service on node 2. The service keeps its
log in memory, as a Raft node does, and persists each entry (``e:<key>``)
and the length (``n``), then tells node 1 "n=<length>": a promise that
the entries are durable. Node 2's disk fails on demand while it takes a
bundle in: the COMMIT of that transaction, or its first state write
(SQLite rolling the whole transaction back). Node 2 restarts now and then (memory lost, disk kept).

Invariants: what node 2 lets go is durable -- every "n=<k>" it transmits
is backed by k durable entries, and the durable length always equals the
durable entries (no entry lost under a later one); once the disk heals,
every bundle sent is in the durable log, each once, without a restart.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dcis.dtn.agent.actions import Ack, Action, Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore, StoreError
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted
from dcis.dtn.node import Inbound, NodeCore, Send, ServiceContext
from dcis.dtn.routing.contact import Contact
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.node.test_core_stateful import Counting

OPEN = float("inf")
UP_12 = Contact(1, 2, 0.0, OPEN, 0.0)
UP_21 = Contact(2, 1, 0.0, OPEN, 0.0)


class Log(Counting):
    """The log in memory (loaded at start); each new entry persisted and
    announced; a bundle already in the log is not appended again."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[str] = []

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self.ctx = ctx
        self.entries = [k[2:] for k in ctx.state.keys("e:")]
        return []

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        assert self.ctx is not None
        if inbound.bundle_key in self.entries:
            return []
        self.entries.append(inbound.bundle_key)
        self.ctx.state.put("e:" + inbound.bundle_key, b"1")
        self.ctx.state.put("n", b"%d" % len(self.entries))
        return [Send(inbound.source, b"n=%d" % len(self.entries))]


class Disk:
    """Node 2's connection: ``commit`` fails the next COMMIT, ``write``
    the next state write as SQLITE_FULL does (SQLite rolls back); each
    is disarmed once it fired."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.commit = False
        self.write = False

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if self.commit and sql == "COMMIT":
            self.commit = False
            raise sqlite3.OperationalError("database or disk is full")
        if self.write and "INTO service_state" in sql:
            self.write = False
            self._db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class RollbackMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.path = self.dir / "b.db"
        self.now = 1_000
        self.a = NodeCore(Agent(node=1, store=MemoryStore()), node=1)
        self.a.start(self.now)
        self.a.register("ipn:1.1")
        self.a.on_contact_start(UP_12, self.now)
        self.pending: list[Transmit] = []
        self.sent: set[str] = set()
        self.incarnation = 0
        self._start_b()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _start_b(self) -> None:
        self.incarnation += 1
        self.store = SqliteStore(self.path, synchronous="NORMAL")
        self.disk = Disk(self.store._db)
        self.store._db = self.disk  # type: ignore[assignment]
        self.b = NodeCore(
            Agent(node=2, store=self.store),
            node=2,
            services=self._services(),
            incarnation=self.incarnation,
        )
        self._b(lambda: self.b.start(self.now, recover=self.incarnation > 1))
        self._b(lambda: self.b.on_contact_start(UP_21, self.now))

    def _services(self) -> list[Any]:
        return [Log()]

    def _state(self, service: int) -> dict[str, bytes]:
        """A service's state as committed to the file (another connection)."""
        db = sqlite3.connect(self.path)
        try:
            rows = db.execute(
                "SELECT key, value FROM service_state WHERE service=?", (service,)
            ).fetchall()
        finally:
            db.close()
        return {str(k): bytes(v) for k, v in rows}

    def _durable(self) -> tuple[int, set[str]]:
        """Node 2's log as committed to the file."""
        state = self._state(30)
        return int(state.get("n", b"0")), {k[2:] for k in state if k.startswith("e:")}

    def _b(self, call: Any) -> list[Action]:
        """One input of node 2, as the runtime runs it: a StoreError (its
        transaction rolled back) is logged and the agent rebuilt. What
        comes out is checked: an announced length must be durable."""
        try:
            out: list[Action] = call()
        except StoreError:
            out = []
            try:
                out = self.b.recover(self.now)
            except StoreError:
                return []
        n, entries = self._durable()
        for t in out:
            if isinstance(t, Transmit):
                told = int(decode_bundle_untrusted(t.data).payload[2:])
                assert told <= n == len(entries), (told, n, len(entries))
        for t in out:
            if isinstance(t, Transmit):
                self._b(lambda t=t: self.b.on_transmit_done(t.tx_id, True, self.now))
        return out

    @rule()
    def send(self) -> None:
        self._send("ipn:2.30")

    def _send(self, destination: str) -> str:
        key, actions = self.a.send(
            source="ipn:1.1",
            destination=destination,
            payload=b"entry",
            lifetime_ms=10**9,
            now=self.now,
        )
        self.sent.add(key)
        self.pending += [t for t in actions if isinstance(t, Transmit)]
        return key

    @precondition(lambda self: bool(self.pending))
    @rule(fault=st.sampled_from(["", "commit", "write"]))
    def carry_one(self, fault: str = "") -> None:
        """Hand node 1's next transmission to node 2, whose disk fails
        the COMMIT of that input (``commit``) or its first state write
        (``write``: SQLite rolls the whole transaction back)."""
        self.disk.commit = fault == "commit"
        self.disk.write = fault == "write"
        t = self.pending.pop(0)
        got = self._b(
            lambda: self.b.on_receive(
                cla="t", neighbor=1, data=t.data, now=self.now, cl_token=t.tx_id
            )
        )
        self.disk.commit = self.disk.write = False
        acked = any(isinstance(x, Ack) for x in got)
        done = self.a.on_transmit_done(t.tx_id, acked, self.now)
        self.pending += [x for x in done if isinstance(x, Transmit)]

    @rule(ms=st.integers(1, 5_000))
    def tick(self, ms: int) -> None:
        self.now += ms
        self.pending += [t for t in self.a.on_tick(self.now) if isinstance(t, Transmit)]
        self._b(lambda: self.b.on_tick(self.now))

    @rule()
    def restart_b(self) -> None:
        self.b.stop()
        self.store.close()
        self._start_b()

    @rule()
    def heal_and_settle(self) -> None:
        for _ in range(200):
            if self.pending:
                self.carry_one()
                continue
            at = min(
                (d for d in (self.a.next_deadline(), self.b.next_deadline()) if d),
                default=None,
            )
            if at is None:
                break
            self.now = max(self.now + 1, at)
            self.pending += [
                t for t in self.a.on_tick(self.now) if isinstance(t, Transmit)
            ]
            self._b(lambda: self.b.on_tick(self.now))
        self.check_settled()

    def check_settled(self) -> None:
        _, entries = self._durable()
        assert entries == self.sent

    @invariant()
    def durable_length_matches_durable_entries(self) -> None:
        n, entries = self._durable()
        assert n == len(entries)


TestRollback = RollbackMachine.TestCase


class Relay(Counting):
    """Service 31: counts each bundle from node 1 (``c:<key>``) and
    forwards it to the log (service 30) on the same node; the log's
    answers to it ("n=...") are dropped."""

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        assert self.ctx is not None
        if inbound.source != "ipn:1.1":
            return []
        c = "c:" + inbound.bundle_key
        self.ctx.state.put(c, b"%d" % (int(self.ctx.state.get(c) or b"0") + 1))
        return [Send("ipn:2.30", b"via " + inbound.bundle_key.encode())]


class TwoServicesMachine(RollbackMachine):
    """Bundles from node 1 go to the log, or through the relay to it: both
    services' commits join the transaction that fails. Once healed, each
    bundle sent through the relay was taken by it once and reached the log
    once (sent again after a rollback as the same bundle, which the log
    has). Node 2 does not restart here: a service whose writes a restart
    lost does its work again (at least once, spec/node.md)."""

    def __init__(self) -> None:
        self.relayed: set[str] = set()
        super().__init__()

    def _services(self) -> list[Any]:
        relay = Relay()
        relay.service = 31
        return [Log(), relay]

    @rule()
    def send_via_relay(self) -> None:
        key = self._send("ipn:2.31")
        self.sent.discard(key)
        self.relayed.add(key)

    def restart_b(self) -> None:  # not a rule here
        raise AssertionError("no restarts")

    def check_settled(self) -> None:
        _, entries = self._durable()
        assert self.sent <= entries
        assert len(entries) == len(self.sent) + len(self.relayed)
        counts = {k[2:]: v for k, v in self._state(31).items() if k.startswith("c:")}
        assert counts == dict.fromkeys(self.relayed, b"1")


TestTwoServices = TwoServicesMachine.TestCase
