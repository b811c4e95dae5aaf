"""Shared checks for the membership simulation tests."""

from __future__ import annotations

import math

from dcis.consensus.membership.service import MembershipConfig
from dcis.consensus.membership.sim import MembershipSim
from dcis.consensus.membership.view import MemberState
from dcis.dtn.sim.scenarios import leo_constellation

ALIVE = MemberState.ALIVE


def all_alive(sim: MembershipSim) -> bool:
    """Every running node holds every running node alive."""
    run = sim.running()
    for n in run:
        svc = sim.service(n)
        assert svc is not None
        if any(svc.state_of(m) != ALIVE for m in run):
            return False
    return True


def states_of(sim: MembershipSim, subject: int) -> set[MemberState | None]:
    """``subject``'s state in every running node's view but its own."""
    out: set[MemberState | None] = set()
    for n in sim.running() - {subject}:
        svc = sim.service(n)
        assert svc is not None
        out.add(svc.state_of(subject))
    return out


def heal_periods(sim: MembershipSim, heal_s: float, n: int) -> float | None:
    """Run from ``heal_s`` a period at a time, up to 3*log2(n) periods; the
    periods it took until every running node held every other alive."""
    period_s = sim.config.period_ms / 1000
    limit = math.ceil(3 * math.log2(n))
    for k in range(limit + 1):
        sim.run_until(heal_s + k * period_s)
        if all_alive(sim):
            return k
    return None


def walker(
    planes: int,
    per_plane: int,
    *,
    duration_s: float,
    seed: int,
    aware: bool,
    loss: float,
) -> MembershipSim:
    """A run on ``dcis.dtn.sim.scenarios.leo_constellation`` with a 5 s period."""
    plan = leo_constellation(
        planes=planes, per_plane=per_plane, duration_s=duration_s + 600, seed=seed
    )
    cfg = MembershipConfig(
        plan_aware=aware, period_ms=5_000, probe_timeout_ms=1_000, horizon_ms=60_000
    )
    sim = MembershipSim(
        range(1, planes * per_plane + 1), seed=seed, plan=plan, config=cfg, loss=loss
    )
    sim.run_until(duration_s)
    return sim
