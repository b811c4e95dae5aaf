"""Large bundles in segment files vs. as SQLite blobs, measured side by side.

For 64 KB (and 1 KB) bundles, a ``SqliteStore`` on disk stores N bundles in
transactions of 16 (as a daemon's receive batches do), reads each back, and
deletes them (as forwarding does) -- once with bundles over 2 KB in segment
files (the default) and once with every bundle inline as a SQLite blob (the
store before segment files: ``inline_max_bytes`` above the bundle size), for
``synchronous`` FULL and NORMAL. Prints bundles/s per phase, medians of
``--repeats``, and the ratio segments / blobs. Also: the cost of the
open-time check of a segment store (every payload read back and checked
against its CRC-32C), per GB, from the page cache.

    .venv/bin/python bench/store_segments.py [--repeats 3] [--count 2000] [--cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcis.dtn.agent.store import BundleState, StoredBundle
from dcis.dtn.storage.sqlite_store import SqliteStore

BATCH = 16


def _rec(key: str, size: int) -> StoredBundle:
    return StoredBundle(
        key=key,
        destination="ipn:2.1",
        expiry_ms=10**12,
        state=BundleState.PENDING,
        size_bytes=size,
        received_ms=0,
    )


def _disk_dir() -> str:
    # On disk, not tmpfs: the point is what the file system costs.
    base = tempfile.gettempdir()
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[1] == base and parts[2] in ("tmpfs", "ramfs"):
                base = str(Path.home() / ".cache")
                os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix="dcis-store-bench-", dir=base)


def one_run(size: int, count: int, sync: str, segments: bool) -> dict[str, float]:
    """Bundles/s for put, get and delete."""
    d = _disk_dir()
    try:
        store = SqliteStore(
            Path(d) / "s.db",
            limit_bytes=1 << 40,
            synchronous=sync,  # type: ignore[arg-type]
            inline_max_bytes=2048 if segments else size + 1,
        )
        data = os.urandom(size)
        keys = [f"ipn:1.1|{i}|0" for i in range(count)]
        t0 = time.perf_counter()
        for i in range(0, count, BATCH):
            with store.transaction():
                for k in keys[i : i + BATCH]:
                    store.put(_rec(k, size), data)
        t1 = time.perf_counter()
        for k in keys:
            if store.get(k) != data:
                raise AssertionError(f"{k} read back wrong")
        t2 = time.perf_counter()
        for i in range(0, count, BATCH):
            with store.transaction(durable=False):
                for k in keys[i : i + BATCH]:
                    store.delete(k)
        t3 = time.perf_counter()
        store.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {
        "put": count / (t1 - t0),
        "get": count / (t2 - t1),
        "delete": count / (t3 - t2),
    }


def open_check_s_per_gb(total_mb: int, cold: bool = False) -> float:
    """Seconds per GB to open a segment store (payloads read back and
    CRC-checked); ``cold``: drop the page cache first (root, Linux)."""
    d = _disk_dir()
    try:
        path = Path(d) / "s.db"
        s = SqliteStore(path, limit_bytes=1 << 40, synchronous="NORMAL")
        data = os.urandom(64_000)
        n = total_mb * 1_000_000 // len(data)
        with s.transaction():
            for i in range(n):
                s.put(_rec(f"k{i}", len(data)), data)
        s.close()
        if cold:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as f:
                f.write("3\n")
        t = time.perf_counter()
        SqliteStore(path, limit_bytes=1 << 40).close()
        dt = time.perf_counter() - t
        return dt / (n * len(data) / 1e9)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--count", type=int, default=2000, help="bundles per run (64 KB)")
    ap.add_argument(
        "--cold",
        action="store_true",
        help="also time the open-time check with the page cache dropped (needs root)",
    )
    args = ap.parse_args()
    print(
        f"store_segments: SqliteStore on disk, transactions of {BATCH}; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'bundle':>7} {'sync':>6} {'phase':>6} {'blobs b/s':>10} {'segments b/s':>12} {'ratio':>6}"
    )
    for size, count in ((64_000, args.count), (1000, args.count * 4)):
        for sync in ("FULL", "NORMAL"):
            runs = {
                seg: [one_run(size, count, sync, seg) for _ in range(args.repeats)]
                for seg in (False, True)
            }
            for phase in ("put", "get", "delete"):
                blob = statistics.median(r[phase] for r in runs[False])
                seg = statistics.median(r[phase] for r in runs[True])
                print(
                    f"{size:>7} {sync:>6} {phase:>6} {blob:>10.0f} {seg:>12.0f} {seg / blob:>5.2f}x",
                    flush=True,
                )
    print(
        "  (1 KB bundles stay inline either way: their rows show the noise between runs)"
    )
    per_gb = statistics.median(open_check_s_per_gb(256) for _ in range(args.repeats))
    print(f"open-time check of a segment store (page cache): {per_gb:.2f} s per GB")
    if args.cold:
        cold = statistics.median(
            open_check_s_per_gb(256, cold=True) for _ in range(args.repeats)
        )
        print(f"open-time check of a segment store (cold cache): {cold:.2f} s per GB")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
