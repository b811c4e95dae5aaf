"""``dcis route``: ask Contact Graph Routing for routes over a contact plan.

    dcis route --plan FILE --from A --to B [--at SECONDS] [--size BYTES] [--routes K] [--json]

``--json`` prints ``{"routes": [{"arrival": <plan seconds>, "hops": [A, ..., B],
"contacts": [[from, to, start, end], ...]}, ...]}``, best first, and
``{"routes": []}`` when B cannot be reached. Exit status 0 with routes, 1
when there is none, 2 on bad input. See spec/routing.md.

example:
  dcis route --plan tools/plans/chain4.ionrc --from 1 --to 4 --routes 3 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dcis.dtn.errors import DtnError
from dcis.dtn.routing.cgr import Route, Router
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.storage.plan_files import load_plan
from dcis.tools.argtypes import float_in, int_in, node_number, non_negative_float
from dcis.tools.cli import CommandError


def add_plan_args(p: argparse.ArgumentParser) -> None:
    """The plan-reading option shared with ``dcis plan``."""
    p.add_argument(
        "--contact-7th",
        choices=("confidence", "owlt"),
        default="confidence",
        help="meaning of the optional 6th argument of an ionrc 'a contact' line: ION's confidence (default) or pyCGR's light time",
    )


def read_plan(path: Path, seventh: str) -> ContactPlan:
    """Load a plan or raise CommandError with the parser's line-numbered message."""
    try:
        return load_plan(
            path, seventh_field="owlt" if seventh == "owlt" else "confidence"
        )
    except DtnError as exc:
        raise CommandError(str(exc)) from exc


def num(x: float) -> int | float:
    """A JSON number of seconds rounded to the millisecond; whole seconds print without a fraction.

    Rounding hides float noise of route arithmetic (``12.120000000000001``).
    """
    if abs(x) < 2**53:
        x = round(float(x), 3)
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def route_json(r: Route) -> dict[str, Any]:
    """One route in the issue's JSON shape."""
    return {
        "arrival": num(r.arrival_s),
        "hops": list(r.hops),
        "contacts": [[c.frm, c.to, num(c.start_s), num(c.end_s)] for c in r.contacts],
    }


def register(subparsers: Any) -> None:
    """Add the ``route`` subcommand."""
    p = subparsers.add_parser(
        "route",
        help="compute CGR routes over a contact plan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--plan",
        required=True,
        type=Path,
        metavar="FILE",
        help="contact plan (ionrc or HDTN JSON)",
    )
    p.add_argument(
        "--from",
        dest="src",
        required=True,
        type=node_number,
        metavar="A",
        help="source node number",
    )
    p.add_argument(
        "--to",
        dest="dst",
        required=True,
        type=node_number,
        metavar="B",
        help="destination node number",
    )
    p.add_argument(
        "--at",
        type=float_in(0.0, 1e15),
        default=0.0,
        metavar="SECONDS",
        help="plan time the bundle is ready (default 0)",
    )
    p.add_argument(
        "--size",
        type=non_negative_float,
        default=0.0,
        metavar="BYTES",
        help="bundle size in bytes (default 0)",
    )
    p.add_argument(
        "--routes",
        type=int_in(1, 1000),
        default=1,
        metavar="K",
        help="number of routes, best first (default 1)",
    )
    p.add_argument(
        "--deadline",
        type=float_in(0.0, 1e15),
        default=None,
        metavar="SECONDS",
        help="latest acceptable arrival (plan time)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    add_plan_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print routes; exit 0, 1 when there is none, 2 on a bad plan."""
    plan = read_plan(args.plan, args.contact_7th)
    try:
        routes = Router(plan).routes(
            args.src,
            args.dst,
            args.at,
            args.size,
            args.routes,
            deadline_s=args.deadline,
        )
    except DtnError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps({"routes": [route_json(r) for r in routes]}))
        return 0 if routes else 1
    if not routes:
        print(
            f"no route from {args.src} to {args.dst} for a bundle ready at {num(args.at)} s"
        )
        return 1
    for i, r in enumerate(routes, start=1):
        print(
            f"route {i}: arrival {num(r.arrival_s)} s, {r.hop_count} hop(s): {' -> '.join(map(str, r.hops))}"
        )
        for c in r.contacts:
            print(
                f"  {c.frm} -> {c.to}  [{num(c.start_s)}, {num(c.end_s)}] s  {num(c.rate_bytes_s)} B/s"
            )
    return 0
