"""Simulator scale: a 100-node, 24-hour LEO-like plan with 10,000 bundles.

Prints, for the full run (median of ``--repeats``):
- wall time and the speed-up over real time (target >= 1,000x);
- events processed per wall second.

Then the memory check (one run each under tracemalloc, which slows Python,
so it is never timed): live Python heap by package at checkpoints, next to
the bundles stored and sent by then, for
- the full run (traffic spread over the first 20 h), and
- a "quiet" run: the same number of bundles, all sent in the first hour;
  after they drain the simulated clock runs on for 23 h with nothing
  stored, and memory must stay flat (it grows with stored bundles, not with
  simulated time).

Usage: ``.venv/bin/python bench/sim_scale.py [--repeats N] [--bundles N] [--seed N]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dtn.routing.plan import ContactPlan
from dtn.sim import SimConfig, SimSummary, Simulator, TrafficItem
from dtn.sim.scenarios import leo_constellation, random_traffic

DAY_S = 86_400.0


def rss_mib() -> float:
    """Resident set size from /proc (Linux), MiB; 0 if unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def build(
    seed: int, bundles: int, quiet: bool
) -> tuple[ContactPlan, list[TrafficItem]]:
    plan = leo_constellation(planes=10, per_plane=10, duration_s=DAY_S, seed=seed)
    nodes = sorted(plan.nodes)
    until = 3_600.0 if quiet else 20 * 3_600.0
    traffic = random_traffic(nodes=nodes, bundles=bundles, until_s=until, seed=seed + 1)
    return plan, traffic


def timed_run(seed: int, bundles: int) -> tuple[float, SimSummary]:
    plan, traffic = build(seed, bundles, quiet=False)
    sim = Simulator(plan, SimConfig(seed=seed, duration_s=DAY_S), traffic=traffic)
    t0 = time.perf_counter()
    summary = sim.run()
    wall = time.perf_counter() - t0
    sim.close()
    return wall, summary


_GROUPS = (
    ("dtn/sim/", "sim"),
    ("dtn/routing/", "routing"),
    ("dtn/agent/", "agent"),
    ("dtn/bpv7/", "agent"),
)


def heap_by_package() -> dict[str, float]:
    """Traced heap in MiB by the package that allocated it (sim, routing, agent = agent + bpv7 + stores, other)."""
    out = {"sim": 0.0, "routing": 0.0, "agent": 0.0, "other": 0.0}
    for stat in tracemalloc.take_snapshot().statistics("filename"):
        name = stat.traceback[0].filename.replace("\\", "/")
        group = next((g for prefix, g in _GROUPS if prefix in name), "other")
        out[group] += stat.size / 2**20
    return out


def memory_run(
    seed: int, bundles: int, quiet: bool
) -> list[tuple[float, int, int, dict[str, float]]]:
    plan, traffic = build(seed, bundles, quiet=quiet)
    tracemalloc.start()
    sim = Simulator(plan, SimConfig(seed=seed, duration_s=DAY_S), traffic=traffic)
    points: list[tuple[float, int, int, dict[str, float]]] = []
    for hours in (1, 6, 12, 18, 24):
        sim.run_until(hours * 3_600.0)
        stored = sum(len(nd.store) for nd in sim.nodes.values() if nd.store is not None)
        points.append((hours, stored, len(sim.ledger), heap_by_package()))
    tracemalloc.stop()
    sim.close()
    return points


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bundles", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    plan, _traffic = build(args.seed, args.bundles, quiet=False)
    print(
        f"plan: 100 nodes, {len(plan.contacts)} contacts over 24 h; traffic: {args.bundles} bundles over 20 h"
    )

    walls: list[float] = []
    shas: set[str] = set()
    summary: SimSummary | None = None
    for i in range(args.repeats):
        wall, summary = timed_run(args.seed, args.bundles)
        walls.append(wall)
        shas.add(summary.trace_sha256)
        print(
            f"  run {i + 1}: {wall:.2f} s wall, {DAY_S / wall:,.0f}x real time, {summary.events / wall:,.0f} events/s"
        )
    assert summary is not None
    wall = statistics.median(walls)
    s = summary
    print(f"median wall time: {wall:.2f} s for {DAY_S:.0f} s simulated")
    print(f"speed-up over real time: {DAY_S / wall:,.0f}x (target >= 1,000x)")
    print(
        f"outcome: sent {s.sent}, delivered {s.delivered}, expired {s.expired}, pending {s.pending}, "
        f"lost {s.lost}, duplicates {s.duplicates_delivered}; latency p50 {s.latency_p50_s} s, p99 {s.latency_p99_s} s"
    )
    print(
        f"work: {s.events} events, {s.transmissions} transmissions, {s.bytes_transmitted / 1e6:.1f} MB moved"
    )
    print(
        f"trace_sha256 {s.trace_sha256} (identical in all {args.repeats} repeats: {len(shas) == 1})"
    )

    print(
        "memory (tracemalloc, MiB of live heap by the package that allocated it; 'routing' holds"
    )
    print(
        "the contact graph shared by all routers on the plan, and each node's bounded route cache):"
    )
    for label, quiet in (
        ("full run, sends spread over 20 h", False),
        ("quiet run, all sends in hour 1", True),
    ):
        print(f"  {label}")
        print("    hour  stored    sent     sim  routing    agent    other    total")
        for hours, stored, sent, heap in memory_run(args.seed, args.bundles, quiet):
            total = sum(heap.values())
            print(
                f"    {hours:>4}  {stored:>6}  {sent:>6}  {heap['sim']:6.2f}  {heap['routing']:7.2f}  "
                f"{heap['agent']:7.2f}  {heap['other']:7.2f}  {total:7.2f}"
            )
    print(f"RSS at exit: {rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
