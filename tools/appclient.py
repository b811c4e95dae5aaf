"""Shared options of the ``dcis`` commands that talk to a local node."""

from __future__ import annotations

import argparse
import time

from dcis.dtn.client import Client, ClientError
from dcis.dtn.runtime.config import ConfigError, default_app_socket, load_config
from dcis.tools.argtypes import float_in, int_in
from dcis.tools.cli import CommandError


def add_target_options(p: argparse.ArgumentParser) -> None:
    """``--socket`` / ``--config`` / ``--node``: which node's app API to use."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--socket", help="the node's app API socket")
    g.add_argument("--config", help="the node's node.toml (its app_socket is used)")
    g.add_argument(
        "--node",
        type=int_in(1, 2**64 - 1),
        help="node number (default socket path of that node)",
    )
    p.add_argument(
        "--wait",
        dest="node_wait_s",
        type=float_in(0.0, 3600.0),
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the node to come up (default 0: fail at once)",
    )


def socket_path(args: argparse.Namespace) -> str:
    """Resolve the app API socket path from the parsed options."""
    if args.socket:
        return str(args.socket)
    if args.config:
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        return cfg.app_socket or default_app_socket(cfg.node)
    if args.node is not None:
        return default_app_socket(args.node)
    raise CommandError("say which node: --socket PATH, --config node.toml or --node N")


def connect(args: argparse.Namespace, *, timeout_s: float = 10.0) -> Client:
    """Open a client, retrying for ``--wait`` seconds while the node is not
    up yet; a failure becomes a one-line CommandError."""
    path = socket_path(args)
    deadline = time.monotonic() + getattr(args, "node_wait_s", 0.0)
    while True:
        try:
            return Client(path, timeout_s=timeout_s)
        except ClientError as exc:
            if time.monotonic() >= deadline:
                raise CommandError(str(exc)) from exc
        time.sleep(0.1)
