"""CPU of the UDP fragment path per 1 MB bundle, agents and UDP CL codec only.

Node 1 (``--side send``): the agent cuts each bundle it stores into MTU
pieces as it sends them (``forwarding._send_piece``), the UDP CL wraps each
in a DATA segment (``UdpLink.transmit``), and every piece is acknowledged
(``UdpLink.on_ack`` -> ``on_transmit_done_many``), which sends the next
ones. Node 2 (``--side receive``): each datagram is classified
(``decode_datagram_untrusted``), the pieces go to the agent in one batch
(held until whole, reassembled, stored, handed over) and the delivery is
confirmed. No sockets, no clock, no trio: what is left is the per-piece
work of the two agents and the CL codec -- the part of
``bench/udp_throughput.py``'s UDP 1 MB row that the MTCP row does not
pay. The agents are configured as ``dtn-node`` configures them (MTU
65,000, window, decoded copies kept, UDP fragments held, its malloc
settings), on memory
stores (the store's work is the MTCP row's too).

Prints CPU microseconds per bundle (process time, best and median of
``--repeats``). ``--callgrind`` runs the same loop under valgrind's
callgrind and prints the user-space instructions per bundle (the same
count run after run, so two trees compare on a loaded machine). Run with
another checkout's Python to measure that checkout.

    .venv/bin/python bench/fragment_path.py --side send
    .venv/bin/python bench/fragment_path.py --side receive --callgrind
    /work/main/.venv/bin/python bench/fragment_path.py --side receive --callgrind
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import callgrind_count

_MTU = 65_000
_T0 = 800_000_000_000


def _node_config(node: int) -> Any:
    from dcis.dtn.agent import AgentConfig
    from dcis.dtn.agent.entries import HOT_MAX_BUNDLES
    from dcis.dtn.runtime import node as daemon

    return AgentConfig(
        max_bundle_bytes=_MTU,
        window=daemon.DAEMON_WINDOW,
        window_bytes=daemon.DAEMON_WINDOW_BYTES,
        hold_fragments_ms={"udp": 200},
        keep_decoded=HOT_MAX_BUNDLES,
        keep_decoded_bytes=32 << 20,
    )


def _sender(size: int) -> tuple[Callable[[], list[Any]], Any]:
    """Node 1: one call sends one bundle and returns its datagrams (each
    one buffer, or its buffers as a gathered ``sendmsg`` would send them:
    not joined here)."""
    from dcis.dtn.agent import Agent
    from dcis.dtn.agent.actions import Transmit
    from dcis.dtn.agent.store import MemoryStore
    from dcis.dtn.cl.udp import SendDatagram, TxDone, UdpLink
    from dcis.dtn.routing.contact import Contact

    agent = Agent(
        node=1, store=MemoryStore(), config=_node_config(1), rng=random.Random(1)
    )
    link = UdpLink(local_node=1, neighbor=2, mtu_bytes=_MTU, rng=random.Random(2))
    now = [_T0]
    agent.on_contact_start(Contact(1, 2, 0.0, math.inf, 0.0), now[0])
    payload = os.urandom(size)

    def one() -> list[Any]:
        now[0] += 1
        _key, actions = agent.send(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=payload,
            lifetime_ms=3_600_000,
            now=now[0],
        )
        datagrams: list[Any] = []
        while True:
            tokens = []
            for a in actions:
                if not isinstance(a, Transmit):
                    continue
                for o in link.transmit(a.tx_id, a.parts, 0.0):
                    assert isinstance(o, SendDatagram)
                    assert o.token is not None
                    datagrams.append(o.data)
                    tokens.append(o.token)
            if not tokens:
                break
            done = [
                (o.tx_id, o.ok)
                for o in link.on_ack(tuple(tokens), 0.0)
                if isinstance(o, TxDone)
            ]
            actions = agent.on_transmit_done_many(done, now[0])
        assert len(agent._entries) == 0, "every bundle forwarded"
        return datagrams

    return one, agent


def _receiver(size: int) -> Callable[[], None]:
    """Node 2: one call takes one bundle's datagrams and confirms its
    delivery (64 bundles' datagrams made once; a fresh agent when they
    come round again, so that none is a duplicate)."""
    from dcis.dtn.agent import Agent
    from dcis.dtn.agent.actions import Deliver
    from dcis.dtn.agent.agent import Received
    from dcis.dtn.agent.store import MemoryStore
    from dcis.dtn.cl.udp import DataSegment, decode_datagram_untrusted

    send, _ = _sender(size)
    rounds = [
        [d if isinstance(d, bytes) else b"".join(d) for d in send()] for _ in range(64)
    ]
    agents: list[Any] = []
    now = [_T0 + 1000]
    i = [0]

    def one() -> None:
        now[0] += 1
        if i[0] % len(rounds) == 0:
            agents[:] = [
                Agent(
                    node=2,
                    store=MemoryStore(),
                    config=_node_config(2),
                    rng=random.Random(3),
                )
            ]
            agents[0].register("ipn:2.1")
        agent = agents[0]
        batch = []
        for data in rounds[i[0] % len(rounds)]:
            dg = decode_datagram_untrusted(data)
            assert isinstance(dg, DataSegment)
            batch.append(Received("udp", dg.sender, dg.bundle, dg.token))
        i[0] += 1
        actions = agent.on_receive_many(batch, now[0])
        keys = [a.bundle_key for a in actions if isinstance(a, Deliver)]
        assert len(keys) == 1, "delivered whole"
        agent.on_delivered_many(keys, now[0])

    return one


def _loop(args: argparse.Namespace) -> Callable[[], Any]:
    from dcis.tools.dtn_node import _pin_mmap_threshold

    _pin_mmap_threshold()  # dtn-node's malloc settings (1 MB copies on the heap)
    if args.side == "send":
        return _sender(args.size)[0]
    return _receiver(args.size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=("send", "receive"), default="send")
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--count", type=int, default=64, help="bundles per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind and not args.inner:
        got = callgrind_count.per_bundle(__file__, "fragment_path")
        if got is None:
            return 1
        per_bundle, n = got
        print(
            f"fragment_path: {callgrind_count.tree()}, {args.side}, {args.size:,} B:"
            f" {per_bundle:,.0f} user-space instructions per bundle"
            f" (callgrind, {n} bundles)"
        )
        return 0
    one = _loop(args)
    for _ in range(3):
        one()  # warm
    if args.inner:
        functools.reduce(lambda _a, _b: one(), range(args.count), None)
        print(f"bundles {args.count}")
        return 0
    us = []
    for _ in range(args.repeats):
        t = time.process_time()
        for _ in range(args.count):
            one()
        us.append((time.process_time() - t) / args.count * 1e6)
    print(
        f"fragment_path: {callgrind_count.tree()}, {args.side}, {args.size:,} B, {args.count}"
        f" bundles x {args.repeats}: CPU us per bundle best {min(us):.1f},"
        f" median {statistics.median(us):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
