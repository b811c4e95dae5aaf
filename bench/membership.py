"""Membership convergence and load against log2 N, next to the plain-SWIM
baseline (contact-plan awareness off), on the same seeds.

For each N: N services in ``dcis.consensus.membership.sim.MembershipSim`` on a
full mesh (10 ms light time, a provisioned roster), 1 s protocol period:

- *detect*: one node crashes at t = 20 s; periods until every running node
  holds it dead;
- *heal*: half the nodes are cut off from t = 80 s to 140 s; periods from the
  heal until every running node holds every running node alive (the issue's
  bound is 3·log2 N);
- *msgs/node/period*: membership bundles per node per period over the run.

Then the same on a Walker-style plan (``dcis.dtn.sim.scenarios``, 5 s period),
with 10 % loss: false suspicions (transitions of running nodes into suspect
or dead at any observer), plan-aware vs baseline.

    .venv/bin/python bench/membership.py [--sizes 10 30 100] [--walker 2x5]
    .venv/bin/python bench/membership.py --sizes 10 30 100 300 1000 --walker none

*cpu s* is the CPU time of the run (process time: the figure holds on a
shared machine). Anti-entropy exchanges digests (spec/membership.md), so
N = 1,000 runs in minutes, not the hour a whole-state swap took.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcis.consensus.membership.service import MembershipConfig
from dcis.consensus.membership.sim import MembershipSim
from dcis.consensus.membership.view import MemberState
from dcis.dtn.sim.scenarios import leo_constellation


def _all_alive(sim: MembershipSim) -> bool:
    run = sim.running()
    for n in run:
        svc = sim.service(n)
        if svc is None or any(svc.state_of(m) != MemberState.ALIVE for m in run):
            return False
    return True


def mesh(n: int, aware: bool, seed: int) -> dict[str, float | None]:
    """Detect and heal periods and the message rate for one N."""
    t0 = time.process_time()
    sim = MembershipSim(
        range(1, n + 1),
        seed=seed,
        config=MembershipConfig(plan_aware=aware),
        roster=True,
    )
    sim.crash(n, 20.0)
    sim.partition(range(1, n // 2 + 1), 80.0, 140.0)
    sim.run_until(140.0)
    det = sim.detect_times_s()
    heal = None
    for k in range(0, 10 * math.ceil(math.log2(n)) + 1):
        sim.run_until(140.0 + k)
        if _all_alive(sim):
            heal = float(k)
            break
    end = (sim.now - 820_540_800_000) / 1000
    return {
        "detect_periods": det[0] if det else None,
        "heal_periods": heal,
        "msgs_node_period": sim.messages / (n * end),
        "cpu_s": time.process_time() - t0,
    }


def walker(planes: int, per_plane: int, aware: bool, seed: int) -> int:
    """False suspicions on a Walker-style plan with 10 % loss, 3000 s."""
    plan = leo_constellation(
        planes=planes, per_plane=per_plane, duration_s=3_600, seed=seed
    )
    cfg = MembershipConfig(
        plan_aware=aware, period_ms=5_000, probe_timeout_ms=1_000, horizon_ms=60_000
    )
    sim = MembershipSim(
        range(1, planes * per_plane + 1), seed=seed, plan=plan, config=cfg, loss=0.1
    )
    sim.run_until(3_000)
    return sim.false_suspicions


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--walker", default="2x5", help="PLANESxPER_PLANE, or 'none'")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    print(
        f"{'N':>6} {'log2N':>6} {'3log2N':>7} | {'mode':<8} {'detect':>7} {'heal':>6} "
        f"{'msgs/node/period':>17} {'cpu s':>7}"
    )
    for n in args.sizes:
        for aware in (True, False):
            r = mesh(n, aware, args.seed)
            print(
                f"{n:>6} {math.log2(n):>6.2f} {3 * math.log2(n):>7.2f} | "
                f"{'aware' if aware else 'baseline':<8} {_fmt(r['detect_periods']):>7} "
                f"{_fmt(r['heal_periods']):>6} {_fmt(r['msgs_node_period']):>17} "
                f"{_fmt(r['cpu_s']):>7}",
                flush=True,
            )
    if args.walker != "none":
        planes, per = (int(x) for x in args.walker.split("x"))
        fa = walker(planes, per, True, args.seed)
        fb = walker(planes, per, False, args.seed)
        print(
            f"walker {planes}x{per}, 10% loss, 3000 s: false suspicions "
            f"aware {fa}, baseline {fb}"
        )


if __name__ == "__main__":
    main()
