"""argparse ``type=`` converters shared by the ``dcis`` subcommands.

Each raises ``argparse.ArgumentTypeError``, which argparse turns into a
usage error (exit 2, one ``error:`` line), never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def finite_float(text: str) -> float:
    """A finite number (rejects ``nan`` and ``inf``, which ``float()`` accepts)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (sizes, durations)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def node_number(text: str) -> int:
    """An ipn node number (decimal, >= 0)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a node number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"node numbers are >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """A decimal integer >= 1 (counts)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_traffic_run_arguments(
    parser: argparse.ArgumentParser, *, duration_help: str, loss_help: str
) -> None:
    """The flags ``dcis sim`` and ``dcis testbed`` share (one public interface):
    ``--plan FILE --duration SECONDS --traffic FILE [--loss P] [--json]
    [--lifetime SECONDS]``."""
    parser.add_argument(
        "--plan",
        required=True,
        type=Path,
        metavar="FILE",
        help="contact plan (ionrc or HDTN JSON)",
    )
    parser.add_argument(
        "--duration",
        required=True,
        type=finite_float,
        metavar="SECONDS",
        help=duration_help,
    )
    parser.add_argument(
        "--traffic",
        required=True,
        type=Path,
        metavar="FILE",
        help="lines: AT_SECONDS SRC_NODE DST_NODE SIZE_BYTES [COUNT]",
    )
    parser.add_argument(
        "--loss", type=finite_float, default=0.0, metavar="P", help=loss_help
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--lifetime",
        type=finite_float,
        default=86_400.0,
        metavar="SECONDS",
        help="bundle lifetime (default 86400)",
    )


def non_negative_int(text: str) -> int:
    """A decimal integer >= 0 (seeds, counts where 0 means "no limit")."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """A converter for a decimal integer in ``lo..hi`` (bounds keep a typo
    like 10^11 from exhausting memory)."""

    def convert(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
        return value

    convert.__name__ = f"integer {lo}..{hi}"
    return convert


def float_in(lo: float, hi: float) -> Callable[[str], float]:
    """A converter for a finite number in ``lo..hi``."""

    def convert(text: str) -> float:
        value = finite_float(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo:g}..{hi:g}, got {text}")
        return value

    convert.__name__ = f"number {lo:g}..{hi:g}"
    return convert
