"""Profile the two daemons of ``bench/udp_throughput.py`` under load with py-spy.

Starts the bench's daemon pair (``--cl udp|mtcp``, ``--store FULL|NORMAL|memory``),
warms it up, then records both daemons with ``py-spy record --format raw``
(collapsed stacks, one file per daemon) while the bench's app clients move
``--count`` bundles of ``--size`` bytes, and prints the functions with the
most samples, by self time and inclusive time, for each daemon.
spec/performance.md has what it found and the commands.

py-spy is not a project dependency: ``.venv/bin/pip install py-spy``; it
needs ptrace rights over the daemons (same user; on some systems
``sysctl kernel.yama.ptrace_scope=0`` or root).

    .venv/bin/python bench/profile_daemons.py --cl udp --store FULL --size 1000 --count 4000
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import udp_throughput as ut


def _label(frame: str) -> str:
    """``func (path/file.py:line)`` -> ``func file.py``."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.rsplit('/', 1)[-1].split(':', 1)[0]}".strip()


def summarize(path: Path, top: int) -> str:
    """Top functions by self and inclusive samples in a py-spy raw file."""
    incl: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not n_s.isdigit():
            continue
        n = int(n_s)
        total += n
        frames = [_label(f) for f in stack.split(";")]
        for f in set(frames):
            incl[f] += n
        own[frames[-1]] += n
    out = [f"{path.name}: {total} samples", "  self:"]
    out += [f"    {v / total:6.1%} {k}" for k, v in own.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {v / total:6.1%} {k}" for k, v in incl.most_common(top)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ut.pair_arguments(ap, cl="udp", size=1000, count=4000, in_flight=64)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL (py-spy --gil): a main"
        " thread preempted or waiting on a worker is then not counted busy",
    )
    ap.add_argument("--out", default=None, help="directory for the raw profiles")
    args = ap.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed (.venv/bin/pip install py-spy): nothing to do")
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="dcis-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dcis-prof-", dir=ut.disk_dir()))
    daemons = ut.Daemons(workdir, args.store, args.cl)
    files = [
        out / f"{args.cl}-{args.store}-{args.size}.node{i + 1}.txt" for i in (0, 1)
    ]
    try:
        ut.measure(daemons, args.size, 50, args.in_flight)  # warm-up
        spies = [
            subprocess.Popen(
                [
                    *(py_spy, "record", "--pid", str(p.pid), "--format", "raw"),
                    *("-r", str(args.rate), "-o", str(f), "--nonblocking"),
                    *(("--gil",) if args.gil else ()),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for p, f in zip(daemons.procs, files, strict=True)
        ]
        time.sleep(1.0)  # py-spy attaches
        mbs, bps, cpu = ut.measure(daemons, args.size, args.count, args.in_flight)
        for s in spies:
            s.send_signal(signal.SIGINT)
        for s in spies:
            s.wait(30)
    finally:
        daemons.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{args.cl} {args.store} {args.size} B x {args.count}: {mbs:.1f} MB/s, {bps:.0f} bundles/s,"
        f" cpu ms/bundle node1 {cpu[0]:.2f} node2 {cpu[1]:.2f} clients {cpu[2]:.2f}"
    )
    for f in files:
        if f.exists():
            print(summarize(f, args.top))
    print(f"raw profiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
