"""Node 1's per-bundle work with no trio, no sockets and no other process:
CPU per app send on its way through the sending daemon, for comparing
trees on a shared machine where the daemon pair's figures swing with the
load (spec/performance.md, "Seventh round").

Per batch of ``--batch`` sends (one app read, as ``dtn-node`` takes it): the
frames decoded (``PushReader``), the sends originated in one FULL
transaction (``NodeCore.send_many`` where the tree has it, else
``NodeCore.send`` per bundle), a reply encoded per send, the group-commit
sync (``begin_sync``/``end_sync``, on this thread), then every transmission
reported done (``on_transmit_done_many``: the forwarded bundles leave the
store) -- the agent and store configured as ``dtn-node`` configures them.

Prints CPU microseconds per bundle (process time, best and median of
``--repeats``). ``--callgrind`` runs the same loop under valgrind's
callgrind and prints the user-space instructions per bundle executed in
the loop (no kernel time, no start-up): the same count run after run
(within ~0.3%), so two trees compare on a loaded machine. Run with
another checkout's Python to measure that checkout (its editable ``dcis``).

    .venv/bin/python bench/send_core.py --size 1000 --batch 64
    .venv/bin/python bench/send_core.py --size 64000 --batch 48 --count 480 --callgrind
    /work/main/.venv/bin/python bench/send_core.py --callgrind
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


def _loop(args: argparse.Namespace) -> tuple[Any, int]:
    """Build node 1 as ``dtn-node`` does and return (one batch, bundles per batch)."""
    from dcis.dtn import appapi
    from dcis.dtn.agent import Agent, AgentConfig
    from dcis.dtn.agent.actions import Transmit
    from dcis.dtn.agent.entries import HOT_MAX_BUNDLES
    from dcis.dtn.appapi.wire import encode_message
    from dcis.dtn.client.push_reader import PushReader
    from dcis.dtn.node import EchoService, NodeCore
    from dcis.dtn.routing.contact import Contact
    from dcis.dtn.runtime import node as daemon
    from dcis.dtn.runtime.services import next_incarnation
    from dcis.dtn.storage import SqliteStore

    directory = tempfile.mkdtemp(prefix="dcis-sendcore-")
    store = SqliteStore(
        os.path.join(directory, "n1.db"),
        1 << 34,
        synchronous="FULL",
        deferred_sync=True,
        ballast_bytes=1 << 20,
    )
    config = AgentConfig(
        max_bundle_bytes=65_000,
        window=daemon.DAEMON_WINDOW,
        window_bytes=daemon.DAEMON_WINDOW_BYTES,
        mtu_by_neighbour={2: 16 << 20},
        keep_decoded=HOT_MAX_BUNDLES,
        **(
            {"keep_decoded_bytes": 32 << 20}
            if "keep_decoded_bytes" in AgentConfig.__dataclass_fields__
            else {}
        ),
    )
    agent = Agent(node=1, store=store, config=config, rng=random.Random(1))
    with store.transaction():
        incarnation = next_incarnation(store)
    core = NodeCore(
        agent,
        node=1,
        services=[EchoService(lifetime_ms=3_600_000)],
        incarnation=incarnation,
        rng=random.Random(2),
        state=store,
    )
    now = [800_000_000_000]
    core.start(now[0], recover=True)
    core.on_contact_start(Contact(1, 2, 0.0, math.inf, 0.0), now[0])
    payload = os.urandom(args.size)
    frames = b"".join(
        encode_message(
            {
                "type": "send",
                "id": i,
                "destination": "ipn:2.1",
                "payload": payload,
                "source": "ipn:1.1",
                "lifetime_ms": 3_600_000,
            }
        )
        for i in range(args.batch)
    )
    reader = PushReader(max_message_bytes=64 << 20)
    from dcis.dtn import agent as agent_pkg

    send_request = getattr(agent_pkg, "SendRequest", None)
    key_reply = getattr(appapi.wire, "encode_key_reply", None)

    def reply(mid: int, key: str) -> bytes:
        if key_reply is not None:
            return bytes(key_reply(mid, key))
        return encode_message({"type": "ok", "id": mid, "bundle_key": key})

    def one_batch() -> None:
        msgs = reader.feed(frames)
        now[0] += 1
        actions: list[Any] = []
        out = []
        with store.transaction(durable=True):
            if send_request is not None:
                keys, actions = core.send_many(
                    [
                        send_request(
                            m["source"],
                            m["destination"],
                            m["payload"],
                            m["lifetime_ms"],
                        )
                        for m in msgs
                    ],
                    now[0],
                )
            else:
                keys = []
                for m in msgs:
                    key, more = core.send(
                        source=m["source"],
                        destination=m["destination"],
                        payload=m["payload"],
                        lifetime_ms=m["lifetime_ms"],
                        now=now[0],
                    )
                    keys.append(key)
                    actions += more
            for m, key in zip(msgs, keys, strict=True):
                out.append(reply(m["id"], key))
        tx = [a.tx_id for a in actions if isinstance(a, Transmit)]
        assert len(tx) == len(msgs), "every send forwarded at once"
        sync = store.begin_sync()
        sync()
        store.end_sync()
        core.on_transmit_done_many([(t, True) for t in tx], now[0])

    return one_batch, args.batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64, help="sends per app read")
    ap.add_argument("--count", type=int, default=3200, help="bundles per repeat")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind and not args.inner:
        got = callgrind_count.per_bundle(__file__, "send_core")
        if got is None:
            return 1
        per_bundle, n = got
        print(
            f"send_core: {callgrind_count.tree()}, {args.size} B, {args.batch} per read:"
            f" {per_bundle:,.0f} user-space instructions per bundle"
            f" (callgrind, {n} bundles)"
        )
        return 0
    one_batch, per = _loop(args)
    rounds = max(1, args.count // per)
    for _ in range(5):
        one_batch()  # warm: caches, the WAL, the first segment
    if args.inner:
        functools.reduce(lambda _a, _b: one_batch(), range(rounds), None)
        print(f"bundles {rounds * per}")
        return 0
    us = []
    for _ in range(args.repeats):
        t = time.process_time()
        for _ in range(rounds):
            one_batch()
        us.append((time.process_time() - t) / (rounds * per) * 1e6)
    print(
        f"send_core: {callgrind_count.tree()}, {args.size} B, {per} per read, {rounds * per}"
        f" bundles x {args.repeats}: CPU us per bundle best {min(us):.1f},"
        f" median {statistics.median(us):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
