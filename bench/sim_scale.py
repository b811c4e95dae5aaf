"""Simulator scale: a 100-node, 24-hour LEO-like plan with 10,000 bundles, or
(``--nodes 1000``) a 1,000-node Walker-style constellation (40 planes of 25)
with 100,000 bundles.

Prints, for the full run (median of ``--repeats``):
- wall time and the speed-up over real time (target >= 1,000x for 100
  nodes; >= 1,440x -- a day in a minute -- for 1,000 nodes, issue 18);
- events processed per wall second;
- the trace hash of every repeat (they must be identical) and the peak RSS
  of the process (target <= 2 GiB for 1,000 nodes);
- the floor: the least CPU one store-and-forward hop of this design costs
  (``floor_us_per_hop``: UDP CL deframe, bundle decode, store insert and
  delete, ACK, block update, re-encode, framing -- measured in the same
  run on a bundle as the agent writes it), times the run's transmissions:
  the fastest this run could be if everything else (routing, timers, the
  event queue, the trace) cost nothing, and the per-transmission budget
  the speed-up target leaves.

Then the memory check (one run each under tracemalloc, which slows Python,
so it is never timed): live Python heap by package at checkpoints, next to
the bundles stored and sent by then, for
- the full run (traffic spread over the first 20 h), and
- a "quiet" run: the same number of bundles, all sent in the first hour;
  after they drain the simulated clock runs on for 23 h with nothing
  stored, and memory must stay flat (it grows with stored bundles, not with
  simulated time).

Usage: ``.venv/bin/python bench/sim_scale.py [--nodes 100|1000] [--hours H]
[--repeats N] [--bundles N] [--seed N] [--no-memory] [--progress]
[--routing-cpu]`` (``--progress``: a line per simulated hour, so a run cut
short by a time limit still tells how far it got; ``--routing-cpu``: time
the routers' calls as well, and print each run's CPU per transmission
outside routing -- the per-hop cost that is not route search.)
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcis.dtn.agent.actions import Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import BundleState, MemoryStore, StoredBundle
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.processing import update_for_forwarding
from dcis.dtn.cl.udp import (
    DataSegment,
    decode_datagram_untrusted,
    encode_ack_segment,
    encode_data_segment,
)
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import SimConfig, SimSummary, Simulator, TrafficItem
from dcis.dtn.sim.engine import SIM_EPOCH
from dcis.dtn.sim.scenarios import leo_constellation, random_traffic

DAY_S = 86_400.0


def rss_mib() -> float:
    """Resident set size from /proc (Linux), MiB; 0 if unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


SHAPES = {100: (10, 10), 1000: (40, 25)}
"""Node count -> (planes, satellites per plane) of the Walker-style grid."""


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux ru_maxrss is KiB), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(
    seed: int, bundles: int, quiet: bool, nodes_n: int = 100, hours: float = 24.0
) -> tuple[ContactPlan, list[TrafficItem]]:
    planes, per_plane = SHAPES[nodes_n]
    duration = hours * 3_600.0
    plan = leo_constellation(
        planes=planes, per_plane=per_plane, duration_s=duration, seed=seed
    )
    nodes = sorted(plan.nodes)
    until = min(3_600.0, duration) if quiet else duration * 20 / 24
    traffic = random_traffic(nodes=nodes, bundles=bundles, until_s=until, seed=seed + 1)
    return plan, traffic


def first_hop_wire(payload_bytes: int) -> bytes:
    """The bytes a real agent (``dcis.dtn.agent.Agent``) transmits for a
    ``payload_bytes`` bundle sent from ``ipn:1.1`` to ``ipn:3.1`` over a
    contact 1 -> 2: the bundle as every later hop receives it (primary,
    previous node, hop count and age blocks as the agent writes them)."""
    store = MemoryStore()
    plan = ContactPlan(
        [Contact(1, 2, 0.0, 3_600.0, 1e9), Contact(2, 3, 0.0, 3_600.0, 1e9)],
        [Range(1, 2, 0.0, 3_600.0, 0.01), Range(2, 3, 0.0, 3_600.0, 0.01)],
    )
    agent = Agent(
        node=1, store=store, plan=plan, plan_epoch=SIM_EPOCH, rng=random.Random(0)
    )
    agent.register("ipn:1.1", now=SIM_EPOCH)
    _key, _ = agent.send(
        source="ipn:1.1",
        destination="ipn:3.1",
        payload=bytes(payload_bytes),
        lifetime_ms=86_400_000,
        now=SIM_EPOCH,
    )
    out = agent.on_contact_start(next(iter(plan.contacts)), SIM_EPOCH)
    wires = [a.data for a in out if isinstance(a, Transmit)]
    if len(wires) != 1:
        raise RuntimeError(f"expected one transmission, got {out}")
    return wires[0]


