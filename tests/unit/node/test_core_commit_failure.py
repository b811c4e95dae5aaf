"""NodeCore when a service's state commit fails (a disk error) or the
services' turn raises: the bundle is kept until a commit succeeds, the
commit is retried with a backoff, and no action the call produced is lost
(literal ``now``; the "disk" is a state backend that fails on demand)."""

from __future__ import annotations

from typing import Any

from dcis.dtn.agent.actions import Ack, Action, Event, EventKind, Transmit
from dcis.dtn.agent.agent import Agent, SendRequest
from dcis.dtn.agent.store import MemoryStore, StoreError
from dcis.dtn.node import Inbound, NodeCore, Send
from dcis.dtn.node.core import (
    COMMIT_RETRY_MAX_MS,
    COMMIT_RETRY_MIN_MS,
    MAX_HELD_SENDS,
)
from tests.unit.node.test_core import Svc, _FailingState, carry, link, send


def events(actions: list[Action], kind: EventKind) -> list[Event]:
    return [e for e in actions if isinstance(e, Event) and e.kind == kind]


def commit_failures(actions: list[Action]) -> list[Event]:
    return [
        e
        for e in events(actions, EventKind.SERVICE_FAILED)
        if "state commit failed" in e.detail
    ]


def keeping(svc: Svc, *, reply: bool = False) -> None:
    """``svc`` writes each payload to its state (and answers it, ``reply``)."""

    def keep(inbound: Inbound, now_ms: int) -> list[Send]:
        assert svc.ctx is not None
        svc.ctx.state.put("last", inbound.payload)
        svc.ctx.state.put(inbound.payload.decode(), b"1")
        return [Send(inbound.source, b"re:" + inbound.payload)] if reply else []

    svc.on_bundle_hook = keep


def keeping_svc(
    *, reply: bool = False
) -> tuple[list[tuple[Any, ...]], Svc, _FailingState]:
    """Service 30 ``keeping`` its payloads, its log and a failing state."""
    log: list[tuple[Any, ...]] = []
    svc = Svc(30, log)
    keeping(svc, reply=reply)
    return log, svc, _FailingState()


def broken_pair(svc: Svc, state: _FailingState) -> tuple[NodeCore, NodeCore]:
    a = NodeCore(Agent(node=1, store=MemoryStore()), node=1)
    b = NodeCore(
        Agent(node=2, store=MemoryStore()), node=2, services=[svc], state=state
    )
    a.start(0)
    b.start(0)
    a.register("ipn:1.1")
    a.on_contact_start(link(1, 2), 0)
    b.on_contact_start(link(2, 1), 0)
    return a, b


def started_core(svc: Svc, state: _FailingState) -> NodeCore:
    """Node 1 running ``svc`` on the failing ``state``, started at 0."""
    core = NodeCore(
        Agent(node=1, store=MemoryStore()), node=1, services=[svc], state=state
    )
    core.start(0)
    return core


def quiet_svc_core() -> tuple[Svc, _FailingState, NodeCore]:
    """Service 30 (its log unread), a failing state, and ``started_core``."""
    svc = Svc(30, [])
    state = _FailingState()
    return svc, state, started_core(svc, state)


def tick_at_next_deadline(core: NodeCore) -> list[Action]:
    at = core.next_deadline()
    assert at is not None
    return core.on_tick(at)


def bundles(log: list[tuple[Any, ...]]) -> list[bytes]:
    return [x[2] for x in log if x[0] == "bundle"]


def test_a_failed_commit_keeps_the_bundle_and_is_retried_until_it_succeeds() -> None:
    log, svc, state = keeping_svc(reply=True)
    a, b = broken_pair(svc, state)
    out = carry(a, b, send(a, "ipn:2.30", b"x", 5), 5)
    # Received and acknowledged: the bundle is stored; only the service's
    # commit failed. Its reply waits for that commit.
    assert any(isinstance(x, Ack) for x in out)
    assert len(commit_failures(out)) == 1
    assert not [x for x in out if isinstance(x, Transmit)]
    assert b.agent.stored == 1  # type: ignore[attr-defined]
    assert b.next_deadline() == 5 + COMMIT_RETRY_MIN_MS
    # Still broken at the first retry: the next one backs off.
    out = b.on_tick(5 + COMMIT_RETRY_MIN_MS)
    assert len(commit_failures(out)) == 1
    assert b.next_deadline() == 5 + 3 * COMMIT_RETRY_MIN_MS
    assert b.event_counts[EventKind.SERVICE_FAILED] == 2
    # The disk heals: the retried commit writes the state, confirms the
    # bundle and lets the reply go -- without handing the bundle again.
    state.broken = False
    out = b.on_tick(5 + 3 * COMMIT_RETRY_MIN_MS)
    assert state.service_get(30, "last") == b"x"
    assert b.agent.stored == 1  # type: ignore[attr-defined]  # the reply
    assert [t.neighbor for t in out if isinstance(t, Transmit)] == [1]
    assert bundles(log) == [b"x"]
    assert b.next_deadline() is None or b.next_deadline() > 5 + 3 * COMMIT_RETRY_MIN_MS


