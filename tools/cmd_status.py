"""``dcis status``: the local node's counters, store and neighbours.

examples:
  dcis status --config examples/node1.toml
  dcis status --node 1 --json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dcis.dtn.client import ClientError
from dcis.tools.appclient import add_target_options, connect
from dcis.tools.cli import CommandError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "status", help="show the local node's status", description=__doc__
    )
    p.add_argument("--json", action="store_true", help="print the status map as JSON")
    add_target_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            st = client.status()
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    print(
        f"node {st['node']} ({st['eid']})  udp {st['udp']}  up {st['uptime_s']:.0f} s"
    )
    print(
        f"store: {st['stored']} bundles, {st['store_used_bytes']} of {st['store_limit_bytes']} bytes"
    )
    if st["endpoints"]:
        print("endpoints: " + ", ".join(st["endpoints"]))
    counters = st["counters"]
    print(
        "counters: " + "  ".join(f"{k}={v}" for k, v in sorted(counters.items()) if v)
    )
    for n, nb in sorted(st["neighbours"].items(), key=lambda kv: int(kv[0])):
        if nb["cla"] == "tcpcl":
            # a TCPCLv4 neighbour has a session, not a contact
            sess = nb.get("session")
            state = f"session={sess}" if sess else "no session"
        else:
            state = "up" if nb.get("in_contact") else "down"
        extra = (
            f" peer={nb['peer']} in_flight={nb['in_flight']} acked={nb['acked']} retransmits={nb['retransmits']}"
            if nb["cla"] == "udp"
            else ""
        )
        if nb["cla"] == "ltp":
            extra = (
                f" engine={nb['engine_id']} sessions_out={nb['sessions_out']}"
                f" sessions_in={nb['sessions_in']} blocks_sent={nb['ltp_blocks_sent']}"
                f" blocks_received={nb['ltp_blocks_received']} queued={nb['queued_bundles']}"
            )
        if nb["cla"] == "tcpcl":
            extra = (
                f" tls={'yes' if nb.get('tls') else 'no'}"
                f" in_flight={nb.get('in_flight', 0)} queued={nb.get('queued', 0)}"
            )
        print(f"  neighbour {n}: {nb['cla']} {nb['address']} {state}{extra}")
    return 0
