"""Large-bundle goodput of the ``bench/udp_throughput.py`` daemon pair, one row,
with the CPU of each process split into user and system time and its page
faults per bundle -- for comparing two trees on a shared machine.

CPU per bundle is what a change to the payload path moves; goodput on a
machine shared with other work swings 2-3x between neighbouring runs
(spec/performance.md). So run a tree, then the other, back to back, a few
times, and compare the medians. The daemons and clients come from the tree
whose ``bench/udp_throughput.py`` this script sits next to, run by the
Python that runs this script (each tree with its own ``.venv``)::

    /work/main/.venv/bin/python /work/main/bench/large_goodput.py --cl mtcp --size 1000000
    .venv/bin/python bench/large_goodput.py --cl mtcp --size 1000000 --count 150 --repeats 3
    .venv/bin/python bench/large_goodput.py --cl udp --size 64000 --count 600 --in-flight 16

(``/work/main`` has no copy of this script before it is merged: copy it
there, or run it with ``--tree /work/main``.)

Prints one line per run and a median line: MB/s, CPU ms per bundle of node
1, node 2 and the two app clients (this process), user/system ms and
minor page faults per bundle of each daemon.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path


def _stat(pid: int) -> tuple[int, int, int]:
    """utime, stime (clock ticks) and minor faults of ``pid`` (Linux /proc)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12]), int(f[7])


def pair_arguments(description: str) -> argparse.ArgumentParser:
    """The options of a one-row run of the daemon pair (this script's and
    ``bench/client_split.py``'s): CL, size, count, in flight, repeats,
    store, and the tree whose daemons and clients run."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--cl", default="mtcp", choices=("udp", "mtcp"))
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--count", type=int, default=150)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--store", default="FULL", choices=("FULL", "NORMAL", "memory"))
    ap.add_argument(
        "--tree",
        default=str(Path(__file__).resolve().parent.parent),
        help="the tree to run",
    )
    return ap


def main() -> int:
    args = pair_arguments(__doc__.splitlines()[0]).parse_args()
    sys.path.insert(0, str(Path(args.tree) / "bench"))
    sys.path.insert(0, args.tree)
    import udp_throughput as ut

    tick = 1000 / os.sysconf("SC_CLK_TCK")
    workdir = Path(tempfile.mkdtemp(prefix="dcis-large-", dir=ut.disk_dir()))
    daemons = ut.Daemons(workdir, args.store, args.cl)
    name = Path(args.tree).resolve().name
    rows: list[tuple[float, ...]] = []
    try:
        ut.measure(
            daemons, args.size, max(4, args.count // 5), args.in_flight
        )  # warm-up
        for _ in range(args.repeats):
            s0 = [_stat(p.pid) for p in daemons.procs]
            mbs, _bps, cpu = ut.measure(daemons, args.size, args.count, args.in_flight)
            s1 = [_stat(p.pid) for p in daemons.procs]
            per = [
                (
                    (b[0] - a[0]) * tick / args.count,
                    (b[1] - a[1]) * tick / args.count,
                    (b[2] - a[2]) / args.count,
                )
                for a, b in zip(s0, s1, strict=True)
            ]
            rows.append((mbs, *cpu, *per[0], *per[1]))
            print(
                f"{name} {args.cl} {args.size} {args.store}: {mbs:7.1f} MB/s"
                f"  cpu ms/b node1 {cpu[0]:.2f} node2 {cpu[1]:.2f} clients {cpu[2]:.2f}"
                f"  user/sys ms/b, faults/b: node1 {per[0][0]:.2f}/{per[0][1]:.2f} {per[0][2]:.0f}"
                f"  node2 {per[1][0]:.2f}/{per[1][1]:.2f} {per[1][2]:.0f}",
                flush=True,
            )
    finally:
        daemons.close()
        shutil.rmtree(workdir, ignore_errors=True)
    med = [statistics.median(c) for c in zip(*rows, strict=True)]
    print(
        f"median {name} {args.cl} {args.size} {args.store}: {med[0]:7.1f} MB/s"
        f"  cpu ms/b node1 {med[1]:.2f} node2 {med[2]:.2f} clients {med[3]:.2f}"
        f"  faults/b node1 {med[6]:.0f} node2 {med[9]:.0f}"
        f"  (load {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
