"""Where the durable daemon pair waits: group commit, send latency, window.

Runs the daemon pair of ``bench/udp_throughput.py`` (``--cl udp|mtcp``,
``--store FULL``) and moves ``--count`` bundles of ``--size`` bytes for each
number of app sends in flight (``--in-flight 4,16,64``). Per run it prints
goodput, the sending client's per-send latency (send to the node's reply,
which waits for node 1's fsync), and for each node from its status counters:
bundles per sync, the mean wall time of a sync (``store_sync_us``: from
``begin_sync`` to the replies it releases, hand-offs to and from the worker
thread included), the mean time in the fsyncs themselves
(``store_fsync_us``), and the share of the run a sync was in progress;
then CPU ms per bundle of node 1, node 2 and the clients (this process).
spec/performance.md ("Sixth round") has what it found.

    .venv/bin/python bench/sync_wait.py --cl mtcp --size 64000 --in-flight 4,16,64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import udp_throughput as ut

from dcis.dtn.client.trio_client import open_trio_client


async def _counters(workdir: Path) -> list[dict[str, Any]]:
    out = []
    for me in (1, 2):
        async with open_trio_client(str(workdir / f"n{me}.sock")) as c:
            out.append(dict((await c.status())["counters"]))
    return out


async def _run(
    workdir: Path, size: int, count: int, in_flight: int
) -> tuple[float, list[float]]:
    """Move ``count`` bundles; (seconds from the first send to the last
    delivery, per-send latencies in seconds)."""
    latencies: list[float] = []
    elapsed = await ut.move_bundles(workdir, size, count, in_flight, latencies)
    return elapsed, latencies


def _node(
    before: dict[str, Any], after: dict[str, Any], count: int, elapsed: float
) -> str:
    syncs = after["store_syncs"] - before["store_syncs"]
    sync_us = after["store_sync_us"] - before["store_sync_us"]
    fsync_us = after["store_fsync_us"] - before["store_fsync_us"]
    if not syncs:
        return "      no sync"
    return (
        f"{count / syncs:6.1f} {sync_us / syncs / 1e3:6.2f} {fsync_us / syncs / 1e3:6.2f}"
        f" {sync_us / 1e6 / elapsed:5.0%}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cl", default="mtcp", choices=("udp", "mtcp"))
    ap.add_argument("--store", default="FULL", choices=("FULL", "NORMAL"))
    ap.add_argument("--size", type=int, default=64_000)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--in-flight", default="4,16,64")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(
        f"sync_wait: {args.cl}, {args.store}, {args.size} B x {args.count};"
        f" {os.cpu_count()} CPUs, load {load:.2f}"
    )
    print(
        "  in-flight bundles/s   MB/s  latency ms p50   p90 |"
        " node: bundles/sync sync ms fsync ms busy (node 1 | node 2) | cpu ms/b n1 n2 clients"
    )
    with tempfile.TemporaryDirectory(prefix="dcis-syncwait-", dir=ut.disk_dir()) as d:
        workdir = Path(d)
        daemons = ut.Daemons(workdir, args.store, args.cl)
        try:
            ut.measure(daemons, args.size, 50, 4)  # warm-up
            pids = [p.pid for p in daemons.procs]
            for k in (int(x) for x in args.in_flight.split(",")):
                for _ in range(args.repeats):
                    before = trio.run(_counters, workdir)
                    c0 = [ut._cpu_s(p) for p in pids] + [ut._self_cpu_s()]
                    elapsed, lat = trio.run(_run, workdir, args.size, args.count, k)
                    c1 = [ut._cpu_s(p) for p in pids] + [ut._self_cpu_s()]
                    after = trio.run(_counters, workdir)
                    cpu = [
                        (b - a) * 1e3 / args.count for a, b in zip(c0, c1, strict=True)
                    ]
                    lat.sort()
                    p50 = statistics.median(lat) * 1e3
                    p90 = lat[len(lat) * 9 // 10] * 1e3
                    print(
                        f"  {k:9d} {args.count / elapsed:10.0f} {args.size * args.count / elapsed / 1e6:6.1f}"
                        f" {p50:14.2f} {p90:5.2f} |"
                        f" {_node(before[0], after[0], args.count, elapsed)} |"
                        f" {_node(before[1], after[1], args.count, elapsed)} |"
                        f" {cpu[0]:.3f} {cpu[1]:.3f} {cpu[2]:.3f}"
                    )
        finally:
            daemons.close()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
