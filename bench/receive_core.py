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
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import core_bench


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


# The daemon's app writer queues a pushed payload of at least this many
# bytes as its own buffer (``dcis.dtn.runtime.node._GATHER_BYTES``): without
# it the encoder joins payload and message, a 64 KB copy the daemon never
# makes (~10% of this loop's instructions at 64 KB before round 11).
_GATHER_BYTES = 16 * 1024


def _loop(args: argparse.Namespace, count: int) -> tuple[Any, int]:
    """Build node 2 as ``dtn-node`` does and return (one batch, bundles per batch)."""
    from dcis.dtn.agent import Received
    from dcis.dtn.agent.actions import Ack, Deliver
    from dcis.dtn.appapi.wire import encode_bundle_message_parts
    from dcis.dtn.cl.udp import (
        AckBatcher,
        DataSegment,
        decode_datagram_untrusted,
        encode_data_segment,
    )

    now = [800_000_000_000]
    rng = random.Random(3)
    datagrams = [
        encode_data_segment(sender=1, token=rng.getrandbits(64), bundle=b)
        for b in _bundles(args.size, count, now[0])
    ]
    store, core = core_bench.node_core(2, 1, now[0])
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
                    large=_GATHER_BYTES,
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
    return core_bench.main(
        __file__, "receive_core", __doc__ or "", "datagrams per read", _loop
    )


if __name__ == "__main__":
    sys.exit(main())
