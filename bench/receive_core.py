"""Node 2's per-bundle work with no trio, no sockets and no other process:
the receive-side counterpart of ``bench/send_core.py`` (spec/performance.md,
"Eighth round: the 1 KB path").

Node 1's bundles are made first (a second agent originates and forwards
them, so they carry its previous node and hop count blocks as on the
wire) and wrapped in UDP CL DATA segments. Per batch of ``--batch``
datagrams (one read of the daemon's UDP socket): each segment decoded
(``decode_datagram_untrusted``), the bundles received in one agent call
(``NodeCore.on_receive_many``: one FULL transaction), each delivery encoded
as the ``bundle`` message the daemon pushes to its app, the group-commit
sync, the hop ACK segment of the batch's tokens, then the app's
confirmations of the batch in one call (``on_delivered_many``: the
delivered bundles leave the store) -- the agent and store configured as
``dtn-node`` configures them.

Prints CPU microseconds per bundle (process time, best and median of
``--repeats``); ``--callgrind`` counts the user-space instructions per
bundle executed in that loop (as ``send_core.py --callgrind``: the same
count run after run, so two trees compare on a loaded machine). Run with
another checkout's Python to measure that checkout.

    .venv/bin/python bench/receive_core.py --callgrind
    /work/main/.venv/bin/python bench/receive_core.py --callgrind
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import callgrind_count

_WARM = 5


def _bundles(size: int, count: int, now: int) -> list[bytes]:
    """``count`` bundles from node 1 to ``ipn:2.1`` as node 1 sends them."""
    from dcis.dtn.agent import Agent, AgentConfig
    from dcis.dtn.agent.actions import Transmit
    from dcis.dtn.agent.store import MemoryStore
    from dcis.dtn.routing.contact import Contact

    agent = Agent(
        node=1,
        store=MemoryStore(1 << 40),
        config=AgentConfig(max_bundle_bytes=65_000, window=1 << 30),
        rng=random.Random(1),
    )
    agent.on_contact_start(Contact(1, 2, 0.0, math.inf, 0.0), now)
    payload = os.urandom(size)
    out = []
    for i in range(count):
        _key, actions = agent.send(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=payload,
            lifetime_ms=3_600_000,
            now=now + i // 64,
        )
        for a in actions:
            if isinstance(a, Transmit):
                out.append(a.data)
                agent.on_transmit_done(a.tx_id, True, now)
    assert len(out) == count
    return out


def _loop(args: argparse.Namespace, count: int) -> tuple[Any, int]:
    """Build node 2 as ``dtn-node`` does and return (one batch, bundles per batch)."""
    from dcis.dtn.agent import Agent, AgentConfig, Received
    from dcis.dtn.agent.actions import Ack, Deliver
    from dcis.dtn.agent.entries import HOT_MAX_BUNDLES
    from dcis.dtn.appapi.wire import encode_bundle_message_parts
    from dcis.dtn.cl.udp import (
        AckBatcher,
        DataSegment,
        decode_datagram_untrusted,
        encode_data_segment,
    )
    from dcis.dtn.node import EchoService, NodeCore
    from dcis.dtn.routing.contact import Contact
    from dcis.dtn.runtime import node as daemon
    from dcis.dtn.runtime.services import next_incarnation
    from dcis.dtn.storage import SqliteStore

    now = [800_000_000_000]
    rng = random.Random(3)
    datagrams = [
        encode_data_segment(sender=1, token=rng.getrandbits(64), bundle=b)
        for b in _bundles(args.size, count, now[0])
    ]
    directory = tempfile.mkdtemp(prefix="dcis-recvcore-")
    store = SqliteStore(
        os.path.join(directory, "n2.db"),
        1 << 34,
        synchronous="FULL",
        deferred_sync=True,
        ballast_bytes=1 << 20,
    )
    config = AgentConfig(
        max_bundle_bytes=65_000,
        window=daemon.DAEMON_WINDOW,
        window_bytes=daemon.DAEMON_WINDOW_BYTES,
        keep_decoded=HOT_MAX_BUNDLES,
        **(
            {"keep_decoded_bytes": 32 << 20}
            if "keep_decoded_bytes" in AgentConfig.__dataclass_fields__
            else {}
        ),
    )
    agent = Agent(node=2, store=store, config=config, rng=random.Random(1))
    with store.transaction():
        incarnation = next_incarnation(store)
    core = NodeCore(
        agent,
        node=2,
        services=[EchoService(lifetime_ms=3_600_000)],
        incarnation=incarnation,
        rng=random.Random(2),
        state=store,
    )
    core.start(now[0], recover=True)
    core.on_contact_start(Contact(2, 1, 0.0, math.inf, 0.0), now[0])
    core.register("ipn:2.1", now=now[0])
    acks = AckBatcher(local_node=2)
    feed = iter(range(0, count, args.batch))

    def one_batch() -> None:
        start = next(feed)
        now[0] += 1
        batch = []
        for raw in datagrams[start : start + args.batch]:
            dg = decode_datagram_untrusted(raw)
            assert isinstance(dg, DataSegment)
            batch.append(Received("udp", dg.sender, dg.bundle, dg.token))
        actions = core.on_receive_many(batch, now[0])
        pushed = []
        tokens = []
        for a in actions:
            if isinstance(a, Deliver):
                encode_bundle_message_parts(
                    endpoint=a.endpoint,
                    source=a.source,
                    payload=a.payload,
                    creation_ms=a.creation_ms,
                    sequence=a.sequence,
                    bundle_key=a.bundle_key,
                )
                pushed.append(a.bundle_key)
            elif isinstance(a, Ack):
                tokens.append(a)
        assert len(pushed) == len(batch), "every bundle delivered at once"
        sync = store.begin_sync()
        sync()
        store.end_sync()
        for a in tokens:
            acks.add(a.neighbor, a.cl_token)
        acks.flush()
        with store.transaction():
            core.on_delivered_many(pushed, now[0])

    return one_batch, args.batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64, help="datagrams per read")
    ap.add_argument("--count", type=int, default=3200, help="bundles per repeat")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind and not args.inner:
        got = callgrind_count.per_bundle(__file__, "receive_core")
        if got is None:
            return 1
        per_bundle, n = got
        print(
            f"receive_core: {callgrind_count.tree()}, {args.size} B, {args.batch} per read:"
            f" {per_bundle:,.0f} user-space instructions per bundle"
            f" (callgrind, {n} bundles)"
        )
        return 0
    per = args.batch
    rounds = max(1, args.count // per)
    repeats = 1 if args.inner else args.repeats
    one_batch, per = _loop(args, (_WARM + rounds * repeats) * per)
    for _ in range(_WARM):
        one_batch()  # warm: caches, the WAL, the first segment
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
        f"receive_core: {callgrind_count.tree()}, {args.size} B, {per} per read, {rounds * per}"
        f" bundles x {repeats}: CPU us per bundle best {min(us):.1f},"
        f" median {statistics.median(us):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
