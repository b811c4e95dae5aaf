"""Shared options of the ``dcis`` commands that talk to a local node."""

from __future__ import annotations

import argparse

from dtn.client import Client, ClientError
from dtn.runtime.config import ConfigError, default_app_socket, load_config
from tools.cli import CommandError


def add_target_options(p: argparse.ArgumentParser) -> None:
    """``--socket`` / ``--config`` / ``--node``: which node's app API to use."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--socket", help="the node's app API socket")
    g.add_argument("--config", help="the node's node.toml (its app_socket is used)")
    g.add_argument(
        "--node", type=int, help="node number (default socket path of that node)"
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
    """Open a client; a failure becomes a one-line CommandError."""
    try:
        return Client(socket_path(args), timeout_s=timeout_s)
    except ClientError as exc:
        raise CommandError(str(exc)) from exc
