"""The node-service interface: what a service above the bundle layer is given
and what it gives back.

Theory of operation
-------------------
A *service* serves one endpoint ``ipn:<node>.<service>`` of a node. It is a
sans-I/O object: the driver (the trio runtime or the simulator, through
:class:`NodeCore`) calls its methods with the current DTN time in
milliseconds, and each method returns the bundles the service wants sent, as
a list of :class:`Send`. A service never reads a clock, opens a socket or
sleeps; randomness comes from ``ctx.rng``, which the simulator seeds.

Lifecycle: ``start(ctx, now_ms)`` once per incarnation (after a restart the
service object is new, its memory gone; ``ctx.state`` is what survives), then
any mix of ``on_bundle``, ``on_send_result``, ``on_contact`` and ``on_tick``
(called at or after ``next_deadline()``), and ``stop()`` at an orderly
shutdown (never after a crash).

Durability: writes to ``ctx.state`` made during one call commit in the same
store transaction as the bundles that call returns and, for ``on_bundle``,
the confirmation that the inbound bundle was delivered. A crash either keeps
all of them or none.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dcis.crypto.certificate import NodeCertificate
from dcis.crypto.keys import NodeIdentity
from dcis.dtn.agent.actions import Inbound as Inbound
from dcis.dtn.routing.plan import ContactPlan

DEFAULT_LIFETIME_MS = 3_600_000
"""Lifetime of a :class:`Send` that names none: one hour."""

RESERVED_SERVICES: dict[int, str] = {
    0: "administrative",
    7: "echo",
    16: "membership",
    17: "log",
    18: "object store",
}
"""Service numbers an app client may never register (``ipn:N.<s>``)."""


@dataclass(frozen=True, slots=True)
class Send:
    """A bundle a service asks its node to originate from the service's own
    endpoint. ``tag``, when given, is echoed back in
    ``Service.on_send_result`` once the agent has taken (or refused) it."""

    destination: str
    payload: bytes
    lifetime_ms: int = DEFAULT_LIFETIME_MS
    tag: int | None = None

    def __post_init__(self) -> None:
        if self.lifetime_ms <= 0:
            raise ValueError(f"lifetime_ms must be > 0, got {self.lifetime_ms}")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCredentials:
    """The node's own keys and the constellation's trust anchor, for services
    that sign or verify (membership updates, log entries, object keys).

    ``identity`` holds the node's Ed25519/X25519 private keys, ``certificate``
    the operator-signed certificate of its public keys, ``operator_public``
    the operator's Ed25519 public key that every member's certificate must
    verify under, and ``revoked`` the node numbers currently revoked.
    """

    identity: NodeIdentity
    certificate: NodeCertificate
    operator_public: bytes
    revoked: frozenset[int] = frozenset()


class ServiceState(Protocol):
    """A small durable key -> bytes map of one service on one node. Writes
    commit with the store transaction of the call that made them."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str = "") -> Sequence[str]: ...


class ServiceContext(Protocol):
    """What a node gives each of its services at ``start``."""

    @property
    def node(self) -> int:
        """This node's ipn node number."""
        ...

    @property
    def incarnation(self) -> int:
        """Bumps at every (re)start of the node; 1 at the first start."""
        ...

    @property
    def rng(self) -> random.Random:
        """A generator seeded by the simulator (from the OS in the runtime)."""
        ...

    @property
    def plan(self) -> ContactPlan:
        """The node's current contact plan (read-only; may change between calls)."""
        ...

    @property
    def state(self) -> ServiceState:
        """This service's durable key -> bytes map."""
        ...

    @property
    def credentials(self) -> NodeCredentials | None:
        """The node's keys and trust anchor; None on a node run without
        security (a service that needs them refuses to start)."""
        ...

    def earliest_arrival(self, node: int, *, at_ms: int, size: int = 0) -> int | None:
        """CGR's best arrival time (DTN ms) at ``node`` of a bundle of
        ``size`` bytes sent at ``at_ms``; None when the plan has no route."""
        ...


class Service(Protocol):
    """A sans-I/O service on endpoint ``ipn:<node>.<service>``. Every method
    returning ``list[Send]`` may return an empty list."""

    service: int

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]: ...

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]: ...

    def on_send_result(
        self, tag: int, bundle_key: str | None, error: str | None, now_ms: int
    ) -> list[Send]: ...

    def on_contact(self, neighbor: int, up: bool, now_ms: int) -> list[Send]: ...

    def on_tick(self, now_ms: int) -> list[Send]: ...

    def next_deadline(self) -> int | None: ...

    def stop(self) -> None: ...


class IdleService:
    """A :class:`Service` whose every method does nothing: no sends, no
    timers, nothing held. Subclass it and override what a service does
    (set ``service``); the rest stays idle."""

    service: int

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        """Nothing to do at start."""
        return []

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        """Bundles are ignored (the node still confirms their delivery)."""
        return []

    def on_send_result(
        self, tag: int, bundle_key: str | None, error: str | None, now_ms: int
    ) -> list[Send]:
        """Results of tagged sends are ignored."""
        return []

    def on_contact(self, neighbor: int, up: bool, now_ms: int) -> list[Send]:
        """Contacts do not matter."""
        return []

    def on_tick(self, now_ms: int) -> list[Send]:
        """No timers."""
        return []

    def next_deadline(self) -> int | None:
        """No timers."""
        return None

    def stop(self) -> None:
        """Nothing to release."""


MAX_LOCAL_REQUESTS = 4096
"""Most requests one app-API ``service_request`` may carry (a bound on what
one connection can make the node do in one transaction)."""


@runtime_checkable
class AnswersLocalRequests(Protocol):
    """Optional: a service that answers requests from applications on its
    own node without bundles (the app API's ``service_request``). The
    node's driver calls it through ``NodeCore.call_service``, so its state
    writes and sends commit in one transaction, and answers the
    application only after that transaction is durable."""

    def on_local_requests(
        self, requests: Sequence[bytes], replies: list[bytes], now_ms: int
    ) -> list[Send]:
        """Handle ``requests`` (untrusted bytes, the same as the payload of a
        request bundle) in order and append exactly one reply to
        ``replies`` per request, all at the end (a raise leaves ``replies``
        untouched). A bad request gets an error reply, not an exception."""
        ...
