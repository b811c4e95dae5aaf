"""Measure CRC-32C and CRC-16/X.25 candidates for dcis.dtn.bpv7.crc.

Run: ``.venv/bin/python bench/crc_candidates.py``

For each library: correctness (check value over b"123456789", chaining in two
pieces, memoryview input -- the decoder passes memoryviews to avoid copying the
payload), then the median time of several repeats for 64 B, 1 KB and 1 MB,
and the ratio to the fastest candidate in the same run. Pure Python (pyd3tn's
table-free implementation) is the reference for "why not pure Python".
"""

from __future__ import annotations

import statistics
import sys
import timeit
from collections.abc import Callable

Fn = Callable[[bytes | memoryview, int | None], int]


def candidates_32c() -> dict[str, Fn]:
    out: dict[str, Fn] = {}
    import crc32c

    out["crc32c (ICRAR, C, SSE4.2)"] = lambda d, i: crc32c.crc32c(d, i or 0)
    import google_crc32c

    out["google-crc32c (C)"] = lambda d, i: (
        google_crc32c.extend(i or 0, d) if i else google_crc32c.value(d)
    )
    import fastcrc

    out["fastcrc (Rust)"] = lambda d, i: (
        fastcrc.crc32.iscsi(d) if i is None else fastcrc.crc32.iscsi(d, i)
    )
    import anycrc

    m = anycrc.Model("CRC32C")
    out["anycrc (C)"] = lambda d, i: m.calc(d) if i is None else m.calc(d, i)
    import crcmod.predefined

    f = crcmod.predefined.mkPredefinedCrcFun("crc-32c")
    out["crcmod-plus (C)"] = lambda d, i: f(d) if i is None else f(d, i)
    from pyd3tn import crc as pc

    out["pure Python (pyd3tn)"] = lambda d, i: pc.crc32_c(bytes(d))
    return out


def candidates_16() -> dict[str, Fn]:
    out: dict[str, Fn] = {}
    import fastcrc

    out["fastcrc ibm_sdlc (Rust)"] = lambda d, i: (
        fastcrc.crc16.ibm_sdlc(d) if i is None else fastcrc.crc16.ibm_sdlc(d, i)
    )
    import anycrc

    m = anycrc.Model("CRC16-X-25")
    out["anycrc (C)"] = lambda d, i: m.calc(d) if i is None else m.calc(d, i)
    import crcmod.predefined

    f = crcmod.predefined.mkPredefinedCrcFun("x-25")
    out["crcmod-plus (C)"] = lambda d, i: f(d) if i is None else f(d, i)
    from pyd3tn import crc as pc

    out["pure Python (pyd3tn)"] = lambda d, i: pc.crc16_x25(bytes(d))
    return out


def check(fn: Fn, expect: int) -> str:
    notes = []
    try:
        if fn(b"123456789", None) != expect:
            return "WRONG check value"
    except Exception as exc:
        return f"fails: {exc}"
    try:
        if fn(b"6789", fn(b"12345", None)) != expect:
            notes.append("no chaining")
    except Exception:
        notes.append("no chaining")
    try:
        if fn(memoryview(b"123456789"), None) != expect:
            notes.append("memoryview wrong")
    except Exception:
        notes.append("no memoryview")
    return ", ".join(notes) or "ok"


def measure(fn: Fn, data: bytes, use_mv: bool, budget_s: float = 0.05) -> float:
    # Without memoryview support the decoder would first copy the block: count that copy.
    mv: bytes | memoryview = memoryview(data) if use_mv else data
    if not use_mv:
        src = memoryview(data)

        def fn(d: bytes | memoryview, i: int | None, _f: Fn = fn) -> int:
            return _f(bytes(src), i)

    n = max(1, int(budget_s / max(timeit.timeit(lambda: fn(mv, None), number=1), 1e-7)))
    n = min(n, 20000)
    runs = timeit.repeat(lambda: fn(mv, None), number=n, repeat=5)
    return statistics.median(runs) / n


def table(title: str, cands: dict[str, Fn], expect: int) -> None:
    sizes = [64, 1024, 1 << 20]
    print(f"\n{title}")
    print(
        f"{'library':28} {'correctness':22}"
        + "".join(f"{s:>12} B" for s in sizes)
        + "   (us per call)"
    )
    results: dict[str, list[float | None]] = {}
    for name, fn in cands.items():
        status = check(fn, expect)
        usable = not status.startswith(("WRONG", "fails"))
        row: list[float | None] = []
        for s in sizes:
            data = (bytes(range(256)) * (s // 256 + 1))[:s]
            if not usable or ("pure Python" in name and s > 4096):
                row.append(None)  # pure Python: ~1 s per MB, not worth the wait
            else:
                row.append(measure(fn, data, "no memoryview" not in status))
        results[name] = row
        print(
            f"{name:28} {status:22}"
            + "".join(
                f"{t * 1e6:14.2f}" if t is not None else f"{'-':>14}" for t in row
            )
        )
    best = [
        min(r[i] for r in results.values() if r[i] is not None)
        for i in range(len(sizes))
    ]  # type: ignore[type-var]
    print("ratio to the fastest in this run:")
    for name, row in results.items():
        print(
            f"  {name:48}"
            + "".join(
                f"{t / b:13.1f}x" if t is not None and b else f"{'-':>14}"
                for t, b in zip(row, best, strict=True)
            )
        )
    mb = 1 << 20
    copy = (
        statistics.median(
            timeit.repeat(lambda: bytes(bytearray(mb)), number=50, repeat=5)
        )
        / 50
    )
    print(f"  (a plain 1 MB copy in this run: {copy * 1e6:.1f} us)")


def main() -> int:
    table("CRC-32C", candidates_32c(), 0xE3069283)
    table("CRC-16/X.25", candidates_16(), 0x906E)
    return 0


if __name__ == "__main__":
    sys.exit(main())
