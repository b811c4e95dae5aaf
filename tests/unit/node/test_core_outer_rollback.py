"""NodeCore when a service's state commit succeeded inside an outer store
transaction that then rolls back (its COMMIT fails, or SQLite rolls the
whole transaction back under a later write): the service's writes were
only ever in that transaction, so nothing of the call may go out before a
retried commit makes them durable (spec/node.md, "Failure containment").
The "disk" is a real SQLite file whose connection fails on demand."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.agent.actions import Ack, Action, Event, EventKind, Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import StoreError
from dcis.dtn.node import NodeCore, Send
from dcis.dtn.node.core import COMMIT_RETRY_MIN_MS
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.node.test_core import Svc, link, pair, send
from tests.unit.node.test_core_commit_failure import keeping


class _Faulty:
    """A store's connection that fails on demand: ``commit`` -- the next
    ``COMMIT`` fails (the disk full at the outer commit); ``poison`` -- a
    statement writing that value fails as SQLITE_FULL does (SQLite rolls
    the whole transaction back, then raises); ``refuse`` -- a statement
    writing that value fails alone (the transaction goes on)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.commit = False
        self.poison: bytes | None = None
        self.refuse: bytes | None = None

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if self.commit and sql == "COMMIT":
            self.commit = False
            raise sqlite3.OperationalError("database or disk is full")
        if self.refuse is not None and self.refuse in params:
            raise sqlite3.OperationalError("disk I/O error")
        if self.poison is not None and self.poison in params:
            self._db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def faulty(store: SqliteStore) -> _Faulty:
    conn = _Faulty(store._db)
    store._db = conn  # type: ignore[assignment]
    return conn


def transmits(actions: list[Action]) -> list[Transmit]:
    return [t for t in actions if isinstance(t, Transmit)]


def rolled_back(actions: list[Action]) -> list[Event]:
    return [
        e
        for e in actions
        if isinstance(e, Event)
        and e.kind == EventKind.SERVICE_FAILED
        and "rolled back" in e.detail
    ]


def writer(svc: Svc) -> None:
    """``svc.write(value, now)``: writes ``v`` and tells node 1 about it."""

    def write(value: bytes, now_ms: int) -> list[Send]:
        assert svc.ctx is not None
        svc.ctx.state.put("v", value)
        return [Send("ipn:1.1", b"wrote " + value)]

    svc.write = write  # type: ignore[attr-defined]


def node_2(tmp_path: Path, *services: Svc) -> tuple[NodeCore, SqliteStore]:
    store = SqliteStore(tmp_path / "b.db")
    core = NodeCore(Agent(node=2, store=store), node=2, services=list(services))
    core.start(0)
    core.on_contact_start(link(2, 1), 0)
    return core, store


def writer_node(tmp_path: Path) -> tuple[Svc, NodeCore, SqliteStore, _Faulty]:
    """Node 2 running service 30 (a ``writer``) on a ``faulty`` store."""
    svc = Svc(30, [])
    writer(svc)
    core, store = node_2(tmp_path, svc)
    return svc, core, store, faulty(store)


def chunk_fails(
    core: NodeCore, store: SqliteStore, conn: _Faulty, *values: bytes
) -> list[Action]:
    """One driver transaction (the runtime's app-API chunk) writing
    ``values`` through service 30, whose COMMIT fails unless a write in it
    did. Raises unless it fails; returns the actions the calls made."""
    out: list[Action] = []

    def chunk() -> None:
        with store.transaction():
            for v in values:
                out.extend(core.call_service(30, "write", v, now=5))
            conn.commit = True

    with pytest.raises(StoreError):
        chunk()
    conn.commit = False
    return out


def retry(core: NodeCore) -> list[Action]:
    at = core.next_deadline()
    assert at is not None
    return core.on_tick(at)


def receive_fails(
    tmp_path: Path, services: list[Svc]
) -> tuple[NodeCore, SqliteStore, Transmit]:
    """Node 2 running ``services`` on a ``faulty`` store takes node 1's
    bundle "x" for service 30 in a transaction whose COMMIT fails, then
    recovers as the runtime does. Returns node 2, its store and node 1's
    transmission (not acknowledged: node 1 sends it again)."""
    store = SqliteStore(tmp_path / "b.db")
    a, b, _ = pair(services, store)
    conn = faulty(store)
    (t,) = transmits(send(a, "ipn:2.30", b"x", 5))
    conn.commit = True
    with pytest.raises(StoreError):
        b.on_receive(cla="test", neighbor=1, data=t.data, now=5, cl_token=t.tx_id)
    b.recover(5)
    return b, store, t


def test_a_commit_in_a_driver_transaction_that_rolls_back_waits_for_a_retry(
    tmp_path: Path,
) -> None:
    # The runtime's app API runs a chunk of requests in one transaction of
    # its own: the service's commit joins it and "succeeds"; the chunk's
    # COMMIT then fails. The write never reached the disk.
    svc, core, store, conn = writer_node(tmp_path)
    out = chunk_fails(core, store, conn, b"1")
    assert len(transmits(out)) == 1  # would go, were the chunk committed
    # What the runtime does after a StoreError; the next step reports it.
    assert len(rolled_back(core.recover(5))) == 1
    assert store.service_get(30, "v") is None
    # The service has acted on its write: it stays staged and is retried;
    # the call is not done, its send is held.
    assert core.commit_failing(30)
    assert svc.ctx is not None
    assert svc.ctx.state.get("v") == b"1"
    out = retry(core)
    assert store.service_get(30, "v") == b"1"
    assert [t.neighbor for t in transmits(out)] == [1]
    assert not core.commit_failing(30)
    store.close()


