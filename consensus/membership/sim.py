"""A message-level simulator for membership alone: N membership services on a
virtual clock, each bundle delivered at CGR's earliest arrival.

Theory of operation
-------------------
One ``heapq`` of ``(at_ms, seq, kind, arg)`` drives N
:class:`~dcis.consensus.membership.service.MembershipService` objects, each with
its own :class:`SimContext` (seeded rng, a dict as durable state, the node's
credentials, the plan). A :class:`~dcis.dtn.node.service.Send` from ``a`` at ``t``
arrives at ``b`` at the earliest arrival CGR gives over the plan (or after
``owlt_ms`` on a full mesh, ``plan=None``); it is lost with probability
``1 - (1 - loss)^hops``, and dropped when a partition separates the two at
sending or arrival, when ``b`` is down at arrival, or when no route arrives
within its lifetime (a real DTN would keep some of these in custody; dropping
is the harder case for membership). Contacts of the plan call
``on_contact``. Crashes, restarts, late joins, graceful leaves and
partitions are scheduled in advance; the same seed replays the same run.

The bundle agent is not modelled (no store, no volume): this is what lets a
1,000-node run finish in a test. The full stack runs the same service
through ``dcis.dtn.node`` in ``dcis.dtn.sim``.

Metrics (:meth:`MembershipSim.summary`) follow ``dcis sim --membership``:
false suspicions/deaths of running nodes, crash-to-dead-everywhere times,
convergence (every running node's ``live()`` equals the running set) and
messages per node per second.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dcis.consensus.membership.orbit import OrbitModel
from dcis.consensus.membership.service import (
    MembershipConfig,
    MembershipService,
    Verifier,
)
from dcis.consensus.membership.view import MemberState
from dcis.crypto.certificate import issue_certificate
from dcis.crypto.keys import NodeIdentity, OperatorKey
from dcis.dtn.node.service import Inbound, NodeCredentials, Send
from dcis.dtn.routing.cgr import Router
from dcis.dtn.routing.plan import ContactPlan

__all__ = ["MembershipSim", "SimContext", "credentials_for", "nearest_rank"]

SIM_EPOCH_MS = 820_540_800_000  # plan time 0, as in dcis.dtn.sim (2026-01-01T00:00:00Z)


def credentials_for(
    nodes: Iterable[int], *, seed: int = 0, revoked: frozenset[int] = frozenset()
) -> dict[int, NodeCredentials]:
    """Deterministic identities and operator certificates for ``nodes``
    (simulation and tests only: seeded keys are guessable)."""

    def entropy(tag: str) -> bytes:
        return hashlib.blake2b(
            f"member-sim:{seed}:{tag}".encode(), digest_size=32
        ).digest()

    op = OperatorKey.generate(entropy=entropy("operator"))
    out: dict[int, NodeCredentials] = {}
    for n in nodes:
        ident = NodeIdentity.generate(n, entropy=entropy(f"node{n}"))
        cert = issue_certificate(
            op,
            node=n,
            sign_public=ident.sign_public,
            kx_public=ident.kx_public,
            not_before_ms=0,
            not_after_ms=(1 << 63) - 1,
            serial=n,
        )
        out[n] = NodeCredentials(
            identity=ident,
            certificate=cert,
            operator_public=op.public_key,
            revoked=revoked,
        )
    return out


class DictState:
    """A dict behind the ``ServiceState`` protocol."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        """The value under ``key`` or None."""
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``."""
        self.data[key] = value

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self.data.pop(key, None)

    def keys(self, prefix: str = "") -> Sequence[str]:
        """Keys starting with ``prefix``, sorted."""
        return sorted(k for k in self.data if k.startswith(prefix))


@dataclass(slots=True)
class SimContext:
    """A ``ServiceContext`` for one node in :class:`MembershipSim`."""

    node: int
    incarnation: int
    rng: random.Random
    plan: ContactPlan
    state: DictState
    credentials: NodeCredentials | None
    arrival: Callable[[int, int, int, int], int | None]

    def earliest_arrival(self, node: int, *, at_ms: int, size: int = 0) -> int | None:
        """CGR's earliest arrival at ``node`` (DTN ms), None without a route."""
        return self.arrival(self.node, node, at_ms, size)


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; None if empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-int(q * 100 * len(s)) // 100) - 1))
    return s[k]


@dataclass(slots=True)
class _Node:
    num: int
    state: DictState = field(default_factory=DictState)
    svc: MembershipService | None = None
    incarnation: int = 0
    gen: int = 0
    tick_at: int | None = None
    left: bool = False


