"""The agent's timers: bundle expiry, unrouted-bundle retries, transmit
back-off and the purge of delivered keys.

Theory of operation
-------------------
Three heaps hold the timers: ``_expiry`` (bundle lifetimes), ``_reroute``
(per destination, unrouted bundles are routed again) and ``_backoff`` (per
neighbour, after a failed transmission). All three delete lazily: an entry
whose bundle left, whose retry was superseded or whose link closed is
dropped when it reaches the top. :func:`on_tick` runs what is due;
:func:`next_deadline` is the earliest live entry, and :func:`finish` (run at
the end of every public method) emits a ``Schedule`` when it changed and
rebuilds the expiry heap when stale entries outnumber live ones.

Functions take the ``Agent`` as ``self`` (bound as its methods; see
:mod:`dcis.dtn.agent.entries`).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from dcis.dtn.agent import held
from dcis.dtn.agent.actions import (
    Action,
    Event,
    Schedule,
)
from dcis.dtn.agent.entries import (
    Entry,
)
from dcis.dtn.bpv7.admin import StatusKind, StatusReason
from dcis.dtn.time import DtnTime

if TYPE_CHECKING:
    from dcis.dtn.agent.agent import Agent

EXPIRY_SLACK = 64
"""Dead (lazily deleted) expiry entries an agent may hold beyond twice its
live ones before it compacts the heap. Small, because a simulator runs a
thousand agents at once: at 1,024 each, a 1,000-node day held up to ~1M
dead entries (~150 MB); compacting is O(live entries) and frees at least
``EXPIRY_SLACK`` + live entries, so its amortized cost stays O(1) per bundle."""


def on_tick(self: Agent, now: int) -> list[Action]:
    """Timers: expire bundles whose lifetime ended, retry after backoff,
    forget old delivered keys."""
    actions: list[Action] = []
    with self.store.transaction(durable=False):
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expiry, key = heapq.heappop(heap)
            e = self._entries.get(key)
            if e is not None and e.expiry_ms == expiry:
                self._expire(e, now, actions)
        if self._held:
            held.flush_due(self, now, actions)
        self._check_plan(now, actions)
        rr = self._reroute
        while rr and rr[0][0] <= now:
            at, d = heapq.heappop(rr)
            if self._reroute_at.get(d) == at:
                self._retry_unrouted(d, now, actions)
        bo = self._backoff
        while bo and bo[0][0] <= now:
            _, nb = heapq.heappop(bo)
            if nb in self._links:
                self._pump(nb, now, actions)
        if now >= self._next_purge:
            self.store.purge_delivered(now)
            self._next_purge = now + self.config.purge_interval_ms
    self._finish(actions)
    return actions


def next_deadline(self: Agent) -> DtnTime | None:
    """When ``on_tick`` must next be called (None: no timer pending)."""
    # Called after every input (by ``finish`` and by the driver): stale
    # tops are dropped here, so each test below is one lookup.
    heap = self._expiry
    entries = self._entries
    while heap:
        expiry, key = heap[0]
        e = entries.get(key)
        if e is not None and e.expiry_ms == expiry:
            break
        heapq.heappop(heap)
    at = heap[0][0] if heap else None
    if self._held:
        h = held.held_deadline(self)
        if h is not None and (at is None or h < at):
            at = h
    bo = self._backoff
    if bo:
        links = self._links
        while bo and bo[0][1] not in links:
            heapq.heappop(bo)
        if bo and (at is None or bo[0][0] < at):
            at = bo[0][0]
    rr = self._reroute
    if rr:
        reroute_at = self._reroute_at
        while rr and reroute_at.get(rr[0][1]) != rr[0][0]:
            heapq.heappop(rr)
        if rr and (at is None or rr[0][0] < at):
            at = rr[0][0]
    return None if at is None else DtnTime(at)


def finish(self: Agent, actions: list[Action]) -> None:
    # The expiry heap deletes lazily: entries of bundles that left stay
    # until their time comes. Rebuild it when they outnumber the live
    # ones, so memory follows stored bundles, not bundles handled.
    if len(self._expiry) > 2 * len(self._entries) + EXPIRY_SLACK:
        self._expiry = [(e.expiry_ms, k) for k, e in self._entries.items()]
        heapq.heapify(self._expiry)
    at = self.next_deadline()
    if at is not None and at != self._last_schedule:
        actions.append(Schedule(at))
    self._last_schedule = at


def expire(self: Agent, e: Entry, now: int, actions: list[Action]) -> None:
    self._report_entry(
        e, StatusKind.DELETED, StatusReason.LIFETIME_EXPIRED, now, actions
    )
    self._remove(e)
    self.counters["expired"] += 1
    actions.append(Event("expired", e.key, f"lifetime ended at {e.expiry_ms}"))
