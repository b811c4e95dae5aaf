"""Goodput between two ``dtn-node`` daemons over UDP on loopback, next to raw UDP.

For 1 KB and 64 KB bundles: two daemons (hop-by-hop ACKs on) in separate
processes; a trio app API client sends N bundles to node 1 for ``ipn:2.1``
(many requests in flight) and another receives them from node 2. Time runs
from the first send to the last delivery. Three store settings, so a reader
sees what durability costs: ``synchronous=FULL`` (SQLite index plus segment
files for the large bundles, fsynced by group commit before each hop ACK and
send reply: the durable one the targets are about), ``NORMAL`` (no fsync),
and no store at all (``:memory:``). For each, the CPU time per bundle of node 1, node 2 and
the two app clients (this process) says where the time goes. Reference,
measured in the same run: a raw Python UDP sender blasting datagrams of the
same size at a receiver process (no storage, no acknowledgement, losses
allowed -- its goodput counts what arrived).

Ceiling rows, also measured in the same run (skip with ``--no-ceiling``):
what a hop that acknowledges only what it has stored can reach at best, in
Python, on this machine. A receiver process does the least work such a hop
must do -- no BPv7 parsing, no agent, no index, no app API at either end:
``recvfrom_into`` a preallocated buffer and a cumulative 8-byte ack every 16
datagrams to a sender that keeps 48 unacked datagrams in flight. Variants:
``ack only`` (stores nothing: the cost of acknowledging), ``write`` (plus
``os.write`` of each datagram to an append-only file before the ack, on the
same on-disk file system as the daemons' stores: survives kill -9) and
``write+fsync`` (plus ``os.fsync`` before each ack: survives power loss).
A hop that writes each datagram once is already capped by the kernel's
page-cache write cost (copying 64 KB into the page cache costs about three
times the ~5 us a 64 KB loopback datagram costs per side, on the machine
these lines were written on), and ``fsync`` caps it further. A daemon does
strictly more work per bundle (BPv7 parsing, index rows, the app API at
both ends), so its ratio to raw should stay below the matching ceiling row:
``write`` for ``NORMAL``, ``write+fsync`` for ``FULL``. At 1 KB the system
calls per datagram cost more than the bytes, so the ceiling rows say little
there (``write`` can even come out above ``ack only``). ``ack only`` may
come out a little above raw: its sender uses a connected socket, and the
window keeps the receive buffer from overflowing.

Prints medians of several repeats (after a warm-up run) and the ratios;
targets from the daemon issue: >= 50% of raw for 64 KB bundles, >= 2,000
bundles/s for 1 KB bundles with durable storage. spec/udpcl.md discusses the
figures.

    .venv/bin/python bench/udp_throughput.py [--repeats 3] [--quick] [--stores FULL,NORMAL,memory] [--no-ceiling]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dtn.client import open_trio_client

REPO = Path(__file__).resolve().parent.parent


def _raw_receiver(port_q: mp.Queue, result_q: mp.Queue, expected: int) -> None:  # type: ignore[type-arg]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    s.bind(("127.0.0.1", 0))
    port_q.put(s.getsockname()[1])
    s.settimeout(2.0)
    n = nbytes = 0
    first = last = 0.0
    try:
        while n < expected:
            data = s.recv(65_535)
            last = time.perf_counter()
            if n == 0:
                first = last
            n += 1
            nbytes += len(data)
    except TimeoutError:
        pass
    result_q.put((n, nbytes, first, last))


def raw_udp(size: int, count: int) -> tuple[float, float]:
    """(MB/s, datagrams/s) received by a raw Python UDP receiver process."""
    ctx = mp.get_context("spawn")
    port_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    result_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    p = ctx.Process(target=_raw_receiver, args=(port_q, result_q, count))
    p.start()
    port = port_q.get(timeout=20)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    payload = os.urandom(size)
    # perf_counter is CLOCK_MONOTONIC on Linux: comparable across processes.
    start = time.perf_counter()
    for _ in range(count):
        s.sendto(payload, ("127.0.0.1", port))
    s.close()
    n, nbytes, _first, last = result_q.get(timeout=60)
    p.join(10)
    elapsed = max(last - start, 1e-9)
    return nbytes / elapsed / 1e6, n / elapsed


# -- ceiling: the least work a hop that stores before it acks can do ---------

CEILING_VARIANTS = ("ack only", "write", "write+fsync")
_ACK_EVERY = 16  # datagrams per cumulative ack
_WINDOW = 48  # unacked datagrams the sender keeps in flight
_IDLE_S = 2.0  # a receiver or sender idle this long gives up (lost datagrams)


def _fs_type(path: str) -> str:
    """File-system type of the mount holding ``path`` (Linux /proc/mounts)."""
    real = os.path.realpath(path)
    best, fstype = "", ""
    try:
        lines = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    for line in lines:
        f = line.split()
        if len(f) < 3:
            continue
        mnt = f[1].replace("\\040", " ")
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) > len(best):
            best, fstype = mnt, f[2]
    return fstype


def disk_dir() -> str:
    """Parent directory for the daemons' stores and the ceiling's files: the
    default temporary directory unless it lives in RAM (then ~/.cache), so
    both measure writes to the same on-disk file system."""
    tmp = tempfile.gettempdir()
    if _fs_type(tmp) not in ("tmpfs", "ramfs"):
        return tmp
    alt = Path.home() / ".cache" / "dcis-bench"
    alt.mkdir(parents=True, exist_ok=True)
    return str(alt)


def _ceiling_receiver(
    port_q: mp.Queue,  # type: ignore[type-arg]
    result_q: mp.Queue,  # type: ignore[type-arg]
    count: int,
    variant: str,
    directory: str,
) -> None:
    write = variant in ("write", "write+fsync")
    sync = variant == "write+fsync"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    s.bind(("127.0.0.1", 0))
    s.settimeout(_IDLE_S)
    fd, path = tempfile.mkstemp(prefix="ceiling-", suffix=".seg", dir=directory)
    buf = bytearray(65_536)
    view = memoryview(buf)
    n = nbytes = pending = 0
    last = 0.0
    try:
        port_q.put(s.getsockname()[1])
        while n < count:
            k, addr = s.recvfrom_into(buf)
            if write:
                os.write(fd, view[:k])  # append-only segment: survives kill -9
            n += 1
            nbytes += k
            pending += 1
            if pending >= _ACK_EVERY or n == count:
                if sync:
                    os.fsync(fd)  # survives power loss
                s.sendto(n.to_bytes(8, "big"), addr)
                pending = 0
            last = time.perf_counter()
    except TimeoutError:
        pass  # datagrams lost: report what arrived
    finally:
        s.close()
        os.close(fd)
        os.unlink(path)
    result_q.put((n, nbytes, last))


def ceiling_udp(size: int, count: int, variant: str, directory: str) -> float:
    """MB/s through a receiver that does only ``variant`` (see CEILING_VARIANTS)
    per datagram, acking every _ACK_EVERY to a sender that keeps _WINDOW
    datagrams in flight. Time runs from the first send to the moment the last
    datagram is stored and acked."""
    ctx = mp.get_context("spawn")
    port_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    result_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    p = ctx.Process(
        target=_ceiling_receiver, args=(port_q, result_q, count, variant, directory)
    )
    p.start()
    try:
        port = port_q.get(timeout=20)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            s.connect(("127.0.0.1", port))
            s.settimeout(_IDLE_S + 0.5)  # blocking, but a lost ack cannot hang it
            payload = os.urandom(size)
            sent = acked = 0
            start = time.perf_counter()
            deadline = start + 120
            # Each pass sends >= 1 datagram or waits for an ack; acks come at
            # most once per _ACK_EVERY datagrams received, so this ends.
            while sent < count and time.perf_counter() < deadline:
                while sent < count and sent - acked < _WINDOW:
                    s.send(payload)
                    sent += 1
                if sent >= count:
                    break
                try:
                    acked = max(acked, int.from_bytes(s.recv(8), "big"))
                except TimeoutError:
                    break  # too many lost: the receiver counts what arrived
        _n, nbytes, last = result_q.get(timeout=60)
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(5)
    return nbytes / max(last - start, 1e-9) / 1e6


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemons:
    """Two dtn-node processes, always-on neighbours, stores on disk."""

    def __init__(self, workdir: Path, store: str = "FULL") -> None:
        """``store``: "FULL" / "NORMAL" (SQLite on disk, that sync level) or
        "memory" (no durable store: the cost of the rest of the path)."""
        self.workdir = workdir
        if store == "memory":
            store_cfg = 'path = ":memory:"\n'
        else:
            store_cfg = f'path = "{workdir}/n{{me}}.db"\nsynchronous = "{store}"\n'

        ports = [_free_port(), _free_port()]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i, (me, other) in enumerate(((1, 2), (2, 1))):
            cfg = workdir / f"n{me}.toml"
            cfg.write_text(
                f'node = {me}\nlisten = "127.0.0.1:{ports[i]}"\napp_socket = "{workdir}/n{me}.sock"\n'
                f'log_level = "warning"\nmtu_bytes = 65000\n[store]\n'
                + store_cfg.format(me=me)
                + f'[[neighbours]]\nnode = {other}\naddress = "127.0.0.1:{ports[1 - i]}"\nack = "on"\n',
                encoding="utf-8",
            )
            log = (workdir / f"n{me}.log").open("wb")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tools.dtn_node", "--config", str(cfg)],
                    cwd=REPO,
                    stderr=log,
                )
            )
            log.close()
        deadline = time.time() + 30
        for me in (1, 2):
            while not (workdir / f"n{me}.sock").exists():
                if time.time() > deadline:
                    raise RuntimeError("daemons did not start")
                time.sleep(0.05)

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(10)


async def _dcis_run(
    workdir: Path, size: int, count: int, in_flight: int
) -> tuple[float, float]:
    payload = os.urandom(size)
    got = 0
    done = trio.Event()
    t_first = 0.0
    t_last = 0.0
    async with (
        open_trio_client(str(workdir / "n2.sock")) as rx,
        open_trio_client(str(workdir / "n1.sock")) as tx,
    ):
        await rx.register("ipn:2.1")

        async def receiver() -> None:
            nonlocal got, t_last
            while got < count:
                await rx.receive()
                got += 1
            t_last = time.perf_counter()
            done.set()

        async def sender(n: int) -> None:
            for _ in range(n):
                await tx.send(
                    "ipn:2.1", payload, source="ipn:1.1", lifetime_ms=3_600_000
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            t_first = time.perf_counter()
            per = count // in_flight
            for i in range(in_flight):
                nursery.start_soon(sender, per + (1 if i < count % in_flight else 0))
            with trio.fail_after(300):
                await done.wait()
    elapsed = t_last - t_first
    return size * count / elapsed / 1e6, count / elapsed


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(
    daemons: Daemons, size: int, count: int, in_flight: int
) -> tuple[float, float, tuple[float, float, float]]:
    """One run: (MB/s, bundles/s, CPU ms per bundle of node 1, node 2 and the
    two app clients)."""
    pids = [p.pid for p in daemons.procs]
    c0 = [_cpu_s(p) for p in pids] + [_self_cpu_s()]
    mbs, bps = trio.run(_dcis_run, daemons.workdir, size, count, in_flight)
    c1 = [_cpu_s(p) for p in pids] + [_self_cpu_s()]
    ms = [(b - a) * 1e3 / count for a, b in zip(c0, c1, strict=True)]
    return mbs, bps, (ms[0], ms[1], ms[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer bundles (smoke run)")
    ap.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip the ceiling rows (a minimal store-then-ack receiver)",
    )
    ap.add_argument(
        "--stores",
        default="FULL,NORMAL,memory",
        help="comma-separated: FULL, NORMAL, memory (default all three)",
    )
    args = ap.parse_args()
    stores = [x.strip() for x in args.stores.split(",") if x.strip()]
    cases = [
        (1000, 2000 if args.quick else 6000, 64),
        (64_000, 200 if args.quick else 800, 16),
    ]
    # More datagrams than the daemon cases: the ceiling runs are fast, and a
    # run of a few ms is mostly noise (raw, with the cases' counts, is ~5 ms).
    ceiling_counts = {
        1000: 5000 if args.quick else 20_000,
        64_000: 1000 if args.quick else 4000,
    }
    cpus = os.cpu_count() or 1
    print(
        f"udp_throughput: 2 daemons on loopback, hop-by-hop ACKs; {cpus} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    print(
        "  store FULL: SQLite index + segment files, fsynced on a worker thread before each ACK"
        " (group commit; survives power loss); NORMAL: no fsync (survives kill -9);"
        " memory: no store (what the rest of the path costs)"
    )
    raw: dict[int, tuple[float, float]] = {}
    for size, count, _ in cases:
        runs = [raw_udp(size, count) for _ in range(args.repeats)]
        raw[size] = (
            statistics.median(r[0] for r in runs),
            statistics.median(r[1] for r in runs),
        )
    directory = disk_dir()
    ceiling: dict[tuple[int, str], float] = {}
    if not args.no_ceiling:
        for size, _count, _ in cases:
            n = ceiling_counts[size]
            for variant in CEILING_VARIANTS:
                ceiling_udp(size, min(n, 200), variant, directory)  # warm-up
                ceiling[size, variant] = statistics.median(
                    ceiling_udp(size, n, variant, directory)
                    for _ in range(args.repeats)
                )
    print(
        f"{'bundle':>7} {'store':>6} {'MB/s':>7} {'bundles/s':>9} {'raw MB/s':>9} {'ratio':>6}"
        f" {'wall ms/b':>9} {'cpu ms/b: node1':>15} {'node2':>6} {'clients':>7}   target"
    )
    for store in stores:
        workdir = Path(tempfile.mkdtemp(prefix="dcis-bench-", dir=directory))
        daemons = Daemons(workdir, store)
        try:
            for size, count, in_flight in cases:
                measure(daemons, size, min(count, 100), in_flight)  # warm-up
                ours = [
                    measure(daemons, size, count, in_flight)
                    for _ in range(args.repeats)
                ]
                mbs = statistics.median(o[0] for o in ours)
                bps = statistics.median(o[1] for o in ours)
                cpu = [statistics.median(o[2][k] for o in ours) for k in range(3)]
                rmbs, _rdps = raw[size]
                ratio = mbs / rmbs if rmbs else float("nan")
                if size >= 64_000:
                    target = f">= 50% of raw: {'met' if ratio >= 0.5 else 'NOT met'}"
                else:
                    target = (
                        f">= 2,000 bundles/s: {'met' if bps >= 2000 else 'NOT met'}"
                    )
                if store == "memory":
                    target = "(not durable: reference only)"
                print(
                    f"{size:>7} {store:>6} {mbs:>7.1f} {bps:>9.0f} {rmbs:>9.1f} {ratio:>6.1%}"
                    f" {1e3 / bps:>9.2f} {cpu[0]:>15.2f} {cpu[1]:>6.2f} {cpu[2]:>7.2f}   {target}",
                    flush=True,
                )
        finally:
            daemons.close()
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"  wall ms/b: elapsed time per bundle; cpu ms/b: CPU time per bundle of each process"
        f" (their sum / {cpus} CPUs is the floor of wall ms/b when the CPUs are the bottleneck;"
        " the rest is waiting, mostly for fsync)"
    )
    if ceiling:
        print(
            "ceiling: the least work a hop that stores before it acks can do"
            " (Python, no parsing, no app API)"
        )
        print(
            f"  receiver process: recvfrom_into, cumulative ack every {_ACK_EVERY} datagrams,"
            f" sender keeps {_WINDOW} in flight; files in {directory} ({_fs_type(directory) or '?'})"
        )
        print(
            f"{'size':>7} {'variant':>12} {'MB/s':>7} {'datagrams/s':>11} {'raw MB/s':>9}"
            f" {'ratio':>6}   durability"
        )
        durability = {
            "ack only": "none (a hop that stores nothing)",
            "write": "os.write before ack: survives kill -9",
            "write+fsync": "os.fsync before ack: survives power loss",
        }
        for size, _count, _ in cases:
            rmbs = raw[size][0]
            for variant in CEILING_VARIANTS:
                mbs = ceiling[size, variant]
                ratio = mbs / rmbs if rmbs else float("nan")
                print(
                    f"{size:>7} {variant:>12} {mbs:>7.1f} {mbs * 1e6 / size:>11.0f}"
                    f" {rmbs:>9.1f} {ratio:>6.1%}"
                    f"   {durability[variant]}"
                )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