def floor_hop(
    dgram: bytes, store: MemoryStore, node: int, token: int, now: int
) -> bytes:
    """One store-and-forward hop at ``node`` of a DATA segment ``dgram``,
    with only the work this design cannot skip: parse the UDP CL segment,
    decode the bundle (it must be checked before it is ACKed), store it,
    encode the ACK (and parse it, as the sender does), update the previous
    node, age and hop count blocks (RFC 9171 5.4), encode the bundle again
    and frame it as a DATA segment with ``token``, then delete it from the
    store (as when the next hop ACKs). Returns the outgoing segment. One
    decode per hop -- as the simulator's agents do when the decoded copy
    they kept is still there (``SIM_KEEP_DECODED``; else they decode the
    stored copy again to forward it) -- and no routing, timers, trace or
    event queue: a lower bound for the real path, not a model of it."""
    seg = decode_datagram_untrusted(dgram)
    if not isinstance(seg, DataSegment):
        raise RuntimeError("the floor hop expects a DATA segment")
    b = decode_bundle_untrusted(seg.bundle)
    key = b.bundle_key
    store.put(
        StoredBundle(
            key=key,
            destination=str(b.primary.destination),
            expiry_ms=now + b.primary.lifetime_ms,
            state=BundleState.PENDING,
            size_bytes=len(seg.bundle),
            received_ms=now,
            prev_node=seg.sender,
        ),
        seg.bundle,
    )
    decode_datagram_untrusted(encode_ack_segment(sender=node, tokens=[seg.token]))
    fwd = update_for_forwarding(b, node=IpnEid(node, 0), dwell_ms=1_000)
    hop = fwd.hop_count
    if hop is not None and hop.exceeded:
        raise RuntimeError("hop limit reached in the floor loop")
    out = encode_data_segment(sender=node, token=token, bundle=encode_bundle(fwd))
    store.delete(key)
    return out


def floor_us_per_hop(payload_bytes: int, hops: int = 4_000) -> float:
    """CPU microseconds per :func:`floor_hop`, measured now on a bundle as
    the agent writes it (``payload_bytes`` of payload): the same received
    segment is forwarded ``hops`` times, so every hop parses and writes the
    same sizes (a hop count that grew would change them)."""
    store = MemoryStore(limit_bytes=1 << 40)
    dgram = encode_data_segment(sender=1, token=1, bundle=first_hop_wire(payload_bytes))
    now = int(SIM_EPOCH)
    t0 = time.process_time()
    for i in range(hops):
        floor_hop(dgram, store, 2, i + 2, now)
    return (time.process_time() - t0) / hops * 1e6


_ROUTER_CALLS = ("forwarding_route", "consume", "release")
"""The ``Router`` methods the agents call (``--routing-cpu`` times them)."""


def time_routing() -> list[float]:
    """Wrap the routers' methods the agents call with ``time.process_time``
    (for ``--routing-cpu``); returns the one-element list they add their CPU
    seconds to. Costs ~1 us per call, so it is opt-in."""
    from dcis.dtn.routing.cgr import Router

    spent = [0.0]
    clock = time.process_time

    def timed(name: str) -> Any:
        inner = getattr(Router, name)

        def call(self: Router, *args: Any, **kw: Any) -> Any:
            t0 = clock()
            try:
                return inner(self, *args, **kw)
            finally:
                spent[0] += clock() - t0

        return call

    for name in _ROUTER_CALLS:
        setattr(Router, name, timed(name))
    return spent


