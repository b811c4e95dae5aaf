"""``dcis``: the operator's command.

Each subcommand lives in its own ``tools/cmd_*.py`` module exposing
``register(subparsers)``; that function adds a parser whose ``func`` default
takes the parsed ``argparse.Namespace`` and returns an exit status.

Conventions every subcommand follows: bad input exits 2 with one line on
stderr beginning ``error:``; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# One line per subcommand module; each owner adds its own.
COMMAND_MODULES: tuple[str, ...] = (
    "tools.cmd_bundle",
    "tools.cmd_route",
    "tools.cmd_plan",
    "tools.cmd_sim",
    "tools.cmd_keys",
    "tools.cmd_send",
    "tools.cmd_recv",
    "tools.cmd_ping",
    "tools.cmd_status",
    "tools.cmd_testbed",
    "tools.cmd_members",
)


class CommandError(Exception):
    """Raised by a subcommand for a user-facing failure (exit 2, ``error:`` line)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcis", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