def test_a_received_bundle_whose_transaction_fails_is_handed_over_once(
    tmp_path: Path,
) -> None:
    # Node 2's own transaction around a received bundle: the service keeps
    # the payload and answers it; the COMMIT fails. No answer may go out
    # before the write is durable, and the copy the sender sends again is
    # not handed over a second time (the service has it, staged).
    log: list[tuple[Any, ...]] = []
    svc = Svc(30, log)
    keeping(svc, reply=True)
    b, store, t = receive_fails(tmp_path, [svc])
    assert store.service_get(30, "last") is None
    assert b.commit_failing(30)
    # The sender had no Ack: it sends the bundle again. Stored and
    # acknowledged, it waits for the service's commit.
    got = b.on_receive(cla="test", neighbor=1, data=t.data, now=6, cl_token=t.tx_id)
    assert any(isinstance(x, Ack) for x in got)
    assert not transmits(got)
    out = retry(b)
    assert store.service_get(30, "last") == b"x"
    assert [tr.neighbor for tr in transmits(out)] == [1]
    assert [x[2] for x in log if x[0] == "bundle"] == [b"x"]
    assert b.agent.stored == 1  # type: ignore[attr-defined]  # the answer only
    store.close()


def test_a_transaction_sqlite_rolls_back_under_a_later_write(
    tmp_path: Path,
) -> None:
    # Service 30's commit joins the transaction; service 31, ticked in the
    # same step, writes a value the full disk refuses, and SQLite rolls
    # the whole transaction back -- 30's write with it. 30 learns at once:
    # its write is staged again, its send held.
    svc = Svc(30, [])
    writer(svc)
    other = Svc(31, [])

    def tick(now_ms: int) -> list[Send]:
        assert other.ctx is not None
        other.ctx.state.put("t", b"boom")
        other.due = None
        return []

    other.on_tick = tick  # type: ignore[method-assign]
    core, store = node_2(tmp_path, svc, other)
    conn = faulty(store)
    conn.poison = b"boom"
    other.due = 5
    with pytest.raises(StoreError, match="rolled back"):
        core.call_service(30, "write", b"1", now=5)
    core.recover(5)
    assert store.service_keys(30) == []
    assert core.commit_failing(30)
    assert core.commit_failing(31)
    conn.poison = None
    out = retry(core)
    assert store.service_get(30, "v") == b"1"
    assert store.service_get(31, "t") == b"boom"
    assert [t.neighbor for t in transmits(out)] == [1]
    store.close()


def test_a_commit_in_a_transaction_that_commits_is_done_at_once(
    tmp_path: Path,
) -> None:
    _, core, store, _ = writer_node(tmp_path)
    with store.transaction():
        out = core.call_service(30, "write", b"1", now=5)
    assert store.service_get(30, "v") == b"1"
    assert len(transmits(out)) == 1
    assert not core.commit_failing(30)
    store.close()


def test_a_state_commit_that_fails_part_way_leaves_none_of_its_writes(
    tmp_path: Path,
) -> None:
    # The second of the call's two writes fails on its own; the
    # transaction goes on and commits. The first write must not commit
    # without the second (a crash before the retry would restart the
    # service on half an update): the call's writes are one savepoint.
    svc = Svc(30, [])

    def both(now_ms: int) -> list[Send]:
        assert svc.ctx is not None
        svc.ctx.state.put("a", b"1")
        svc.ctx.state.put("b", b"2")
        return [Send("ipn:1.1", b"both")]

    svc.both = both  # type: ignore[attr-defined]
    core, store = node_2(tmp_path, svc)
    conn = faulty(store)
    conn.refuse = b"2"
    out = core.call_service(30, "both", now=5)
    assert not transmits(out)
    assert store.service_keys(30) == []
    assert core.commit_failing(30)
    conn.refuse = None
    out = retry(core)
    assert store.service_keys(30) == ["a", "b"]
    assert [t.neighbor for t in transmits(out)] == [1]
    store.close()


def test_a_rollback_under_the_services_own_later_commit_counts_once(
    tmp_path: Path,
) -> None:
    # Two calls of service 30 in one transaction: the first commit joins
    # it, the second's write makes SQLite roll it all back. One failure,
    # one event; both calls' writes and sends wait for the retry.
    _, core, store, conn = writer_node(tmp_path)
    conn.poison = b"boom"
    out = chunk_fails(core, store, conn, b"1", b"boom")
    out += core.recover(5)
    failed = [e for e in out if isinstance(e, Event) and "state commit" in e.detail]
    assert len(failed) == 1
    assert core.next_deadline() == 5 + COMMIT_RETRY_MIN_MS
    conn.poison = None
    out = retry(core)
    assert store.service_get(30, "v") == b"boom"
    assert len(transmits(out)) == 2
    store.close()
