"""The daemon's store pattern alone: CPU per bundle of a group-commit
``SqliteStore`` as the daemon drives it, split into user and system time
per phase.

Each round puts ``--batch`` bundles in one durable transaction (a chunk of
app sends, or a receive batch), runs the group-commit sync as the daemon's
sync task does (``begin_sync``, the returned function, ``end_sync``; here on
the same thread), then deletes them in one relaxed transaction (a forwarding
batch). ``--batch 1`` is what small batches cost: at 16 sends in flight the
daemons commit one or two bundles per transaction. No sockets, no agent: the
figure is the store's own. Compare two trees by running this file with each
tree's Python (the store is imported from the interpreter's ``dcis``)::

    .venv/bin/python bench/store_commit.py --size 64000 --batch 16
    /work/main/.venv/bin/python bench/store_commit.py --size 64000 --batch 1

Prints one line per repeat and the median: bundles/s, and user/system
microseconds per bundle in total and per phase (put, sync, delete).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from udp_throughput import disk_dir

from dcis.dtn.agent.store import BundleState, StoredBundle
from dcis.dtn.storage.sqlite_store import SqliteStore

PHASES = ("put", "sync", "delete")


def _ru() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def one_run(size: int, batch: int, count: int, sync: bool) -> list[float]:
    """[bundles/s, user us/b, sys us/b, then user and sys us/b per phase]."""
    d = tempfile.mkdtemp(prefix="dcis-store-commit-", dir=disk_dir())
    store = SqliteStore(os.path.join(d, "s.db"), 1 << 40, deferred_sync=True)
    data = os.urandom(size)
    spent = {p: [0.0, 0.0] for p in PHASES}
    n = 0
    try:
        t0, r0 = time.perf_counter(), _ru()
        while n < count:
            keys = [f"ipn:1.1-{n + i}-0" for i in range(batch)]
            a = _ru()
            with store.transaction():
                for k in keys:
                    rec = StoredBundle(
                        key=k,
                        destination="ipn:2.1",
                        expiry_ms=1 << 40,
                        state=BundleState.PENDING,
                        size_bytes=size,
                        received_ms=0,
                    )
                    store.put(rec, data)
            b = _ru()
            if sync:
                store.begin_sync()()
                store.end_sync()
            c = _ru()
            with store.transaction(durable=False):
                for k in keys:
                    store.delete(k)
            e = _ru()
            for p, x, y in (("put", a, b), ("sync", b, c), ("delete", c, e)):
                spent[p][0] += y[0] - x[0]
                spent[p][1] += y[1] - x[1]
            n += batch
        el, r1 = time.perf_counter() - t0, _ru()
    finally:
        store.close()
        shutil.rmtree(d, ignore_errors=True)
    out = [n / el, (r1[0] - r0[0]) * 1e6 / n, (r1[1] - r0[1]) * 1e6 / n]
    for p in PHASES:
        out += [spent[p][0] * 1e6 / n, spent[p][1] * 1e6 / n]
    return out


def _fmt(v: list[float]) -> str:
    per = " ".join(
        f"{p} {v[3 + 2 * i]:.1f}/{v[4 + 2 * i]:.1f}" for i, p in enumerate(PHASES)
    )
    return f"{v[0]:8.0f} bundles/s  user/sys us/b {v[1]:.1f}/{v[2]:.1f}  ({per})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64_000)
    ap.add_argument("--batch", type=int, default=16, help="bundles per transaction")
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--no-sync", action="store_true", help="skip the group-commit syncs"
    )
    args = ap.parse_args()
    import dcis.dtn.storage.sqlite_store as impl

    tree = Path(impl.__file__ or "?").resolve().parents[2].name
    rows = []
    for _ in range(args.repeats):
        rows.append(one_run(args.size, args.batch, args.count, not args.no_sync))
        print(f"{args.size} B x {args.batch}/txn: " + _fmt(rows[-1]), flush=True)
    med = [statistics.median(c) for c in zip(*rows, strict=True)]
    print(
        f"median ({tree}) {args.size} B x {args.batch}/txn: {_fmt(med)}"
        f"  (load {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
