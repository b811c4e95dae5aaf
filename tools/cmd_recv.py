"""``dcis recv ENDPOINT``: receive the bundles of a local endpoint.

Keeps receiving until ``--count`` bundles arrived, ``--timeout`` seconds
passed, or Ctrl-C. Each payload is printed as it arrives (``--json``: one
object per bundle). Exit status 0 when it stopped by count or Ctrl-C, 1 when
``--timeout`` passed before ``--count`` bundles came. The node's echo
endpoint (ipn:N.7, which answers ``dcis ping``) cannot be taken over.

examples:
  dcis recv ipn:2.1 --config examples/node2.toml
  dcis recv ipn:2.1 --node 2 --count 1 --timeout 30 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from dcis.dtn.client import ClientError
from dcis.tools.appclient import add_target_options, connect
from dcis.tools.argtypes import float_in, int_in
from dcis.tools.cli import EXIT_INTERRUPTED, CommandError, OperationFailed


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "recv", help="receive bundles of a local endpoint", description=__doc__
    )
    p.add_argument("endpoint", help='local endpoint, e.g. "ipn:2.1"')
    p.add_argument(
        "--count",
        type=int_in(0, 2**63 - 1),
        default=0,
        metavar="N",
        help="stop after N bundles (default 0: until Ctrl-C)",
    )
    p.add_argument(
        "--timeout",
        type=float_in(0.0, 10 * 365 * 86_400.0),
        metavar="SECONDS",
        help="stop after this many seconds (exit 1 if --count was not reached)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per bundle (payload as text or hex)",
    )
    add_target_options(p)
    p.set_defaults(func=run)


def _print(b: Any, as_json: bool) -> None:
    if as_json:
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


def run(args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    got = 0
    with connect(args) as client:
        try:
            client.register(args.endpoint)
        except ClientError as exc:
            raise CommandError(str(exc)) from None
        try:
            while args.count == 0 or got < args.count:
                left = (
                    None if deadline is None else max(0.0, deadline - time.monotonic())
                )
                b = client.receive(timeout_s=left)
                if b is None:
                    if args.count == 0:
                        return 0  # "until --timeout": it passed
                    raise OperationFailed(
                        f"timed out after {got} of {args.count} bundle(s)"
                    )
                got += 1
                _print(b, args.json)
        except KeyboardInterrupt:
            print(f"received {got} bundle(s)", file=sys.stderr)
            return EXIT_INTERRUPTED if args.count else 0
        except ClientError as exc:
            raise OperationFailed(f"{exc} (after {got} bundle(s))") from None
    return 0
