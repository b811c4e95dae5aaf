"""Where the daemon pair of ``bench/udp_throughput.py`` waits: the disk's
share of each bundle next to the CPUs', one row per run.

Prints, per run: MB/s; CPU ms per bundle of node 1, node 2 and the two app
clients (this process), and how many CPUs that keeps busy at that rate
(``cores``: the sum times bundles/s; the machine has ``os.cpu_count()``);
the bytes the disk under the stores wrote per bundle and how busy it was
(``/proc/diskstats``: sectors written, time doing I/O -- the whole device,
so other work on the machine counts too); and per daemon the bytes it
dirtied per bundle and, of those, the bytes dropped before they were
written (``/proc/<pid>/io`` ``write_bytes`` / ``cancelled_write_bytes``:
a payload whose file was unlinked before writeback), and the KB it handed
to write calls per bundle (``wchar``: what a payload never written
saves, whether or not the page cache would have reached the disk). Then
the medians.

A pair that neither fills the CPUs nor the disk is waiting on something
else (a window, a round trip). For comparing trees, as
``bench/large_goodput.py`` -- the daemons are run by the Python that runs
this script, so run each tree with its own ``.venv``::

    .venv/bin/python bench/pair_disk.py --cl mtcp --size 1000000 --count 300
    /work/main/.venv/bin/python bench/pair_disk.py --tree /work/main --cl mtcp --size 1000000 --count 300
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from large_goodput import pair_arguments


def _device_of(path: str) -> str | None:
    """The block device name (as in /proc/diskstats) holding ``path``."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if int(f[0]) == major and int(f[1]) == minor:
            return f[2]
    return None


def _disk(name: str | None) -> tuple[int, int]:
    """Bytes written and ms spent doing I/O so far by device ``name``."""
    if name is None:
        return 0, 0
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if f[2] == name:
            return int(f[9]) * 512, int(f[12])
    return 0, 0


def _io(pid: int) -> tuple[int, int, int]:
    """write_bytes, cancelled_write_bytes and wchar of ``pid`` (all its
    threads)."""
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    d = {k: int(v) for k, v in (line.split(":") for line in lines)}
    return d["write_bytes"], d["cancelled_write_bytes"], d["wchar"]


def main() -> int:
    args = pair_arguments(__doc__.splitlines()[0]).parse_args()
    sys.path.insert(0, str(Path(args.tree) / "bench"))
    sys.path.insert(0, args.tree)
    import udp_throughput as ut

    directory = ut.disk_dir()
    device = _device_of(directory)
    workdir = Path(tempfile.mkdtemp(prefix="dcis-disk-", dir=directory))
    daemons = ut.Daemons(workdir, args.store, args.cl)
    name = Path(args.tree).resolve().name
    n = args.count
    rows: list[tuple[float, ...]] = []
    try:
        ut.measure(daemons, args.size, max(4, n // 5), args.in_flight)  # warm-up
        for _ in range(args.repeats):
            pids = [p.pid for p in daemons.procs]
            d0, io0, t0 = _disk(device), [_io(p) for p in pids], time.monotonic()
            mbs, bps, cpu = ut.measure(daemons, args.size, n, args.in_flight)
            d1, io1, t1 = _disk(device), [_io(p) for p in pids], time.monotonic()
            cores = sum(cpu) * bps / 1e3
            disk_mb = (d1[0] - d0[0]) / n / 1e6
            busy = (d1[1] - d0[1]) / max((t1 - t0) * 1e3, 1e-9)
            node = [
                (
                    (b[0] - a[0]) / n / 1e6,
                    (b[1] - a[1]) / n / 1e6,
                    (b[2] - a[2]) / n / 1e3,
                )
                for a, b in zip(io0, io1, strict=True)
            ]
            rows.append(
                (
                    mbs,
                    *cpu,
                    cores,
                    disk_mb,
                    busy,
                    *node[0][:2],
                    *node[1][:2],
                    node[0][2],
                    node[1][2],
                ),
            )
            print(
                f"{name} {args.cl} {args.size} {args.store}: {mbs:7.1f} MB/s"
                f"  cpu ms/b {cpu[0]:.2f} / {cpu[1]:.2f} / {cpu[2]:.2f}, {cores:.2f} cores"
                f"  disk {disk_mb:.2f} MB/b, busy {busy:.0%}"
                f"  dirtied/dropped MB/b node1 {node[0][0]:.2f}/{node[0][1]:.2f}"
                f" node2 {node[1][0]:.2f}/{node[1][1]:.2f}"
                f"  wchar KB/b node1 {node[0][2]:.1f} node2 {node[1][2]:.1f}",
                flush=True,
            )
    finally:
        daemons.close()
        shutil.rmtree(workdir, ignore_errors=True)
    m = [statistics.median(c) for c in zip(*rows, strict=True)]
    print(
        f"median {name} {args.cl} {args.size} {args.store}: {m[0]:7.1f} MB/s"
        f"  cpu ms/b {m[1]:.2f} / {m[2]:.2f} / {m[3]:.2f}, {m[4]:.2f} cores"
        f"  disk {m[5]:.2f} MB/b, busy {m[6]:.0%}"
        f"  dirtied/dropped MB/b node1 {m[7]:.2f}/{m[8]:.2f} node2 {m[9]:.2f}/{m[10]:.2f}"
        f"  wchar KB/b node1 {m[11]:.1f} node2 {m[12]:.1f}"
        f"  (device {device}, load {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
