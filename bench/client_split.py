"""The ``bench/udp_throughput.py`` daemon pair with the two app clients in
processes of their own: CPU per bundle of the sending and of the receiving
client apart (user / system ms, minor page faults), next to node 1's and
node 2's. ``bench/large_goodput.py`` runs both clients in its own process and
reports their sum.

    .venv/bin/python bench/client_split.py --cl mtcp --size 1000000 --count 150
    /work/main/.venv/bin/python bench/client_split.py --tree /work/main ...

Prints one line per run and a median line.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _ru() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def _sender(tree: str, wd: str, size: int, count: int, inflight: int, q: Any) -> None:
    sys.path.insert(0, tree)
    import trio

    from dcis.dtn.client.trio_client import open_trio_client

    async def main() -> None:
        payload = os.urandom(size)
        async with open_trio_client(str(Path(wd) / "n1.sock")) as tx:

            async def send(n: int) -> None:
                for _ in range(n):
                    await tx.send(
                        "ipn:2.1", payload, source="ipn:1.1", lifetime_ms=3_600_000
                    )

            a = _ru()
            async with trio.open_nursery() as nursery:
                per = count // inflight
                for i in range(inflight):
                    nursery.start_soon(send, per + (1 if i < count % inflight else 0))
            b = _ru()
        q.put(("tx", *(y - x for x, y in zip(a, b, strict=True))))

    trio.run(main)


def _receiver(tree: str, wd: str, count: int, q: Any, ready: Any) -> None:
    sys.path.insert(0, tree)
    import trio

    from dcis.dtn.client.trio_client import open_trio_client

    async def main() -> None:
        async with open_trio_client(str(Path(wd) / "n2.sock")) as rx:
            await rx.register("ipn:2.1")
            ready.set()
            a = _ru()
            t0 = 0.0
            for i in range(count):
                await rx.receive()
                if i == 0:
                    t0 = time.perf_counter()
            t1 = time.perf_counter()
            b = _ru()
        q.put(("rx", *(y - x for x, y in zip(a, b, strict=True)), t1 - t0))

    trio.run(main)


def _line(r: tuple[float, ...]) -> str:
    return (
        f"cpu ms/b node1 {r[0]:.2f} node2 {r[1]:.2f}"
        f" | sender user {r[2]:.2f} sys {r[3]:.2f} faults {r[4]:.0f}"
        f" | receiver user {r[5]:.2f} sys {r[6]:.2f} faults {r[7]:.0f}"
        f" | {r[8]:.1f} MB/s"
    )


def main() -> int:
    from large_goodput import pair_arguments

    args = pair_arguments(__doc__.splitlines()[0]).parse_args()
    sys.path.insert(0, str(Path(args.tree) / "bench"))
    sys.path.insert(0, args.tree)
    import udp_throughput as ut

    wd = Path(tempfile.mkdtemp(prefix="dcis-split-", dir=ut.disk_dir()))
    daemons = ut.Daemons(wd, args.store, args.cl)

    def run(count: int) -> tuple[dict[str, tuple[float, ...]], list[float]]:
        q: Any = mp.Queue()
        ready = mp.Event()
        rx = mp.Process(target=_receiver, args=(args.tree, str(wd), count, q, ready))
        rx.start()
        ready.wait(60)
        pids = [p.pid for p in daemons.procs]
        c0 = [ut._cpu_s(p) for p in pids]
        tx = mp.Process(
            target=_sender,
            args=(args.tree, str(wd), args.size, count, args.in_flight, q),
        )
        tx.start()
        got = [q.get(timeout=600), q.get(timeout=600)]
        tx.join()
        rx.join()
        c1 = [ut._cpu_s(p) for p in pids]
        return {g[0]: g[1:] for g in got}, [
            (b - a) * 1e3 / count for a, b in zip(c0, c1, strict=True)
        ]

    name = Path(args.tree).resolve().name
    rows: list[tuple[float, ...]] = []
    try:
        run(max(4, args.count // 5))  # warm-up
        for _ in range(args.repeats):
            out, nodes = run(args.count)
            tx, rx = out["tx"], out["rx"]
            n = args.count
            row = (
                nodes[0],
                nodes[1],
                tx[0] * 1e3 / n,
                tx[1] * 1e3 / n,
                tx[2] / n,
                rx[0] * 1e3 / n,
                rx[1] * 1e3 / n,
                rx[2] / n,
                args.size * (n - 1) / rx[3] / 1e6,
            )
            rows.append(row)
            print(f"{name}: {_line(row)}", flush=True)
    finally:
        daemons.close()
        shutil.rmtree(wd, ignore_errors=True)
    med = tuple(statistics.median(c) for c in zip(*rows, strict=True))
    print(f"median {name}: {_line(med)}  (load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