def timed_run(
    seed: int,
    bundles: int,
    nodes_n: int = 100,
    hours: float = 24.0,
    progress: bool = False,
) -> tuple[float, float, SimSummary]:
    """One timed run; ``progress`` prints a line per simulated hour (the
    run steps through ``run_until``, which processes the same events in the
    same order: the trace hash is the same either way)."""
    plan, traffic = build(seed, bundles, quiet=False, nodes_n=nodes_n, hours=hours)
    sim = Simulator(
        plan, SimConfig(seed=seed, duration_s=hours * 3_600.0), traffic=traffic
    )
    t0, c0 = time.perf_counter(), time.process_time()
    if progress:
        for h in range(1, math.ceil(hours) + 1):
            sim.run_until(min(float(h), hours) * 3_600.0)
            p = sim.progress()
            print(
                f"    hour {h:>2}: {time.perf_counter() - t0:7.1f} s wall,"
                f" {time.process_time() - c0:7.1f} s CPU, {p['events']:>9} events,"
                f" {p['transmissions']:>8} transmissions, sent {p['sent']:>6},"
                f" delivered {p['delivered']:>6}, stored {p['stored']:>6},"
                f" RSS {rss_mib():.0f} MiB",
                flush=True,
            )
    summary = sim.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sim.close()
    return wall, cpu, summary


_GROUPS = (
    ("dtn/sim/", "sim"),
    ("dtn/routing/", "routing"),
    ("dtn/agent/", "agent"),
    ("dtn/bpv7/", "agent"),
)


def heap_by_package() -> dict[str, float]:
    """Traced heap in MiB by the package that allocated it (sim, routing, agent = agent + bpv7 + stores, other)."""
    out = {"sim": 0.0, "routing": 0.0, "agent": 0.0, "other": 0.0}
    for stat in tracemalloc.take_snapshot().statistics("filename"):
        name = stat.traceback[0].filename.replace("\\", "/")
        group = next((g for prefix, g in _GROUPS if prefix in name), "other")
        out[group] += stat.size / 2**20
    return out


