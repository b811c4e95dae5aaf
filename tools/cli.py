"""``dcis``: the operator's command.

Each subcommand lives in its own ``tools/cmd_*.py`` module exposing
``register(subparsers)``; that function adds a parser whose ``func`` default
takes the parsed ``argparse.Namespace`` and returns an exit status.

Conventions every subcommand follows:

- exit status 0: done; 1: the operation failed (no route, timeout, the node
  is not running, ...); 2: a usage or input error (bad flag, unreadable
  file, invalid bundle). Ctrl-C exits 130 after printing what was done.
- a failure prints exactly one line on stderr beginning ``error:``; never a
  traceback (an unexpected one is a bug: ``error: internal error ...``, exit
  70, and ``-v`` shows the traceback).
- ``--json`` on every command that reports; ``--help`` with an example.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from dcis.tools.version import version_string

# One line per subcommand module; each owner adds its own.
COMMAND_MODULES: tuple[str, ...] = (
    "dcis.tools.cmd_bundle",
    "dcis.tools.cmd_route",
    "dcis.tools.cmd_plan",
    "dcis.tools.cmd_sim",
    "dcis.tools.cmd_keys",
    "dcis.tools.cmd_send",
    "dcis.tools.cmd_recv",
    "dcis.tools.cmd_ping",
    "dcis.tools.cmd_status",
    "dcis.tools.cmd_bundles",
    "dcis.tools.cmd_testbed",
    "dcis.tools.cmd_dfs",
    "dcis.tools.cmd_members",
    "dcis.tools.cmd_log",
)


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130

EPILOG = (
    "exit status: 0 done, 1 the operation failed (no route, timeout, node not "
    "running), 2 usage or input error. Every command has --help with an example."
)


class CommandError(Exception):
    """Raised by a subcommand for a user-facing failure (exit 2, ``error:`` line):
    bad input, an unreadable file, an invalid value."""

    exit_status = EXIT_USAGE


class OperationFailed(CommandError):
    """The input was fine but the operation did not succeed (exit 1): no
    route, a timeout, the node is not running."""

    exit_status = EXIT_FAILED


class Parser(argparse.ArgumentParser):
    """argparse with the ``dcis`` error style: one ``error:`` line, exit 2
    (argparse's usage block is left to ``--help``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        say_error(f"{message} (see: {self.prog} --help)")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dcis",
        description="The DCiS operator's command: bundles, plans, routes, a local node.",
        epilog="example: dcis route --plan tools/plans/chain4.ionrc --from 1 --to 4\n"
        + EPILOG,
    )
    parser.add_argument("--version", action="version", version=version_string("dcis"))
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail on stderr (-vv: debug; with a bug, its traceback)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only errors on stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def say_error(message: str) -> None:
    """Print the one ``error:`` line (undecodable bytes from the command line
    are shown escaped, never a UnicodeEncodeError)."""
    line = f"error: {message}".encode("utf-8", "backslashreplace").decode("utf-8")
    print(line, file=sys.stderr)


def check_argv(argv: Sequence[str]) -> None:
    """A NUL byte cannot come from a shell and no path may hold one: refuse
    it up front (exit 2) rather than deep inside a file call."""
    for arg in argv:
        if "\0" in arg:
            say_error(f"argument {arg!r} contains a NUL byte")
            sys.exit(EXIT_USAGE)


def tolerant_output() -> None:
    """File names from the command line may hold undecodable bytes: print
    them escaped instead of failing with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    tolerant_output()
    parser = build_parser()
    check_argv(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    verbose = 0 if args.quiet else args.verbose
    logging.basicConfig(
        level=logging.ERROR
        if args.quiet
        else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)],
        format="%(levelname)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args))
    except CommandError as exc:
        say_error(str(exc))
        return exc.exit_status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED
    except MemoryError:
        say_error("out of memory")
        return EXIT_FAILED
    except Exception as exc:
        # A bug. One line, a distinct status; -v shows where.
        if verbose:
            traceback.print_exc()
        say_error(
            f"internal error {type(exc).__name__}: {exc} (a bug; -v shows the traceback)"
        )
        return EXIT_BUG


if __name__ == "__main__":
    # Run the module's importable copy: `python -m dcis.tools.cli` would otherwise
    # define a second CommandError that the subcommands do not raise.
    from dcis.tools.cli import main as _main

    sys.exit(_main())
