"""``dcis ping NODE``: bundle echo through the DTN, with round-trip time.

Sends bundles to the echo endpoint ``ipn:NODE.7`` of the target (every
``dtn-node`` runs one) from a temporary endpoint of the local node and waits
for each to come back.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import time
from typing import Any

from dtn.client import ClientError
from dtn.runtime.node import ECHO_SERVICE
from tools.appclient import add_target_options, connect
from tools.cli import CommandError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ping", help="bundle echo with round-trip time", description=__doc__
    )
    p.add_argument("target", help="node number or EID of its echo endpoint (ipn:N.7)")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between pings")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each echo"
    )
    p.add_argument("--size", type=int, default=64, help="payload bytes (>= 16)")
    add_target_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dest = (
        f"ipn:{int(args.target)}.{ECHO_SERVICE}"
        if str(args.target).isdigit()
        else str(args.target)
    )
    if args.size < 16 or args.count < 1:
        raise CommandError("--size must be >= 16 and --count >= 1")
    received = 0
    rtts: list[float] = []
    with connect(args, timeout_s=max(10.0, args.timeout)) as client:
        try:
            me = int(client.status()["node"])
            endpoint = client.register(
                f"ipn:{me}.{random.Random(os.getpid() ^ time.time_ns()).randrange(10_000, 2**31)}"
            )
            for i in range(args.count):
                t0 = time.perf_counter()
                payload = struct.pack(">QQ", os.getpid(), i) + bytes(args.size - 16)
                client.send(
                    dest,
                    payload,
                    source=endpoint,
                    lifetime_ms=int(args.timeout * 1000) + 1000,
                )
                deadline = t0 + args.timeout
                while True:
                    b = client.receive(
                        timeout_s=max(0.0, deadline - time.perf_counter())
                    )
                    if b is None:
                        print(f"seq={i} timeout after {args.timeout:.1f} s")
                        break
                    if b.payload[:16] == payload[:16]:
                        rtt = time.perf_counter() - t0
                        rtts.append(rtt)
                        received += 1
                        print(
                            f"{len(b.payload)} bytes from {b.source}: seq={i} rtt={rtt * 1000:.1f} ms",
                            flush=True,
                        )
                        break
                if i + 1 < args.count:
                    time.sleep(max(0.0, args.interval - (time.perf_counter() - t0)))
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
    loss = 100.0 * (args.count - received) / args.count
    summary = f"{args.count} sent, {received} received, {loss:.0f}% loss"
    if rtts:
        summary += f", rtt min/avg/max = {min(rtts) * 1000:.1f}/{sum(rtts) / len(rtts) * 1000:.1f}/{max(rtts) * 1000:.1f} ms"
    print(summary)
    return 0 if received else 1
