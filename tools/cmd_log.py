"""``dcis log``: the replicated key-value log of the local node.

``append KEY VALUE [--cas OLD]`` submits a put (or, with ``--cas``, a
compare-and-set that commits only if KEY's committed value is OLD; ``--cas
''`` means "absent") as a tentative entry of the node and prints its id;
``get KEY [--level committed|tentative]`` prints the value; ``status
[--json]`` prints the term, leader, commit index, tentative count, members
and state hash as the node's log sees them.

examples:
  dcis log append sat/7/mode safe --node 1
  dcis log append lock/a me --cas '' --node 1
  dcis log get sat/7/mode --level tentative --node 2
  dcis log status --json --node 3
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dcis.consensus.log.api import CompareAndSet, Level, Op, Put
from dcis.consensus.logclient import LogClient
from dcis.dtn.client import ClientError
from dcis.tools.appclient import add_target_options, connect
from dcis.tools.argtypes import float_in
from dcis.tools.cli import CommandError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "log", help="the replicated key-value log", description=__doc__
    )
    sub = p.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    a = sub.add_parser(
        "append",
        help="submit a put or compare-and-set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("key")
    a.add_argument("value")
    a.add_argument(
        "--cas",
        metavar="OLD",
        help="commit only if KEY's committed value is OLD ('' = absent)",
    )
    g = sub.add_parser(
        "get",
        help="read a key",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("key")
    g.add_argument("--level", choices=["committed", "tentative"], default="committed")
    s = sub.add_parser(
        "status",
        help="term, leader, commit index, members, state hash",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--json", action="store_true", help="one JSON object")
    for q in (a, g, s):
        q.add_argument(
            "--timeout",
            type=float_in(0.001, 86_400.0),
            default=10.0,
            metavar="SECONDS",
            help="seconds to wait for the log service (default 10)",
        )
        add_target_options(q)
        q.set_defaults(func=run)


def _op(args: argparse.Namespace) -> Op:
    value = str(args.value).encode()
    if args.cas is None:
        return Put(str(args.key), value)
    old = str(args.cas).encode() or None
    return CompareAndSet(str(args.key), old, value)


def run(args: argparse.Namespace) -> int:
    with connect(args, timeout_s=max(10.0, args.timeout)) as client:
        try:
            log = LogClient(client, timeout_s=args.timeout)
            if args.log_command == "append":
                eid = log.append(_op(args))
                print(f"{eid.origin}.{eid.seq} tentative")
            elif args.log_command == "get":
                value = log.get(str(args.key), Level(args.level))
                if value is None:
                    print(f"{args.key}: absent", file=sys.stderr)
                    return 1
                sys.stdout.write(value.decode("utf-8", "replace") + "\n")
            else:
                status = log.status()
                if args.json:
                    print(json.dumps(status, sort_keys=True))
                else:
                    for k in (
                        "node",
                        "role",
                        "term",
                        "leader",
                        "commit_index",
                        "tentative_count",
                        "members",
                        "state_hash",
                    ):
                        print(f"{k}:", status.get(k))
        except ClientError as exc:
            raise CommandError(str(exc)) from None
    return 0