class MembershipSim:
    """N membership services over a plan (or a full mesh) on a virtual clock.

    ``nodes`` all start at time 0 unless listed in ``join_at`` (DTN ms
    offsets are plan-relative: ``at_s`` arguments are seconds of plan time).
    """

    def __init__(
        self,
        nodes: Sequence[int],
        *,
        seed: int = 0,
        plan: ContactPlan | None = None,
        owlt_ms: int = 10,
        loss: float = 0.0,
        config: MembershipConfig | None = None,
        orbit: OrbitModel | None = None,
        resources_every_s: float = 60.0,
        join_at: dict[int, float] | None = None,
        roster: bool = False,
    ) -> None:
        self.nodes = sorted(nodes)
        self.seed = seed
        self.loss = loss
        self.owlt_ms = owlt_ms
        self.plan = plan if plan is not None else ContactPlan([], [])
        self._mesh = plan is None
        cfg = config or MembershipConfig()
        if self._mesh and cfg.seeds is None:
            cfg = _with_seeds(cfg, tuple(self.nodes))
        self.config = cfg
        self.orbit = orbit
        self.resources_every_ms = int(resources_every_s * 1000)
        self.router = (
            Router(self.plan, cache_size=max(4096, 4 * len(self.nodes) ** 2))
            if not self._mesh
            else None
        )
        self.creds = credentials_for(self.nodes, seed=seed)
        self.verifier = Verifier(max_entries=1 << 20)
        self.rng = random.Random(f"membership-sim:{seed}")
        self.now = SIM_EPOCH_MS
        self._heap: list[tuple[int, int, str, Any]] = []
        self._seq = 0
        self._n: dict[int, _Node] = {n: _Node(n) for n in self.nodes}
        self._partitions: list[tuple[int, int, frozenset[int]]] = []
        self._running: set[int] = set()
        self._dirty: set[int] = set()  # nodes whose view changed since the last sample
        self._holds: dict[int, bool] = {}  # node -> its live() equals the truth
        self._truth: frozenset[int] = frozenset()
        self.messages = 0
        self.delivered = 0
        self.false_suspicions = 0
        self.false_dead = 0
        self.crash_at: dict[int, int] = {}
        self.detected_at: dict[int, int] = {}
        self.last_change_ms = self.now
        self.converged_at: int | None = None
        self.converged_log: list[tuple[int, bool]] = []
        self._was_converged = False
        joins = join_at or {}
        for n in self.nodes:
            self._push(self._ms(joins.get(n, 0.0)), "start", n)
        if roster:
            # After every start at time 0: each node is given the others'
            # signed alive updates (a provisioned roster; no join flood).
            self._push(self.now, "roster", None)
        self._push(self.now, "sample", None)
        if not self._mesh:
            for c in self.plan.contacts:
                if c.frm in self._n and c.to in self._n:
                    self._push(self._ms(c.start_s), "contact", (c.frm, c.to))

    # -- scheduling ---------------------------------------------------------------

    def _ms(self, at_s: float) -> int:
        return SIM_EPOCH_MS + round(at_s * 1000)

    def _push(self, at: int, kind: str, arg: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, arg))

    def crash(self, node: int, at_s: float) -> None:
        """Crash ``node`` at plan time ``at_s`` (it stays down unless restarted)."""
        self._push(self._ms(at_s), "crash", node)

    def restart(self, node: int, at_s: float) -> None:
        """Restart ``node`` (a new incarnation, its durable state kept)."""
        self._push(self._ms(at_s), "start", node)

    def leave(self, node: int, at_s: float, *, stop_after_s: float = 5.0) -> None:
        """Graceful leave at ``at_s``; the process stops ``stop_after_s`` later."""
        self._push(self._ms(at_s), "leave", node)
        self._push(self._ms(at_s + stop_after_s), "stop", node)

    def partition(self, side: Iterable[int], start_s: float, end_s: float) -> None:
        """Separate ``side`` from everyone else during [start_s, end_s)."""
        self._partitions.append((self._ms(start_s), self._ms(end_s), frozenset(side)))
        self._push(self._ms(start_s), "change", None)
        self._push(self._ms(end_s), "change", None)

    def separated(self, a: int, b: int, at: int) -> bool:
        """Whether an active partition separates ``a`` and ``b`` at ``at``."""
        return any(
            s <= at < e and ((a in side) != (b in side))
            for s, e, side in self._partitions
        )

    # -- the ServiceContext's routing ---------------------------------------------

    def _arrival(self, src: int, dst: int, at_ms: int, size: int) -> int | None:
        if src == dst:
            return at_ms
        if self._mesh:
            return at_ms + self.owlt_ms
        assert self.router is not None
        r = self.router.best_route(src, dst, (at_ms - SIM_EPOCH_MS) / 1000.0, size)
        return None if r is None else SIM_EPOCH_MS + int(r.arrival_s * 1000 + 0.999)

    def _hops(
        self, src: int, dst: int, at_ms: int, size: int
    ) -> tuple[int | None, int]:
        if self._mesh:
            return at_ms + self.owlt_ms, 1
        assert self.router is not None
        r = self.router.best_route(src, dst, (at_ms - SIM_EPOCH_MS) / 1000.0, size)
        if r is None:
            return None, 0
        return SIM_EPOCH_MS + int(r.arrival_s * 1000 + 0.999), r.hop_count

    # -- running --------------------------------------------------------------------

    def running(self) -> set[int]:
        """Nodes up and members (started, not crashed, not left)."""
        return set(self._running)

    def service(self, node: int) -> MembershipService | None:
        """``node``'s current service (None while down)."""
        return self._n[node].svc

    def run_until(self, at_s: float) -> None:
        """Process every event up to plan time ``at_s``."""
        end = self._ms(at_s)
        while self._heap and self._heap[0][0] <= end:
            at, _, kind, arg = heapq.heappop(self._heap)
            self.now = at
            getattr(self, f"_ev_{kind}")(arg)
        self.now = end

    def _call(self, nd: _Node, fn: Callable[[], list[Send]]) -> None:
        svc = nd.svc
        assert svc is not None
        sends = fn()
        if svc.transitions:
            self._dirty.add(nd.num)
            for t in svc.transitions:
                self._judge(nd.num, t.subject, t.new)
            svc.transitions.clear()
        for s in sends:
            self._route(nd.num, s)
        nxt = svc.next_deadline()
        if nxt is not None and (nd.tick_at is None or nxt < nd.tick_at):
            nd.tick_at = max(nxt, self.now)
            self._push(nd.tick_at, "tick", (nd.num, nd.gen))

    def _judge(self, observer: int, subject: int, new: MemberState | None) -> None:
        if new not in (MemberState.SUSPECT, MemberState.DEAD):
            return
        if subject in self._running:
            self.false_suspicions += 1
            if new == MemberState.DEAD:
                self.false_dead += 1

    def _route(self, frm: int, s: Send) -> None:
        self.messages += 1
        to_s = s.destination[4:].partition(".")[0]
        to = int(to_s)
        if to not in self._n:
            return
        arrive, hops = self._hops(frm, to, self.now, len(s.payload))
        if arrive is None or arrive > self.now + s.lifetime_ms:
            return
        if self.loss > 0 and self.rng.random() > (1.0 - self.loss) ** max(1, hops):
            return
        if self._partitions and (
            self.separated(frm, to, self.now) or self.separated(frm, to, arrive)
        ):
            return
        self._push(arrive, "arrive", (frm, to, s.payload))

    def _ev_arrive(self, arg: tuple[int, int, bytes]) -> None:
        frm, to, payload = arg
        nd = self._n[to]
        if nd.svc is None:
            return
        self.delivered += 1
        inbound = Inbound(
            endpoint=f"ipn:{to}.16",
            source=f"ipn:{frm}.16",
            payload=payload,
            creation_ms=self.now,
            sequence=0,
            bundle_key=f"{frm}:{self.delivered}",
        )
        svc = nd.svc
        self._call(nd, lambda: svc.on_bundle(inbound, self.now))

    def _ev_tick(self, arg: tuple[int, int]) -> None:
        num, gen = arg
        nd = self._n[num]
        if nd.svc is None or gen != nd.gen or nd.tick_at != self.now:
            return
        nd.tick_at = None
        svc = nd.svc
        self._call(nd, lambda: svc.on_tick(self.now))

    def _ev_start(self, num: int) -> None:
        nd = self._n[num]
        if nd.svc is not None:
            return
        nd.incarnation += 1
        nd.gen += 1
        nd.left = False
        nd.tick_at = None
        ctx = SimContext(
            node=num,
            incarnation=nd.incarnation,
            rng=random.Random(f"membership:{self.seed}:{num}:{nd.incarnation}"),
            plan=self.plan,
            state=nd.state,
            credentials=self.creds[num],
            arrival=self._arrival,
        )
        res = (
            self.orbit.resources(num, (self.now - SIM_EPOCH_MS) / 1000)
            if self.orbit
            else None
        )
        svc = MembershipService(self.config, verifier=self.verifier, resources=res)
        nd.svc = svc
        self._running.add(num)
        self._dirty.add(num)
        self.crash_at.pop(num, None)
        self.detected_at.pop(num, None)
        self._changed()
        self._call(nd, lambda: svc.start(ctx, self.now))
        if self.orbit is not None:
            self._push(self.now + self.resources_every_ms, "resources", (num, nd.gen))

    def _ev_roster(self, _: None) -> None:
        ads = [
            nd.svc._advert
            for nd in self._n.values()
            if nd.svc is not None and nd.svc._advert is not None
        ]
        for nd in self._n.values():
            if nd.svc is not None:
                nd.svc.seed_roster(ads, self.now)
                self._dirty.add(nd.num)

    def _ev_resources(self, arg: tuple[int, int]) -> None:
        num, gen = arg
        nd = self._n[num]
        if nd.svc is None or nd.gen != gen or self.orbit is None:
            return
        res = self.orbit.resources(num, (self.now - SIM_EPOCH_MS) / 1000)
        svc = nd.svc
        self._call(nd, lambda: svc.set_resources(res, self.now))
        self._push(self.now + self.resources_every_ms, "resources", (num, gen))

    def _ev_crash(self, num: int) -> None:
        nd = self._n[num]
        if nd.svc is None:
            return
        nd.svc = None
        nd.gen += 1
        self._running.discard(num)
        if not nd.left:
            self.crash_at[num] = self.now
        self._changed()

    def _ev_leave(self, num: int) -> None:
        nd = self._n[num]
        if nd.svc is None:
            return
        svc = nd.svc
        self._call(nd, lambda: svc.leave(self.now))
        nd.left = True
        self._running.discard(num)
        self._changed()

    def _ev_stop(self, num: int) -> None:
        nd = self._n[num]
        if nd.svc is not None:
            nd.svc.stop()
            nd.svc = None
            nd.gen += 1

    def _ev_contact(self, arg: tuple[int, int]) -> None:
        frm, to = arg
        nd = self._n[frm]
        if nd.svc is None or self.separated(frm, to, self.now):
            return
        svc = nd.svc
        self._call(nd, lambda: svc.on_contact(to, True, self.now))

    def _ev_change(self, _: None) -> None:
        self._changed()

    def _changed(self) -> None:
        self.last_change_ms = self.now
        self.converged_at = None

    def _ev_sample(self, _: None) -> None:
        run = self._running
        truth = frozenset(run)
        # Only views that changed since the last sample are compared again
        # (a view changes only by a transition, a start or a leave).
        if truth != self._truth:
            self._truth = truth
            self._dirty = set(run)
        for n in self._dirty:
            if n in run:
                self._holds[n] = self._n[n].svc.live() == truth  # type: ignore[union-attr]
        self._dirty.clear()
        conv = all(self._holds.get(n, False) for n in run)
        if conv != self._was_converged:
            self.converged_log.append((self.now, conv))
            self._was_converged = conv
        if conv and self.converged_at is None:
            self.converged_at = self.now
        for c in self.crash_at:
            if c in self.detected_at or c in run:
                continue
            if all(self._gone(n, c) for n in run):
                self.detected_at[c] = self.now
        self._push(self.now + self.config.period_ms, "sample", None)

    def _gone(self, observer: int, subject: int) -> bool:
        svc = self._n[observer].svc
        assert svc is not None
        st = svc.state_of(subject)
        if st is None:
            return svc.forgotten(subject)
        return st in (MemberState.DEAD, MemberState.LEFT)

    # -- results ----------------------------------------------------------------------

    def first_converged_after(self, at_s: float) -> float | None:
        """Plan time (s) at which every running node first held the running
        set as live at or after ``at_s``; None if not yet."""
        t = self._ms(at_s)
        state = False
        for when, conv in self.converged_log:
            if when <= t:
                state = conv
        if state:
            return at_s
        for when, conv in self.converged_log:
            if when > t and conv:
                return (when - SIM_EPOCH_MS) / 1000
        return None

    def detect_times_s(self) -> list[float]:
        """Crash-to-dead-everywhere times (s) of crashed nodes detected."""
        return [
            (self.detected_at[c] - self.crash_at[c]) / 1000
            for c in sorted(self.detected_at)
        ]

    def summary(self, duration_s: float) -> dict[str, Any]:
        """The ``dcis sim --membership`` keys for a run of ``duration_s``."""
        det = self.detect_times_s()
        conv = None
        if self.converged_at is not None:
            conv = round((self.converged_at - self.last_change_ms) / 1000, 3)
        rate = self.messages / (len(self.nodes) * duration_s) if duration_s > 0 else 0.0
        p50, p99 = nearest_rank(det, 0.5), nearest_rank(det, 0.99)
        return {
            "membership_converged_s": conv,
            "false_suspicions": self.false_suspicions,
            "false_dead": self.false_dead,
            "detect_s_p50": None if p50 is None else round(p50, 3),
            "detect_s_p99": None if p99 is None else round(p99, 3),
            "membership_msgs_per_node_s": round(rate, 4),
        }


def _with_seeds(cfg: MembershipConfig, seeds: tuple[int, ...]) -> MembershipConfig:
    from dataclasses import replace

    return replace(cfg, seeds=seeds)
