"""``dcis plan``: look at, draw and convert contact plans.

    dcis plan show FILE [--json]
    dcis plan plot FILE -o out.png
    dcis plan convert FILE -o OUT [--to ionrc|json]   (--format is the old name)

Plans are ION ionrc or HDTN JSON, told apart by content (see spec/routing.md).
``plot`` needs matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from dtn.routing.plan import (
    ContactPlan,
    format_hdtn_json,
    format_ionrc,
    ionrc_owlt_warnings,
)
from tools.cli import CommandError
from tools.cmd_route import add_plan_args, num, read_plan


def register(subparsers: Any) -> None:
    """Add the ``plan`` subcommand and its actions."""
    p = subparsers.add_parser(
        "plan",
        help="show, plot or convert a contact plan",
        description="Show, plot or convert a contact plan.",
    )
    sub = p.add_subparsers(dest="plan_command", metavar="ACTION", required=True)

    s = sub.add_parser(
        "show", help="summarise a plan", description="Summarise a contact plan."
    )
    s.add_argument("file", type=Path, metavar="FILE")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_plan_args(s)
    s.set_defaults(func=run_show)

    g = sub.add_parser(
        "plot",
        help="draw a Gantt chart of contacts per node pair",
        description="Draw a plan as a Gantt chart (one row per node pair).",
    )
    g.add_argument("file", type=Path, metavar="FILE")
    g.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.png")
    add_plan_args(g)
    g.set_defaults(func=run_plot)

    c = sub.add_parser(
        "convert",
        help="write a plan as ionrc or HDTN JSON",
        description="Write a plan in the other format.",
    )
    c.add_argument("file", type=Path, metavar="FILE")
    c.add_argument("-o", "--output", required=True, type=Path, metavar="OUT")
    c.add_argument(
        "--to",
        "--format",
        dest="format",
        choices=("ionrc", "json"),
        default=None,
        help="default: json if OUT ends in .json, else ionrc",
    )
    add_plan_args(c)
    c.set_defaults(func=run_convert)


def summary(plan: ContactPlan) -> dict[str, Any]:
    """The figures ``plan show`` prints."""
    cs = plan.contacts
    pairs = Counter((c.frm, c.to) for c in cs)
    out: dict[str, Any] = {
        "contacts": len(cs),
        "ranges": len(plan.ranges),
        "nodes": sorted(plan.nodes),
        "pairs": len(pairs),
        "start": num(min((c.start_s for c in cs), default=0.0)),
        "end": num(max((c.end_s for c in cs), default=0.0)),
        "volume_bytes": num(sum(c.volume_bytes for c in cs)),
        "contacts_without_range": sum(
            1 for c in cs if not plan.has_range(c.frm, c.to, c.start_s)
        ),
        "epoch_unix_s": plan.epoch_unix_s,
        "warnings": list(plan.warnings),
    }
    return out


def run_show(args: argparse.Namespace) -> int:
    """Print a summary of the plan."""
    plan = read_plan(args.file, args.contact_7th)
    info = summary(plan)
    if args.json:
        print(json.dumps(info))
        return 0
    nodes = info["nodes"]
    shown = ", ".join(map(str, nodes[:20])) + (
        f", ... ({len(nodes)} in all)" if len(nodes) > 20 else ""
    )
    print(
        f"{args.file}: {info['contacts']} contacts, {info['ranges']} ranges, {len(nodes)} nodes, {info['pairs']} node pairs"
    )
    print(f"  nodes: {shown}")
    print(f"  time span: {info['start']} .. {info['end']} s (plan clock)")
    if plan.epoch_unix_s is not None:
        print(f"  plan time 0 = Unix {num(plan.epoch_unix_s)}")
    print(f"  total volume: {info['volume_bytes']} bytes")
    if info["contacts_without_range"]:
        print(
            f"  {info['contacts_without_range']} contact(s) have no range: light time 0 is assumed"
        )
    for w in info["warnings"]:
        print(f"  warning: {w}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """Draw the plan as a Gantt chart into a PNG."""
    plan = read_plan(args.file, args.contact_7th)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise CommandError(
            "plotting needs matplotlib: pip install 'dcis[plot]'"
        ) from exc
    by_pair: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for c in plan.contacts:
        by_pair.setdefault((c.frm, c.to), []).append((c.start_s, c.end_s - c.start_s))
    pairs = sorted(by_pair)
    height = min(0.25 * len(pairs) + 1.5, 60.0)
    fig, ax = plt.subplots(figsize=(12, max(height, 3.0)))
    for row, pair in enumerate(pairs):
        ax.broken_barh(by_pair[pair], (row - 0.4, 0.8), color=f"C{row % 10}")
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels(
        [f"{a}\u2192{b}" for a, b in pairs],
        fontsize=max(3, min(9, int(600 / max(len(pairs), 1)))),
    )
    ax.set_ylim(-1, len(pairs))
    ax.invert_yaxis()
    ax.set_xlabel("plan time (s)")
    ax.set_title(f"{args.file.name}: {len(plan)} contacts, {len(pairs)} node pairs")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(args.output, dpi=100)
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc}") from exc
    finally:
        plt.close(fig)
    print(f"wrote {args.output}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Write the plan in ionrc or HDTN JSON."""
    plan = read_plan(args.file, args.contact_7th)
    kind = args.format or ("json" if args.output.suffix.lower() == ".json" else "ionrc")
    if kind == "json":
        text = format_hdtn_json(plan)
    else:
        # ION reads light times as whole seconds: round up, and say so
        for w in ionrc_owlt_warnings(plan):
            print(f"warning: {w}", file=sys.stderr)
        text = format_ionrc(plan, ion_owlt=True)
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc}") from exc
    print(f"wrote {args.output} ({kind}, {len(plan)} contacts)")
    return 0
