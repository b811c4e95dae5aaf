"""CGR benchmark: our Router against the Python CGR peers, side by side in one run.

    .venv/bin/python bench/cgr.py [--queries N] [--repeats R] [--seed S] [--quick]
    .venv/bin/python bench/cgr.py --forwarding-only   # just the per-node section below

Plans: seeded LEO-like constellations (each node pair that can see each other
gets a pass every ~95 min lasting 4-12 min, both directions, 1-100 Mbit/s,
2-40 ms light time) over one day: 50 nodes (~20k contacts) and 200 nodes
(~40k contacts). Queries: seeded (source, destination, ready time) triples,
bundle of 1000 bytes for us (the peers ignore size).

Peers (installed from the package index; never runtime dependencies):
- aiodtnsim 0.3.1 (on dtn-tvg-util's TVG): ``tvdijkstra`` (NG-SABR's
  node-graph Dijkstra) for the best route, and NG-SABR's Yen generator
  (``NGSABRNodeYen.route_generator_factory``) for 3 routes. Its generator reads
  the asyncio loop clock as "now"; we hand it the query time instead.
- pydtnsim 0.1.1: ``dijkstra.get_best_route`` over its ``ContactGraph`` with
  ``cgr_neighbor_function`` (best route) and ``scgr.generate_next_route`` three
  times with SABR contact suppression (3 routes). Its contact graph build is
  O(contacts^2); at 20k contacts it does not finish in minutes, so it runs on
  the first ~2,000 contacts of the 50-node plan (ours and aiodtnsim run there
  too, for a like-for-like row).

"cold" = first query with an empty route cache (graph already built at load);
"warm" = the same source/destination asked again 1 s later (route cache; the
peers have none, so their warm figure is their ordinary query). Figures are
medians over the queries of the median of ``--repeats`` runs. Load = parse the
HDTN JSON file + build the graph.

Per-node routers ("forwarding" section): one Router per node over the
100-node, 24 h plan of ``dcis.dtn.sim.scenarios.leo_constellation`` (the
simulator's scale scenario), and a seeded stream of bundles (512-8,192 bytes,
rounded up to whole KiB as the agent does) forwarded hop by hop the way the
agent does it: at each node ``best_route`` with the previous node excluded,
then ``consume`` the first contact. Prints the traced heap of the routers
right after they are built and after the stream (tracemalloc, a separate
untimed run), the route-cache hit rate and the median and total routing time.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcis.dtn.routing.cgr import Router
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan, format_hdtn_json
from dcis.dtn.storage.plan_files import load_plan

HORIZON_S = 86_400.0
SIZE_BYTES = 1000.0


def leo_plan(n_nodes: int, target_contacts: int, seed: int) -> ContactPlan:
    """A seeded LEO-like plan: periodic passes per visible node pair, both directions."""
    rng = random.Random(seed)
    passes_per_pair = HORIZON_S / 5700.0
    n_pairs = int(target_contacts / (2 * passes_per_pair))
    ring = [(i, i + 1) for i in range(1, n_nodes)]  # keeps the constellation connected
    others = [(a, b) for a in range(1, n_nodes + 1) for b in range(a + 1, n_nodes + 1)]
    rng.shuffle(others)
    pairs = list(dict.fromkeys(ring + others))[: max(n_pairs, len(ring))]
    contacts: list[Contact] = []
    ranges: list[Range] = []
    for a, b in pairs:
        period = rng.uniform(5400.0, 6000.0)
        duration = rng.uniform(240.0, 720.0)
        rate = rng.choice([125_000.0, 1_250_000.0, 12_500_000.0])
        owlt = round(rng.uniform(0.002, 0.04), 4)
        t = rng.uniform(0.0, period)
        while t < HORIZON_S:
            s = round(t, 3)
            e = round(min(t + duration * rng.uniform(0.8, 1.2), HORIZON_S), 3)
            for f, g in ((a, b), (b, a)):
                contacts.append(Contact(f, g, s, e, rate))
                ranges.append(Range(f, g, s, e, owlt))
            t += period
    return ContactPlan(contacts, ranges)


def subset(plan: ContactPlan, n: int) -> ContactPlan:
    """The first ``n`` contacts by start time (and their ranges)."""
    cs = sorted(plan.contacts, key=lambda c: (c.start_s, c.frm, c.to))[:n]
    keep = {(c.frm, c.to, c.start_s) for c in cs}
    return ContactPlan(cs, [r for r in plan.ranges if (r.frm, r.to, r.start_s) in keep])


def queries(plan: ContactPlan, n: int, seed: int) -> list[tuple[int, int, float]]:
    rng = random.Random(seed)
    nodes = sorted(plan.nodes)
    span = max(c.end_s for c in plan.contacts)
    out = []
    while len(out) < n:
        s, d = rng.sample(nodes, 2)
        out.append((s, d, round(rng.uniform(0.0, span / 2), 3)))
    return out


def per_query_ms(
    fn: Callable[[int, int, float], Any],
    qs: list[tuple[int, int, float]],
    repeats: int,
    before: Callable[[int, int, float], Any] | None = None,
) -> tuple[float, list[Any]]:
    """Median over queries of the median of ``repeats`` timings, in ms; plus the last results."""
    medians = []
    results = []
    for s, d, t in qs:
        samples = []
        res = None
        for _ in range(repeats):
            if before is not None:
                before(s, d, t)
            t0 = time.perf_counter()
            res = fn(s, d, t)
            samples.append(time.perf_counter() - t0)
        medians.append(statistics.median(samples))
        results.append(res)
    return statistics.median(medians) * 1e3, results


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    samples = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), out


# -- peers ------------------------------------------------------------------------------


class AiodtnsimPeer:
    name = "aiodtnsim"

    def __init__(self, plan: ContactPlan) -> None:
        from aiodtnsim.simulation.cgr import sabr_nodegraph_node_yen, tvdijkstra
        from tvgutil import tvg
        from tvgutil.contact_plan import SimpleContactTuple

        self._tvd = tvdijkstra
        self._yen_mod = sabr_nodegraph_node_yen
        tuples = [
            SimpleContactTuple(
                c.frm,
                c.to,
                c.start_s,
                c.end_s,
                c.rate_bytes_s * 8,
                0.0,
                plan.owlt_s(c.frm, c.to, c.start_s),
            )
            for c in plan.contacts
        ]
        self.ptvg = tvg.from_contact_plan(tuples, contact_type=SimpleContactTuple)

    def best(self, src: int, dst: int, at: float) -> float | None:
        r = self._tvd.tvdijkstra(
            self.ptvg,
            src,
            dest_node=dst,
            start_time=at,
            node_blacklist=set(),
            contact_blacklist=set(),
        )
        length, _, _, eat = r.get_path(dst)
        return list(eat)[-1] if length else None

    def k_routes(self, src: int, dst: int, at: float, k: int = 3) -> list[Any]:
        loop = SimpleNamespace(time=lambda: at)
        real = self._yen_mod.asyncio
        self._yen_mod.asyncio = SimpleNamespace(
            get_running_loop=lambda: loop
        )  # the query time, not a clock
        try:
            gen = self._yen_mod.NGSABRNodeYen.route_generator_factory(
                SimpleNamespace(max_routes_yen=k),
                SimpleNamespace(ptvg=self.ptvg),
                src,
                dst,
                [],
            )
            out = []
            for path in gen:
                out.append(path)
                if len(out) == k:
                    break
            return out
        finally:
            self._yen_mod.asyncio = real


class PydtnsimPeer:
    name = "pydtnsim"

    def __init__(self, plan: ContactPlan) -> None:
        from pydtnsim.contact_graph import ContactGraph
        from pydtnsim.contact_plan import ContactPlan as PContactPlan
        from pydtnsim.routing import cgr_utils, dijkstra, scgr

        self._dijkstra = dijkstra
        self._utils = cgr_utils
        self._scgr = scgr
        cp = PContactPlan(1000, 1)
        for c in plan.contacts:
            # pydtnsim counts ms and bit/ms; a zero delay can loop forever, so >= 1 ms
            delay = max(1, round(plan.owlt_s(c.frm, c.to, c.start_s) * 1000))
            cp.add_contact(
                c.frm,
                c.to,
                round(c.start_s * 1000),
                round(c.end_s * 1000),
                c.rate_bytes_s * 8 / 1000,
                delay,
                bidirectional=False,
            )
        self.graph = ContactGraph(cp)
        from pydtnsim.contact_plan import ContactIdentifier

        self._cid = ContactIdentifier

    def _terminal(self, n: int) -> Any:
        return self._cid(
            from_node=n,
            to_node=n,
            from_time=0,
            to_time=math.inf,
            datarate=math.inf,
            delay=0,
        )

    def best(self, src: int, dst: int, at: float) -> float | None:
        plan, dist = self._dijkstra.get_best_route(
            self._terminal(src),
            self._terminal(dst),
            self.graph,
            self._utils.cgr_neighbor_function,
            round(at * 1000),
            hashes=self.graph.hashes,
            suppressed_contacts=[],
        )
        return None if plan is None else dist / 1000

    def k_routes(self, src: int, dst: int, at: float, k: int = 3) -> list[Any]:
        excluded: list[Any] = []
        out = []
        avg = self._scgr.AvgRouteDeliveryTime()
        for _ in range(k):
            route, limit = self._scgr.generate_next_route(
                self.graph, src, dst, excluded, round(at * 1000), avg
            )
            if route is None:
                break
            out.append(route)
            excluded.append(limit)
        return out


# -- run --------------------------------------------------------------------------------


def bench_plan(
    label: str,
    plan: ContactPlan,
    qs: list[tuple[int, int, float]],
    repeats: int,
    peers: list[type],
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "plan": label,
        "contacts": len(plan),
        "nodes": len(plan.nodes),
        "queries": len(qs),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.json"
        path.write_text(format_hdtn_json(plan))
        load_s, router = timed(lambda: Router(load_plan(path)), 3)
    row["ours_load_s"] = load_s
    cold, _ = per_query_ms(
        lambda s, d, t: router.best_route(s, d, t, SIZE_BYTES),
        qs,
        repeats,
        before=lambda s, d, t: router.clear_cache(),
    )

    def prime(s: int, d: int, t: float) -> None:
        # a forwarding node's cache: the same destination was asked 1 s earlier
        router.clear_cache()
        router.best_route(s, d, t, SIZE_BYTES)

    hits0 = router.stats["cache_hits"]
    warm, _ = per_query_ms(
        lambda s, d, t: router.best_route(s, d, t + 1.0, SIZE_BYTES),
        qs,
        repeats,
        before=prime,
    )
    row["ours_warm_hit_rate"] = (router.stats["cache_hits"] - hits0) / (
        len(qs) * repeats
    )
    k3, _ = per_query_ms(
        lambda s, d, t: router.routes(s, d, t, SIZE_BYTES, 3),
        qs,
        repeats,
        before=lambda s, d, t: router.clear_cache(),
    )
    row.update(ours_best_cold_ms=cold, ours_best_warm_ms=warm, ours_k3_ms=k3)
    zero = [router.best_route(s, d, t, 0.0) for s, d, t in qs]
    for peer_cls in peers:
        name = peer_cls.name
        t0 = time.perf_counter()
        peer = peer_cls(plan)
        row[f"{name}_load_s"] = time.perf_counter() - t0
        pb, got = per_query_ms(peer.best, qs, repeats)
        row[f"{name}_best_ms"] = pb
        row[f"{name}_k3_ms"], _ = per_query_ms(peer.k_routes, qs, max(1, repeats // 2))
        if name == "aiodtnsim":  # same light times and no size: compare best arrivals
            same = earlier = 0
            for a, b in zip(got, zero, strict=True):
                if a is None or b is None:
                    same += a is None and b is None
                elif abs(a - b.arrival_s) < 1e-6:
                    same += 1
                elif b.arrival_s < a and a - b.arrival_s < 1e-3:
                    # tvdijkstra treats arrivals within 1 ms as equal and then prefers fewer hops
                    earlier += 1
            row["aiodtnsim_same_arrival"] = (
                f"{same}/{len(qs)} equal, {earlier} ours earlier by < 1 ms (its tie tolerance)"
            )
    return row


def forwarding(bundles: int, seed: int) -> dict[str, Any]:
    """100 per-node routers over the simulator's LEO plan; see the module docstring."""
    import tracemalloc

    from dcis.dtn.sim.scenarios import leo_constellation

    def run(traced: bool) -> dict[str, Any]:
        plan = leo_constellation(
            planes=10, per_plane=10, duration_s=HORIZON_S, seed=seed
        )
        nodes = sorted(plan.nodes)
        rng = random.Random(seed)
        stream: list[tuple[float, int, int, int]] = []
        for _ in range(bundles):
            src, dst = rng.sample(nodes, 2)
            stream.append(
                (rng.uniform(0.0, 20 * 3600.0), src, dst, rng.randint(512, 8192))
            )
        stream.sort()
        if traced:
            tracemalloc.start()
        routers = {n: Router(plan) for n in nodes}
        built = tracemalloc.get_traced_memory()[0] if traced else 0
        times: list[float] = []
        hops = 0
        for t, src, dst, size in stream:
            node, prev, now = src, -1, t
            q = -(-size // 1024) * 1024
            while node != dst:
                r = routers[node]
                t0 = time.perf_counter()
                route = r.best_route(
                    node, dst, now, q, excluded=() if prev < 0 else (prev,)
                )
                times.append(time.perf_counter() - t0)
                if route is None:
                    break
                c = route.contacts[0]
                r.consume(c, size)
                hops += 1
                prev, node = node, route.next_hop
                now = max(now, c.start_s) + size / c.rate_bytes_s + r.owlt_of(c)
        after = tracemalloc.get_traced_memory()[0] if traced else 0
        if traced:
            tracemalloc.stop()
        hits = sum(r.stats["cache_hits"] for r in routers.values())
        misses = sum(r.stats["cache_misses"] for r in routers.values())
        return {
            "contacts": len(plan),
            "routers": len(routers),
            "mem_built_mib": built / 2**20,
            "mem_after_mib": after / 2**20,
            "queries": len(times),
            "hops": hops,
            "hit_rate": hits / max(1, hits + misses),
            "median_query_ms": statistics.median(times) * 1e3 if times else 0.0,
            "total_routing_s": sum(times),
        }

    timing = run(traced=False)
    mem = run(traced=True)
    timing.update(
        mem_built_mib=mem["mem_built_mib"], mem_after_mib=mem["mem_after_mib"]
    )
    return timing


def report_forwarding(f: dict[str, Any]) -> None:
    print(
        f"\n== forwarding: {f['routers']} per-node routers over the simulator's LEO plan"
        f" ({f['contacts']} contacts), {f['queries']} best-route queries ({f['hops']} hops)"
    )
    print(
        f"  traced heap: {f['mem_built_mib']:.1f} MiB after building the routers,"
        f" {f['mem_after_mib']:.1f} MiB after the stream"
    )
    print(
        f"  route cache hit rate {f['hit_rate']:.0%}; query median {f['median_query_ms']:.3f} ms,"
        f" total routing time {f['total_routing_s']:.2f} s"
    )


def report(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(
            f"\n== {row['plan']}: {row['nodes']} nodes, {row['contacts']} contacts, {row['queries']} queries"
        )
        print(
            f"  load (parse HDTN JSON + build graph): ours {row['ours_load_s'] * 1e3:8.1f} ms",
            end="",
        )
        for name in ("aiodtnsim", "pydtnsim"):
            if f"{name}_load_s" in row:
                print(
                    f" | {name} graph build {row[f'{name}_load_s'] * 1e3:8.1f} ms",
                    end="",
                )
        print()
        print(f"  {'':22s}{'ours':>10s}", end="")
        peers = [n for n in ("aiodtnsim", "pydtnsim") if f"{n}_best_ms" in row]
        for name in peers:
            print(f"{name:>12s}{'ratio':>8s}", end="")
        print()
        lines = [
            ("best route, cold (ms)", "ours_best_cold_ms", "best"),
            ("best route, warm (ms)", "ours_best_warm_ms", "best"),
            ("3 routes (ms)", "ours_k3_ms", "k3"),
        ]
        for title, key, peer_key in lines:
            print(f"  {title:22s}{row[key]:10.3f}", end="")
            for name in peers:
                p = row[f"{name}_{peer_key}_ms"]
                print(f"{p:12.3f}{p / row[key]:7.1f}x", end="")
            print()
        print(
            f"  warm queries served from the route cache: {row['ours_warm_hit_rate']:.0%}"
        )
        if "aiodtnsim_same_arrival" in row:
            print(
                f"  same best arrival as aiodtnsim (size 0): {row['aiodtnsim_same_arrival']}"
            )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None
    )
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pydtnsim-contacts", type=int, default=2000)
    ap.add_argument(
        "--quick", action="store_true", help="fewer queries and repeats (smoke run)"
    )
    ap.add_argument(
        "--json", action="store_true", help="also print the figures as one JSON object"
    )
    ap.add_argument(
        "--forwarding-bundles",
        type=int,
        default=10_000,
        help="bundles in the per-node forwarding section (0: skip it)",
    )
    ap.add_argument(
        "--forwarding-only",
        action="store_true",
        help="run only the per-node forwarding section",
    )
    args = ap.parse_args()
    if args.forwarding_only:
        f = forwarding(args.forwarding_bundles, args.seed)
        report_forwarding(f)
        if args.json:
            print(json.dumps(f))
        return 0
    if args.quick:
        args.queries, args.repeats, args.pydtnsim_contacts = 10, 3, 600
    peers: list[type] = []
    for cls, mod in ((AiodtnsimPeer, "aiodtnsim"), (PydtnsimPeer, "pydtnsim")):
        try:
            __import__(mod)
            peers.append(cls)
        except ImportError:
            print(f"note: {mod} is not installed; skipped (pip install {mod})")
    p50 = leo_plan(50, 20_000, args.seed)
    p200 = leo_plan(200, 40_000, args.seed + 1)
    small = subset(p50, args.pydtnsim_contacts)
    rows = [
        bench_plan(
            "LEO 50 nodes",
            p50,
            queries(p50, args.queries, args.seed),
            args.repeats,
            [p for p in peers if p is AiodtnsimPeer],
        ),
        bench_plan(
            "LEO 200 nodes",
            p200,
            queries(p200, args.queries, args.seed),
            args.repeats,
            [p for p in peers if p is AiodtnsimPeer],
        ),
        bench_plan(
            f"LEO 50 nodes, first {len(small)} contacts",
            small,
            queries(small, args.queries, args.seed),
            args.repeats,
            peers,
        ),
    ]
    report(rows)
    fwd = None
    if args.forwarding_bundles > 0:
        fwd = forwarding(
            args.forwarding_bundles // (10 if args.quick else 1), args.seed
        )
        report_forwarding(fwd)
    big = rows[1]
    print(
        f"\nplan load for {big['contacts']} contacts: {big['ours_load_s']:.3f} s (target <= 0.5 s)"
    )
    if args.json:
        print(
            json.dumps(rows if fwd is None else [*rows, {"plan": "forwarding", **fwd}])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
