"""``dcis members``: the membership view of a running node.

    dcis members --config node.toml [--json]

Asks the node's membership service (``ipn:N.16``) through the app API: a
``query`` bundle from a temporary endpoint of the same node (the service
answers only its own node), then prints one line per member: node, state,
incarnation, how long ago it was last heard, and the resources it
advertises. ``--json`` prints ``{"members": [{"node", "state",
"incarnation", "last_heard_s", "resources": {"store_free_bytes",
"store_total_bytes", "cpu_load", "battery_pct", "sunlit",
"temperature_c"}}]}``.

``--set KEY=VALUE`` (repeatable) first advertises new resources through the
app API (``set_resources``): KEY is one of the resource fields above, VALUE
an integer, a number, ``true``/``false`` or ``null`` (unknown). The others
keep their values.

examples:
  dcis members --config examples/node1.toml
  dcis members --node 1 --json
  dcis members --node 1 --set battery_pct=72.5 --set sunlit=false
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from typing import Any

from dcis.consensus.membership.service import SERVICE
from dcis.consensus.membership.wire import (
    Kind,
    MemberRow,
    Message,
    decode_message_untrusted,
    encode_message,
)
from dcis.dtn.client import ClientError
from dcis.dtn.errors import DecodeError
from dcis.dtn.node.resources import RESOURCE_FIELDS
from dcis.tools.appclient import add_target_options, connect
from dcis.tools.cli import CommandError


def register(subparsers: Any) -> None:
    """Add the ``members`` subcommand."""
    p = subparsers.add_parser(
        "members", help="the node's membership view", description=__doc__
    )
    add_target_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the answer"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=resource_setting,
        help="advertise a resource field first (repeatable), e.g. cpu_load=0.4",
    )
    p.set_defaults(func=run)


def resource_setting(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` for ``--set`` (range checks are the node's)."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or key not in RESOURCE_FIELDS:
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with KEY one of {', '.join(RESOURCE_FIELDS)}, "
            f"got {text!r}"
        )
    low = raw.lower()
    if low in ("null", "none", ""):
        return key, None
    if low in ("true", "false"):
        return key, low == "true"
    try:
        return key, int(raw)
    except ValueError:
        pass
    try:
        return key, float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{key}: {raw!r} is not a number, true, false or null"
        ) from None


def row_json(r: MemberRow) -> dict[str, Any]:
    """One member as ``--json`` prints it."""
    res = r.resources
    return {
        "node": r.node,
        "state": r.state,
        "incarnation": r.incarnation,
        "last_heard_s": None if r.heard_ago_ms is None else r.heard_ago_ms / 1000,
        "resources": {
            "store_free_bytes": res.store_free_bytes,
            "store_total_bytes": res.store_total_bytes,
            "cpu_load": res.cpu_load,
            "battery_pct": res.battery_pct,
            "sunlit": res.sunlit,
            "temperature_c": res.temperature_c,
        },
    }


def row_text(r: MemberRow) -> str:
    """One member as a line of text."""
    res = r.resources
    heard = "never" if r.heard_ago_ms is None else f"{r.heard_ago_ms / 1000:.1f}s ago"
    sun = {None: "-", True: "sunlit", False: "eclipse"}[res.sunlit]
    batt = "-" if res.battery_pct is None else f"{res.battery_pct:.0f}%"
    temp = "-" if res.temperature_c is None else f"{res.temperature_c:.1f}C"
    return (
        f"{r.node:>6} {r.state:<11} inc={r.incarnation:<4} heard {heard:<12} "
        f"store {res.store_free_bytes}/{res.store_total_bytes} B free, cpu {res.cpu_load:.2f}, "
        f"battery {batt}, {sun}, {temp}"
    )


def query(args: argparse.Namespace) -> list[MemberRow]:
    """Ask the local node's membership service for its view."""
    with connect(args, timeout_s=max(10.0, args.timeout)) as client:
        try:
            if getattr(args, "set", None):
                client.set_resources(**dict(args.set))
            me = int(client.status()["node"])
            rng = random.Random(os.getpid() ^ time.time_ns())
            endpoint = client.register(f"ipn:{me}.{rng.randrange(10_000, 2**31)}")
            seq = rng.randrange(1, 2**32)
            client.send(
                f"ipn:{me}.{SERVICE}",
                encode_message(Message(kind=Kind.QUERY, seq=seq)),
                source=endpoint,
                lifetime_ms=int(args.timeout * 1000) + 1000,
            )
            deadline = time.monotonic() + args.timeout
            while True:
                b = client.receive(timeout_s=max(0.0, deadline - time.monotonic()))
                if b is None:
                    raise CommandError(
                        f"no answer from ipn:{me}.{SERVICE} within {args.timeout:g} s "
                        "(is the membership service enabled on the node?)"
                    )
                try:
                    msg = decode_message_untrusted(b.payload)
                except DecodeError:
                    continue
                if msg.kind == Kind.ANSWER and msg.seq == seq:
                    return list(msg.members)
        except ClientError as exc:
            raise CommandError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    """Print the membership view."""
    rows = query(args)
    if args.json:
        print(json.dumps({"members": [row_json(r) for r in rows]}))
    else:
        for r in rows:
            print(row_text(r))
    return 0
