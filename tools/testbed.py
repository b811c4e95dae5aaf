"""The testbed: one ``dtn-node`` process per plan node, joined through the link emulator.

:class:`Testbed` (an async context manager) writes a ``node.toml`` per node in
a work directory, opens the emulator's sockets (tools/emulator.py), starts the
daemons, and connects a collector to each node's app API that receives every
bundle for ``ipn:N.1`` and notes when it arrived. :meth:`Testbed.run_traffic`
sends the traffic (``AT_SECONDS SRC DST SIZE [COUNT]``, plan time 0 being the
moment the testbed starts the traffic) through the source nodes' app APIs and
returns the summary ``dcis sim`` prints: a bundle is *delivered* if its
destination received it, else *deleted* if a daemon logged deleting it on
purpose (hop limit, security policy, ...: the ``deleted`` events of the
daemons' JSON logs), else *expired* if its lifetime ended before the run
did, else *pending*.

Daemons can be killed (SIGKILL) and restarted mid-run (:meth:`kill`,
:meth:`restart`); their stores survive on disk.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from dcis.dtn.client import ClientError, TrioClient, open_trio_client
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim.engine import DELETION_REASONS, deletion_reason, whole_key
from dcis.dtn.sim.traffic import TrafficItem
from dcis.dtn.storage.plan_files import load_plan
from dcis.dtn.time import unix_from_dtn_time
from dcis.tools.emulator import Emulator, LinkModel


@dataclass(frozen=True, slots=True, kw_only=True)
class TestbedOptions:
    """How to run the testbed (``workdir`` holds configs, stores and logs)."""

    __test__ = False  # not a pytest test class, despite the name

    plan_path: Path
    workdir: Path
    loss: float = 0.0
    seed: int = 0
    lifetime_s: float = 86_400.0
    start_margin_s: float = 3.0
    log_level: str = "info"
    ack_timeout_s: float = 0.5
    synchronous: str = "FULL"
    node_start_timeout_s: float = 30.0
    secure: bool = False
    """Make an operator key and one key store per node (``workdir/keys``),
    certify every node, and run every daemon with ``[security]`` on."""
    services: tuple[str, ...] = ()
    """``[services] factories`` of every daemon (``"module:factory"``)."""
    netns: bool = False
    """Run each daemon in its own network namespace (Linux, root), joined to
    the emulator by a veth pair; see :class:`NetnsHosts`."""


@dataclass(slots=True)
class _Sent:
    key: str
    src: int
    dst: int
    creation_unix_s: float
    expiry_unix_s: float


@dataclass(slots=True)
class Ledger:
    """Every bundle the testbed sent and every delivery the collectors saw."""

    sent: dict[str, _Sent] = field(default_factory=dict)
    arrivals: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    refused: int = 0


_REPO = str(Path(__file__).resolve().parent.parent)


_PORT_FLOOR = 10_000
_picked: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 if unknown)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_udp_port(host: str) -> int:
    """A UDP port free on ``host`` now, for a daemon that binds it a moment
    later. Taken below the kernel's ephemeral range, so that no ``bind(0)``
    meanwhile (the emulator's relay sockets, another test's sockets) can be
    given it -- an ephemeral port just released could be, and the daemon
    then failed to start ("Address already in use"); never the same port
    twice in one process."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    if low - _PORT_FLOOR > 1_000:
        for _ in range(200):
            port = rng.randrange(_PORT_FLOOR, low)
            if port in _picked:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _picked.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NetnsHosts:
    """One network namespace per node, made and always removed by us.

    Node ``k``-th gets namespace ``dcis<pid>n<node>`` and a veth pair: the
    emulator's end in the root namespace has ``10.213.<X>.<4k+1>/30`` (X: a /24
    no other testbed uses, first guess pid % 256),
    the daemon's end (``eth0``) ``.<4k+2>``. Daemons listen on their own
    address, port 4556, and reach the emulator only through their veth: a
    daemon cannot talk to another except through the emulator. Needs ``ip``
    (iproute2) and CAP_NET_ADMIN; raises RuntimeError otherwise (after
    removing whatever it made).
    """

    PORT = 4556

    def __init__(self, nodes: list[int]) -> None:
        if len(nodes) > 63:
            raise RuntimeError("network namespaces: at most 63 nodes")
        pid = os.getpid()
        # A /24 no other testbed on this host uses now (pid-based first guess).
        out = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        third = next(
            (
                x % 256
                for x in range(pid, pid + 256)
                if f" 10.213.{x % 256}." not in out
            ),
            pid % 256,
        )
        net = f"10.213.{third}"
        self.names = {n: f"dcis{pid}n{n}" for n in nodes}
        self.outer = {n: f"{net}.{4 * k + 1}" for k, n in enumerate(nodes)}
        self.inner = {n: f"{net}.{4 * k + 2}" for k, n in enumerate(nodes)}
        self._veth = {n: f"dc{pid % 100000}x{k}" for k, n in enumerate(nodes)}
        self._made: list[str] = []

    @staticmethod
    def _ip(*args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")

    def create(self) -> None:
        """Make every namespace and link (synchronous: a few ``ip`` calls each)."""
        try:
            for n, ns in self.names.items():
                self._ip("netns", "add", ns)
                self._made.append(ns)
                veth = self._veth[n]
                self._ip(
                    "link",
                    "add",
                    veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                )
                self._ip("addr", "add", f"{self.outer[n]}/30", "dev", veth)
                self._ip("link", "set", veth, "up")
                self._ip("-n", ns, "addr", "add", f"{self.inner[n]}/30", "dev", "eth0")
                self._ip("-n", ns, "link", "set", "eth0", "up")
                self._ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Delete the namespaces (their veth pairs go with them). Never raises."""
        while self._made:
            ns = self._made.pop()
            with contextlib.suppress(OSError):
                subprocess.run(
                    ["ip", "netns", "del", ns], capture_output=True, check=False
                )

    def prefix(self, node: int) -> list[str]:
        """Command prefix that runs a program in ``node``'s namespace."""
        return ["ip", "netns", "exec", self.names[node]]


class Testbed:
    """N daemons on loopback behind the link emulator (see the module docstring).

    ``async with testbed.running(): ...`` starts and stops everything.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, opts: TestbedOptions) -> None:
        self.opts = opts
        self.plan: ContactPlan = load_plan(opts.plan_path)
        self.nodes = sorted(self.plan.nodes)
        if not self.nodes:
            raise ValueError(f"{opts.plan_path}: the plan has no contacts")
        self.host = "127.0.0.1"
        self.epoch_unix_s = 0.0
        self.ledger = Ledger()
        self.model = LinkModel(self.plan, loss=opts.loss, rng=random.Random(opts.seed))
        self._procs: dict[int, trio.Process] = {}
        self._emu: Emulator | None = None
        self._nursery: trio.Nursery | None = None
        self._addrs: dict[int, tuple[str, int]] = {}
        self.restarts = 0
        self.netns: NetnsHosts | None = None

    # ------------------------------------------------------------ paths

    def socket_of(self, node: int) -> str:
        """App API socket of ``node``."""
        return str(self.opts.workdir / f"node{node}.sock")

    def config_of(self, node: int) -> Path:
        """node.toml of ``node``."""
        return self.opts.workdir / f"node{node}.toml"

    def log_of(self, node: int) -> Path:
        """stderr (JSON log lines) of ``node``."""
        return self.opts.workdir / f"node{node}.log"

    def plan_s(self) -> float:
        """Plan time now."""
        return time.time() - self.epoch_unix_s

    # ------------------------------------------------------------ lifecycle

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Testbed]:
        """Start the emulator and every daemon; stop them all on exit."""
        opts = self.opts
        if opts.netns:
            self.netns = NetnsHosts(self.nodes)
            await trio.to_thread.run_sync(self.netns.create)
        try:
            await trio.to_thread.run_sync(self._write_configs)
        except BaseException:
            if self.netns is not None:
                self.netns.remove()
            raise
        assert self._emu is not None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._emu.serve)
                try:
                    async with trio.open_nursery() as starting:
                        for n in self.nodes:
                            starting.start_soon(self._start, n)
                    for n in self.nodes:
                        nursery.start_soon(self._collect, n)
                    yield self
                finally:
                    with trio.CancelScope(shield=True):
                        for n in list(self._procs):
                            await self.stop(n)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self._nursery = None
            self._emu.close()
            if self.netns is not None:
                self.netns.remove()
            del opts

    def _write_configs(self) -> None:
        opts = self.opts
        opts.workdir.mkdir(parents=True, exist_ok=True)
        ns = self.netns
        if ns is not None:
            self._addrs = {n: (ns.inner[n], ns.PORT) for n in self.nodes}
        else:
            self._addrs = {n: (self.host, free_udp_port(self.host)) for n in self.nodes}
        self.epoch_unix_s = time.time() + opts.start_margin_s
        self._emu = Emulator(
            self.model,
            self._addrs,
            self.epoch_unix_s,
            host=self.host,
            hosts=dict(ns.outer) if ns is not None else {},
            # Follows plan edits, as the daemons (configured with this file) do.
            plan_path=str(Path(opts.plan_path).resolve()),
        )
        relay = self._emu.bind()
        neighbours: dict[int, set[int]] = {n: set() for n in self.nodes}
        for a, b in self.model.links:
            neighbours[a].add(b)
            neighbours[b].add(a)
        plan_path = Path(opts.plan_path).resolve()
        keystores = (
            make_keystores(opts.workdir / "keys", self.nodes) if opts.secure else {}
        )
        for n in self.nodes:
            lines = [
                f"node = {n}",
                f'listen = "{self._addrs[n][0]}:{self._addrs[n][1]}"',
                f'app_socket = "{self.socket_of(n)}"',
                f'state_dir = "{opts.workdir / f"node{n}.state"}"',
                f'plan = "{plan_path}"',
                f"plan_epoch_unix_s = {self.epoch_unix_s!r}",
                f'log_level = "{opts.log_level}"',
                f"lifetime_ms = {int(opts.lifetime_s * 1000)}",
                "[store]",
                f'path = "{opts.workdir / f"node{n}.db"}"',
                f'synchronous = "{opts.synchronous}"',
                "[udp]",
                f"ack_timeout_s = {opts.ack_timeout_s!r}",
            ]
            if n in keystores:
                lines += ["[security]", f'keystore = "{keystores[n]}"']
            if opts.services:
                lines += [
                    "[services]",
                    f"factories = {json.dumps(list(opts.services))}",
                ]
            for m in sorted(neighbours[n]):
                h, p = relay[(n, m)]
                lines += [
                    "[[neighbours]]",
                    f"node = {m}",
                    f'address = "{h}:{p}"',
                    'ack = "on"',
                ]
            self.config_of(n).write_text("\n".join(lines) + "\n", encoding="utf-8")

    async def _start(self, node: int) -> None:
        log = self.log_of(node).open("ab")
        try:
            proc = await trio.lowlevel.open_process(
                [
                    *(self.netns.prefix(node) if self.netns is not None else []),
                    sys.executable,
                    "-m",
                    "dcis.tools.dtn_node",
                    "--config",
                    str(self.config_of(node)),
                ],
                stdout=log,
                stderr=log,
                cwd=_REPO,
            )
        finally:
            log.close()
        self._procs[node] = proc
        with trio.move_on_after(self.opts.node_start_timeout_s):
            while proc.poll() is None:
                try:
                    async with open_trio_client(self.socket_of(node)) as c:
                        await c.ping()
                    return
                except ClientError:
                    await trio.sleep(0.05)
        raise RuntimeError(f"node {node} did not start (see {self.log_of(node)})")

    async def kill(self, node: int) -> None:
        """SIGKILL ``node``'s daemon and reap it (its store stays on disk)."""
        proc = self._procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def stop(self, node: int) -> None:
        """SIGTERM ``node``'s daemon and wait for it (SIGKILL after 10 s)."""
        proc = self._procs.pop(node, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await proc.wait()
            return
        proc.kill()
        await proc.wait()

    async def restart(self, node: int) -> None:
        """Start ``node``'s daemon again (after :meth:`kill` or :meth:`stop`)."""
        if node in self._procs:
            await self.stop(node)
        self.restarts += 1
        await self._start(node)

    # ------------------------------------------------------------ traffic

    async def _collect(self, node: int) -> None:
        """Receive bundles for ipn:N.1 forever, reconnecting across restarts."""
        endpoint = f"ipn:{node}.1"
        while True:
            try:
                async with open_trio_client(self.socket_of(node)) as c:
                    await c.register(endpoint)
                    while True:
                        b = await c.receive()
                        now = time.time()
                        if b.bundle_key in self.ledger.arrivals:
                            self.ledger.duplicates += 1
                        else:
                            self.ledger.arrivals[b.bundle_key] = now
            except ClientError:
                await trio.sleep(0.1)

    async def send(
        self, client: TrioClient | None, src: int, dst: int, size: int
    ) -> str | None:
        """Send one bundle from ipn:src.1 to ipn:dst.1; None if refused."""
        lifetime_ms = int(self.opts.lifetime_s * 1000)
        payload = bytes(size)
        try:
            if client is None:
                async with open_trio_client(self.socket_of(src)) as c:
                    key = await c.send(
                        f"ipn:{dst}.1",
                        payload,
                        source=f"ipn:{src}.1",
                        lifetime_ms=lifetime_ms,
                    )
            else:
                key = await client.send(
                    f"ipn:{dst}.1",
                    payload,
                    source=f"ipn:{src}.1",
                    lifetime_ms=lifetime_ms,
                )
        except ClientError:
            self.ledger.refused += 1
            return None
        # The key is "source|creation_ms|sequence": creation time is in it.
        creation_ms = int(key.split("|")[1])
        created = unix_from_dtn_time(creation_ms)  # type: ignore[arg-type]
        self.ledger.sent[key] = _Sent(
            key, src, dst, created, created + self.opts.lifetime_s
        )
        return key

    async def _run_item(self, item: TrafficItem) -> None:
        await trio.sleep_until(
            trio.current_time() + max(0.0, item.at_s - self.plan_s())
        )
        try:
            async with open_trio_client(self.socket_of(item.src)) as c:
                for _ in range(item.count):
                    if await self.send(c, item.src, item.dst, item.size_bytes) is None:
                        break
        except ClientError:
            self.ledger.refused += item.count

    async def run_traffic(
        self, traffic: list[TrafficItem], duration_s: float
    ) -> dict[str, Any]:
        """Run ``traffic`` until plan time ``duration_s``; return the summary."""
        for item in traffic:
            for n in (item.src, item.dst):
                if n not in self.nodes:
                    raise ValueError(
                        f"traffic line {item.line}: node {n} is not in the plan"
                    )
        async with trio.open_nursery() as nursery:
            for item in traffic:
                if item.at_s < duration_s:
                    nursery.start_soon(self._run_item, item)
            await self.sleep_until_plan(duration_s)
            nursery.cancel_scope.cancel()
        return self.summary(duration_s)

    async def sleep_until_plan(self, at_s: float) -> None:
        """Sleep until plan time ``at_s``."""
        await trio.sleep(max(0.0, at_s - self.plan_s()))

    def summary(self, duration_s: float) -> dict[str, Any]:
        """The ``dcis sim`` summary keys for what happened so far."""
        end = self.epoch_unix_s + duration_s
        delivered = expired = pending = 0
        deletions = logged_deletions([self.log_of(n) for n in self.nodes])
        deleted: dict[str, int] = {}
        lat: list[float] = []
        for s in self.ledger.sent.values():
            at = self.ledger.arrivals.get(s.key)
            if at is not None:
                delivered += 1
                lat.append(max(0.0, at - s.creation_unix_s))
            elif s.key in deletions:
                why = deletions[s.key]
                deleted[why] = deleted.get(why, 0) + 1
            elif s.expiry_unix_s <= end:
                expired += 1
            else:
                pending += 1
        lat.sort()

        def pct(q: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, math.ceil(q * len(lat)) - 1)], 4)

        return {
            "nodes": len(self.nodes),
            "duration_s": duration_s,
            "loss": self.opts.loss,
            "sent": len(self.ledger.sent),
            "refused": self.ledger.refused,
            "delivered": delivered,
            "expired": expired,
            "pending": pending,
            "deleted": sum(deleted.values()),
            "deleted_reasons": dict(sorted(deleted.items())),
            "duplicates_delivered": self.ledger.duplicates,
            "latency_p50_s": pct(0.5),
            "latency_p99_s": pct(0.99),
            "latency_max_s": round(lat[-1], 4) if lat else None,
            "latency_mean_s": round(statistics.fmean(lat), 4) if lat else None,
            "restarts": self.restarts,
            "emulator": self.model.totals(),
        }


