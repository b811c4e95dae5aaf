"""Committed throughput and commit latency of the log (issue 13), next to
pysyncobj measured in the same run; and time to converge after a heal
against the number of tentative entries.

*log, N nodes*: N processes on loopback UDP, each running
:class:`dcis.consensus.log.service.LogService` with its ``ctx.state`` in SQLite
(``synchronous=FULL``). Each process runs in rounds, a group commit: it
hands the service every datagram waiting, then submits and ticks, then
commits the round's writes with one fsync, and only then sends what the
round returned (persist before acknowledge). The leader's process submits puts in a closed loop with ``--window``
outstanding (pipelined) for ``--seconds``; latency = submit to COMMITTED at
the leader. (The daemon's own service hosting lands with issue #11; this
driver stands in for it with the same sans-I/O core.)

*pysyncobj*: 3 ``SyncObj`` nodes in one process on loopback, in memory (no
journal), the same closed loop of replicated ``set`` calls with callbacks.

*convergence*: 5 simulated nodes (dcis.consensus.testing.Cluster, virtual time),
partition 2 | 3, K tentative puts on the minority, heal; the virtual time
until every node holds the same commit index and state with nothing
tentative, and the wall time that took.

    .venv/bin/python bench/consensus.py [--seconds 5] [--window 64] [--nodes 3 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import select
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcis.consensus.log.api import EntryId, Put
from dcis.consensus.log.service import LogParams, LogService
from dcis.consensus.membership.view import MemberInfo, MemberState
from dcis.consensus.testing import Cluster
from dcis.dtn.node.service import Inbound
from dcis.dtn.routing.plan import ContactPlan

PARAMS = LogParams(heartbeat_ms=50, election_ms=400, gossip_ms=200, max_batch=256)


class View:
    def __init__(self, nodes: Sequence[int]) -> None:
        self.m = {
            n: MemberInfo(node=n, state=MemberState.ALIVE, incarnation=1) for n in nodes
        }

    def members(self) -> Mapping[int, MemberInfo]:
        return self.m

    def live(self) -> frozenset[int]:
        return frozenset(self.m)


class SqliteState:
    """ctx.state in SQLite; writes buffered per call, then one fsync'd commit."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)")
        self.cache = dict(self.db.execute("SELECT k, v FROM kv"))
        self.dirty: dict[str, bytes | None] = {}

    def get(self, key: str) -> bytes | None:
        return self.cache.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.cache[key] = value
        self.dirty[key] = value

    def delete(self, key: str) -> None:
        self.cache.pop(key, None)
        self.dirty[key] = None

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.cache if k.startswith(prefix))

    def commit(self) -> None:
        if not self.dirty:
            return
        self.db.execute("BEGIN")
        for k, v in self.dirty.items():
            if v is None:
                self.db.execute("DELETE FROM kv WHERE k = ?", (k,))
            else:
                self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))
        self.db.execute("COMMIT")
        self.dirty.clear()


class Ctx:
    def __init__(self, node: int, state: SqliteState) -> None:
        self.node = node
        self.incarnation = 1
        self.rng = random.Random(node)
        self.plan = ContactPlan()
        self.state = state
        self.credentials = None

    def earliest_arrival(self, node: int, *, at_ms: int, size: int = 0) -> int | None:
        return at_ms + 1


