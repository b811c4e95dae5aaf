"""What node services cost in the simulator: the same seeded LEO run with
no services (every action passes straight through NodeCore), with the echo
service on every node (NodeCore routes nothing to it: the reference for
NodeCore's own bookkeeping), and with the gossip counter of
examples/gossip_counter.py on every node (services that send, tick and
keep state).

Prints, per case, the median wall time of ``--repeats`` runs, events per
second, bundles delivered to apps and the trace hash (the service cases
trace their services' start and their bundles, so each has its own).

Usage: ``.venv/bin/python bench/node_services.py [--nodes N] [--hours H]
[--bundles N] [--repeats N] [--seed N]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcis.dtn.node import EchoService, Service
from dcis.dtn.sim import SimConfig, SimSummary, Simulator
from dcis.dtn.sim.scenarios import leo_constellation, random_traffic
from examples.gossip_counter import GossipCounter

Factory = Callable[[int, int], Sequence[Service]] | None


def run(args: argparse.Namespace, factory: Factory) -> tuple[float, SimSummary]:
    per_plane = max(1, args.nodes // 5)
    duration = args.hours * 3600.0
    plan = leo_constellation(
        planes=5, per_plane=per_plane, duration_s=duration, seed=args.seed
    )
    nodes = sorted(plan.nodes)
    traffic = random_traffic(
        nodes=nodes, bundles=args.bundles, until_s=duration * 0.8, seed=args.seed
    )
    sim = Simulator(
        plan,
        SimConfig(seed=args.seed, duration_s=duration),
        traffic=traffic,
        services=factory,
    )
    t0 = time.perf_counter()
    summary = sim.run()
    wall = time.perf_counter() - t0
    sim.close()
    return wall, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=25)
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--bundles", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    cases: list[tuple[str, Factory]] = [
        ("no services (reference)", None),
        ("echo on every node", lambda n, i: [EchoService()]),
        (
            "echo + gossip counter",
            lambda n, i: [EchoService(), GossipCounter(limit=20, period_ms=600_000)],
        ),
    ]
    print(
        f"{args.nodes} nodes, {args.hours} h, {args.bundles} bundles, "
        f"seed {args.seed}, median of {args.repeats}"
    )
    ref: float | None = None
    for name, factory in cases:
        walls = []
        summary = None
        for _ in range(args.repeats):
            wall, summary = run(args, factory)
            walls.append(wall)
        assert summary is not None
        wall = statistics.median(walls)
        ref = wall if ref is None else ref
        print(
            f"{name:26s} {wall:7.3f} s  x{wall / ref:5.2f}  "
            f"{summary.events / wall:10,.0f} events/s  "
            f"delivered {summary.delivered:5d}  trace {summary.trace_sha256[:12]}"
        )


if __name__ == "__main__":
    main()