def test_bundles_arriving_while_the_commit_fails_wait_and_follow_in_order() -> None:
    log, svc, state = keeping_svc()
    a, b = broken_pair(svc, state)
    carry(a, b, send(a, "ipn:2.30", b"p", 5), 5)
    out = carry(a, b, send(a, "ipn:2.30", b"q", 6), 6)
    # q is stored and acknowledged but not handed: the service's input
    # waits while its commits fail (held in the store, not in memory).
    assert any(isinstance(x, Ack) for x in out)
    assert bundles(log) == [b"p"]
    assert b.agent.stored == 2  # type: ignore[attr-defined]
    state.broken = False
    tick_at_next_deadline(b)
    assert bundles(log) == [b"p", b"q"]
    assert state.service_get(30, "p") == b"1"
    assert state.service_get(30, "q") == b"1"
    assert b.agent.stored == 0  # type: ignore[attr-defined]


def test_a_later_call_that_fails_keeps_the_writes_of_the_failed_commit() -> None:
    # The kept writes are the service's, not the failing call's: a raise
    # in a later call discards only that call's own writes.
    _, svc, state = keeping_svc()
    a, b = broken_pair(svc, state)
    carry(a, b, send(a, "ipn:2.30", b"p", 5), 5)

    def boom(now_ms: int) -> list[Send]:
        assert svc.ctx is not None
        assert svc.ctx.state.get("last") == b"p"  # sees its kept write
        svc.ctx.state.put("junk", b"j")
        svc.due = None
        raise RuntimeError("boom")

    # (Not a tick: a service whose commits fail is not ticked.)
    svc.boom = boom  # type: ignore[attr-defined]
    out = b.call_service(30, "boom", now=6)
    assert len(events(out, EventKind.SERVICE_FAILED)) == 1
    state.broken = False
    tick_at_next_deadline(b)
    assert state.service_get(30, "last") == b"p"
    assert state.service_get(30, "junk") is None
    assert b.agent.stored == 0  # type: ignore[attr-defined]


def test_a_failing_tick_commit_is_contained_and_backs_off_to_a_bound() -> None:
    svc, state, core = quiet_svc_core()

    def tick(now_ms: int) -> list[Send]:
        assert svc.ctx is not None
        svc.ctx.state.put("t", b"%d" % now_ms)
        svc.due = None
        return [Send("ipn:1.1", b"after")]

    svc.on_tick = tick  # type: ignore[method-assign]
    svc.due = 10
    now = 10
    gaps = []
    for _ in range(16):
        out = core.on_tick(now)  # never raises
        assert len(commit_failures(out)) == 1
        at = core.next_deadline()
        assert at is not None
        gaps.append(at - now)
        now = at
    assert gaps[:3] == [
        COMMIT_RETRY_MIN_MS,
        2 * COMMIT_RETRY_MIN_MS,
        4 * COMMIT_RETRY_MIN_MS,
    ]
    assert max(gaps) == COMMIT_RETRY_MAX_MS == gaps[-1]
    assert core.event_counts[EventKind.SERVICE_FAILED] == 16
    assert core.agent.stored == 0  # type: ignore[attr-defined]  # the send waits
    state.broken = False
    core.register("ipn:1.1", now=now)
    out = core.on_tick(now)
    assert state.service_get(30, "t") == b"10"
    assert core.agent.stored == 1  # type: ignore[attr-defined]


def test_an_app_run_of_sends_to_a_service_with_a_failing_commit_loses_nothing() -> None:
    log, svc, state = keeping_svc()
    core = started_core(svc, state)
    core.on_contact_start(link(1, 2), 0)
    results, out = core.send_many(
        [
            SendRequest("ipn:1.1", "ipn:2.1", b"a", 60_000),
            SendRequest("ipn:1.1", "ipn:1.30", b"b", 60_000),
            SendRequest("ipn:1.1", "ipn:2.1", b"c", 60_000),
        ],
        5,
    )
    assert all(isinstance(k, str) for k in results)
    assert [t.neighbor for t in out if isinstance(t, Transmit)] == [2, 2]
    assert len(commit_failures(out)) == 1
    state.broken = False
    tick_at_next_deadline(core)
    assert state.service_get(30, "last") == b"b"
    assert bundles(log) == [b"b"]


class _ConfirmFails(Agent):
    """An agent whose delivery confirmations fail while ``broken``."""

    broken = True

    def on_delivered(self, bundle_key: str, now: int) -> list[Action]:
        if self.broken:
            raise StoreError("disk I/O error")
        return super().on_delivered(bundle_key, now)


