"""``dcis bundles``: list the bundles a local node stores (like ION's bplist).

One line per bundle, oldest first: its key (``source|creation ms|sequence``,
plus ``|offset|length`` for a fragment), destination, state (``pending``
waits for a route or contact, ``forwarding`` is on a link, ...), size, the
node it came from and when it expires. ``--json`` prints the node's answer
as it is (``total`` and ``bundles``).

examples:
  dcis bundles --config examples/node2.toml
  dcis bundles --node 1 --limit 20 --json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dcis.dtn.client import ClientError
from dcis.dtn.time import DTN_EPOCH_UNIX_S
from dcis.tools.appclient import add_target_options, connect
from dcis.tools.argtypes import int_in
from dcis.tools.cli import CommandError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bundles", help="list the bundles a local node stores", description=__doc__
    )
    p.add_argument(
        "--limit",
        type=int_in(0, 10_000),
        default=1000,
        metavar="N",
        help="list at most N bundles (default 1000; the total is always shown)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    add_target_options(p)
    p.set_defaults(func=run)


def _when(dtn_ms: int) -> str:
    import datetime as dt

    try:
        t = dt.datetime.fromtimestamp(DTN_EPOCH_UNIX_S + dtn_ms / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"DTN {dtn_ms} ms"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            got = client.bundles(limit=args.limit)
        except ClientError as exc:
            raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps(got, sort_keys=True))
        return 0
    rows = got["bundles"]
    print(
        f"{got['total']} bundle(s) stored"
        + (f", {len(rows)} shown" if len(rows) < got["total"] else "")
    )
    for b in rows:
        came = "local" if b["from"] is None else f"from {b['from']}"
        print(
            f"{b['key']}  to {b['destination']}  {b['state']}  {b['size']} B  {came}  expires {_when(b['expiry_ms'])}"
        )
    return 0
