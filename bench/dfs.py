"""Object store throughput on one node (issue 14): put and get MB/s next to
the raw pipeline, zfec + XChaCha20-Poly1305, measured in the same run.

*dfs put*: ``DfsService.put`` on node 1 of a 10-node in-process cluster
(:class:`dfs.testing.Cluster`: no network, in-memory share stores), then the
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

    .venv/bin/python bench/dfs.py [--size-mb 32] [--repeats 5] [--k 3 --n 10]
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

from dfs.core.service import DfsConfig, OpState
from dfs.testing import Cluster

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--n", type=int, default=10)
    a = ap.parse_args()
    k, n = a.k, a.n
    size = a.size_mb << 20
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
