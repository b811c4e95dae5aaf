"""``dcis send DEST [FILE ...]``: send bundles through the local node's app API.

Each FILE is one bundle's payload, streamed from disk to the node, never
read into memory whole ('-' reads stdin to its end); ``--payload
TEXT`` sends TEXT; ``--lines`` makes every line of stdin a bundle; with none
of these, stdin is one payload. ``--repeat N`` sends each payload N times.
Everything goes over one connection, and each key is printed once the node
has the bundle durably stored.

examples:
  dcis send ipn:2.1 --config examples/node1.toml --payload "hello"
  dcis send ipn:2.1 examples/hello.txt --node 1 --repeat 3 --json
  printf 'a\\nb\\n' | dcis send ipn:2.1 --node 1 --lines
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from dataclasses import dataclass
from typing import Any

from dcis.dtn.client import Client, ClientError
from dcis.tools.appclient import add_target_options, connect
from dcis.tools.argtypes import int_in
from dcis.tools.cli import CommandError, OperationFailed

MAX_PAYLOAD_BYTES = 64 * 1024 * 1024 - 1024
"""The app API carries at most 64 MiB per message."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "send",
        help="send bundles via the local node",
        description=__doc__,
    )
    p.add_argument("destination", help='destination EID, e.g. "ipn:2.1"')
    p.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="payload files, one bundle each, right after DEST (or --file anywhere)",
    )
    p.add_argument("--payload", help="payload text (UTF-8)")
    p.add_argument(
        "--file", action="append", default=[], help="a payload file (repeatable)"
    )
    p.add_argument("--lines", action="store_true", help="one bundle per line of stdin")
    p.add_argument("--source", help="source endpoint (default ipn:N.0 of the node)")
    p.add_argument(
        "--lifetime-ms",
        type=int_in(1, 2**63 - 1),
        help="bundle lifetime in ms (default: the node's)",
    )
    p.add_argument(
        "--repeat",
        "--count",
        dest="repeat",
        type=int_in(1, 1_000_000),
        default=1,
        metavar="N",
        help="send each payload N times (default 1)",
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object per bundle sent"
    )
    add_target_options(p)
    p.set_defaults(func=run)


def _read(path: str) -> bytes | FileBody:
    """stdin's bytes, or a regular file's path and size: a file is streamed
    when it is sent (``Client.send_file``), never read into memory whole."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return FileBody(path, st.st_size)
        with open(path, "rb") as f:
            return f.read(MAX_PAYLOAD_BYTES + 1)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class FileBody:
    """A payload sent straight from a regular file."""

    path: str
    size: int

    def __len__(self) -> int:
        return self.size


def payloads(args: argparse.Namespace) -> list[tuple[str, bytes | FileBody]]:
    """(label, payload) pairs in the order given."""
    out: list[tuple[str, bytes | FileBody]] = []
    if args.payload is not None:
        # The bytes given on the command line: argv that is not valid UTF-8
        # reaches Python as lone surrogates, which encode back to those bytes.
        out.append(("--payload", args.payload.encode("utf-8", "surrogateescape")))
    for path in [*args.file, *args.files]:
        out.append((path, _read(path)))
    if args.lines:
        for i, line in enumerate(sys.stdin.buffer.read().splitlines(), start=1):
            out.append((f"stdin line {i}", line))
    elif not out:
        out.append(("stdin", sys.stdin.buffer.read()))
    for label, data in out:
        if len(data) > MAX_PAYLOAD_BYTES:
            raise CommandError(f"{label}: larger than {MAX_PAYLOAD_BYTES} bytes")
    return out


def run(args: argparse.Namespace) -> int:
    items = payloads(args)
    sent = 0
    with connect(args) as client:
        for label, data in items:
            for _ in range(args.repeat):
                try:
                    key = _send(client, args, data)
                except ClientError as exc:
                    if sent:
                        raise OperationFailed(f"{exc} (after {sent} sent)") from None
                    raise CommandError(str(exc)) from None
                sent += 1
                if args.json:
                    print(
                        json.dumps(
                            {"bundle_key": key, "payload": label, "size": len(data)}
                        ),
                        flush=True,
                    )
                else:
                    print(key, flush=True)
    return 0


def _send(client: Client, args: argparse.Namespace, data: bytes | FileBody) -> str:
    if isinstance(data, bytes):
        return client.send(
            args.destination, data, source=args.source, lifetime_ms=args.lifetime_ms
        )
    try:
        with open(data.path, "rb") as f:
            return client.send_file(
                args.destination,
                f,
                size=data.size,
                source=args.source,
                lifetime_ms=args.lifetime_ms,
            )
    except OSError as exc:
        raise ClientError(f"cannot read {data.path}: {exc.strerror or exc}") from None