def logged_deletions(logs: list[Path]) -> dict[str, str]:
    """Bundles the daemons deleted on purpose, from their JSON logs: whole
    bundle key (``source|creation|sequence``; a fragment counts for its
    bundle) -> reason category, as ``dcis sim`` names them. Unreadable
    files and lines are skipped."""
    out: dict[str, str] = {}
    for path in logs:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if '"deleted"' not in line:
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if not isinstance(doc, dict) or doc.get("event") != "deleted":
                continue
            key = doc.get("bundle")
            if isinstance(key, str):
                # The daemon logs the agent's cause; the wording is the
                # fallback for a log line without one.
                cause = doc.get("cause")
                out.setdefault(
                    whole_key(key),
                    cause
                    if isinstance(cause, str) and cause in DELETION_REASONS
                    else deletion_reason(str(doc.get("detail", ""))),
                )
    return out


def make_keystores(
    root: Path, nodes: list[int], *, certified: list[int] | None = None
) -> dict[int, Path]:
    """An operator store ``root/operator`` and a key store per node under ``root``.

    Each node store holds the node's keys, its certificate (valid from a day
    ago for a year), ``operator.pub`` and the certificates of every other
    node in ``certified`` (default: all). Returns the store of each node.
    """
    from dcis.crypto import NodeIdentity, OperatorKey, issue_certificate
    from dcis.dtn.storage import KeyStore
    from dcis.dtn.time import dtn_time_from_unix

    op = OperatorKey.generate()
    KeyStore(root / "operator").write_operator_key(op, overwrite=True)
    now = int(dtn_time_from_unix(time.time()))
    ids = {n: NodeIdentity.generate(n) for n in nodes}
    certs = {
        n: issue_certificate(
            op,
            node=n,
            sign_public=i.sign_public,
            kx_public=i.kx_public,
            not_before_ms=now - 86_400_000,
            not_after_ms=now + 365 * 86_400_000,
            serial=k + 1,
        )
        for k, (n, i) in enumerate(sorted(ids.items()))
    }
    out: dict[int, Path] = {}
    for n in nodes:
        ks = KeyStore(root / f"node{n}")
        ks.write_identity(ids[n], overwrite=True)
        ks.write_operator_public(op.public_key, overwrite=True)
        ks.write_certificate(certs[n], own=True)
        for m in certified if certified is not None else nodes:
            if m != n:
                ks.write_certificate(certs[m])
        out[n] = ks.path
    return out


def default_workdir() -> Path:
    """A fresh temporary directory for one testbed run (short, for Unix socket paths)."""
    import tempfile

    return Path(
        tempfile.mkdtemp(prefix="dcis-tb-", dir=os.environ.get("TMPDIR", "/tmp"))
    )
