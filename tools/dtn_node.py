"""``dtn-node --config node.toml``: run one DCiS bundle node as a daemon.

Logs are structured: one JSON object per line on stderr (``ts``, ``level``,
``node``, ``event`` and the event's fields). SIGINT/SIGTERM stop the node
cleanly; bundles not yet forwarded stay in the store for the next start.
SIGHUP reloads the contact plan (so does an edit of the file). A bad
configuration exits 2 with one ``error:`` line naming the key.

At start the daemon logs its effective configuration (event ``config``:
addresses, state directory, store, plan, neighbours), with the defaults
filled in, and warns loudly (event ``store_in_memory``) when its store keeps
nothing across restarts. Every key of ``node.toml`` is in spec/config.md.

Example::

    dtn-node --config examples/node1.toml --log-level debug

Exit status: 0 stopped by a signal, 1 the node failed while running, 2 a
usage or configuration error.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio

from dcis.dtn.errors import DtnError
from dcis.dtn.runtime import ConfigError, Node, NodeConfig, load_config
from dcis.dtn.runtime.config import LOG_LEVELS, default_app_socket, prepare_state_dir
from dcis.tools.cli import Parser, check_argv, say_error, tolerant_output
from dcis.tools.version import version_string


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: ts, level, node, event, then the fields."""

    def __init__(self, node: int) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(
                record.created, datetime.UTC
            ).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "node": self.node,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def effective_config(config: NodeConfig) -> dict[str, Any]:
    """What the node will run with, defaults filled in (the ``config`` log
    event): enough to see at a glance where it listens and stores."""
    return {
        "eid": config.eid,
        "listen": f"{config.listen[0]}:{config.listen[1]}",
        "app_socket": config.app_socket,
        "state_dir": config.state_dir,
        "store": config.store_path,
        "store_limit_bytes": config.store_limit_bytes,
        "store_synchronous": config.store_synchronous,
        "plan": config.plan,
        "mtcp_listen": None
        if config.mtcp_listen is None
        else f"{config.mtcp_listen[0]}:{config.mtcp_listen[1]}",
        "neighbours": [
            {
                "node": nb.node,
                "address": f"{nb.address[0]}:{nb.address[1]}",
                "cla": nb.cla,
            }
            for nb in config.neighbours
        ],
        "tcpcl_listen": None
        if config.tcpcl_listen is None
        else f"{config.tcpcl_listen[0]}:{config.tcpcl_listen[1]}",
        "dtn_routes": dict(config.dtn_routes),
        "services": ["echo", *config.service_factories],
        "security": config.security is not None and config.security.enabled,
        "log_level": config.log_level,
    }


def setup_logging(config: NodeConfig) -> logging.Logger:
    """A logger writing JSON lines to stderr at the configured level."""
    log = logging.getLogger(f"dcis.dtn.node.{config.node}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter(config.node))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(config.log_level.upper())
    return log


async def serve(config: NodeConfig, log: logging.Logger) -> None:
    """Run ``config``'s node until SIGINT or SIGTERM; SIGHUP reloads the
    contact plan."""
    node = Node(config, log=log)
    with trio.open_signal_receiver(
        signal.SIGINT, signal.SIGTERM, signal.SIGHUP
    ) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)

            async def on_signal() -> None:
                async for signum in signals:
                    log.info(
                        "signal",
                        extra={"fields": {"signal": signal.Signals(signum).name}},
                    )
                    if signum == signal.SIGHUP:
                        node.reload_plan()
                        continue
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(on_signal)


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (trio
    wraps a task's error in a group), or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _pin_mmap_threshold() -> None:
    """Pin glibc's mmap threshold at 1 MiB. glibc raises it each time a
    large block is freed; after that the app API's 1 MiB reads land in the
    heap among bundle-sized blocks, and a sending daemon's RSS grew ~6 KB
    per bundle without end (bench/soak.py --good-only: +19 MiB in 100 s at
    40 bundles/s; pinned: flat). At 1 MiB those reads (1 MiB plus the bytes
    header) stay mmapped while payloads below 1 MiB stay in the heap: pinned
    at 128 KiB, every 64 KB..1 MB payload and copy was an mmap, page faults
    and a munmap, which doubled the CPU per 1 MB bundle (issue 18,
    spec/performance.md; the soak stays flat: +0.2% / +1.5% / +0.0%).
    Pinning also stops glibc raising the trim threshold, which then stays
    at 128 KiB: every 1 MB payload freed at the top of the heap was handed
    back to the kernel and the next one faulted its ~250 pages in again
    (~0.5 ms per 1 MB copy; node 1 took ~250 page faults per 1 MB bundle).
    It is set at 16 MiB: the heap keeps at most that much free memory.
    Not glibc: nothing to do."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 16 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    _pin_mmap_threshold()
    parser = Parser(
        prog="dtn-node",
        description="Run a DCiS bundle node until SIGINT or SIGTERM.",
        epilog="example: dtn-node --config examples/node1.toml  "
        "(every key of node.toml: spec/config.md). "
        "Exit status: 0 stopped, 1 failed while running, 2 usage or configuration error.",
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="path to node.toml"
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="override the file's log_level (default: the file's, else info)",
    )
    parser.add_argument(
        "--version", action="version", version=version_string("dtn-node")
    )
    tolerant_output()
    check_argv(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.log_level is not None:
            config = dataclasses.replace(config, log_level=args.log_level)
        if config.app_socket is None:
            config = dataclasses.replace(
                config, app_socket=default_app_socket(config.node)
            )
        prepare_state_dir(config)
    except ConfigError as exc:
        say_error(str(exc))
        return 2
    log = setup_logging(config)
    log.info("config", extra={"fields": effective_config(config)})
    if config.store_path == ":memory:":
        log.warning(
            "store_in_memory",
            extra={
                "fields": {
                    "detail": '[store] path is ":memory:": every bundle this node holds is LOST when it stops; '
                    "remove the key to store under state_dir"
                }
            },
        )
    try:
        return _run(config, log)
    finally:
        # The handler holds this process's stderr: a later node of the same
        # number in this process (tests, embedding) must not write to it.
        log.handlers.clear()


def _run(config: NodeConfig, log: logging.Logger) -> int:
    try:
        trio.run(serve, config, log)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        leaf = _single(exc)
        if isinstance(leaf, DtnError):
            print(f"error: {leaf}", file=sys.stderr)
            return 2
        if isinstance(leaf, OSError):
            print(f"error: {leaf}", file=sys.stderr)
            return 1
        if not isinstance(leaf, Exception):
            raise
        # A bug: one structured log line with the traceback, exit 1; the
        # store keeps every bundle for the next start.
        log.error("crashed", exc_info=leaf, extra={"fields": {"error": repr(leaf)}})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
