"""NodeCore: one bundle agent plus the services on its endpoints (sans-I/O).

Theory of operation
-------------------
A driver (the trio runtime or the simulator) talks only to a
:class:`NodeCore`. Its inputs mirror the agent's (``on_receive``,
``on_contact_start``, ``on_tick``, ``send``, ``on_delivered``, ...) and
return the agent's kind of actions, minus everything meant for a service:

- a ``Deliver`` to a service endpoint ``ipn:<node>.<service>`` goes to that
  service's ``on_bundle``; the service's sends, its ``ctx.state`` writes and
  the agent's delivery confirmation (``on_delivered``) all happen inside the
  one store transaction the input call runs in, so a crash keeps all of them
  or none;
- a service's :class:`~dcis.dtn.node.service.Send` becomes ``agent.send`` from
  the service's endpoint; a tagged one is answered with
  ``on_send_result(tag, key | None, error | None)`` at once;
- contacts: the first open contact to a neighbour calls every service's
  ``on_contact(neighbour, True)``, the last one closing ``... False``;
- timers: after every input (and after every service call it leads to) each
  service's ``next_deadline()`` is read again, and a service whose deadline
  is at or before ``now`` is ticked in the same step, so one service can
  make work for another (a local ``submit()`` that sets a deadline of now)
  and have it done in the same transaction. :meth:`next_deadline` is the
  earliest of the agent's and the services'.

What comes out: ``Transmit``, ``Ack``, ``Deliver`` (to app endpoints only),
``Schedule`` and ``Event`` -- the driver never sees a service's bundles.

Failure containment: a service method that raises (any ``Exception``) has
its staged state writes discarded and is reported as
``Event(EventKind.SERVICE_FAILED)``; the node carries on. A bundle whose
``on_bundle`` raised is confirmed delivered all the same (it would fail the
same way at every restart). A ``Send`` the agent refuses (store full, bad
destination) is reported to a tagged send's ``on_send_result`` or, untagged,
as ``Event(EventKind.SERVICE_SEND_FAILED)``.

A service call that returned but whose state commit failed (the store
raising: a disk error) is reported as ``SERVICE_FAILED`` (detail: "state
commit failed"). Its writes stay staged, its sends are held, and a bundle
it was handling stays in the store unconfirmed -- nothing of the call goes
out before its state is durable. The commit is retried at ``next_deadline`` (after
:data:`COMMIT_RETRY_MIN_MS`, doubling up to :data:`COMMIT_RETRY_MAX_MS`)
and by any later call of the service; until one succeeds, bundles for the
service wait in the store and the service is not ticked (its deadline is
ignored), and at most :data:`MAX_HELD_SENDS` sends are held (more are
dropped, each an ``Event(SERVICE_SEND_FAILED)``). The successful commit confirms the bundles,
lets the held sends go, and hands the waiting bundles over in order (the
service never sees a bundle twice for a commit that failed).

A commit only joins the store transaction of the input (or of a driver
around it) and is one savepoint of it (``SqliteStore.savepoint``: all of a
call's writes or none). If that transaction then rolls back
(``SqliteStore.when_settled`` says so), each service whose commit joined it
fails as above: its writes are staged again, what it sent since is held,
the bundles it was handed since wait unconfirmed; the next input reports it.
A held send the agent had taken is sent again as the same bundle (its
creation timestamp kept: ``Agent.send(created=...)``), a tagged one not
reported again; a bundle a service has durably since its retried commit
is confirmed, not handed over, when it comes again (:data:`MAX_TAKEN_KEYS`).

Anything else that stops the services' turn (the agent's confirmation or
redelivery raising, the driver's ``on_service_delivery`` hook) never leaves
an input call: the actions produced so far come out with an
``Event(SERVICE_FAILED)``, the bundle being handed over and those not
reached wait in the store and are handed over at the next step (backing
off as above while it keeps failing; a bundle whose confirmation failed is
handed again -- at least once, never lost).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from dcis.dtn.agent.actions import Action, Deliver, Event, EventKind, Schedule
from dcis.dtn.agent.agent import (
    ConfirmationsInterrupted,
    Received,
    SendRequest,
    SendsInterrupted,
)
from dcis.dtn.bpv7.eid import IpnEid, parse_eid
from dcis.dtn.errors import DtnError, InvalidArgument
from dcis.dtn.node.service import (
    RESERVED_SERVICES,
    Inbound,
    NodeCredentials,
    Send,
    Service,
)
from dcis.dtn.node.state import MemoryStateBackend, StagedState, StateBackend
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.time import DtnTime

__all__ = ["EndpointReserved", "NodeAgent", "NodeCore", "StateNotDurable"]

MAX_TICK_ROUNDS = 64
"""Rounds of "tick every service whose deadline is due" in one step; a
service still due after that is reported (SERVICE_FAILED) and waits for the
next step, so a deadline that never advances cannot hang the node."""


MAX_SERVICE_DELIVERIES = 1000
"""Bundles handed to services in one step. More (services on this node
sending to each other without end) wait, held in the store, for the next
step one millisecond later: a loop between services cannot hang the node."""


COMMIT_RETRY_MIN_MS = 100
"""First retry of a service's failed state commit, this long after it."""

COMMIT_RETRY_MAX_MS = 30_000
"""Longest wait between retries of a commit that keeps failing (the wait
doubles from :data:`COMMIT_RETRY_MIN_MS`); every failure is an event."""


MAX_HELD_SENDS = 1000
"""Most sends held for one service while its state commits fail; sends
beyond it are dropped, each an ``Event(SERVICE_SEND_FAILED)``."""

