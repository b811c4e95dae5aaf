"""The command line and the measured loop shared by the per-bundle core
benches (``send_core.py``, ``receive_core.py``): ``--size``, ``--batch``,
``--count``, ``--repeats``, ``--callgrind`` (and the internal ``--inner``),
a few warm batches, then CPU microseconds per bundle, best and median of
the repeats -- or, with ``--callgrind``, the user-space instructions per
bundle of the loop (``callgrind_count``)."""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import callgrind_count

WARM = 5
"""Batches run before the measured loop: caches, the WAL, the first segment."""

Loop = Callable[[argparse.Namespace, int], tuple[Callable[[], None], int]]
"""``make(args, bundles)``: (one batch, bundles per batch) for a loop that
runs at most ``bundles`` bundles."""


def node_core(node: int, peer: int, now_ms: int, **config: Any) -> tuple[Any, Any]:
    """Node ``node`` as ``dtn-node`` builds it: a FULL group-commit store in a
    new temp dir, the daemon's agent window and decoded cache (``config``
    adds AgentConfig fields), the echo service; started at ``now_ms`` with
    an open contact to ``peer``. Returns (store, core)."""
    from dcis.dtn.agent import Agent, AgentConfig
    from dcis.dtn.agent.entries import HOT_MAX_BUNDLES
    from dcis.dtn.node import EchoService, NodeCore
    from dcis.dtn.routing.contact import Contact
    from dcis.dtn.runtime import node as daemon
    from dcis.dtn.runtime.services import next_incarnation
    from dcis.dtn.storage import SqliteStore

    directory = tempfile.mkdtemp(prefix=f"dcis-core{node}-")
    store = SqliteStore(
        os.path.join(directory, f"n{node}.db"),
        1 << 34,
        synchronous="FULL",
        deferred_sync=True,
        ballast_bytes=1 << 20,
    )
    if "keep_decoded_bytes" in AgentConfig.__dataclass_fields__:
        config.setdefault("keep_decoded_bytes", 32 << 20)  # older trees: none
    agent_config = AgentConfig(
        max_bundle_bytes=65_000,
        window=daemon.DAEMON_WINDOW,
        window_bytes=daemon.DAEMON_WINDOW_BYTES,
        keep_decoded=HOT_MAX_BUNDLES,
        **config,
    )
    agent = Agent(node=node, store=store, config=agent_config, rng=random.Random(1))
    with store.transaction():
        incarnation = next_incarnation(store)
    core = NodeCore(
        agent,
        node=node,
        services=[EchoService(lifetime_ms=3_600_000)],
        incarnation=incarnation,
        rng=random.Random(2),
        state=store,
    )
    core.start(now_ms, recover=True)
    core.on_contact_start(Contact(node, peer, 0.0, math.inf, 0.0), now_ms)
    return store, core


def main(script: str, name: str, doc: str, batch_help: str, make: Loop) -> int:
    """Parse the bench's arguments and measure ``make``'s batches."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64, help=batch_help)
    ap.add_argument("--count", type=int, default=3200, help="bundles per repeat")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind and not args.inner:
        got = callgrind_count.per_bundle(script, name)
        if got is None:
            return 1
        per_bundle, n = got
        print(
            f"{name}: {callgrind_count.tree()}, {args.size} B, {args.batch} per read:"
            f" {per_bundle:,.0f} user-space instructions per bundle"
            f" (callgrind, {n} bundles)"
        )
        return 0
    per = args.batch
    rounds = max(1, args.count // per)
    repeats = 1 if args.inner else args.repeats
    one_batch, per = make(args, (WARM + rounds * repeats) * per)
    for _ in range(WARM):
        one_batch()
    if args.inner:
        functools.reduce(lambda _a, _b: one_batch(), range(rounds), None)
        print(f"bundles {rounds * per}")
        return 0
    us = []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(rounds):
            one_batch()
        us.append((time.process_time() - t) / (rounds * per) * 1e6)
    print(
        f"{name}: {callgrind_count.tree()}, {args.size} B, {per} per read,"
        f" {rounds * per} bundles x {repeats}: CPU us per bundle"
        f" best {min(us):.1f}, median {statistics.median(us):.1f}"
    )
    return 0
