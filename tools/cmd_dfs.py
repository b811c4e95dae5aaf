"""``dcis put | get | ls | stat | rm``: the object store of a local node.

    dcis put FILE NAME [--k K --n N]     store FILE as NAME
    dcis get NAME [-o FILE]              fetch NAME (to stdout without -o)
    dcis ls [PREFIX] [--json]            list objects
    dcis stat NAME [--json]              k, n, size, holders, each share's state
    dcis rm NAME                         remove NAME

put and get draw a progress bar (bytes, shares, rate) on a terminal, and
stay quiet with ``--json`` or when stderr is not a terminal.

examples:
  dcis put image.raw sat3/image-0042 --k 3 --n 10 --node 1
  dcis get sat3/image-0042 -o image.raw --node 2
  dcis ls sat3/ --json --node 1
  dcis stat sat3/image-0042 --node 1
  dcis rm sat3/image-0042 --node 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dcis.dfs.api import Dfs, Progress
from dcis.dfs.core.errors import DfsError
from dcis.dtn.client import ClientError
from dcis.tools.appclient import add_target_options, connect
from dcis.tools.cli import CommandError


def register(subparsers: Any) -> None:
    """Add the five object store subcommands."""
    p = subparsers.add_parser(
        "put", help="store a file in the object store", description=__doc__
    )
    p.add_argument("file", help="the file to store ('-' reads stdin)")
    p.add_argument("name", help="the object's name")
    p.add_argument(
        "--k", type=int, help="shares needed to read (default: the node's, 3)"
    )
    p.add_argument("--n", type=int, help="shares written (default: the node's, 10)")
    p.add_argument(
        "--confirm-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for holders to confirm their shares",
    )
    p.add_argument(
        "--json", action="store_true", help="print the result as JSON, no progress"
    )
    _common(p, run_put)

    p = subparsers.add_parser("get", help="fetch an object", description=__doc__)
    p.add_argument("name")
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.add_argument(
        "--json", action="store_true", help="print a JSON summary, no progress"
    )
    _common(p, run_get)

    p = subparsers.add_parser("ls", help="list objects", description=__doc__)
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--json", action="store_true")
    _common(p, run_ls)

    p = subparsers.add_parser(
        "stat", help="an object's shares and holders", description=__doc__
    )
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    _common(p, run_stat)

    p = subparsers.add_parser("rm", help="remove an object", description=__doc__)
    p.add_argument("name")
    _common(p, run_rm)


def _common(
    p: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]
) -> None:
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the node"
    )
    add_target_options(p)
    p.set_defaults(func=func)


@contextmanager
def _fs(args: argparse.Namespace) -> Iterator[Dfs]:
    client = connect(args, timeout_s=30.0)
    try:
        yield Dfs(client, timeout_s=args.timeout)
    except (DfsError, ClientError, TimeoutError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    finally:
        client.close()


@contextmanager
def _progress(args: argparse.Namespace, label: str) -> Iterator[Progress | None]:
    """A rich progress bar on a terminal; None (quiet) otherwise."""
    if getattr(args, "json", False) or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TransferSpeedColumn,
    )
    from rich.progress import (
        Progress as Bar,
    )

    with Bar(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[shares]}"),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None, shares="")

        def update(what: str, done: int, total: int) -> None:
            if what == "bytes":
                bar.update(task, completed=done, total=total if total >= 0 else None)
            else:
                bar.update(task, shares=f"shares {done}/{total}")

        yield update


def run_put(args: argparse.Namespace) -> int:
    """``dcis put FILE NAME``: a file is read and sent 1 MiB at a time
    (stdin, whose size is unknown, is read whole first)."""
    with contextlib.ExitStack() as files:
        try:
            source: Any = (
                sys.stdin.buffer.read()
                if args.file == "-"
                else files.enter_context(Path(args.file).open("rb"))
            )
        except OSError as exc:
            raise CommandError(
                f"cannot read {args.file}: {exc.strerror or exc}"
            ) from exc
        with _fs(args) as fs, _progress(args, f"put {args.name}") as progress:
            res = fs.put(
                args.name,
                source,
                k=args.k,
                n=args.n,
                progress=progress,
                wait_placed_s=args.confirm_wait,
            )
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        print(
            f"put {res['name']}: {res['size']} bytes, k={res['k']} n={res['n']}, "
            f"object {res['object_id']}, shares placed {res['placed']}/{res['n']}"
        )
    return 0


def run_get(args: argparse.Namespace) -> int:
    """``dcis get NAME [-o FILE]``: with ``-o`` each piece is written at
    its place as it arrives; to stdout in order (a piece that arrives early
    waits for the ones before it)."""
    size = 0
    with _fs(args) as fs, _progress(args, f"get {args.name}") as progress:
        if args.output:
            with contextlib.ExitStack() as files:
                try:
                    out = files.enter_context(Path(args.output).open("wb"))
                except OSError as exc:
                    raise CommandError(
                        f"cannot write {args.output}: {exc.strerror or exc}"
                    ) from exc
                size = fs.get_into(args.name, out, progress=progress)
        else:
            for piece in fs.get_stream(args.name, progress=progress):
                size += len(piece)
                if not args.json:
                    sys.stdout.buffer.write(piece)
            sys.stdout.flush()
    if args.json:
        print(json.dumps({"name": args.name, "size": size, "output": args.output}))
    return 0


def run_ls(args: argparse.Namespace) -> int:
    """``dcis ls [PREFIX]``."""
    with _fs(args) as fs:
        entries = fs.ls(args.prefix)
    if args.json:
        print(json.dumps(entries, sort_keys=True))
        return 0
    for e in entries:
        print(f"{e['size']:>12}  {e['k']}/{e['n']}  {e['name']}")
    return 0


def run_stat(args: argparse.Namespace) -> int:
    """``dcis stat NAME``."""
    with _fs(args) as fs:
        st = fs.stat(args.name)
    if args.json:
        print(json.dumps(st, sort_keys=True))
        return 0
    print(
        f"{st['name']}: {st['size']} bytes, k={st['k']} n={st['n']}, object {st['object_id']}"
    )
    print(f"placement generation {st['generation']}, holders {st['holders']}")
    for s in st["shares"]:
        print(f"  share {s['share']:>3}  node {s['holder']:>5}  {s['state']}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    """``dcis rm NAME``."""
    with _fs(args) as fs:
        res = fs.rm(args.name)
    print(f"removed {res['name']} (object {res['object_id']})")
    return 0
