"""A complete node service, written only against ``dcis.dtn.node``: a counter per
node, gossiped to neighbours (a grow-only counter, G-Counter CRDT).

Theory of operation
-------------------
Every node counts up to ``limit``, one step every ``period_ms`` plus a
random jitter from ``ctx.rng`` (seeded by the simulator). Each node keeps a
*vector*: the highest count it has heard of for every node, itself
included. Merging two vectors takes the maximum per node, so gossip in any
order, with duplicates and losses, converges: once every node has reached
``limit`` and the partitions have healed, every node holds the same vector
and the same ``total``.

- ``on_contact(neighbour, up=True)``: the neighbour is in reach; send it the
  whole vector.
- ``on_tick``: count one step, send the vector to every neighbour in reach.
- ``on_bundle``: merge; if the vector grew, pass it on to the neighbours in
  reach (so news crosses nodes that never meet).
- ``ctx.state["vector"]`` holds the vector, written in the same store
  transaction as the sends that carry it: after a crash the new incarnation
  resumes from it (its memory -- who is in reach, the next step's time -- is
  gone; contacts are announced again as the links come back).

Run it in the simulator::

    dcis sim --plan tools/plans/chain4.ionrc --seed 1 --duration 600 \\
        --traffic /dev/null --services examples.gossip_counter:factory

or on a daemon, in ``node.toml``::

    [services]
    factories = ["examples.gossip_counter:factory"]
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from dcis.dtn.node import Inbound, Send, Service, ServiceContext

SERVICE = 20
"""The counter's service number: it serves ``ipn:<node>.20``."""


class GossipCounter:
    """The counter service of one node (one incarnation)."""

    service = SERVICE

    def __init__(self, *, limit: int = 5, period_ms: int = 10_000) -> None:
        self.limit = limit
        self.period_ms = period_ms
        self.vector: dict[int, int] = {}
        self.in_reach: set[int] = set()
        self._ctx: ServiceContext | None = None
        self._next: int | None = None

    @property
    def total(self) -> int:
        """The sum over every node's count: the same everywhere at the end."""
        return sum(self.vector.values())

    # -- Service ---------------------------------------------------------

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self._ctx = ctx
        saved = ctx.state.get("vector")
        if saved is not None:
            self.vector = {int(k): int(v) for k, v in json.loads(saved).items()}
        self.vector.setdefault(ctx.node, 0)
        self._plan_next(now_ms)
        return []

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        try:
            theirs = {int(k): int(v) for k, v in json.loads(inbound.payload).items()}
        except (ValueError, AttributeError):
            return []  # not a vector: ignore it
        grew = False
        for node, count in theirs.items():
            if count > self.vector.get(node, -1):
                self.vector[node] = count
                grew = True
        if not grew:
            return []
        self._save()
        sender = _node_of(inbound.source)
        return self._gossip(exclude=sender)

    def on_send_result(
        self, tag: int, bundle_key: str | None, error: str | None, now_ms: int
    ) -> list[Send]:
        return []

    def on_contact(self, neighbor: int, up: bool, now_ms: int) -> list[Send]:
        if not up:
            self.in_reach.discard(neighbor)
            return []
        self.in_reach.add(neighbor)
        return [self._vector_to(neighbor)]

    def on_tick(self, now_ms: int) -> list[Send]:
        assert self._ctx is not None
        if self._next is None or now_ms < self._next:
            return []
        me = self._ctx.node
        self.vector[me] += 1
        self._save()
        self._plan_next(now_ms)
        return self._gossip()

    def next_deadline(self) -> int | None:
        return self._next

    def stop(self) -> None:
        self._next = None

    # -- helpers ---------------------------------------------------------

    def _plan_next(self, now_ms: int) -> None:
        assert self._ctx is not None
        if self.vector[self._ctx.node] >= self.limit:
            self._next = None
            return
        jitter = self._ctx.rng.randrange(self.period_ms // 2 + 1)
        self._next = now_ms + self.period_ms + jitter

    def _save(self) -> None:
        assert self._ctx is not None
        self._ctx.state.put("vector", self._payload())

    def _payload(self) -> bytes:
        return json.dumps(
            {str(k): v for k, v in sorted(self.vector.items())}, separators=(",", ":")
        ).encode()

    def _vector_to(self, neighbor: int) -> Send:
        return Send(f"ipn:{neighbor}.{SERVICE}", self._payload(), lifetime_ms=600_000)

    def _gossip(self, exclude: int | None = None) -> list[Send]:
        return [self._vector_to(n) for n in sorted(self.in_reach) if n != exclude]


def _node_of(eid: str) -> int | None:
    if not eid.startswith("ipn:"):
        return None
    try:
        return int(eid[4:].split(".", 1)[0])
    except ValueError:
        return None


def factory(node: int, incarnation: int) -> Sequence[Service]:
    """The services of one node: the counter (what ``--services`` names)."""
    return [GossipCounter()]


def fast_factory(node: int, incarnation: int) -> Sequence[Service]:
    """Counting every second, to 3: for tests on daemons."""
    return [GossipCounter(limit=3, period_ms=1_000)]