def node_main(
    node: int, ports: dict[int, int], db: str, pipe: Connection, window: int
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", ports[node]))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    state = SqliteState(db)
    svc = LogService(View(sorted(ports)), PARAMS)
    t0 = time.monotonic()

    def now() -> int:
        return int((time.monotonic() - t0) * 1000)

    def flush(sends: list) -> None:  # type: ignore[type-arg]
        state.commit()  # one fsync for the whole round, before anything leaves
        for s in sends:
            dest = int(s.destination[4:].split(".")[0])
            if dest in ports:
                sock.sendto(
                    node.to_bytes(2, "big") + s.payload, ("127.0.0.1", ports[dest])
                )

    flush(svc.start(Ctx(node, state), now()))
    sock.setblocking(False)
    load_until = 0.0
    pending: dict[EntryId, float] = {}
    latencies: list[float] = []
    done = 0
    seq = 0
    while True:
        deadline = svc.next_deadline()
        wait = (
            0.05 if deadline is None else max(0.0, min(0.05, (deadline - now()) / 1000))
        )
        ready, _, _ = select.select([sock, pipe], [], [], wait)
        if pipe in ready:
            cmd = pipe.recv()
            if cmd[0] == "status":
                pipe.send(svc.status())
            elif cmd[0] == "load":
                load_until = time.monotonic() + cmd[1]
                latencies, done = [], 0
            elif cmd[0] == "stop":
                pipe.send((done, latencies))
                return
        # Group commit: every datagram waiting is handled, then the round's
        # writes are fsync'd once, then its replies and appends are sent.
        out = []
        for _ in range(1024):
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            src = int.from_bytes(data[:2], "big")
            inbound = Inbound(f"ipn:{node}.17", f"ipn:{src}.17", data[2:], 0, 0, "b")
            out += svc.on_bundle(inbound, now())
        if pending:
            t = time.monotonic()
            for eid in [e for e in pending if svc.outcome(e) is not None]:
                latencies.append(t - pending.pop(eid))
                done += 1
        if time.monotonic() < load_until:
            while len(pending) < window:
                seq += 1
                pending[svc.submit(Put(f"k{seq % 100}", b"v" * 32), now())] = (
                    time.monotonic()
                )
        out += svc.on_tick(now())
        flush(out)


def bench_log(n: int, seconds: float, window: int) -> tuple[float, float, float]:
    ports = {}
    for i in range(1, n + 1):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        ports[i] = s.getsockname()[1]
        s.close()
    tmp = tempfile.mkdtemp(prefix="dcis-log-bench-")
    ctx = mp.get_context("spawn")
    pipes, procs = {}, []
    for i in ports:
        a, b = ctx.Pipe()
        p = ctx.Process(
            target=node_main, args=(i, ports, os.path.join(tmp, f"{i}.db"), b, window)
        )
        p.start()
        pipes[i], procs = a, [*procs, p]
    try:
        leader = None
        for _ in range(200):
            time.sleep(0.05)
            pipes[1].send(("status",))
            leader = pipes[1].recv()["leader"]
            if leader is not None:
                break
        assert leader is not None, "no leader elected"
        pipes[leader].send(("load", seconds))
        time.sleep(seconds + 0.5)
        pipes[leader].send(("stop",))
        done, lat = pipes[leader].recv()
    finally:
        for i, p in zip(ports, procs, strict=True):
            if p.is_alive():
                pipes[i].send(("stop",))
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    lat.sort()
    return (
        done / seconds,
        statistics.median(lat) * 1000,
        lat[int(len(lat) * 0.99)] * 1000,
    )


def bench_pysyncobj(seconds: float, window: int) -> tuple[float, float, float]:
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    ports = []
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    addrs = [f"127.0.0.1:{p}" for p in ports]
    dicts = [ReplDict() for _ in addrs]
    conf = SyncObjConf(appendEntriesUseBatch=True, dynamicMembershipChange=False)
    objs = [
        SyncObj(
            addrs[i],
            [a for a in addrs if a != addrs[i]],
            conf=conf,
            consumers=[dicts[i]],
        )
        for i in range(3)
    ]
    try:
        while not any(o._isLeader() for o in objs):
            time.sleep(0.05)
        leader = next(i for i, o in enumerate(objs) if o._isLeader())
        d = dicts[leader]
        lock = threading.Condition()
        outstanding = [0]
        latencies: list[float] = []
        end = time.monotonic() + seconds
        seq = 0
        while time.monotonic() < end:
            with lock:
                while outstanding[0] >= window:
                    lock.wait(0.01)
                outstanding[0] += 1
            seq += 1
            t = time.monotonic()

            def cb(res: object, err: object, t: float = t) -> None:
                with lock:
                    outstanding[0] -= 1
                    if err == 0:
                        latencies.append(time.monotonic() - t)
                    lock.notify()

            d.set(f"k{seq % 100}", "v" * 32, callback=cb)
        time.sleep(0.5)
    finally:
        for o in objs:
            o.destroy()
    latencies.sort()
    return (
        len(latencies) / seconds,
        statistics.median(latencies) * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
    )


def bench_convergence(k: int) -> tuple[int, float]:
    nodes = [1, 2, 3, 4, 5]
    view = View(nodes)
    c = Cluster(nodes, lambda n, inc: [LogService(view)], seed=5)
    c.advance(8_000)
    c.partition([frozenset({1, 2}), frozenset({3, 4, 5})])
    c.advance(12_000)
    for i in range(k):
        svc = c.service(1 + i % 2, 17)
        assert isinstance(svc, LogService)
        c.call(1 + i % 2, lambda s, i=i: s.submit(Put(f"k{i}", b"v"), c.now_ms), 17)  # type: ignore[attr-defined]
    c.advance(c.now_ms + 2_000)
    c.heal()
    healed = c.now_ms
    t = time.perf_counter()
    while True:
        c.advance(c.now_ms + 100)
        logs = [
            s for s in (c.service(n, 17) for n in nodes) if isinstance(s, LogService)
        ]
        if len(logs) != len(nodes) or any(s.tentative for s in logs):
            continue
        if len({s.commit_index for s in logs}) != 1:
            continue
        # The state hash (a full encoding) only once the cheap checks agree.
        if len({s.state_hash() for s in logs}) == 1:
            return c.now_ms - healed, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--nodes", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--entries", type=int, nargs="+", default=[100, 400, 1600])
    args = ap.parse_args()
    print(f"{'system':<28} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    ops, p50, p99 = bench_pysyncobj(args.seconds, args.window)
    print(f"{'pysyncobj 3 (in memory)':<28} {ops:9.0f} {p50:8.1f} {p99:8.1f}")
    for n in args.nodes:
        ops, p50, p99 = bench_log(n, args.seconds, args.window)
        print(f"{f'dcis log {n} (fsync)':<28} {ops:9.0f} {p50:8.1f} {p99:8.1f}")
    print()
    print(
        f"{'tentative entries':>18} {'converge (virtual ms)':>22} {'per entry ms':>13} {'wall s':>7}"
    )
    for k in args.entries:
        ms, wall = bench_convergence(k)
        print(f"{k:>18} {ms:>22} {ms / k:>13.2f} {wall:>7.2f}")


if __name__ == "__main__":
    main()
