"""Instructions per bundle of each of ``bench/udp_throughput.py``'s two
daemons, under callgrind: the daemons' runtime (not only the per-bundle
cores that ``send_core.py`` / ``receive_core.py`` count) with a figure that
moves by about 1% run to run (udp 64 KB FULL, node 1: 652,591 and 656,400),
where their CPU ms/bundle on this shared machine moves by 10-50%. It still
depends on how the work batches (app sends per read, bundles per sync): an
earlier driver that ran the daemons slightly differently counted about 6%
more for node 1. Compare trees with this script, in alternating runs.

Starts the bench's daemon pair with each daemon under ``valgrind
--tool=callgrind``, moves a warm-up of bundles, zeroes both counts
(``callgrind_control -z``), moves ``--count`` bundles of ``--size`` bytes,
dumps the counts and divides. User-space instructions only (the kernel's
share of writes and fsyncs is not counted). The daemons' UDP ACK timeout
is raised to 60 s: under valgrind ACKs are slow, and the retransmissions
and duplicates of the default 1 s would swamp node 2's count. Prints the
daemons' counters per bundle that moved (syncs, datagrams, held ACKs), so
two trees can be seen to have done the same work.

    .venv/bin/python bench/daemon_callgrind.py [--cl udp] [--store FULL] [--size 64000] [--count 300]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import udp_throughput as ut

from dcis.dtn.client import open_trio_client


def _flat(x: object, pre: str = "") -> dict[str, float]:
    """Numeric leaves of a status reply, by dotted path."""
    if isinstance(x, dict):
        out: dict[str, float] = {}
        for k, v in x.items():
            out.update(_flat(v, f"{pre}{k}."))
        return out
    if isinstance(x, int | float) and not isinstance(x, bool):
        return {pre[:-1]: float(x)}
    return {}


async def _statuses(workdir: Path) -> list[dict[str, float]]:
    out = []
    for me in (1, 2):
        async with open_trio_client(str(workdir / f"n{me}.sock")) as c:
            st: dict[str, Any] = await c.status()
            out.append(_flat(st))
    return out


def _total(path: Path) -> int:
    """The instruction count in a callgrind dump."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"{path}: no totals")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ut.pair_arguments(ap, cl="udp", size=64_000, count=300, in_flight=48)
    args = ap.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("daemon_callgrind: needs valgrind (callgrind_control): nothing to do")
        return 0
    out = Path(tempfile.mkdtemp(prefix="dcis-cg-"))
    workdir = Path(tempfile.mkdtemp(prefix="dcis-cg-", dir=ut.disk_dir()))

    def wrap(me: int) -> list[str]:
        return [
            *("valgrind", "--tool=callgrind", "--dump-instr=no", "--dump-line=no"),
            f"--callgrind-out-file={out}/n{me}.%p",
        ]

    daemons = ut.Daemons(
        workdir,
        args.store,
        args.cl,
        wrap=wrap,
        extra_config="[udp]\nack_timeout_s = 60\n",
        start_s=600.0,
    )
    pids = [p.pid for p in daemons.procs]
    try:
        trio.run(ut.move_bundles, workdir, args.size, 60, args.in_flight)  # warm-up
        before = trio.run(_statuses, workdir)
        for pid in pids:
            subprocess.run(
                ["callgrind_control", "-z", str(pid)], check=True, capture_output=True
            )
        trio.run(ut.move_bundles, workdir, args.size, args.count, args.in_flight)
        for pid in pids:
            subprocess.run(
                ["callgrind_control", "-d", str(pid)], check=True, capture_output=True
            )
        after = trio.run(_statuses, workdir)
    finally:
        daemons.close()
        shutil.rmtree(workdir, ignore_errors=True)
    n = args.count
    try:
        instr = [
            _total(sorted(out.glob(f"n{me}.{pid}.*"))[0]) / n
            for me, pid in zip((1, 2), pids, strict=True)
        ]
    finally:
        time.sleep(0.5)
        shutil.rmtree(out, ignore_errors=True)
    print(
        f"{args.cl} {args.store} {args.size} B x {n}: instructions/bundle"
        f" node1 {instr[0]:,.0f} node2 {instr[1]:,.0f}"
    )
    skip = ("uptime_s", "store_sync_us", "store_fsync_us", "app_connections")
    for me, (b, a) in enumerate(zip(before, after, strict=True), 1):
        moved = {
            k: (a.get(k, 0.0) - v) / n
            for k, v in b.items()
            if a.get(k, 0.0) != v and not k.endswith(skip)
        }
        print(
            f"  node{me} per bundle: "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(moved.items()))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
