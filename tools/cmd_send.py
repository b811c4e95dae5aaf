"""``dcis send DEST``: send a bundle through the local node's app API."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dtn.client import ClientError
from tools.appclient import add_target_options, connect
from tools.cli import CommandError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "send", help="send a bundle via the local node", description=__doc__
    )
    p.add_argument("destination", help='destination EID, e.g. "ipn:5.1"')
    src = p.add_mutually_exclusive_group()
    src.add_argument("--payload", help="payload text (UTF-8)")
    src.add_argument("--file", help="payload file ('-' for stdin, the default)")
    p.add_argument("--source", help="source endpoint (default ipn:N.0 of the node)")
    p.add_argument(
        "--lifetime-ms", type=int, help="bundle lifetime in ms (default: the node's)"
    )
    p.add_argument(
        "--count", type=int, default=1, help="send the payload this many times"
    )
    add_target_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise CommandError("--count must be >= 1")
    if args.payload is not None:
        payload = args.payload.encode()
    elif args.file and args.file != "-":
        try:
            with open(args.file, "rb") as f:
                payload = f.read()
        except OSError as exc:
            raise CommandError(f"cannot read {args.file}: {exc.strerror}") from exc
    else:
        payload = sys.stdin.buffer.read()
    with connect(args) as client:
        for _ in range(args.count):
            try:
                key = client.send(
                    args.destination,
                    payload,
                    source=args.source,
                    lifetime_ms=args.lifetime_ms,
                )
            except ClientError as exc:
                raise CommandError(str(exc)) from exc
            print(key)
    return 0