MAX_TAKEN_KEYS = 1000
"""Most keys remembered of bundles a service took while its commits
failed and has durably since (the oldest are forgotten first): one that
comes again is confirmed, not handed over a second time."""

_Held = tuple[Send, tuple[int, int] | None]
"""A service's send and, if the agent took it in a store transaction that
then rolled back, the creation timestamp (ms, sequence) its bundle had:
sent again as that same bundle (its key unchanged) and, tagged, not
reported again (``on_send_result`` was told that key)."""


def _backoff(failures: int) -> int:
    """The wait (ms) after the ``failures``-th failure in a row (>= 1)."""
    return min(COMMIT_RETRY_MIN_MS << min(failures - 1, 20), COMMIT_RETRY_MAX_MS)


def _retry_commit(now_ms: int) -> list[Send]:
    """Stands for a service call when a failed commit is retried."""
    return []


class EndpointReserved(InvalidArgument):
    """An app tried to register (or send from) an endpoint that belongs to
    the node: ``ipn:N.0``, a reserved service number or a running service."""


class StateNotDurable(DtnError):
    """A service answered, but its state commit failed: what it did is
    staged in memory only (retried later, lost by a crash before that).
    An app's request to it gets this error, never the service's replies:
    the app may send the request again."""


class NodeAgent(Protocol):
    """What :class:`NodeCore` needs of a bundle agent (``dcis.dtn.agent.Agent``)."""

    def register(self, endpoint: str, *, now: int | None = None) -> Any:
        """``Agent.register``: a list of actions (a test fake may return None)."""
        ...

    def unregister(self, endpoint: str) -> None: ...

    def send(
        self,
        *,
        source: str,
        destination: str,
        payload: bytes,
        lifetime_ms: int,
        now: int,
        created: tuple[int, int] | None = None,
    ) -> tuple[str, list[Action]]:
        """``Agent.send``; ``created`` is only given for a bundle sent
        before whose transaction rolled back."""
        ...

    def send_many(
        self, requests: Iterable[SendRequest], now: int, *, write_later: bool = False
    ) -> tuple[list[str | Exception], list[Action]]: ...

    def on_receive(
        self,
        *,
        cla: str,
        neighbor: int | None,
        data: bytes,
        now: int,
        cl_token: int | None = None,
    ) -> list[Action]: ...

    def on_receive_many(self, batch: Iterable[Received], now: int) -> list[Action]: ...

    def on_contact_start(self, contact: Contact, now: int) -> list[Action]: ...

    def on_contact_end(self, contact: Contact, now: int) -> list[Action]: ...

    def on_transmit_done(self, tx_id: int, ok: bool, now: int) -> list[Action]: ...

    def on_transmit_done_many(
        self, results: Iterable[tuple[int, bool]], now: int
    ) -> list[Action]: ...

    def on_delivered(self, bundle_key: str, now: int) -> list[Action]: ...

    def on_delivered_many(
        self, bundle_keys: Iterable[str], now: int
    ) -> list[Action]: ...

    def redeliver(
        self, keys: Iterable[str], now: int | None = None
    ) -> list[Action]: ...

    def on_tick(self, now: int) -> list[Action]: ...

    def next_deadline(self) -> DtnTime | None: ...

    def recover(self, now: int) -> list[Action]: ...

    def forget_unstored(
        self, keys: Iterable[str], why: str
    ) -> tuple[list[Action], set[int]]: ...

    def transmission_key(self, tx_id: int) -> str | None: ...


class _Context:
    """The :class:`~dcis.dtn.node.service.ServiceContext` a service is started with."""

    def __init__(
        self,
        core: NodeCore,
        service: int,
        rng: random.Random,
        state: StagedState,
    ) -> None:
        self._core = core
        self._service = service
        self._rng = rng
        self._state = state

    @property
    def node(self) -> int:
        return self._core.node

    @property
    def incarnation(self) -> int:
        return self._core.incarnation

    @property
    def rng(self) -> random.Random:
        return self._rng

    @property
    def plan(self) -> ContactPlan:
        return self._core.plan

    @property
    def state(self) -> StagedState:
        return self._state

    @property
    def credentials(self) -> NodeCredentials | None:
        return self._core.credentials

    def earliest_arrival(self, node: int, *, at_ms: int, size: int = 0) -> int | None:
        return self._core.earliest_arrival(node, at_ms=at_ms, size=size)


class _Slot:
    __slots__ = (
        "ctx",
        "endpoint",
        "failures",
        "held",
        "joined",
        "parked",
        "retry_at",
        "service",
        "state",
        "unconfirmed",
    )

    def __init__(
        self, service: Service, endpoint: str, state: StagedState, ctx: _Context
    ) -> None:
        self.service = service
        self.endpoint = endpoint
        self.state = state
        self.ctx = ctx
        # While its state commits fail (retry_at is not None): failures in
        # a row, the sends of the calls whose commit failed, bundles it was
        # handed whose confirmation waits for a commit, and bundles for it
        # waiting in the store to be handed over.
        self.retry_at: int | None = None
        self.failures = 0
        self.held: list[_Held] = []
        self.unconfirmed: dict[str, None] = {}
        self.parked: dict[str, None] = {}
        # From its first state commit into an open transaction that may
        # still roll back until that is settled: what it did since.
        self.joined: _Joined | None = None


class _Joined:
    """What a service did in the open store transaction since its first
    state commit joined it: undone by a rollback, so done again after
    its retried commit (:meth:`NodeCore._settled`)."""

    __slots__ = ("confirmed", "parked", "sends")

    def __init__(self) -> None:
        self.sends: list[_Held] = []  # handed to the agent
        self.confirmed: dict[str, None] = {}  # bundles confirmed delivered
        self.parked: dict[str, None] = {}  # waiting bundles handed over again


