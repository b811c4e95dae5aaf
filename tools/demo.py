"""``make demo``: a bundle on the wire, a six-node constellation over UDP,
then the storage stack on six daemons.

1. BPv7 in two lines: encode a bundle, decode it back, reject a corrupted copy.
2. Six ``dtn-node`` daemons on loopback behind the link emulator, driven by
   the shipped contact plan ``tools/plans/demo.ionrc``: bundles from ground
   station 1 (and satellite 5) to ground station 6 cross a store-and-forward
   path; the forwarder holding them (node 3) is killed with SIGKILL and
   restarted mid-way; every bundle must arrive exactly once.
3. Six daemons with node keys running ``dcis.dfs.stack:factory`` (membership,
   the log, the object store), plan ``tools/plans/stack.ionrc``
   (:mod:`dcis.tools.demo_stack`): views converge, the log heals a partition, a
   3-of-6 object survives three SIGKILLed holders, a killed node is seen dead.
4. A PASS/FAIL line per check and the wall time; exit status 1 if any
   check failed. Theory of operation: each part returns its checks as
   ``(what, ok)``; a part that stops on an error counts as a failed check,
   so the demo always ends with its summary (about 2 minutes on two cores).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from dcis.dtn.bpv7 import decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.client import open_trio_client
from dcis.dtn.errors import DecodeError
from dcis.tools.demo_stack import Check, run_stack
from dcis.tools.testbed import Testbed, TestbedOptions, default_workdir

PLAN = Path(__file__).resolve().parent / "plans" / "demo.ionrc"
DURATION_S = 38.0
KILL_AT_S = 14.0
RESTART_AT_S = 17.0


def wire_intro() -> bool:
    """Step 1: a bundle's round trip, and a corrupted copy refused."""
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:6.1",
        payload=b"Telemetry frame from sat-3: battery 87%",
        creation_ms=785_000_000_000,
        lifetime_ms=3_600_000,
        hop_limit=16,
    )
    raw = encode_bundle(b)
    ok = decode_bundle_untrusted(raw) == b
    print(
        f"1. a BPv7 bundle: {len(raw)} bytes ({raw[:8].hex()}...), decodes back {'exactly' if ok else 'WRONGLY'}"
    )
    bad = bytearray(raw)
    bad[raw.index(b"battery")] ^= 0x20
    try:
        decode_bundle_untrusted(bytes(bad))
        print("   a corrupted copy was accepted: BROKEN")
        return False
    except DecodeError as exc:
        print(f"   a corrupted copy is refused: {exc}")
    return ok


async def stored(tb: Testbed, node: int) -> int:
    async with open_trio_client(tb.socket_of(node)) as c:
        return int((await c.status())["stored"])


