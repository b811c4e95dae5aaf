"""Agent.send_many: the sends of one app read in one call -- the same
bundles, keys and bytes as send one by one; each bad request answered with
the exception send raises for it, the others going on."""

from __future__ import annotations

from typing import Any

import pytest

from dcis.dtn.agent import Agent, SendRequest, SendsInterrupted
from dcis.dtn.agent.actions import Schedule, Transmit
from dcis.dtn.agent.store import MemoryStore, StoreFull
from dcis.dtn.errors import InvalidArgument

from .helpers import link, of

REQUESTS = [
    SendRequest("ipn:1.1", "ipn:2.1", b"a" * 100, 60_000),
    SendRequest("ipn:9.1", "ipn:2.1", b"b", 60_000),  # not this node's
    SendRequest("ipn:1.1", "ipn:2.1", b"c" * 300, 0),  # no lifetime
    SendRequest("ipn:1.2", "ipn:3.5", b"d" * 50, 60_000),  # held: no route
    SendRequest("ipn:1.1", "ipn:2.1", b"e" * 900, 60_000),  # over the limit
    SendRequest("ipn:1.1", "ipn:2.1", b"f" * 100, 60_000),
]


def _agent() -> Agent:
    a = Agent(node=1, store=MemoryStore(limit_bytes=800))
    a.on_contact_start(link(1, 2), now=1_000)
    return a


def test_send_many_is_send_one_by_one() -> None:
    one, many = _agent(), _agent()
    keys: list[str | type[Exception]] = []
    sent = []
    for r in REQUESTS:
        try:
            key, actions = one.send(
                source=r.source,
                destination=r.destination,
                payload=r.payload,
                lifetime_ms=r.lifetime_ms,
                now=5_000,
            )
        except (InvalidArgument, StoreFull) as exc:
            keys.append(type(exc))
            continue
        keys.append(key)
        sent += of(actions, Transmit)
    results, actions = many.send_many(REQUESTS, 5_000)
    assert [r if isinstance(r, str) else type(r) for r in results] == keys
    assert keys[1:3] == [InvalidArgument, InvalidArgument]
    assert keys[4] is StoreFull
    assert isinstance(results[4], StoreFull)
    # The same bundles, byte for byte, in the same order; nothing else sent.
    assert [t.parts for t in of(actions, Transmit)] == [t.parts for t in sent]
    assert len(sent) == 2
    assert many.stored == one.stored == 3
    assert many.counters == one.counters
    # One look at the timers for the whole call.
    assert len(of(actions, Schedule)) <= 1


def test_a_failure_that_stops_send_many_keeps_what_it_stored() -> None:
    # A malformed request (not four fields) stops the call: the two bundles
    # stored before it stay stored, and the exception says so (their keys
    # and transmissions), so that the driver does not tell the app they
    # failed (it would send them again).
    a = _agent()
    good = [REQUESTS[0], REQUESTS[5]]
    bad: list[Any] = [*good, ("ipn:1.1", "ipn:2.1"), REQUESTS[0]]
    with pytest.raises(SendsInterrupted) as info:
        a.send_many(bad, 5_000)
    exc = info.value
    assert isinstance(exc.__cause__, ValueError)
    assert len(exc.results) == 2
    assert all(isinstance(k, str) for k in exc.results)
    assert a.stored == 2
    assert {a.store.record(str(k)) is not None for k in exc.results} == {True}
    assert len(of(exc.actions, Transmit)) == 2