class NodeCore:
    """A node: ``agent`` plus ``services`` (see the module docstring).

    ``incarnation`` counts the node's starts (1 at the first);
    ``rng`` seeds each service's ``ctx.rng`` (one stream per service, in
    service order); ``state`` holds services' durable state (default: the
    agent's store when it has one that keeps service state, else a map in
    memory); ``plan``/``plan_epoch`` (DTN ms of plan time 0) serve
    ``ctx.plan`` and ``ctx.earliest_arrival``; ``credentials`` is
    ``ctx.credentials``. ``on_service_delivery``, when given, is told of
    every bundle handed to a service (the simulator's ledger).

    Raises :class:`InvalidArgument` when two services share a number or a
    service number is not a non-negative int. Call :meth:`start` before
    anything else.
    """

    def __init__(
        self,
        agent: NodeAgent,
        *,
        node: int,
        services: Sequence[Service] = (),
        incarnation: int = 1,
        rng: random.Random | None = None,
        state: StateBackend | None = None,
        plan: ContactPlan | None = None,
        plan_epoch: int = 0,
        credentials: NodeCredentials
        | Callable[[], NodeCredentials | None]
        | None = None,
        on_service_delivery: Callable[[Inbound], None] | None = None,
    ) -> None:
        self.agent = agent
        self.node = node
        self.incarnation = incarnation
        self._credentials = credentials
        self.plan_epoch = plan_epoch
        self._plan = plan
        self._router: Any = None
        self._on_service_delivery = on_service_delivery
        store = getattr(agent, "store", None)
        self._store = store
        # A test fake's store may not group writes: then nothing does.
        self._txn_store = store if hasattr(store, "transaction") else None
        # A store that can roll back a commit after a nested block closed
        # tells when the transaction settles (MemoryStore cannot).
        self._settles = hasattr(store, "when_settled")
        if state is None:
            state = (
                store
                if store is not None and hasattr(store, "service_put")
                else MemoryStateBackend()
            )
        self._backend = state
        seeder = rng if rng is not None else random.Random()
        self._slots: dict[int, _Slot] = {}
        self._by_endpoint: dict[str, _Slot] = {}
        for svc in services:
            num = svc.service
            if type(num) is not int or num < 0:
                raise InvalidArgument(
                    f"service number must be an int >= 0, got {num!r}"
                )
            if num in self._slots:
                raise InvalidArgument(f"two services claim service number {num}")
            staged = StagedState(state, num)
            ctx = _Context(self, num, random.Random(seeder.getrandbits(64)), staged)
            slot = _Slot(svc, f"ipn:{node}.{num}", staged, ctx)
            self._slots[num] = slot
            self._by_endpoint[slot.endpoint] = slot
        self._contacts: dict[int, set[Contact]] = {}
        self._started = False
        # Keys of service bundles over one step's budget (redelivered next step).
        self._deferred: dict[str, None] = {}
        # When the services' turn fails: redelivery waits this long (ms).
        self._backoff_ms = 1
        self._turn_failures = 0
        # The bundle being handed to a service (deferred if the turn fails).
        self._handing: str | None = None
        # Services whose state commit failed (by endpoint), and what their
        # successful commit released: (key, True) to confirm delivered,
        # (key, False) to hand over again.
        self._failing: dict[str, _Slot] = {}
        self._released: list[tuple[str, bool]] = []
        # Bundles a service took while failing and has durably since (key
        # -> its slot, oldest first, at most MAX_TAKEN_KEYS): confirmed,
        # not handed over again, when they come back (sent again).
        self._taken: dict[str, _Slot] = {}
        # Services whose state commits joined the open transaction, and
        # the events of a rollback, reported by the next input.
        self._joined: list[_Slot] = []
        self._notes: list[Action] = []
        # The service whose state commit runs (its failure is counted once).
        self._committing: _Slot | None = None
        self._now = 0
        self._last_schedule: int | None = None
        self.state_commits = 0
        """Services' state commits made so far (each call's, retries too):
        a driver whose commits become durable later (group commit) holds
        the services' transmissions while one is not (spec/node.md,
        "Sends wait for the state they follow")."""
        self.event_counts: dict[str, int] = dict.fromkeys(EventKind, 0)
        """Events that came out of this node so far, by :class:`EventKind`
        (every kind present from the start): counters derived from the
        events themselves, so their names are the events' names."""

    # ------------------------------------------------------------ properties

    @property
    def plan(self) -> ContactPlan:
        """The node's contact plan (an empty one if it has none)."""
        if self._plan is None:
            self._plan = ContactPlan()
        return self._plan

    @property
    def credentials(self) -> NodeCredentials | None:
        """``ctx.credentials``: as given, or what the callable given returns
        now (a runtime's key store reloads revocations)."""
        c = self._credentials
        return c() if callable(c) else c

    @property
    def services(self) -> dict[int, Service]:
        """The running services by service number."""
        return {n: s.service for n, s in self._slots.items()}

    @property
    def store(self) -> Any:
        """The agent's bundle store (None for an agent without one)."""
        return self._store

    def is_reserved(self, endpoint: str) -> bool:
        """True if ``endpoint`` belongs to the node itself: ``ipn:N.0``, a
        number of :data:`~dcis.dtn.node.RESERVED_SERVICES`, or a running
        service's endpoint. App clients may neither register nor send from
        these. Raises :class:`InvalidArgument` for a malformed EID."""
        eid = parse_eid(endpoint)
        if not isinstance(eid, IpnEid) or eid.node != self.node:
            return False
        return eid.service in RESERVED_SERVICES or eid.service in self._slots

    def earliest_arrival(self, node: int, *, at_ms: int, size: int = 0) -> int | None:
        """CGR's earliest arrival (DTN ms) at ``node`` of ``size`` bytes sent
        at ``at_ms``; ``at_ms`` itself for this node; None with no route."""
        if node == self.node:
            return at_ms
        if self._plan is None:
            return None
        if self._router is None:
            from dcis.dtn.routing.cgr import Router

            self._router = Router(self._plan)
        route = self._router.best_route(
            self.node, node, (at_ms - self.plan_epoch) / 1000.0, max(size, 0)
        )
        if route is None:
            return None
        arrival_ms: int = self.plan_epoch + math.ceil(route.arrival_s * 1000.0)
        return arrival_ms

    # ------------------------------------------------------------ lifecycle

    def start(self, now: int, *, recover: bool = False) -> list[Action]:
        """Register the services' endpoints, resume the store (``recover``:
        after a restart), then start every service. Bundles held for a
        service are handed to it only once all services have started."""
        if self._started:
            raise InvalidArgument("NodeCore.start called twice")
        self._started = True
        self._now = max(self._now, now)
        with self._txn(durable=False):
            actions: list[Action] = []
            for slot in self._slots.values():
                got = self.agent.register(slot.endpoint, now=now)
                if isinstance(got, list):
                    actions += got
            if recover:
                actions += self.agent.recover(now)
            work: deque[Action] = deque()
            out: list[Action] = []
            for slot in self._slots.values():
                sends = self._call(slot, out, slot.service.start, slot.ctx, now)
                out.append(Event(EventKind.SERVICE_STARTED, "", slot.endpoint))
                self._send_all(slot, sends, now, work, out)
            work.extendleft(reversed(actions))
            return self._run(work, now, out)

    def stop(self) -> None:
        """Orderly shutdown: every service's ``stop()`` (errors ignored)."""
        for slot in self._slots.values():
            with contextlib.suppress(Exception):
                slot.service.stop()

    # ------------------------------------------------------------ agent inputs

    def register(self, endpoint: str, *, now: int | None = None) -> list[Action]:
        """Register an app endpoint (see ``Agent.register``). Raises
        :class:`EndpointReserved` for the node's own endpoints
        (:meth:`is_reserved`)."""
        if self.is_reserved(endpoint):
            raise EndpointReserved(_reserved_message(endpoint))
        t = 0 if now is None else now
        with self._txn(durable=False):
            got = self.agent.register(endpoint, now=now)
            return self._run(deque(got if isinstance(got, list) else []), t)

    def unregister(self, endpoint: str) -> None:
        """Stop delivering to app endpoint ``endpoint``."""
        if not self.is_reserved(endpoint):
            self.agent.unregister(endpoint)

    def send(
        self,
        *,
        source: str,
        destination: str,
        payload: bytes,
        lifetime_ms: int,
        now: int,
    ) -> tuple[str, list[Action]]:
        """Originate an app bundle (see ``Agent.send``; raises as it does).
        The caller decides which sources an app may use (:meth:`is_reserved`)."""
        with self._txn(durable=True):
            key, actions = self.agent.send(
                source=source,
                destination=destination,
                payload=payload,
                lifetime_ms=lifetime_ms,
                now=now,
            )
            return key, self._run(deque(actions), now)

    def send_many(
        self, requests: Iterable[SendRequest], now: int, *, write_later: bool = False
    ) -> tuple[list[str | Exception], list[Action]]:
        """See ``Agent.send_many``: several app bundles in one transaction,
        each request's key or exception in order. The caller decides which
        sources an app may use, as for :meth:`send`. ``write_later``: the
        caller answers the app only after the store's next sync (see
        ``Agent.send``); never for a service's bundles.

        Raises :class:`~dcis.dtn.agent.agent.SendsInterrupted` when a
        failure stops the agent's call: the bundles stored before it stay
        stored (the transaction block closes normally), and the exception
        carries their outcomes and their actions, the services' turn done.
        A failure in the services' turn (a state commit, say) is contained
        as in every input (see the module docstring)."""
        failure: SendsInterrupted | None = None
        with self._txn(durable=True):
            try:
                results, actions = self.agent.send_many(
                    requests, now, write_later=write_later
                )
            except SendsInterrupted as exc:
                failure = exc
                results, actions = exc.results, exc.actions
            out = self._run(deque(actions), now)
        if failure is not None:
            failure.actions = out
            raise failure
        return results, out

    def on_receive(
        self,
        *,
        cla: str,
        neighbor: int | None,
        data: bytes,
        now: int,
        cl_token: int | None = None,
    ) -> list[Action]:
        """See ``Agent.on_receive``."""
        with self._txn(durable=True):
            actions = self.agent.on_receive(
                cla=cla, neighbor=neighbor, data=data, now=now, cl_token=cl_token
            )
            return self._run(deque(actions), now)

    def on_receive_many(self, batch: Iterable[Received], now: int) -> list[Action]:
        """See ``Agent.on_receive_many`` (one store commit for the batch)."""
        with self._txn(durable=True):
            return self._run(deque(self.agent.on_receive_many(batch, now)), now)

    def on_contact_start(self, contact: Contact, now: int) -> list[Action]:
        """See ``Agent.on_contact_start``; the first open contact to a
        neighbour is announced to the services."""
        self._now = max(self._now, now)
        with self._txn(durable=False):
            work = deque(self.agent.on_contact_start(contact, now))
            out: list[Action] = []
            if contact.frm == self.node and contact.to != self.node:
                open_ = self._contacts.setdefault(contact.to, set())
                first = not open_
                open_.add(contact)
                if first:
                    self._contact(contact.to, True, now, work, out)
            return self._run(work, now, out)

    def on_contact_end(self, contact: Contact, now: int) -> list[Action]:
        """See ``Agent.on_contact_end``; the last contact to a neighbour
        closing is announced to the services."""
        self._now = max(self._now, now)
        with self._txn(durable=False):
            work = deque(self.agent.on_contact_end(contact, now))
            out: list[Action] = []
            open_ = self._contacts.get(contact.to)
            if contact.frm == self.node and open_ and contact in open_:
                open_.discard(contact)
                if not open_:
                    del self._contacts[contact.to]
                    self._contact(contact.to, False, now, work, out)
            return self._run(work, now, out)

    def on_transmit_done(self, tx_id: int, ok: bool, now: int) -> list[Action]:
        """See ``Agent.on_transmit_done``."""
        with self._txn(durable=False):
            return self._run(deque(self.agent.on_transmit_done(tx_id, ok, now)), now)

    def on_transmit_done_many(
        self, results: Iterable[tuple[int, bool]], now: int
    ) -> list[Action]:
        """See ``Agent.on_transmit_done_many``."""
        with self._txn(durable=False):
            return self._run(deque(self.agent.on_transmit_done_many(results, now)), now)

    def on_delivered(self, bundle_key: str, now: int) -> list[Action]:
        """An app endpoint has bundle ``bundle_key`` (see ``Agent.on_delivered``)."""
        with self._txn(durable=False):
            return self._run(deque(self.agent.on_delivered(bundle_key, now)), now)

    def on_delivered_many(self, bundle_keys: Iterable[str], now: int) -> list[Action]:
        """App endpoints have these bundles, in order: one commit and one
        round of the services for all (see ``Agent.on_delivered_many``).
        Raises ``ConfirmationsInterrupted`` as the agent does, after its
        own block closed normally, with the actions the services left."""
        failure: ConfirmationsInterrupted | None = None
        with self._txn(durable=False):
            try:
                actions = self.agent.on_delivered_many(bundle_keys, now)
            except ConfirmationsInterrupted as exc:
                failure, actions = exc, exc.actions
            out = self._run(deque(actions), now)
        if failure is not None:
            failure.actions = out
            raise failure
        return out

    def redeliver(self, keys: Iterable[str], now: int) -> list[Action]:
        """See ``Agent.redeliver`` (app bundles a driver deferred)."""
        with self._txn(durable=False):
            return self._run(deque(self.agent.redeliver(keys, now)), now)

    def call_service(
        self, service: int, method: str, *args: Any, now: int
    ) -> list[Action]:
        """Call ``method(*args, now)`` of the service numbered ``service`` on
        behalf of the embedding program (e.g. membership's
        ``advertise_resources``), as any input is: its state writes and
        sends commit together and its timers are read again. Raises
        :class:`InvalidArgument` when no such service or method exists; an
        exception the method raises is reported as ``SERVICE_FAILED`` like
        any other (validate arguments before calling)."""
        slot = self._slots.get(service)
        fn = getattr(slot.service, method, None) if slot is not None else None
        if slot is None or not callable(fn):
            raise InvalidArgument(f"no service {service} with a method {method!r}")
        self._now = max(self._now, now)
        with self._txn(durable=True):
            work: deque[Action] = deque()
            out: list[Action] = []
            sends = self._call(slot, out, fn, *args, now)
            self._send_all(slot, sends, now, work, out)
            return self._run(work, now, out)

    def forget_unstored(
        self, keys: Iterable[str], why: str
    ) -> tuple[list[Action], set[int]]:
        """The store dropped ``keys`` (their late writes failed at a sync):
        ``Agent.forget_unstored``, after forgetting them here too -- a
        bundle waiting to be handed to a service (deferred, parked, released)
        is not handed over, one a service has but whose confirmation waits
        for its failing commit is no longer waited for. The service has
        acted on such a bundle (in memory, staged): its sender, told the
        store refused it, may send it again and the service see it twice
        (an ``Event(SERVICE_FAILED)`` says so)."""
        gone = dict.fromkeys(keys)
        for key in gone:
            self._deferred.pop(key, None)
        if self._released:
            self._released[:] = [kc for kc in self._released if kc[0] not in gone]
        taken: list[tuple[str, str]] = []
        for slot in self._slots.values():
            for key in gone:
                slot.parked.pop(key, None)
                if key in slot.unconfirmed:
                    del slot.unconfirmed[key]
                    taken.append((slot.endpoint, key))
        actions, hops = self.agent.forget_unstored(list(gone), why)
        for endpoint, key in taken:
            actions.append(
                Event(
                    EventKind.SERVICE_FAILED,
                    key,
                    f"{endpoint}: a bundle it took while its state commit "
                    f"fails was refused (its late write failed: {why}); "
                    "its sender may send it again",
                )
            )
        return self._counted(actions), hops

    def sent_by_service(self, tx_id: int) -> bool:
        """True if ``Transmit(tx_id)`` (in flight) carries a bundle one of
        the services sent (its source is a service's endpoint)."""
        key = self.agent.transmission_key(tx_id)
        return key is not None and key.partition("|")[0] in self._by_endpoint

    def commit_failing(self, service: int) -> bool:
        """True while the state commits of the service numbered ``service``
        fail: its writes (and the sends of those calls) are staged in
        memory, not durable. A caller must not report a call that leaves
        it True as done (e.g. answer an app with the call's replies)."""
        slot = self._slots.get(service)
        return slot is not None and slot.retry_at is not None

    def on_tick(self, now: int) -> list[Action]:
        """Timers of the agent and of every service due at ``now``."""
        with self._txn(durable=False):
            return self._run(deque(self.agent.on_tick(now)), now)

    def recover(self, now: int) -> list[Action]:
        """See ``Agent.recover`` (:meth:`start` with ``recover=True`` does it
        at the right moment; this is for drivers that recover later)."""
        with self._txn(durable=False):
            return self._run(deque(self.agent.recover(now)), now)

    def next_deadline(self) -> DtnTime | None:
        """The earliest of the agent's and the services' deadlines."""
        at = self.agent.next_deadline()
        if self._deferred or self._released:
            soon = self._now + self._backoff_ms
            if at is None or at > soon:
                at = DtnTime(soon)
        if self._failing:
            for slot in self._failing.values():
                r = slot.retry_at
                if r is not None and (at is None or r < at):
                    at = DtnTime(r)
        for slot in self._slots.values():
            if slot.retry_at is not None:
                continue  # not ticked while its commits fail: retry_at above
            d = _deadline(slot)
            if d is not None and (at is None or d < at):
                at = DtnTime(d)
        return at

    # ------------------------------------------------------------ plumbing

    def _txn(self, *, durable: bool) -> contextlib.AbstractContextManager[None]:
        store = self._txn_store
        if store is None:
            return contextlib.nullcontext()
        txn: contextlib.AbstractContextManager[None] = store.transaction(
            durable=durable
        )
        return txn

    def _call(
        self, slot: _Slot, out: list[Action], fn: Callable[..., Any], *args: Any
    ) -> list[_Held]:
        """Call one service method; commit or discard its state writes.
        Returns the sends to make (after those held, when it recovered)."""
        try:
            sends = fn(*args)
            if sends is None:
                sends = []
            sends = list(sends)
            for s in sends:
                if not isinstance(s, Send):
                    raise TypeError(f"returned {type(s).__name__}, not Send")
            made: list[_Held] = [(s, None) for s in sends]
        except Exception as exc:
            slot.state.discard()
            out.append(
                Event(
                    EventKind.SERVICE_FAILED,
                    "",
                    f"{slot.endpoint} {getattr(fn, '__name__', 'call')}: "
                    f"{type(exc).__name__}: {exc}",
                )
            )
            return []
        if slot.state.dirty or slot.retry_at is not None:
            # A durable block inside the outer one: the commit that holds
            # these writes is fsynced like a received bundle's. (A failing
            # service has writes staged -- but for a savepoint whose
            # release failed after its writes: its retry commits nothing.)
            try:
                store = self._txn_store
                if store is None:
                    slot.state.commit()
                else:
                    # All or none of the call's writes (when the store can
                    # undo a nested block's: SqliteStore.savepoint).
                    block = getattr(store, "savepoint", store.transaction)
                    self._committing = slot
                    with block():
                        slot.state.commit(until_settled=self._settles)
                        if self._settles and slot.joined is None:
                            self._join(slot)
                self.state_commits += 1
            except Exception as exc:
                self._commit_failed(slot, fn, made, exc, out)
                return []
            finally:
                self._committing = None
            if slot.retry_at is not None:
                return self._commit_recovered(slot, made)
        return made

    def _commit_failed(
        self,
        slot: _Slot,
        fn: Callable[..., Any],
        sends: list[_Held],
        exc: Exception,
        out: list[Action],
    ) -> None:
        """``slot``'s state commit failed: its writes stay staged
        (``StagedState.commit``), ``sends`` are held; retry later."""
        slot.held += self._bounded(slot, sends, out)
        wait = self._retry_later(slot)
        out.append(
            Event(
                EventKind.SERVICE_FAILED,
                "",
                f"{slot.endpoint} {getattr(fn, '__name__', 'call')}: state commit "
                f"failed ({slot.failures} in a row, retried in {wait} ms): "
                f"{type(exc).__name__}: {exc}",
            )
        )

    def _bounded(
        self, slot: _Slot, sends: list[_Held], out: list[Action]
    ) -> list[_Held]:
        """The part of ``sends`` ``slot`` may hold besides what it holds."""
        room = MAX_HELD_SENDS - len(slot.held)
        if len(sends) > room:
            # At the bound: the newest sends are dropped, each reported as
            # a send the agent refused (a tagged one's on_send_result is
            # not called: that call's writes could not commit either --
            # or it was, with the key of a bundle that rolled back: the
            # event names that key).
            for s, created in sends[max(room, 0) :]:
                out.append(
                    _send_failed(
                        slot,
                        s,
                        created,
                        f"dropped, {MAX_HELD_SENDS} sends already held for a "
                        "failing state commit",
                    )
                )
            sends = sends[: max(room, 0)]
        return sends

    def _retry_later(self, slot: _Slot) -> int:
        """One more failure of ``slot``'s commit: its retry backs off."""
        slot.failures += 1
        wait = _backoff(slot.failures)
        slot.retry_at = self._now + wait
        self._failing[slot.endpoint] = slot
        return wait

    def _join(self, slot: _Slot) -> None:
        """``slot``'s commit joined the open transaction: follow what it
        does until the transaction settles (:meth:`_settled`)."""
        first = not self._joined
        slot.joined = _Joined()
        self._joined.append(slot)
        if first:
            store = self._txn_store
            assert store is not None
            store.when_settled(self._settled)

    def _settled(self, committed: bool) -> None:
        """The store's transaction the services' commits joined has
        committed -- or rolled back: then their writes never reached the
        disk. Each such service is failing as after a failed commit: its
        writes are staged again, what it sent since is held, the bundles
        it was handed (and whose confirmation rolled back) wait for the
        retried commit. Runs inside the store's call: no store use."""
        joined, self._joined = self._joined, []
        if not committed:
            # A Schedule that went out with the lost input is gone too:
            # the next step announces the deadline again (recover).
            self._last_schedule = None
        for slot in joined:
            did, slot.joined = slot.joined, None
            slot.state.settle(committed)
            if committed or did is None:
                continue
            keys = did.confirmed | did.parked
            if self._released:
                self._released[:] = [kc for kc in self._released if kc[0] not in keys]
            slot.unconfirmed.update(did.confirmed)
            for key in did.parked:
                if key not in slot.unconfirmed:
                    slot.parked[key] = None
            notes = self._notes
            held, slot.held = did.sends + slot.held, []
            slot.held = self._bounded(slot, held, notes)
            if slot is self._committing:
                continue  # its own commit failing: counted and reported there
            wait = self._retry_later(slot)
            notes.append(
                Event(
                    EventKind.SERVICE_FAILED,
                    "",
                    f"{slot.endpoint}: state commit failed ({slot.failures} in a "
                    f"row, retried in {wait} ms): the transaction it joined "
                    "rolled back",
                )
            )

    def _commit_recovered(self, slot: _Slot, sends: list[_Held]) -> list[_Held]:
        """``slot``'s commit succeeded after failures: release what waited."""
        held, slot.held = slot.held, []
        taken = self._taken
        for k in slot.unconfirmed:
            taken.pop(k, None)
            taken[k] = slot
        while len(taken) > MAX_TAKEN_KEYS:
            del taken[next(iter(taken))]
        slot.retry_at = None
        slot.failures = 0
        del self._failing[slot.endpoint]
        released = self._released
        released += [(k, True) for k in slot.unconfirmed]
        released += [(k, False) for k in slot.parked]
        did = slot.joined
        if did is not None:
            did.confirmed.update(slot.unconfirmed)
            did.parked.update(slot.parked)
        slot.unconfirmed = {}
        slot.parked = {}
        return held + sends

    def _release(self, now: int, work: deque[Action]) -> None:
        """Confirm the bundles whose commit succeeded at last and hand over
        those that waited for it (in order; one at a time, so that a
        failure leaves the rest to the next step)."""
        released = self._released
        while released:
            key, confirm = released[0]
            if confirm:
                work.extend(self.agent.on_delivered(key, now))
            else:
                work.extend(self.agent.redeliver((key,), now))
            released.pop(0)

    def _send_all(
        self,
        slot: _Slot,
        sends: list[_Held],
        now: int,
        work: deque[Action],
        out: list[Action],
    ) -> None:
        """Hand ``slot``'s sends to the agent, each tagged one's result to
        the service (its sends in turn after the rest)."""
        pending = deque(sends)
        while pending:
            item = pending.popleft()
            s, created = item
            if slot.retry_at is not None:
                # Its commit failed meanwhile (a tagged send's result, the
                # transaction rolling back): what is left waits for it.
                slot.held += self._bounded(slot, [item], out)
                continue
            joined = slot.joined
            if joined is not None:
                # Held again if the transaction rolls back (under this
                # very send, too).
                joined.sends.append(item)
            key: str | None = None
            error: str | None = None
            try:
                key, actions = self.agent.send(
                    source=slot.endpoint,
                    destination=s.destination,
                    payload=s.payload,
                    lifetime_ms=s.lifetime_ms,
                    now=now,
                    created=created,  # None but for a bundle that rolled back
                )
                work.extend(actions)
            except DtnError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if slot.endpoint in self._failing:
                # The transaction rolled back under it (_settled): the
                # send is held with the rest, neither sent nor failed.
                continue
            if joined is not None:
                if error is not None:
                    joined.sends.pop()  # refused, and reported so: not again
                elif created is None and key is not None:
                    joined.sends[-1] = (s, _created_of(key))
            if s.tag is not None and created is None:
                pending.extend(
                    self._call(
                        slot, out, slot.service.on_send_result, s.tag, key, error, now
                    )
                )
            elif error is not None:
                out.append(_send_failed(slot, s, created, error))

    def _contact(
        self, neighbor: int, up: bool, now: int, work: deque[Action], out: list[Action]
    ) -> None:
        for slot in self._slots.values():
            sends = self._call(slot, out, slot.service.on_contact, neighbor, up, now)
            self._send_all(slot, sends, now, work, out)

    def _run(
        self, work: deque[Action], now: int, out: list[Action] | None = None
    ) -> list[Action]:
        """Hand service deliveries to their services, tick due services,
        until nothing is left for a service; return the rest for the driver."""
        if out is None:
            out = []
        if not self._slots:
            out.extend(work)
            return self._counted(out)
        if self._notes:
            out += self._notes
            self._notes = []
        self._now = max(self._now, now)
        try:
            self._turn(work, now, out)
        except Exception as exc:
            self._turn_failed(exc, work, out)
        else:
            if self._turn_failures:
                self._turn_failures = 0
                self._backoff_ms = 1
        at = self.next_deadline()
        if at is not None and at != self._last_schedule:
            out.append(Schedule(at))
        self._last_schedule = at
        return self._counted(out)

    def _turn_failed(
        self, exc: Exception, work: deque[Action], out: list[Action]
    ) -> None:
        """:meth:`_turn` raised: nothing of the input is lost. What is left
        of ``work`` goes to ``out``, the bundle being handed over and those
        not reached wait for the next step (backing off while this keeps
        happening), and the failure is an event."""
        handing = self._handing
        if handing is not None:
            self._handing = None
            self._deferred[handing] = None
        for a in work:
            if isinstance(a, Deliver) and a.endpoint in self._by_endpoint:
                self._deferred[a.bundle_key] = None
            elif not isinstance(a, Schedule):
                out.append(a)
        work.clear()
        self._turn_failures += 1
        self._backoff_ms = _backoff(self._turn_failures)
        out.append(
            Event(
                EventKind.SERVICE_FAILED,
                "",
                f"services' turn stopped ({self._turn_failures} in a row, "
                f"resumed in {self._backoff_ms} ms): {type(exc).__name__}: {exc}",
            )
        )

    def _turn(self, work: deque[Action], now: int, out: list[Action]) -> None:
        """The services' part of :meth:`_run`: hand deliveries over, retry
        failed commits, tick due services, until nothing is left for them."""
        budget = MAX_SERVICE_DELIVERIES
        if self._deferred:
            keys = list(self._deferred)
            work.extend(self.agent.redeliver(keys, now))
            self._deferred.clear()
        if self._failing:
            for s in list(self._failing.values()):
                if s.retry_at is not None and s.retry_at <= now:
                    sends = self._call(s, out, _retry_commit, now)
                    self._send_all(s, sends, now, work, out)
        rounds = 0
        while True:
            while work:
                a = work.popleft()
                slot = (
                    self._by_endpoint.get(a.endpoint)
                    if isinstance(a, Deliver)
                    else None
                )
                if slot is None:
                    if not isinstance(a, Schedule):
                        out.append(a)
                    continue
                assert isinstance(a, Deliver)
                key = a.bundle_key
                if slot.retry_at is not None:
                    # Its commits fail: the bundle waits in the store (one
                    # the service already has waits for the commit only).
                    if key not in slot.unconfirmed:
                        slot.parked[key] = None
                    continue
                if self._taken and self._taken.get(key) is slot:
                    # It has this one (sent again after a rollback): confirmed.
                    self._handing = key
                    work.extend(self.agent.on_delivered(key, now))
                    self._handing = None
                    continue
                if budget <= 0:
                    self._deferred[key] = None
                    continue
                budget -= 1
                inbound: Inbound = a  # the same type (dcis.dtn.agent.actions)
                self._handing = key
                if self._on_service_delivery is not None:
                    self._on_service_delivery(inbound)
                sends = self._call(slot, out, slot.service.on_bundle, inbound, now)
                self._send_all(slot, sends, now, work, out)
                # (Failing now if the call's commit failed, or a later one
                # in its sends, or the transaction rolled back meanwhile.)
                if slot.endpoint in self._failing:
                    slot.unconfirmed[key] = None
                else:
                    if slot.joined is not None:
                        slot.joined.confirmed[key] = None
                    work.extend(self.agent.on_delivered(key, now))
                self._handing = None
            if self._released:
                self._release(now, work)
                continue
            # A service whose commits fail is not ticked: a tick would
            # retry the commit before its backoff (and add held sends).
            due = [
                s
                for s in self._slots.values()
                if s.retry_at is None and (d := _deadline(s)) is not None and d <= now
            ]
            if not due:
                break
            rounds += 1
            if rounds > MAX_TICK_ROUNDS:
                for s in due:
                    out.append(
                        Event(
                            EventKind.SERVICE_FAILED,
                            "",
                            f"{s.endpoint} on_tick: deadline still due after "
                            f"{MAX_TICK_ROUNDS} rounds",
                        )
                    )
                break
            for s in due:
                sends = self._call(s, out, s.service.on_tick, now)
                self._send_all(s, sends, now, work, out)

    def _counted(self, out: list[Action]) -> list[Action]:
        counts = self.event_counts
        for a in out:
            if isinstance(a, Event):
                counts[a.kind] += 1
        return out


