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

from dcis.dtn.routing.plan import (
    ContactPlan,
    format_hdtn_json,
    format_ionrc,
    ionrc_owlt_warnings,
)
from dcis.tools.argtypes import int_in
from dcis.tools.cli import CommandError
from dcis.tools.cmd_route import add_plan_args, num, read_plan


def register(subparsers: Any) -> None:
    """Add the ``plan`` subcommand and its actions."""
    p = subparsers.add_parser(
        "plan",
        help="show, plot or convert a contact plan",
        description="Show, plot or convert a contact plan.",
    )
    sub = p.add_subparsers(dest="plan_command", metavar="ACTION", required=True)

    s = sub.add_parser(
        "show",
        help="summarise a plan",
        description="Summarise a contact plan.\n\nexample:\n  dcis plan show tools/plans/chain4.ionrc --json",
    )
    s.add_argument("file", type=Path, metavar="FILE")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_plan_args(s)
    s.set_defaults(func=run_show)

    g = sub.add_parser(
        "plot",
        help="draw a Gantt chart of contacts per node pair",
        description="Draw a plan as a Gantt chart: one row per node pair (a<->b when "
        "both directions share their windows), the pair's light time beside it, bars "
        "coloured by link kind (ground link / ISL) and rate, time in h:mm. The format "
        "comes from the extension of -o (.png, .svg, .pdf, ...). More rows than "
        "--max-rows go to several pictures, OUT-1.png, OUT-2.png, ...\n\n"
        "example:\n  dcis plan plot plan.json --ground 10,20,30,40 -o plan.png",
    )
    g.add_argument("file", type=Path, metavar="FILE")
    g.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.png")
    g.add_argument(
        "--ground",
        metavar="N,N,...",
        help="ground station node numbers: their links are drawn as ground links",
    )
    g.add_argument(
        "--max-rows",
        type=int_in(10, 1000),
        default=150,
        metavar="N",
        help="rows per picture (default 150)",
    )
    g.add_argument(
        "--dpi", type=int_in(30, 600), default=100, help="resolution (default 100)"
    )
    add_plan_args(g)
    g.set_defaults(func=run_plot)

    c = sub.add_parser(
        "convert",
        help="write a plan as ionrc or HDTN JSON",
        description="Write a plan in the other format.\n\n"
        "example:\n  dcis plan convert tools/plans/chain4.ionrc -o chain4.json",
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


def _fmt_rate(bytes_s: float) -> str:
    bits = bytes_s * 8
    for unit, k in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= k:
            return f"{bits / k:g} {unit}"
    return f"{bits:g} bit/s"


def _fmt_owlt(s: float) -> str:
    return f"{s * 1000:g} ms" if s < 1 else f"{s:g} s"


def _hm(seconds: float, _pos: object = None) -> str:
    """Plan seconds as h:mm (negative times keep their sign)."""
    sign = "-" if seconds < 0 else ""
    m = round(abs(seconds)) // 60
    return f"{sign}{m // 60}:{m % 60:02d}"


def _parse_nodes(text: str) -> frozenset[int]:
    try:
        return frozenset(int(t, 10) for t in text.split(",") if t.strip())
    except ValueError:
        raise CommandError(
            f"--ground: expected node numbers separated by commas, got {text!r}"
        ) from None


PlotRow = tuple[int, int, bool]
"""(a, b, both): the contacts a->b, and b->a too when ``both``."""


def plot_rows(
    plan: ContactPlan,
) -> tuple[list[PlotRow], dict[PlotRow, list[tuple[float, float, float]]]]:
    """One row per node pair: a pair whose two directions have the same
    windows is one row ``a<->b``, else one row per direction. Each window is
    (start, end, rate)."""
    by_dir: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for c in plan.contacts:
        by_dir.setdefault((c.frm, c.to), []).append(
            (c.start_s, c.end_s, c.rate_bytes_s)
        )
    for v in by_dir.values():
        v.sort()
    rows: dict[PlotRow, list[tuple[float, float, float]]] = {}
    for (a, b), windows in sorted(by_dir.items()):
        if a > b and by_dir.get((b, a)) == windows:
            continue  # drawn as b<->a
        both = a < b and by_dir.get((b, a)) == windows
        rows[(a, b, both)] = windows
    return list(rows), rows


def run_plot(args: argparse.Namespace) -> int:
    """Draw the plan as a Gantt chart: one row per node pair, coloured by link
    kind and rate, light time in the row label, time axis in h:mm."""
    fmt = args.output.suffix.lower().lstrip(".")
    plan = read_plan(args.file, args.contact_7th)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
        from matplotlib.ticker import FuncFormatter, MultipleLocator
    except ImportError as exc:
        raise CommandError(
            "plotting needs matplotlib: pip install 'dcis[plot]'"
        ) from exc
    formats = sorted(plt.figure().canvas.get_supported_filetypes())
    plt.close("all")
    if fmt not in formats:
        raise CommandError(
            f"-o {args.output}: say the picture format with the file extension, one of: "
            + ", ".join("." + f for f in formats)
        )
    if not plan.contacts:
        raise CommandError(f"{args.file}: the plan has no contacts to draw")
    ground = _parse_nodes(args.ground) if args.ground else frozenset()
    order, windows = plot_rows(plan)

    def kind(row: PlotRow) -> str:
        return "ground link" if row[0] in ground or row[1] in ground else "ISL"

    # Ground links first, then ISLs; within each, by node pair.
    order.sort(key=lambda r: (kind(r) != "ground link", r[0], r[1]))
    groups: dict[tuple[str, float], int] = {}
    for row in order:
        for _s, _e, rate in windows[row]:
            groups.setdefault((kind(row), rate), 0)
            groups[(kind(row), rate)] += 1
    palettes = {
        "ISL": ["#1f77b4", "#17becf", "#9467bd", "#7f7f7f", "#2ca02c"],
        "ground link": ["#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#bcbd22"],
    }
    colour: dict[tuple[str, float], str] = {}
    for k in ("ground link", "ISL"):
        rates = sorted({r for (kk, r) in groups if kk == k}, reverse=True)
        for i, r in enumerate(rates):
            colour[(k, r)] = palettes[k][i % len(palettes[k])]

    pages = [order[i : i + args.max_rows] for i in range(0, len(order), args.max_rows)]
    t0 = min(c.start_s for c in plan.contacts)
    t1 = max(c.end_s for c in plan.contacts)
    span = max(t1 - t0, 1.0)
    step = next(
        (
            st
            for st in (60, 300, 600, 1800, 3600, 7200, 10800, 21600, 43200)
            if span / st <= 14
        ),
        86400 * max(1, int(span / 86400 / 14) + 1),
    )
    written: list[Path] = []
    for n, page in enumerate(pages, start=1):
        height = 1.9 + 0.2 * len(page)
        fig, ax = plt.subplots(figsize=(14, max(height, 4.0)))
        labels = []
        for y, row in enumerate(page):
            a, b, both = row
            k = kind(row)
            bars: dict[str, list[tuple[float, float]]] = {}
            for start, end, rate in windows[row]:
                bars.setdefault(colour[(k, rate)], []).append((start, end - start))
            for col, segs in bars.items():
                ax.broken_barh(segs, (y - 0.38, 0.76), color=col, linewidth=0)
            owlts = {plan.owlt_s(a, b, st) for st, _e, _r in windows[row]}
            lt = (
                _fmt_owlt(min(owlts))
                if len(owlts) == 1
                else f"{_fmt_owlt(min(owlts))}..{_fmt_owlt(max(owlts))}"
            )
            arrow = "\u2194" if both else "\u2192"
            labels.append(f"{a}{arrow}{b}  {lt}")
        ax.set_yticks(range(len(page)))
        ax.set_yticklabels(labels, fontsize=8, family="monospace")
        ax.set_ylim(len(page) - 0.5, -0.5)
        ax.set_xlim(t0, t0 + span)
        ax.xaxis.set_major_locator(MultipleLocator(step))
        ax.xaxis.set_major_formatter(FuncFormatter(_hm))
        ax.set_xlabel("plan time (h:mm)")
        ax.set_ylabel("node pair  light time")
        ax.grid(axis="x", alpha=0.35)
        ax.tick_params(axis="x", labeltop=True, top=True)
        handles = [
            Patch(
                color=colour[key],
                label=f"{key[0]} {_fmt_rate(key[1])} ({groups[key]} windows)",
            )
            for key in sorted(colour, key=lambda kr: (kr[0] != "ground link", -kr[1]))
        ]
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.005, 1.0),
            fontsize=8,
            title="link kind, rate",
            title_fontsize=8,
        )
        note = "" if ground else "  (no --ground: every link drawn as ISL)"
        page_note = f", page {n} of {len(pages)}" if len(pages) > 1 else ""
        ax.set_title(
            f"{args.file.name}: {len(plan)} contacts, {len(plan.nodes)} nodes, "
            f"{len(order)} rows{page_note}{note}",
            fontsize=10,
        )
        fig.tight_layout()
        out = (
            args.output
            if len(pages) == 1
            else args.output.with_name(f"{args.output.stem}-{n}{args.output.suffix}")
        )
        try:
            fig.savefig(out, dpi=args.dpi, format=fmt)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot write {out}: {exc}") from exc
        finally:
            plt.close(fig)
        written.append(out)
    print("wrote " + ", ".join(map(str, written)))
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