async def constellation(workdir: Path) -> bool:
    tb = Testbed(
        TestbedOptions(
            plan_path=PLAN,
            workdir=workdir,
            start_margin_s=3.0,
            log_level="warning",
            ack_timeout_s=0.5,
        )
    )
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"   [t={tb.plan_s():5.1f} s] {msg}", flush=True)

    print(
        f"2. six dtn-node daemons over UDP behind the link emulator, plan {PLAN.name}:"
    )
    print(
        "      1 -- 2 -- 3 -- 4 -- 6   and   1 -- 5 -- 3   (each link only in its window)"
    )
    async with tb.running():
        say(f"{len(tb.nodes)} daemons up, work dir {workdir}")
        await tb.sleep_until_plan(1.0)
        async with open_trio_client(tb.socket_of(1)) as c:
            for _ in range(20):
                await tb.send(c, 1, 6, 1000)
        say("node 1 sent 20 bundles of 1 KB to node 6 (no path exists yet)")
        await tb.sleep_until_plan(2.0)
        async with open_trio_client(tb.socket_of(5)) as c:
            for _ in range(10):
                await tb.send(c, 5, 6, 2000)
        say("node 5 sent 10 bundles of 2 KB to node 6")
        await tb.sleep_until_plan(KILL_AT_S - 0.5)
        held = {n: await stored(tb, n) for n in tb.nodes}
        say(
            "bundles in each store: "
            + ", ".join(f"node {n}: {k}" for n, k in held.items())
        )
        await tb.sleep_until_plan(KILL_AT_S)
        await tb.kill(3)
        say(f"SIGKILL node 3 while it holds {held[3]} bundles")
        await tb.sleep_until_plan(RESTART_AT_S)
        await tb.restart(3)
        say(
            f"node 3 restarted: its store still holds {await stored(tb, 3)} bundles; contact 3->4 opens at t=20"
        )
        await tb.sleep_until_plan(29.0)
        say(
            f"node 6 has received {len(tb.ledger.arrivals)} bundles so far (4->6 opened at t=28)"
        )
        await tb.sleep_until_plan(DURATION_S)
        summary = tb.summary(DURATION_S)
        left = {n: await stored(tb, n) for n in tb.nodes}
    print("   summary:")
    print(
        f"   sent {summary['sent']}, delivered {summary['delivered']}, pending {summary['pending']}, expired {summary['expired']}, duplicates {summary['duplicates_delivered']}"
    )
    print(
        f"   latency p50 {summary['latency_p50_s']} s, p99 {summary['latency_p99_s']} s (store and forward: no end-to-end path ever existed)"
    )
    e = summary["emulator"]
    print(
        f"   emulator: {e['forwarded']} datagrams relayed; dropped {e['dropped_down']} (link down), {e['dropped_loss']} (loss)"
    )
    print(
        f"   bundles left in stores: {sum(left.values())}; wall time {time.monotonic() - t0:.0f} s"
    )
    ok = bool(
        summary["delivered"] == summary["sent"] == 30
        and summary["duplicates_delivered"] == 0
    )
    print(
        f"   every bundle arrived exactly once despite the SIGKILL: {'yes' if ok else 'NO'}"
    )
    return ok


async def run_part(
    name: str, run: Callable[[Path], Awaitable[list[Check]]]
) -> list[Check]:
    """Run one testbed part in a fresh work directory (always removed); an
    error that stops it early is a failed check, not a crash."""
    workdir = default_workdir()
    try:
        return await run(workdir)
    except Exception as exc:  # the demo must end with its summary
        print(f"   {name} stopped: {type(exc).__name__}: {exc}", flush=True)
        return [(f"{name}: ran to the end", False)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def delivery(workdir: Path) -> list[Check]:
    """Part 2 (:func:`constellation`) as a check."""
    ok = await constellation(workdir)
    return [
        ("delivery: 30 bundles, each exactly once, despite a SIGKILLed forwarder", ok)
    ]


async def run_all() -> list[Check]:
    """Every part of the demo in order; one ``(what, ok)`` per check."""
    checks: list[Check] = [
        (
            "BPv7: a bundle decodes back exactly, a corrupted copy is refused",
            wire_intro(),
        )
    ]
    checks += await run_part("delivery", delivery)
    checks += await run_part("storage stack", run_stack)
    return checks


def summary(checks: list[Check], wall_s: float) -> bool:
    """Print the PASS/FAIL lines; True when every check passed."""
    print(f"4. summary (wall time {wall_s:.0f} s):")
    for what, ok in checks:
        print(f"   {'PASS' if ok else 'FAIL'}  {what}")
    failed = sum(1 for _, ok in checks if not ok)
    verdict = (
        f"PASS: all {len(checks)} checks passed"
        if not failed
        else f"FAIL: {failed} of {len(checks)} checks failed"
    )
    print(verdict, flush=True)
    return not failed


def main() -> int:
    """Run the demo; 0 when every check passed."""
    t0 = time.monotonic()
    checks = trio.run(run_all)
    return 0 if summary(checks, time.monotonic() - t0) else 1


if __name__ == "__main__":
    sys.exit(main())
