"""Committed throughput and commit latency of the log (issue 13), next to
pysyncobj measured in the same run; and time to converge after a heal
against the number of tentative entries.

*dtn-node daemons, N* (the issue's figure): N real ``dtn-node`` processes on
loopback UDP (hop ACKs on, every node a neighbour of every other, no plan),
each with a FULL store (SQLite ``synchronous=FULL``, group commit: nothing
acknowledged before its fsync) and the log loaded by ``[services] factories
= ["dcis.consensus.logfactory:factory"]`` (``DCIS_LOG_MEMBERS`` = the N
nodes, default ``LogParams``). One trio client on the elected leader's app
API keeps ``--window`` appends (32-byte puts) outstanding until each is
COMMITTED, for ``--seconds``. Each request goes ``--via`` (a row each)
``service_request`` -- the app API hands it straight to the log service, no
bundles, one store transaction per request -- or ``bundles`` -- a request
bundle to ``ipn:N.17`` from an ephemeral endpoint and a reply bundle back.
Either way the app API answers an append once it is a
durable tentative entry ("ack p50"); the client learns commit by polling
(one GET at a time, at most every ``--poll-ms``) the COMMITTED value of the
key every put writes -- each value is the put's client sequence number, and
one origin's entries commit in the order it made them, so the committed
value is a watermark covering every earlier entry of that node. Latency =
submit to the client seeing it committed (includes up to one poll period
and a GET round trip). "leader CPU" = the leader daemon's CPU time per
committed op; "polls" = GETs per committed op (the measurement's own load).

*sans-I/O core N, bench driver*: not a daemon. N processes on loopback UDP,
each running :class:`dcis.consensus.log.service.LogService` in this
script's own minimal driver, with its ``ctx.state`` in SQLite
(``synchronous=FULL``). Each process runs in rounds, a group commit: it
hands the service every datagram waiting, then submits and ticks, then
commits the round's writes with one fsync, and only then sends what the
round returned (persist before acknowledge). No bundles, no bundle store,
no app API: the leader's process calls ``submit`` in a closed loop with
``--window`` outstanding; latency = submit to COMMITTED at the leader,
``LogParams(heartbeat_ms=50, election_ms=400, gossip_ms=200,
max_batch=256)``. What the log's core costs without the node around it.

*pysyncobj*: 3 ``SyncObj`` nodes in one process on loopback, in memory (no
journal), the same closed loop of replicated ``set`` calls with callbacks.

*convergence*: 5 simulated nodes (dcis.consensus.testing.Cluster, virtual time),
partition 2 | 3, K tentative puts on the minority, heal; the virtual time
until every node holds the same commit index and state with nothing
tentative, and the wall time that took.

Rows are medians of ``--repeats`` runs (the runs' ops/s listed), interleaved
so that a change in the shared machine's load hits every row alike; the
load average is printed at start and end.

    .venv/bin/python bench/consensus.py [--seconds 5] [--window 64] [--nodes 3 5]
        [--repeats 3] [--poll-ms 20] [--no-standin] [--no-convergence]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import random
import select
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import udp_throughput as ut

from dcis.consensus.log.api import EntryId, Level, Put
from dcis.consensus.log.service import SERVICE_NUMBER, LogParams, LogService
from dcis.consensus.log.wire import (
    ClientKind,
    ClientReply,
    ClientRequest,
    decode_message_untrusted,
    encode_message,
)
from dcis.consensus.logclient import TrioLogClient
from dcis.consensus.logfactory import MEMBERS_ENV
from dcis.consensus.membership.view import MemberInfo, MemberState
from dcis.consensus.testing import Cluster
from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.errors import DecodeError
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


# -- real daemons ------------------------------------------------------------


class LogDaemons:
    """``n`` ``dtn-node`` processes on loopback UDP (hop ACKs on, every node a
    neighbour of every other, always on: no plan), each with a FULL (fsync)
    SQLite store and the log loaded by ``[services] factories``."""

    def __init__(self, n: int, workdir: Path, synchronous: str = "FULL") -> None:
        self.nodes = list(range(1, n + 1))
        self.workdir = workdir
        ports = {i: ut._free_port() for i in self.nodes}
        env = dict(os.environ, **{MEMBERS_ENV: ",".join(map(str, self.nodes))})
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        for me in self.nodes:
            cfg = workdir / f"n{me}.toml"
            lines = [
                f"node = {me}",
                f'listen = "127.0.0.1:{ports[me]}"',
                f'app_socket = "{self.socket_of(me)}"',
                f'state_dir = "{workdir}/n{me}.state"',
                'log_level = "warning"',
                "[store]",
                f'path = "{workdir}/n{me}.db"',
                f'synchronous = "{synchronous}"',
                "[services]",
                'factories = ["dcis.consensus.logfactory:factory"]',
            ]
            for other in self.nodes:
                if other != me:
                    lines += [
                        "[[neighbours]]",
                        f"node = {other}",
                        f'address = "127.0.0.1:{ports[other]}"',
                        'ack = "on"',
                    ]
            cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
            with (workdir / f"n{me}.log").open("wb") as log:
                self.procs[me] = subprocess.Popen(
                    [sys.executable, "-m", "dcis.tools.dtn_node", "--config", str(cfg)],
                    cwd=ut.REPO,
                    stderr=log,
                    env=env,
                )

    def socket_of(self, node: int) -> str:
        return str(self.workdir / f"n{node}.sock")

    async def leader(self, timeout_s: float = 60.0) -> int:
        """Wait for the daemons' sockets and an elected leader; its node."""
        with trio.fail_after(timeout_s):
            while True:
                for node in self.nodes:
                    try:
                        async with open_trio_client(self.socket_of(node)) as c:
                            log = TrioLogClient(c)
                            await log.open()
                            st = await log.status()
                    except ClientError:
                        continue
                    lead = st["leader"]
                    if st["role"] == "leader" or (
                        isinstance(lead, int) and lead == node
                    ):
                        return node
                await trio.sleep(0.2)

    def close(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


BENCH_KEY = "bench/last"
"""The one key the daemon rows' puts write (their value: the client's
sequence number, 32 bytes), so one committed GET is a watermark."""


async def _daemon_load(
    sock: str, seconds: float, window: int, poll_s: float, via: str = "service_request"
) -> tuple[int, list[float], list[float], int]:
    """Closed loop through the app API of the leader: ``window`` appends
    outstanding until COMMITTED; (ops committed in ``seconds``, latencies).

    The app API acknowledges an append when it is a durable tentative entry;
    commit is learned by polling (one GET at a time, at most every
    ``poll_s``) the COMMITTED value of :data:`BENCH_KEY`, which every put
    writes with its client sequence number: one origin's entries commit in
    the order it made them (promise 3), so a committed value ``c`` means
    every entry of this node up to ``c``'s is committed.
    """
    rng = random.Random(time.time_ns())
    async with open_trio_client(sock) as c:
        status = await c.status()
        node = int(status["node"])
        # via "service_request": the app API reaches the log without bundles
        # (one store transaction per request, answered after its fsync);
        # via "bundles": request and reply bundles through an endpoint.
        direct = via == "service_request"
        if direct and SERVICE_NUMBER not in status.get("local_request_services", ()):
            raise ClientError("the node's log does not answer service_request")
        endpoint = ""
        if not direct:
            endpoint = await c.register(f"ipn:{node}.{rng.randrange(10_000, 2**31)}")
        dest = f"ipn:{node}.{SERVICE_NUMBER}"
        waiting: dict[int, tuple[trio.Event, list[ClientReply]]] = {}
        entry_seq: dict[int, int] = {}  # client seq -> the node's entry seq
        pending: dict[int, tuple[float, trio.Event]] = {}  # client seq -> t0
        latencies: list[float] = []
        acks: list[float] = []  # submit -> durable tentative entry (the reply)
        polls = [0]
        done = 0
        seq = 0
        end = time.monotonic() + seconds

        async def ask(req: ClientRequest) -> ClientReply:
            if direct:
                (payload,) = await c.service_request(
                    SERVICE_NUMBER, [encode_message(req)]
                )
                reply = decode_message_untrusted(payload)
                assert isinstance(reply, ClientReply)
            else:
                ev, box = trio.Event(), list[ClientReply]()
                waiting[req.req_id] = (ev, box)
                await c.send(dest, encode_message(req), source=endpoint)
                await ev.wait()
                reply = box[0]
            if not reply.ok:
                raise ClientError(f"log refused: {reply.error}")
            return reply

        async def receiver() -> None:
            if direct:
                return
            while True:
                b = await c.receive()
                try:
                    msg = decode_message_untrusted(b.payload)
                except DecodeError:
                    continue
                if isinstance(msg, ClientReply) and msg.req_id in waiting:
                    ev, box = waiting.pop(msg.req_id)
                    box.append(msg)
                    ev.set()

        async def worker() -> None:
            nonlocal seq, done
            while time.monotonic() < end:
                seq += 1
                s = seq
                ev = trio.Event()
                t0 = time.monotonic()
                pending[s] = (t0, ev)
                req = ClientRequest(
                    req_id=rng.randrange(1, 2**63),
                    kind=ClientKind.APPEND,
                    op=Put(BENCH_KEY, f"{s:032d}".encode()),
                )
                reply = await ask(req)
                acks.append(time.monotonic() - t0)
                assert reply.entry is not None
                entry_seq[s] = reply.entry.seq
                await ev.wait()

        async def poller() -> None:
            nonlocal done
            top = 0  # highest entry seq of ours known committed
            while True:
                known = [s for s in pending if s in entry_seq]
                if not known:
                    await trio.sleep(poll_s)
                    continue
                req = ClientRequest(
                    req_id=rng.randrange(1, 2**63),
                    kind=ClientKind.GET,
                    key=BENCH_KEY,
                    level=str(Level.COMMITTED),
                )
                t_ask = time.monotonic()
                polls[0] += 1
                value = (await ask(req)).value
                got = int(value) if value else 0
                if got in entry_seq:
                    top = max(top, entry_seq[got])
                t = time.monotonic()
                for s in [s for s in pending if entry_seq.get(s, top + 1) <= top]:
                    t0, ev = pending.pop(s)
                    if t <= end:
                        latencies.append(t - t0)
                        done += 1
                    ev.set()
                await trio.sleep(max(0.0, poll_s - (time.monotonic() - t_ask)))

        with trio.fail_after(seconds + 60):
            await _run_load(receiver, poller, worker, window)
    return done, latencies, acks, polls[0]


async def _run_load(
    receiver: Callable[[], Awaitable[None]],
    poller: Callable[[], Awaitable[None]],
    worker: Callable[[], Awaitable[None]],
    window: int,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        nursery.start_soon(poller)
        async with trio.open_nursery() as workers:
            for _ in range(window):
                workers.start_soon(worker)
        nursery.cancel_scope.cancel()


def _cpu_s(pid: int) -> float:
    try:
        return ut._cpu_s(pid)
    except OSError:
        return 0.0


def bench_daemons(
    cluster: LogDaemons,
    leader: int,
    seconds: float,
    window: int,
    poll_s: float,
    via: str = "service_request",
) -> tuple[float, float, float, float, float, float]:
    """One closed-loop run against ``leader``, the client's requests going
    ``via`` the app API's ``service_request`` or ``bundles``: (committed ops/s, p50 ms,
    p99 ms, leader CPU ms per committed op, p50 ms of the append reply,
    commit polls per committed op)."""
    pid = cluster.procs[leader].pid
    c0 = _cpu_s(pid)
    done, lat, acks, polls = trio.run(
        _daemon_load, cluster.socket_of(leader), seconds, window, poll_s, via
    )
    cpu = (_cpu_s(pid) - c0) * 1000 / max(1, done)
    lat.sort()
    if not lat:
        return 0.0, math.nan, math.nan, math.nan, math.nan, math.nan
    return (
        done / seconds,
        statistics.median(lat) * 1000,
        lat[int(len(lat) * 0.99)] * 1000,
        cpu,
        statistics.median(acks) * 1000,
        polls / max(1, done),
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


def _loadavg() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def _row(name: str, runs: list[tuple[float, ...]]) -> str:
    med = [statistics.median(col) for col in zip(*runs, strict=True)]
    cells = f"{name:<40} {med[0]:9.0f} {med[1]:8.1f} {med[2]:8.1f}"
    if len(med) > 3:
        cells += f" {med[3]:10.2f} {med[4]:8.1f} {med[5]:6.2f}"
    spread = "/".join(f"{r[0]:.0f}" for r in runs)
    return f"{cells}   runs {spread}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--nodes", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--repeats", type=int, default=3, help="runs per row (medians)")
    ap.add_argument(
        "--poll-ms", type=float, default=20.0, help="least time between commit polls"
    )
    ap.add_argument(
        "--via",
        nargs="+",
        choices=["service_request", "bundles"],
        default=["service_request", "bundles"],
        help="how the daemon client reaches the log (a row each)",
    )
    ap.add_argument("--entries", type=int, nargs="+", default=[100, 400, 1600])
    ap.add_argument("--no-standin", action="store_true", help="skip the stand-in rows")
    ap.add_argument("--no-convergence", action="store_true")
    ap.add_argument(
        "--keep", action="store_true", help="keep the daemons' work directory"
    )
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, {_loadavg()} (start)")
    workdir = Path(tempfile.mkdtemp(prefix="dcis-log-bench-", dir=ut.disk_dir()))
    clusters: dict[int, tuple[LogDaemons, int]] = {}
    rows: dict[str, list[tuple[float, ...]]] = {}
    try:
        for n in args.nodes:
            d = workdir / f"d{n}"
            d.mkdir()
            cluster = LogDaemons(n, d)
            clusters[n] = (cluster, 0)
        for n, (cluster, _) in clusters.items():
            clusters[n] = (cluster, trio.run(cluster.leader))
        for cluster, leader in clusters.values():  # warm-up
            bench_daemons(cluster, leader, 1.0, args.window, args.poll_ms / 1000)
        for _ in range(args.repeats):
            rows.setdefault("pysyncobj 3 (in memory, pipelined)", []).append(
                bench_pysyncobj(args.seconds, args.window)
            )
            if not args.no_standin:
                for n in args.nodes:
                    rows.setdefault(
                        f"sans-I/O core {n}, bench driver (fsync)", []
                    ).append(bench_log(n, args.seconds, args.window))
            for n, (cluster, leader) in clusters.items():
                for via in args.via:
                    rows.setdefault(f"daemons {n} (FULL store), {via}", []).append(
                        bench_daemons(
                            cluster,
                            leader,
                            args.seconds,
                            args.window,
                            args.poll_ms / 1000,
                            via,
                        )
                    )
    finally:
        for cluster, _ in clusters.values():
            cluster.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'system':<40} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'leader CPU':>10}")
    print(f"{'':<40} {'':>9} {'':>8} {'':>8} {'ms/op':>10}")
    for name, runs in rows.items():
        print(_row(name, runs))
    print(f"medians of {args.repeats} runs of {args.seconds:g} s, window {args.window}")
    print(f"{_loadavg()} (end)")
    if args.no_convergence:
        return
    print()
    print(
        f"{'tentative entries':>18} {'converge (virtual ms)':>22} {'per entry ms':>13} {'wall s':>7}"
    )
    for k in args.entries:
        ms, wall = bench_convergence(k)
        print(f"{k:>18} {ms:>22} {ms / k:>13.2f} {wall:>7.2f}")


if __name__ == "__main__":
    main()
