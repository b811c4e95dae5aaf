"""``dcis recv ENDPOINT``: receive bundles of a local endpoint."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from dtn.client import ClientError
from tools.appclient import add_target_options, connect
from tools.cli import CommandError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "recv", help="receive bundles of a local endpoint", description=__doc__
    )
    p.add_argument("endpoint", help='local endpoint, e.g. "ipn:5.1"')
    p.add_argument(
        "--count", type=int, default=1, help="stop after this many bundles (0: never)"
    )
    p.add_argument(
        "--timeout", type=float, help="give up after this many seconds (exit 1)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per bundle (payload as text or hex)",
    )
    add_target_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    got = 0
    with connect(args) as client:
        try:
            client.register(args.endpoint)
            while args.count == 0 or got < args.count:
                left = (
                    None if deadline is None else max(0.0, deadline - time.monotonic())
                )
                b = client.receive(timeout_s=left)
                if b is None:
                    print(f"error: timed out after {got} bundle(s)", file=sys.stderr)
                    return 1
                got += 1
                if args.json:
                    try:
                        text: dict[str, str] = {"payload": b.payload.decode()}
                    except UnicodeDecodeError:
                        text = {"payload_hex": b.payload.hex()}
                    print(
                        json.dumps(
                            {
                                "source": b.source,
                                "bundle_key": b.bundle_key,
                                "creation_ms": b.creation_ms,
                                "size": len(b.payload),
                                **text,
                            }
                        ),
                        flush=True,
                    )
                else:
                    sys.stdout.buffer.write(
                        b.payload + (b"" if b.payload.endswith(b"\n") else b"\n")
                    )
                    sys.stdout.flush()
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
    return 0