def _created_of(key: str) -> tuple[int, int] | None:
    """The creation timestamp in the key of a bundle the agent originated
    (``"<source>|<creation ms>|<sequence>"``), or None."""
    try:
        _, ms, seq = key.rsplit("|", 2)
        return int(ms), int(seq)
    except ValueError:
        return None


def _send_failed(
    slot: _Slot, s: Send, created: tuple[int, int] | None, why: str
) -> Event:
    """``slot``'s send ``s`` did not go: an event (naming the bundle it
    was, if it rolled back after its tag's result was reported)."""
    if created is None:
        return Event(
            EventKind.SERVICE_SEND_FAILED,
            "",
            f"{slot.endpoint} -> {s.destination}: {why}",
        )
    key = f"{slot.endpoint}|{created[0]}|{created[1]}"
    told = "" if s.tag is None else f"; tag {s.tag} was told it was sent"
    return Event(
        EventKind.SERVICE_SEND_FAILED,
        key,
        f"{slot.endpoint} -> {s.destination}: {why} (its bundle rolled back "
        f"with its transaction{told})",
    )


def _deadline(slot: _Slot) -> int | None:
    try:
        d = slot.service.next_deadline()
    except Exception:
        return None
    return d if isinstance(d, int) else None


def _reserved_message(endpoint: str) -> str:
    eid = parse_eid(endpoint)
    assert isinstance(eid, IpnEid)
    what = RESERVED_SERVICES.get(eid.service, "a node service")
    return (
        f"endpoint {endpoint} is reserved for the node's {what} service "
        f"(ipn:N.0 and service numbers {sorted(RESERVED_SERVICES)} "
        "and running services cannot be registered or used as a source by apps)"
    )
