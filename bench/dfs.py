"""Object store throughput on one node (issue 14): put and get MB/s next to
the raw pipeline, zfec + XChaCha20-Poly1305, measured in the same run.

*dfs put*: ``DfsService.put`` on node 1 of a 10-node in-process cluster
(:class:`dcis.dfs.testing.Cluster`: no network, in-memory share stores), then the
delivery of every STORE to its holder, the holders' stores and their STORED
answers: the whole put until all n shares are placed. *dfs get*: ``get`` on
node 1 until the object is whole (FETCH, BLOCK answers, CRC checks, decode,
hash check, decrypt). Two gets: one that reads the primary shares (0, 1, 2:
zfec's decode is a copy) and one whose nearest live holders have shares
0, 8, 9 (the others lost), so zfec really decodes.

*raw*: per 1 MiB chunk, seal (libsodium XChaCha20-Poly1305), pad, zfec
encode (put); zfec decode from the same share numbers the get used, unpad,
open (get). No hashing, checksums, messages or stores.

Target: dfs put and get each >= 70% of raw. Medians of ``--repeats`` runs,
raw and dfs alternating so that load from other processes hits both.

``--daemons N`` (N >= n) instead starts N ``dtn-node`` daemons on loopback
UDP (full mesh, keys, ``dcis.dfs.stack:factory``) and times, through node 1's
app API, a put until every holder has confirmed its share and a get from a
node that holds no share.

    .venv/bin/python bench/dfs.py [--size-mb 32] [--repeats 5] [--k 3 --n 10]
    .venv/bin/python bench/dfs.py --daemons 5 --k 2 --n 4 --size-mb 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nacl.bindings
import zfec

from dcis.dfs.core.service import DfsConfig, OpState
from dcis.dfs.testing import Cluster

CHUNK = 1 << 20


def raw_put(data: bytes, key: bytes, k: int, n: int) -> list[list[bytes]]:
    enc = zfec.Encoder(k, n)
    out = []
    for off in range(0, len(data), CHUNK):
        nonce = off.to_bytes(24, "big")
        ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            data[off : off + CHUNK], b"aad", nonce, key
        )
        size = -(-len(ct) // k)
        ct += bytes(size * k - len(ct))
        mv = memoryview(ct)
        out.append(enc.encode([mv[i * size : (i + 1) * size] for i in range(k)]))
    return out


def raw_get(
    blocks: list[list[bytes]], nums: list[int], size: int, key: bytes, k: int, n: int
) -> bytes:
    dec = zfec.Decoder(k, n)
    out = []
    for j, chunk in enumerate(blocks):
        ins = [chunk[i] for i in nums]
        prim = ins if nums == list(range(k)) else dec.decode(ins, nums)
        ct_len = min(CHUNK, size - j * CHUNK) + 16
        ct = b"".join(prim)[:ct_len]
        out.append(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                ct, b"aad", (j * CHUNK).to_bytes(24, "big"), key
            )
        )
    return b"".join(out)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def dfs_put(c: Cluster, name: str, data: bytes, n: int) -> None:
    op = c.services[1].put(name, data, c.now_ms)
    c.flush(1)
    assert len(op.placed) == n


def dfs_get(c: Cluster, name: str) -> tuple[bytes, list[int]]:
    op = c.services[1].get(name, c.now_ms)
    c.flush(1)
    assert op.state == OpState.DONE, op.error
    return op.result(), sorted(op.shares_fetched)


def daemons_bench(count: int, size: int, k: int, n: int, repeats: int) -> None:
    """Put/get MB/s across ``count`` daemons on loopback (see the docstring)."""
    import signal
    import socket
    import subprocess
    import tempfile

    from dcis.dfs.api import Dfs
    from dcis.dfs.core.errors import PlacementError
    from dcis.dtn.client import ClientError
    from dcis.tools.testbed import make_keystores

    nodes = list(range(1, count + 1))
    work = Path(tempfile.mkdtemp(prefix="dcis-dfs-bench-"))
    socks = []
    for _ in nodes:
        sk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sk.bind(("127.0.0.1", 0))
        socks.append(sk)
    ports = {nd: s_.getsockname()[1] for nd, s_ in zip(nodes, socks, strict=True)}
    for s_ in socks:
        s_.close()
    keys = make_keystores(work / "keys", nodes)
    plan = work / "mesh.ionrc"
    plan.write_text(
        "".join(
            f"a contact +0 +86400 {a} {b} 1000000000\na range +0 +86400 {a} {b} 0\n"
            for a in nodes
            for b in nodes
            if a != b
        )
    )
    epoch = time.time()
    for nd in nodes:
        lines = [
            f"node = {nd}",
            f'listen = "127.0.0.1:{ports[nd]}"',
            f'app_socket = "{work / f"n{nd}.sock"}"',
            f'plan = "{plan}"',
            f"plan_epoch_unix_s = {epoch!r}",
            'log_level = "warning"',
            "[store]",
            f'path = "{work / f"n{nd}.db"}"',
            "[security]",
            f'keystore = "{keys[nd]}"',
            "[services]",
            'factories = ["dcis.dfs.stack:factory"]',
        ]
        for m in nodes:
            if m != nd:
                lines += [
                    "[[neighbours]]",
                    f"node = {m}",
                    f'address = "127.0.0.1:{ports[m]}"',
                ]
        (work / f"n{nd}.toml").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "DCIS_DFS_DIR": str(work / "dfs")}
    root = Path(__file__).resolve().parents[1]
    procs = []
    try:
        for nd in nodes:
            with (work / f"n{nd}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "dcis.tools.dtn_node",
                            "--config",
                            str(work / f"n{nd}.toml"),
                        ],
                        stdout=log,
                        stderr=log,
                        cwd=root,
                        env=env,
                    )
                )

        def connect(nd: int) -> Dfs:
            for _ in range(600):
                try:
                    return Dfs.connect(str(work / f"n{nd}.sock"), timeout_s=600)
                except ClientError:
                    time.sleep(0.1)
            raise SystemExit(f"node {nd} did not come up; see {work}")

        fs = connect(1)
        data = os.urandom(size)
        warm = time.monotonic() + 120
        while True:  # until membership has found n alive members
            try:
                fs.put("warmup", b"x", k=k, n=n, wait_placed_s=30)
                break
            except PlacementError:
                if time.monotonic() > warm:
                    raise
                time.sleep(1)
        puts, gets = [], []
        for r in range(repeats):
            t = time.perf_counter()
            res = fs.put(f"o{r}", data, k=k, n=n, wait_placed_s=600)
            puts.append(time.perf_counter() - t)
            assert res["placed"] == n, res
            reader = next(nd for nd in nodes if nd not in res["holders"])
            other = connect(reader)
            for _ in range(600):  # until the manifest is in the reader's log
                try:
                    other.stat(f"o{r}")
                    break
                except Exception:
                    time.sleep(0.1)
            t = time.perf_counter()
            got = other.get(f"o{r}")
            gets.append(time.perf_counter() - t)
            assert got == data
            other.close()
        fs.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    mb = size / 1e6
    print(
        f"{count} daemons on loopback UDP, object {size >> 20} MiB, k={k} n={n}, median of {repeats}"
    )
    print(f"put (until {n} shares confirmed)  {mb / statistics.median(puts):8.1f} MB/s")
    print(f"get (from a node holding none)  {mb / statistics.median(gets):8.1f} MB/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument(
        "--daemons", type=int, default=0, help="run across N daemons instead"
    )
    a = ap.parse_args()
    k, n = a.k, a.n
    size = a.size_mb << 20
    if a.daemons:
        daemons_bench(a.daemons, size, k, n, a.repeats)
        return
    data = os.urandom(size)
    key = os.urandom(32)
    cfg = DfsConfig(k=k, n=n, chunk_size=CHUNK, maintenance_interval_ms=10**12)
    names = ("put", "get", "get/decode")
    times: dict[str, list[float]] = {
        f"{w} {x}": [] for w in ("raw", "dfs") for x in names
    }
    for r in range(a.repeats):
        c = Cluster(nodes=list(range(1, n + 1)), config=cfg, seed=r)
        name = f"o{r}"
        t, blocks = timed(partial(raw_put, data, key, k, n))
        times["raw put"].append(t)
        t, _ = timed(partial(dfs_put, c, name, data, n))
        times["dfs put"].append(t)
        for what in ("get", "get/decode"):
            if what == "get/decode":
                # Lose the holders of shares 1 .. n-k: the get must decode.
                m = c.services[1].manifest(name)
                for i in range(1, n - (k - 1)):
                    c.lose(m.placement[i])
            t, out = timed(partial(dfs_get, c, name))
            got, nums = cast(tuple[bytes, list[int]], out)
            times[f"dfs {what}"].append(t)
            t, raw = timed(
                partial(raw_get, cast(list[list[bytes]], blocks), nums, size, key, k, n)
            )
            times[f"raw {what}"].append(t)
            assert got == data, "dfs get returned the wrong bytes"
            assert raw == data, "raw get returned the wrong bytes"
            print(f"run {r}: {what} used shares {nums}", file=sys.stderr)
    mb = size / 1e6
    med = {name: mb / statistics.median(ts) for name, ts in times.items()}
    print(f"object {a.size_mb} MiB, chunk 1 MiB, k={k} n={n}, median of {a.repeats}")
    for what in names:
        raw_rate, ours = med[f"raw {what}"], med[f"dfs {what}"]
        print(
            f"{what:11s} raw {raw_rate:8.1f} MB/s   dfs {ours:8.1f} MB/s   dfs/raw {ours / raw_rate:6.1%}"
        )


if __name__ == "__main__":
    main()
