"""``dcis ping NODE``: bundle echo through the DTN, with round-trip time.

Sends bundles to the echo endpoint ``ipn:NODE.7`` of the target (every
``dtn-node`` runs one) from a temporary endpoint of the local node and waits
for each to come back. Prints one line per echo and a summary at the end,
also on Ctrl-C. Exit status 0 when at least one echo came back, 1 when none
did.

examples:
  dcis ping 2 --config examples/node1.toml --count 3
  dcis ping ipn:2.7 --node 1 --count 10 --interval 0.2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import time
from typing import Any

from dcis.dtn.client import ClientError
from dcis.dtn.runtime.node import ECHO_SERVICE
from dcis.tools.appclient import add_target_options, connect
from dcis.tools.argtypes import float_in, int_in
from dcis.tools.cli import EXIT_INTERRUPTED, CommandError

MAX_SIZE = 16 * 1024 * 1024
DAY_S = 86_400.0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ping", help="bundle echo with round-trip time", description=__doc__
    )
    p.add_argument("target", help="node number or EID of its echo endpoint (ipn:N.7)")
    p.add_argument(
        "--count",
        type=int_in(1, 1_000_000),
        default=3,
        metavar="N",
        help="echoes to ask for (default 3)",
    )
    p.add_argument(
        "--interval",
        type=float_in(0.0, DAY_S),
        default=1.0,
        metavar="SECONDS",
        help="seconds between pings (default 1)",
    )
    p.add_argument(
        "--timeout",
        type=float_in(0.001, 30 * DAY_S),
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for each echo (default 10)",
    )
    p.add_argument(
        "--size",
        type=int_in(16, MAX_SIZE),
        default=64,
        metavar="BYTES",
        help=f"payload bytes, 16..{MAX_SIZE} (default 64)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per echo, then the summary object",
    )
    add_target_options(p)
    p.set_defaults(func=run)


def _destination(target: str) -> str:
    if target.isascii() and target.isdigit():
        n = int(target)
        if n < 1 or n >= 2**64:
            raise CommandError(f"node number must be in 1..2^64-1, got {target}")
        return f"ipn:{n}.{ECHO_SERVICE}"
    return target


def run(args: argparse.Namespace) -> int:
    dest = _destination(str(args.target))
    rtts: list[float] = []
    sent = 0

    def emit(doc: dict[str, Any], text: str) -> None:
        print(json.dumps(doc) if args.json else text, flush=True)

    interrupted = False
    with connect(args, timeout_s=max(10.0, args.timeout)) as client:
        try:
            me = int(client.status()["node"])
            endpoint = client.register(
                f"ipn:{me}.{random.Random(os.getpid() ^ time.time_ns()).randrange(10_000, 2**31)}"
            )
        except ClientError as exc:
            raise CommandError(str(exc)) from None
        try:
            for i in range(args.count):
                t0 = time.perf_counter()
                payload = struct.pack(">QQ", os.getpid(), i) + bytes(args.size - 16)
                # Counted before the reply: Ctrl-C while the node stores it
                # still reports it as sent.
                sent += 1
                try:
                    client.send(
                        dest,
                        payload,
                        source=endpoint,
                        lifetime_ms=int(args.timeout * 1000) + 1000,
                    )
                except ClientError:
                    sent -= 1
                    raise
                deadline = t0 + args.timeout
                while True:
                    b = client.receive(
                        timeout_s=max(0.0, deadline - time.perf_counter())
                    )
                    if b is None:
                        emit(
                            {"seq": i, "timeout_s": args.timeout},
                            f"seq={i} timeout after {args.timeout:.1f} s",
                        )
                        break
                    if b.payload[:16] == payload[:16]:
                        rtt = time.perf_counter() - t0
                        rtts.append(rtt)
                        emit(
                            {
                                "seq": i,
                                "source": b.source,
                                "size": len(b.payload),
                                "rtt_ms": round(rtt * 1000, 3),
                            },
                            f"{len(b.payload)} bytes from {b.source}: seq={i} rtt={rtt * 1000:.1f} ms",
                        )
                        break
                if i + 1 < args.count:
                    time.sleep(max(0.0, args.interval - (time.perf_counter() - t0)))
        except KeyboardInterrupt:
            interrupted = True
        except ClientError as exc:
            if not sent:
                raise CommandError(str(exc)) from None
            print(f"error: {exc}", file=sys.stderr)
    received = len(rtts)
    loss = 100.0 * (sent - received) / sent if sent else 0.0
    summary: dict[str, Any] = {
        "sent": sent,
        "received": received,
        "loss_percent": round(loss, 1),
    }
    text = f"{sent} sent, {received} received, {loss:.0f}% loss"
    if rtts:
        lo, avg, hi = min(rtts), sum(rtts) / len(rtts), max(rtts)
        summary.update(
            rtt_min_ms=round(lo * 1000, 3),
            rtt_avg_ms=round(avg * 1000, 3),
            rtt_max_ms=round(hi * 1000, 3),
        )
        text += (
            f", rtt min/avg/max = {lo * 1000:.1f}/{avg * 1000:.1f}/{hi * 1000:.1f} ms"
        )
    emit({"summary": summary}, text)
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if received else 1
