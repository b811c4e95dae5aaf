"""Soak: mixed good and hostile traffic through three daemons (issue 10).

Three ``dtn-node`` daemons in a chain 1 -> 2 -> 3 on loopback (UDP CL, hop
ACKs; ``--secure`` gives them key stores, so ACKs carry MACs). For
``--duration`` seconds (default 600):

- good: a client sends bundles of 100 B .. 40 KB to ``ipn:3.1`` through
  node 1 (``--rate`` per second); a client on node 3 receives them;
- hostile, all at once: a UDP flood at node 2 and node 3 (random bytes,
  bundle-looking junk, DCiS DATA with forged sender numbers up to 2^64-1,
  ACKs with guessed tokens from the wrong address), unauthenticated
  bundles for nonexistent nodes with a lifetime of 2^64-1 ms, app API
  garbage clients connecting and going away, 300 idle app API
  connections, and a client that registers ``ipn:3.9`` and never reads
  while bundles for it keep coming.

Prints delivered/acked (bundles node 1 acknowledged to the sending client
and node 3 delivered intact, at least once; must be 1.0), duplicates, the
peak resident memory and file descriptors of each daemon, and RSS at the
end of the warm-up (the first fifth of the run) against the end (flat:
within 10%). Reference in the same run: an idle fourth daemon's RSS.

    .venv/bin/python bench/soak.py [--duration 600] [--rate 40] [--secure]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cbor2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.cl.mtcp import encode_mtcp_frame
from dcis.dtn.cl.udp import encode_ack_segment, encode_data_segment
from dcis.dtn.client import Client, ClientError
from dcis.dtn.time import dtn_time_from_unix

ROOT = Path(__file__).resolve().parent.parent
LIMITS = """[limits]
max_forward_lifetime_ms = 60000
max_tombstone_ms = 120000
delivery_queue = 64
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Daemon:
    def __init__(
        self, work: Path, node: int, port: int, nbs: dict[int, int], keys: Path | None
    ) -> None:
        self.node = node
        self.sock = str(work / f"n{node}.sock")
        lines = [
            f"node = {node}",
            f'listen = "127.0.0.1:{port}"',
            f'plan = "{work / "plan.ionrc"}"',
            f'app_socket = "{self.sock}"',
            'log_level = "warning"',
            "lifetime_ms = 600000",
            LIMITS,
            "[store]",
            f'path = "{work / f"n{node}.db"}"',
            "limit_bytes = 200000000",
            "[udp]",
            "ack_timeout_s = 0.3",
        ]
        if keys is not None:
            lines += ["[security]", f'keystore = "{keys}"']
        for nb, p in nbs.items():
            lines += [
                "[[neighbours]]",
                f"node = {nb}",
                f'address = "127.0.0.1:{p}"',
                'ack = "on"',
            ]
        cfg = work / f"n{node}.toml"
        cfg.write_text("\n".join(lines) + "\n")
        self.log = open(work / f"n{node}.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dcis.tools.dtn_node", "--config", str(cfg)],
            cwd=ROOT,
            stderr=self.log,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(600):
            try:
                with Client(self.sock, timeout_s=2) as c:
                    c.ping()
                return
            except (OSError, ClientError):
                if self.proc.poll() is not None:
                    raise SystemExit(
                        f"node {node} exited: see {work / f'n{node}.log'}"
                    ) from None
                time.sleep(0.05)
        raise SystemExit(f"node {node} did not start")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    ap.add_argument("--rate", type=float, default=40.0, help="good bundles per second")
    ap.add_argument(
        "--secure", action="store_true", help="key stores (MACs on hop ACKs)"
    )
    ap.add_argument("--trace", action="store_true", help="print RSS and fds over time")
    ap.add_argument(
        "--good-only", action="store_true", help="no hostile traffic (a reference)"
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dcis-soak-"))
    stop = threading.Event()
    acked: dict[str, bytes] = {}  # digest -> payload
    got: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    p1, p2, p3, p4 = free_ports(4)
    # Contact Graph Routing needs a plan to route 1 -> 3 through 2.
    (work / "plan.ionrc").write_text(
        "".join(
            f"a contact +0 +1000000 {a} {b} 100000000\na range +0 +1000000 {a} {b} 0\n"
            for a, b in ((1, 2), (2, 1), (2, 3), (3, 2))
        )
    )
    keys: dict[int, Path] = {}
    if args.secure:
        from dcis.tools.testbed import make_keystores

        keys = make_keystores(work / "keys", [1, 2, 3, 4])
    nodes = {
        1: Daemon(work, 1, p1, {2: p2}, keys.get(1)),
        2: Daemon(work, 2, p2, {1: p1, 3: p3}, keys.get(2)),
        3: Daemon(work, 3, p3, {2: p2}, keys.get(3)),
    }
    ref = Daemon(work, 4, p4, {}, keys.get(4))  # idle reference
    rng = random.Random(1)

    def good_sender() -> None:
        with Client(nodes[1].sock, timeout_s=60) as c:
            i = 0
            t0 = time.monotonic()
            while not stop.is_set():
                payload = i.to_bytes(8, "big") + rng.randbytes(
                    rng.randrange(100, 40_000)
                )
                try:
                    c.send("ipn:3.1", payload, source="ipn:1.1", lifetime_ms=600_000)
                except ClientError as exc:
                    errors.append(str(exc))
                else:
                    with lock:
                        acked[hashlib.sha256(payload).hexdigest()] = payload
                i += 1
                delay = t0 + i / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def good_receiver() -> None:
        with Client(nodes[3].sock, timeout_s=60) as c:
            c.register("ipn:3.1")
            while not (stop.is_set() and receiver_done.is_set()):
                b = c.receive(timeout_s=0.5)
                if b is not None:
                    d = hashlib.sha256(b.payload).hexdigest()
                    with lock:
                        got[d] = got.get(d, 0) + 1

    receiver_done = threading.Event()

    def flood() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r = random.Random(2)
        now_ms = int(dtn_time_from_unix(time.time()))
        squat = encode_bundle(
            make_bundle(
                source="ipn:66.1",
                destination="ipn:99.1",
                payload=b"x" * 500,
                creation_ms=now_ms,
                lifetime_ms=2**64 - 1 - now_ms,
            )
        )
        k = 0
        while not stop.is_set():
            k += 1
            target = ("127.0.0.1", p2 if k % 2 else p3)
            kind = k % 6
            if kind == 0:
                data = r.randbytes(r.randrange(1, 1500))
            elif kind == 1:
                data = b"\x9f" + r.randbytes(r.randrange(1, 800))
            elif kind == 2:
                data = encode_data_segment(
                    sender=r.choice([5, 2**63, 2**64 - 1]),
                    token=r.getrandbits(64),
                    bundle=squat,
                )
            elif kind == 3:
                data = encode_ack_segment(
                    sender=r.choice([1, 2, 3]),
                    tokens=[r.getrandbits(64) for _ in range(8)],
                )
            elif kind == 4:
                b = make_bundle(
                    source="ipn:66.1",
                    destination=f"ipn:{r.randrange(100, 10**6)}.1",
                    payload=r.randbytes(200),
                    creation_ms=now_ms,
                    sequence=k,
                    lifetime_ms=2**64 - 1 - now_ms,
                )
                data = encode_bundle(b)
            else:
                data = squat
            with contextlib.suppress(OSError):
                s.sendto(data, target)
            if k % 50 == 0:
                time.sleep(0.05)  # ~1,000 datagrams/s
        s.close()

    def garbage() -> None:
        r = random.Random(3)
        while not stop.is_set():
            for n in (1, 3):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(nodes[n].sock)
                    msg: Any = r.choice(
                        [
                            {"type": "send", "id": "x", "destination": 5},
                            {"type": "register", "id": 1.5, "endpoint": "ipn:1.7"},
                            {"type": "delivered", "id": [1], "bundle_key": "nope"},
                            {"type": "ping", "id": 2**70},
                            {
                                "type": "send",
                                "id": 1,
                                "destination": "ipn:18446744073709551615.1",
                                "payload": b"z",
                                "lifetime_ms": 2**64,
                            },
                        ]
                    )
                    s.sendall(
                        encode_mtcp_frame(cbor2.dumps(msg))
                        + r.randbytes(r.randrange(0, 40))
                    )
                except OSError:
                    pass
                finally:
                    s.close()
            time.sleep(0.1)

    def never_reads() -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(nodes[3].sock)
        s.sendall(
            encode_mtcp_frame(
                cbor2.dumps({"type": "register", "id": 1, "endpoint": "ipn:3.9"})
            )
        )
        with Client(nodes[1].sock, timeout_s=60) as c:
            while not stop.is_set():
                with contextlib.suppress(ClientError):
                    c.send(
                        "ipn:3.9", b"unread" * 500, source="ipn:1.2", lifetime_ms=60_000
                    )
                time.sleep(0.2)
        s.close()

    idle: list[socket.socket] = []
    for _ in range(0 if args.good_only else 300):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(nodes[2].sock)
        idle.append(s)

    threads = [
        threading.Thread(target=f, daemon=True)
        for f in (
            (good_sender, good_receiver)
            if args.good_only
            else (good_sender, good_receiver, flood, garbage, never_reads)
        )
    ]
    for t in threads:
        t.start()
    samples: list[tuple[float, dict[int, int], dict[int, int]]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.duration:
        samples.append(
            (
                time.monotonic() - t0,
                {n: d.rss_kib() for n, d in nodes.items()},
                {n: d.fds() for n, d in nodes.items()},
            )
        )
        alive = all(d.proc.poll() is None for d in nodes.values())
        if not alive:
            break
        time.sleep(2.0)
    stop.set()
    threads[0].join(60)
    # Let what was acknowledged arrive (bounded), then stop the receiver.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if all(d in got for d in acked):
                break
        time.sleep(0.5)
    receiver_done.set()
    for t in threads[1:]:
        t.join(30)
    alive_end = {n: d.proc.poll() is None for n, d in nodes.items()}
    ref_rss = ref.rss_kib()
    for s in idle:
        s.close()
    for d in [*nodes.values(), ref]:
        d.stop()
    delivered = sum(1 for d in acked if d in got)
    dups = sum(v - 1 for v in got.values() if v > 1)
    warm = [s for s in samples if s[0] >= args.duration / 5] or samples
    print(
        f"duration {args.duration:.0f} s, good rate {args.rate}/s, secure={args.secure}"
    )
    print(f"daemons alive at the end: {alive_end}")
    print(
        f"acked {len(acked)}, delivered {delivered}, delivered/acked {delivered / max(1, len(acked)):.4f}, duplicates {dups}, send errors {len(errors)}"
    )
    for n in nodes:
        peak_rss = max(s[1][n] for s in samples) / 1024
        peak_fds = max(s[2][n] for s in samples)
        start = warm[0][1][n] / 1024
        end = warm[-1][1][n] / 1024
        print(
            f"node {n}: peak RSS {peak_rss:.1f} MiB, peak fds {peak_fds}, "
            f"RSS after warm-up {start:.1f} -> end {end:.1f} MiB ({(end - start) / start * 100:+.1f}%)"
        )
    print(f"reference: idle daemon RSS {ref_rss / 1024:.1f} MiB")
    if args.trace:
        for t, rss, fds in samples[:: max(1, len(samples) // 30)]:
            print(
                f"  t={t:6.1f} s  RSS MiB "
                + " ".join(f"{n}:{v / 1024:.1f}" for n, v in rss.items())
                + "  fds "
                + " ".join(f"{n}:{v}" for n, v in fds.items())
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