def memory_run(
    seed: int, bundles: int, quiet: bool, nodes_n: int = 100
) -> list[tuple[float, int, int, dict[str, float]]]:
    plan, traffic = build(seed, bundles, quiet=quiet, nodes_n=nodes_n)
    tracemalloc.start()
    sim = Simulator(plan, SimConfig(seed=seed, duration_s=DAY_S), traffic=traffic)
    points: list[tuple[float, int, int, dict[str, float]]] = []
    for hours in (1, 6, 12, 18, 24):
        sim.run_until(hours * 3_600.0)
        stored = sum(len(nd.store) for nd in sim.nodes.values() if nd.store is not None)
        points.append((hours, stored, len(sim.ledger), heap_by_package()))
    tracemalloc.stop()
    sim.close()
    return points


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None
    )
    ap.add_argument("--nodes", type=int, choices=sorted(SHAPES), default=100)
    ap.add_argument("--hours", type=float, default=24.0, help="plan time simulated")
    ap.add_argument(
        "--repeats", type=int, default=None, help="default 3 (2 for 1,000 nodes)"
    )
    ap.add_argument(
        "--bundles",
        type=int,
        default=None,
        help="default 10,000 (100,000 for 1,000 nodes)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--no-memory", action="store_true", help="skip the tracemalloc runs"
    )
    ap.add_argument(
        "--routing-cpu",
        action="store_true",
        help="time the routers' calls too: CPU per transmission outside routing",
    )
    ap.add_argument(
        "--progress",
        action="store_true",
        help="print counts, CPU time and RSS after every simulated hour",
    )
    args = ap.parse_args()
    big = args.nodes >= 1000
    bundles = args.bundles if args.bundles is not None else (100_000 if big else 10_000)
    repeats = args.repeats if args.repeats is not None else (2 if big else 3)
    span_s = args.hours * 3_600.0
    target = 1_440 if big else 1_000

    plan, _traffic = build(
        args.seed, bundles, quiet=False, nodes_n=args.nodes, hours=args.hours
    )
    planes, per_plane = SHAPES[args.nodes]
    print(
        f"plan: {args.nodes} nodes ({planes} planes x {per_plane}), {len(plan.contacts)} contacts"
        f" over {args.hours:g} h; traffic: {bundles} bundles over {args.hours * 20 / 24:g} h"
    )
    sent = sum(t.count for t in _traffic)
    mean_payload = round(sum(t.size_bytes * t.count for t in _traffic) / max(sent, 1))
    del plan, _traffic
    floor_before = floor_us_per_hop(mean_payload)
    print(
        f"floor (measured before the runs): {floor_before:.1f} us CPU per hop"
        f" ({mean_payload}-byte payload; see floor_hop)",
        flush=True,
    )

    walls: list[float] = []
    cpus: list[float] = []
    shas: list[str] = []
    summary: SimSummary | None = None
    routing = time_routing() if args.routing_cpu else None
    for i in range(repeats):
        if routing is not None:
            routing[0] = 0.0
        wall, cpu, summary = timed_run(
            args.seed, bundles, args.nodes, args.hours, args.progress
        )
        walls.append(wall)
        cpus.append(cpu)
        shas.append(summary.trace_sha256)
        split = ""
        if routing is not None:
            outside = (cpu - routing[0]) / max(summary.transmissions, 1) * 1e6
            split = (
                f", routing {routing[0]:.2f} s CPU, {outside:.0f} us CPU per"
                " transmission outside routing"
            )
        print(
            f"  run {i + 1}: {wall:.2f} s wall ({cpu:.2f} s CPU), {span_s / wall:,.0f}x real time,"
            f" {summary.events / wall:,.0f} events/s, trace {summary.trace_sha256[:16]},"
            f" peak RSS {peak_rss_mib():.0f} MiB{split}",
            flush=True,
        )
    assert summary is not None
    wall = statistics.median(walls)
    s = summary
    cpu = statistics.median(cpus)
    print(f"median wall time: {wall:.2f} s for {span_s:.0f} s simulated")
    # On a shared machine wall time includes waiting for a core; CPU time
    # does not, so it is what compares two builds measured under load.
    print(
        f"median CPU time: {cpu:.2f} s ({span_s / cpu:,.0f}x real time per CPU-second,"
        f" {s.events / cpu:,.0f} events per CPU-second)"
    )
    print(
        f"speed-up over real time: {span_s / wall:,.0f}x (target >= {target:,}x:"
        f" {'met' if span_s / wall >= target else 'NOT met'})"
    )
    print(
        f"outcome: sent {s.sent}, delivered {s.delivered}, expired {s.expired}, pending {s.pending}, "
        f"lost {s.lost}, duplicates {s.duplicates_delivered}; latency p50 {s.latency_p50_s} s, p99 {s.latency_p99_s} s"
    )
    print(
        f"work: {s.events} events, {s.transmissions} transmissions, {s.bytes_transmitted / 1e6:.1f} MB moved"
    )
    print(
        f"trace_sha256 {s.trace_sha256} (identical in all {repeats} repeats: {len(set(shas)) == 1})"
    )
    # The floor: the least CPU the real per-hop path costs, measured now on
    # this machine, times this run's hop count (see floor_us_per_hop).
    # (measured once more after the runs: the median of before and after)
    floor_us = statistics.median(
        [floor_before, *(floor_us_per_hop(mean_payload) for _ in range(2))]
    )
    floor_s = floor_us * s.transmissions / 1e6
    budget_us = span_s / target / max(s.transmissions, 1) * 1e6
    print(
        f"floor: {floor_us:.1f} us CPU per hop (decode + store + ACK + re-encode + UDP CL"
        f" framing of a {mean_payload}-byte-payload bundle, measured now) x"
        f" {s.transmissions} transmissions = {floor_s:.2f} s CPU, {span_s / max(floor_s, 1e-9):,.0f}x"
        f" real time at best; the run took {cpu:.2f} s CPU ({cpu / max(floor_s, 1e-9):.1f}x the floor,"
        f" {cpu / max(s.transmissions, 1) * 1e6:.0f} us per transmission); {target:,}x needs"
        f" <= {budget_us:.1f} us per transmission"
        f" (the floor alone {'fits in' if floor_us <= budget_us else 'EXCEEDS'} that budget)"
    )
    peak = peak_rss_mib()
    print(
        f"peak RSS: {peak:,.0f} MiB"
        + (
            f" (target <= 2,048 MiB: {'met' if peak <= 2048 else 'NOT met'})"
            if big
            else ""
        )
    )
    if args.no_memory:
        return 0

    print(
        "memory (tracemalloc, MiB of live heap by the package that allocated it; 'routing' holds"
    )
    print(
        "the contact graph shared by all routers on the plan, and each node's bounded route cache):"
    )
    for label, quiet in (
        ("full run, sends spread over 20 h", False),
        ("quiet run, all sends in hour 1", True),
    ):
        print(f"  {label}")
        print("    hour  stored    sent     sim  routing    agent    other    total")
        for hours, stored, sent, heap in memory_run(
            args.seed, bundles, quiet, args.nodes
        ):
            total = sum(heap.values())
            print(
                f"    {hours:>4}  {stored:>6}  {sent:>6}  {heap['sim']:6.2f}  {heap['routing']:7.2f}  "
                f"{heap['agent']:7.2f}  {heap['other']:7.2f}  {total:7.2f}"
            )
    print(f"RSS at exit: {rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