def test_entry_points_keep_their_actions_when_the_services_turn_raises() -> None:
    # The bundle is stored by on_receive; the confirmation of its delivery
    # to the service then fails. The Ack (and everything else the call
    # produced) still comes out, the failure is an event, and the bundle
    # is handed over again at the next step -- never lost.
    log: list[tuple[Any, ...]] = []
    svc = Svc(30, log)
    a = NodeCore(Agent(node=1, store=MemoryStore()), node=1)
    agent_b = _ConfirmFails(node=2, store=MemoryStore())
    b = NodeCore(agent_b, node=2, services=[svc])
    a.start(0)
    b.start(0)
    a.register("ipn:1.1")
    a.on_contact_start(link(1, 2), 0)
    b.on_contact_start(link(2, 1), 0)
    out = carry(a, b, send(a, "ipn:2.30", b"x", 5), 5)
    assert any(isinstance(x, Ack) for x in out)
    failed = events(out, EventKind.SERVICE_FAILED)
    assert len(failed) == 1
    assert "StoreError" in failed[0].detail
    assert agent_b.stored == 1
    agent_b.broken = False
    at = b.next_deadline()
    assert at == 5 + COMMIT_RETRY_MIN_MS  # backs off while it fails
    b.on_tick(at)
    assert agent_b.stored == 0
    # Handed twice (delivery to a service is at least once), lost never.
    assert bundles(log) == [b"x", b"x"]


def test_a_failing_delivery_hook_defers_the_bundle_and_keeps_the_ack() -> None:
    log: list[tuple[Any, ...]] = []
    svc = Svc(30, log)
    calls = []

    def hook(inbound: Inbound) -> None:
        calls.append(inbound.bundle_key)
        if len(calls) == 1:
            raise RuntimeError("ledger down")

    a = NodeCore(Agent(node=1, store=MemoryStore()), node=1)
    b = NodeCore(
        Agent(node=2, store=MemoryStore()),
        node=2,
        services=[svc],
        on_service_delivery=hook,
    )
    a.start(0)
    b.start(0)
    a.register("ipn:1.1")
    a.on_contact_start(link(1, 2), 0)
    b.on_contact_start(link(2, 1), 0)
    out = carry(a, b, send(a, "ipn:2.30", b"x", 5), 5)
    assert any(isinstance(x, Ack) for x in out)
    assert bundles(log) == []
    tick_at_next_deadline(b)
    assert bundles(log) == [b"x"]
    assert b.agent.stored == 0  # type: ignore[attr-defined]


def test_a_service_due_every_10_ms_is_not_ticked_while_its_commit_fails() -> None:
    # Its deadline stays 10 ms ahead: ticking it would retry the commit
    # (and hold another send) at every step, bypassing the backoff.
    svc, _, core = quiet_svc_core()

    ticks = []

    def tick(now_ms: int) -> list[Send]:
        assert svc.ctx is not None
        ticks.append(now_ms)
        svc.ctx.state.put("t", b"%d" % now_ms)
        svc.due = now_ms + 10
        return [Send("ipn:1.1", b"hb")]

    svc.on_tick = tick  # type: ignore[method-assign]
    svc.due = 10
    failures = 0
    retries = []
    for now in range(10, 10_010, 10):
        failed = len(commit_failures(core.on_tick(now)))
        failures += failed
        if failed:
            retries.append(now)
        at = core.next_deadline()
        assert at is not None
        assert at >= now
    # 10, then 100, 200, 400, ... ms later: 7 attempts in 10 s, not 1000.
    assert retries == [10, 110, 310, 710, 1510, 3110, 6310]
    assert failures == 7
    assert len(core._failing["ipn:1.30"].held) == 1
    assert ticks == [10]  # not ticked while its commit fails


def test_sends_held_for_a_failing_commit_are_bounded() -> None:
    svc, state, core = quiet_svc_core()

    def burst(n: int, now_ms: int) -> list[Send]:
        assert svc.ctx is not None
        svc.ctx.state.put("n", b"%d" % n)
        return [Send("ipn:1.1", b"%d" % i) for i in range(n)]

    svc.burst = burst  # type: ignore[attr-defined]
    out = core.call_service(30, "burst", MAX_HELD_SENDS - 5, now=1)
    assert len(commit_failures(out)) == 1
    assert events(out, EventKind.SERVICE_SEND_FAILED) == []
    out = core.call_service(30, "burst", 10, now=2)
    dropped = events(out, EventKind.SERVICE_SEND_FAILED)
    assert len(dropped) == 5
    assert "already held" in dropped[0].detail
    assert len(core._failing["ipn:1.30"].held) == MAX_HELD_SENDS
    state.broken = False
    core.register("ipn:1.1", now=3)
    tick_at_next_deadline(core)
    assert core.agent.stored == MAX_HELD_SENDS  # type: ignore[attr-defined]
