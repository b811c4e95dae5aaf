"""CPU of ``bench/udp_throughput.py``'s two daemons split by syscall, kernel
included, with ``perf record`` (root, or ``kernel.perf_event_paranoid`` <= 1).

py-spy (``profile_daemons.py``) samples wall time of the Python stacks: a
thread descheduled inside a syscall counts as busy, and nothing says how
much of a syscall is the kernel's CPU. ``perf`` samples CPU only, kernel
stacks included: this script prints, per daemon (all its threads), the
share of its samples in the kernel and the inclusive share of the
syscalls that move payloads (the segment ``pwritev``, socket reads and
writes, ``fdatasync``, ``unlink``). Python frames are not resolved: use
``profile_daemons.py`` or ``daemon_callgrind.py`` for those.

    .venv/bin/python bench/perf_daemons.py --cl mtcp --size 64000 --count 3000
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio
import udp_throughput as ut

# Entry symbols (user-space wrappers in libc) whose inclusive samples are
# the syscall's CPU, kernel work included.
SYSCALLS = {
    "pwritev64v2": "segment pwritev",
    "__GI___readv": "socket readv",
    "__libc_sendmsg": "socket sendmsg",
    "__libc_recv": "socket recv",
    "fdatasync": "fdatasync",
    "__GI___unlink": "unlink",
    "__libc_pwrite64": "pwrite (SQLite)",
    "__libc_pread64": "pread (SQLite)",
    "epoll_wait": "epoll_wait",
}


def _report(data: Path, *args: str) -> list[tuple[float, str, str]]:
    """``perf report`` rows: (percent of all samples, tid, symbol)."""
    out = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "-g", "none", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if not parts or line.startswith("#") or not parts[0].endswith("%"):
            continue
        tid = next(p.split(":", 1)[0] for p in parts if ":" in p)
        # What follows the thread (whose name may have spaces): a DSO
        # ("[kernel.kallsyms]", "libc.so.6"), or "[k] sym" / "[.] sym".
        after = line.split(":", 1)[1]
        rest = after[after.index("[") :] if "[" in after else after.split()[-1]
        rows.append((float(parts[0][:-1]), tid, rest.strip().split("] ", 1)[-1]))
    return rows


def summarize(data: Path, owners: dict[str, int]) -> str:
    """Per daemon: its share of the samples, the kernel's share of it, and
    each payload syscall's inclusive share of it. ``owners``: tid -> node."""
    total: collections.Counter[int] = collections.Counter()
    kernel: collections.Counter[int] = collections.Counter()
    for pct, tid, dso in _report(data, "--no-children", "--sort", "pid,dso"):
        node = owners.get(tid)
        if node is None:
            continue
        total[node] += pct
        if dso.startswith("[kernel"):
            kernel[node] += pct
    calls: collections.Counter[tuple[int, str]] = collections.Counter()
    for pct, tid, sym in _report(data, "--children", "--sort", "pid,sym"):
        if tid in owners and sym in SYSCALLS:
            calls[(owners[tid], SYSCALLS[sym])] += pct
    lines = []
    for node in sorted(total):
        t = total[node]
        lines.append(
            f"node {node}: {t:.1f}% of samples, kernel {kernel[node] / t:.0%} of it"
        )
        mine = sorted(
            ((v, name) for (n, name), v in calls.items() if n == node), reverse=True
        )
        lines += [f"    {v / t:6.1%} {name}" for v, name in mine]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ut.pair_arguments(ap, cl="mtcp", size=64_000, count=3000, in_flight=48)
    ap.add_argument("--freq", type=int, default=1999, help="perf samples per second")
    args = ap.parse_args()
    if shutil.which("perf") is None:
        print("perf_daemons: needs perf (linux-tools): nothing to do")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="dcis-perf-", dir=ut.disk_dir()))
    data = workdir / "perf.data"
    daemons = ut.Daemons(workdir, args.store, args.cl)
    pids = [p.pid for p in daemons.procs]
    try:
        trio.run(ut.move_bundles, workdir, args.size, 300, args.in_flight)
        rec = subprocess.Popen(
            [
                *("perf", "record", "-F", str(args.freq), "-g", "-o", str(data)),
                *("-p", ",".join(map(str, pids))),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # perf attaches
        mbs, _bps, ms = ut.measure(daemons, args.size, args.count, args.in_flight)
        owners = {
            tid: node
            for node, pid in enumerate(pids, 1)
            for tid in os.listdir(f"/proc/{pid}/task")
        }
        rec.send_signal(signal.SIGINT)
        rec.wait(60)
        print(
            f"{args.cl} {args.store} {args.size} B x {args.count}: {mbs:.1f} MB/s,"
            f" CPU ms/bundle node 1 {ms[0]:.3f}, node 2 {ms[1]:.3f},"
            f" clients {ms[2]:.3f}"
        )
        print(summarize(data, owners))
    finally:
        daemons.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
