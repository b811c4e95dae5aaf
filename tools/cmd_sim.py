"""``dcis sim``: run the deterministic constellation simulator on a plan and traffic.

    dcis sim --plan FILE --seed N --duration SECONDS --traffic FILE [--loss P] [--json]
             [--services MODULE:FACTORY]
             [--membership [--crash NODE@SECONDS ...]]

example:
    dcis sim --plan tools/plans/chain4.ionrc --seed 1 --duration 3600 --traffic examples/traffic.txt

The plan is an ionrc or HDTN JSON contact plan; the traffic file has lines
``AT_SECONDS SRC_NODE DST_NODE SIZE_BYTES [COUNT]`` (see
:mod:`dcis.dtn.sim.traffic`). Every node runs a real agent on an in-memory store.
``--json`` prints one JSON object (the run's summary, including
``trace_sha256``: the same inputs and seed always print the same object;
``deleted`` and ``deleted_reasons`` count bundles agents deleted on purpose).

``--membership`` also runs membership (service 16) on every node of the plan
(:mod:`dcis.consensus.membership.sim`: same plan, seed and loss; resources from
the seeded orbit model) and adds ``membership_converged_s``,
``false_suspicions``, ``false_dead``, ``detect_s_p50``, ``detect_s_p99`` and
``membership_msgs_per_node_s`` to the summary.
``--services pkg.mod:factory`` runs node services on every node:
``factory(node, incarnation)`` returns that node's services (spec/node.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, TextIO

from dcis.consensus.membership.orbit import OrbitModel
from dcis.consensus.membership.service import MembershipConfig
from dcis.consensus.membership.sim import MembershipSim
from dcis.dtn.errors import DtnError
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.runtime.services import load_factory
from dcis.dtn.sim import SIM_EPOCH, SimConfig, SimSummary, Simulator, parse_traffic
from dcis.dtn.storage.plan_files import load_plan
from dcis.dtn.time import DtnTime, dtn_time_from_unix
from dcis.tools.argtypes import add_traffic_run_arguments, non_negative_int
from dcis.tools.cli import CommandError

MAX_SIM_DURATION_S = 10 * 365 * 86_400.0


def register(subparsers: Any) -> None:
    """Add the ``sim`` subcommand."""
    p = subparsers.add_parser(
        "sim",
        help="run the deterministic constellation simulator",
        description=__doc__,
    )
    add_traffic_run_arguments(
        p,
        duration_help="simulated time to run, from plan time 0",
        loss_help="probability a transmission or ack is lost (default 0)",
    )
    p.add_argument(
        "--seed",
        required=True,
        type=non_negative_int,
        metavar="N",
        help="random seed (same seed => same run)",
    )
    p.add_argument(
        "--services",
        metavar="MODULE:FACTORY",
        help="run node services: FACTORY(node, incarnation) in importable MODULE returns each node's services (spec/node.md)",
    )
    p.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="also write the event trace, one line per event",
    )

    p.add_argument(
        "--membership",
        action="store_true",
        help="also run membership (service 16) on every node of the plan, with the seeded orbit resource model, and add its figures",
    )
    p.add_argument(
        "--crash",
        action="append",
        default=[],
        type=_crash_arg,
        metavar="NODE@SECONDS",
        help="with --membership: crash NODE at plan time SECONDS (repeatable)",
    )

    def error(message: str) -> NoReturn:
        # The dcis convention: one `error:` line and exit status 2.
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    p.error = error
    p.set_defaults(func=run)


def _crash_arg(text: str) -> tuple[int, float]:
    node, sep, at = text.partition("@")
    try:
        if not sep:
            raise ValueError(text)
        return int(node), float(at)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NODE@SECONDS, got {text!r}"
        ) from None


def membership_figures(
    plan: ContactPlan,
    *,
    seed: int,
    duration_s: float,
    loss: float,
    crashes: list[tuple[int, float]],
) -> dict[str, Any]:
    """Run membership on every node of ``plan`` (see
    :mod:`dcis.consensus.membership.sim`) and return the ``--membership`` keys."""
    sim = MembershipSim(
        sorted(plan.nodes),
        seed=seed,
        plan=plan,
        loss=loss,
        orbit=OrbitModel(seed=seed),
        # Contacts come and go over minutes: a 5 s protocol period, and a
        # member with no round trip in the next 10 minutes is unreachable.
        config=MembershipConfig(
            period_ms=5_000, probe_timeout_ms=1_000, horizon_ms=600_000
        ),
    )
    for node, at in crashes:
        sim.crash(node, at)
    sim.run_until(duration_s)
    return sim.summary(duration_s)


def _readable(s: SimSummary, out: TextIO) -> None:
    def lat(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f} s"

    print(
        f"simulated {s.sim_time_s:g} s on {s.nodes} nodes (seed {s.seed}, {s.events} events)",
        file=out,
    )
    print(
        f"bundles:   sent {s.sent}, delivered {s.delivered}, expired {s.expired}, pending {s.pending}, refused {s.refused} (at relays {s.relay_refused})",
        file=out,
    )
    # Deletions go at the end of the line, so what was printed before keeps
    # its place for scripts that read it.
    reasons = ", ".join(f"{why} {n}" for why, n in sorted(s.deleted_reasons.items()))
    print(
        f"           duplicates delivered {s.duplicates_delivered}, delivered after lifetime {s.delivered_after_lifetime}, lost {s.lost}, "
        f"deleted {s.deleted}" + (f" ({reasons})" if reasons else ""),
        file=out,
    )
    print(
        f"latency:   p50 {lat(s.latency_p50_s)}, p99 {lat(s.latency_p99_s)}, max {lat(s.latency_max_s)}",
        file=out,
    )
    print(
        f"links:     {s.transmissions} transmissions ({s.bytes_transmitted} bytes), {s.transmit_failures} failed, "
        f"{s.lost_in_flight} lost in flight",
        file=out,
    )
    print(f"trace:     sha256 {s.trace_sha256}", file=out)


def run(args: argparse.Namespace) -> int:
    """Run the simulation; exit 0 on completion, 2 on bad input."""
    if not 0.0 <= args.loss <= 1.0:
        raise CommandError(f"--loss must be a probability in [0, 1], got {args.loss}")
    if not 0 <= args.duration <= MAX_SIM_DURATION_S:
        raise CommandError(
            f"--duration must be >= 0 and <= {MAX_SIM_DURATION_S:g} s (10 years), got {args.duration:g}"
        )
    if not 0 < args.lifetime <= 10 * 365 * 86_400:
        raise CommandError(
            f"--lifetime must be > 0 and <= {10 * 365 * 86_400} s, got {args.lifetime:g}"
        )
    try:
        plan = load_plan(args.plan)
    except DtnError as exc:
        raise CommandError(f"plan {args.plan}: {exc}") from None
    try:
        text = args.traffic.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read traffic file {args.traffic}: {exc}") from None
    try:
        traffic = parse_traffic(text)
    except DtnError as exc:
        raise CommandError(f"{args.traffic}: {exc}") from None
    known = plan.nodes
    for item in traffic:
        for n in (item.src, item.dst):
            if n not in known:
                raise CommandError(
                    f"{args.traffic}: traffic line {item.line}: node {n} is not in the plan"
                )
    # Plan time 0 is the plan's own reference time when it names one (ION's
    # `@`), else the simulator's fixed epoch, so bundle times are reproducible.
    epoch = (
        SIM_EPOCH
        if plan.epoch_unix_s is None
        else dtn_time_from_unix(plan.epoch_unix_s)
    )
    services = None
    if args.services is not None:
        try:
            services = load_factory(args.services, what="--services")
        except DtnError as exc:
            raise CommandError(str(exc)) from None
    config = SimConfig(
        seed=args.seed,
        duration_s=args.duration,
        loss=args.loss,
        lifetime_s=args.lifetime,
        plan_epoch=DtnTime(epoch),
    )
    trace_file: TextIO | None = None
    try:
        if args.trace is not None:
            try:
                trace_file = args.trace.open("w", encoding="utf-8")
            except OSError as exc:
                raise CommandError(
                    f"cannot write trace file {args.trace}: {exc}"
                ) from None
        try:
            sim = Simulator(
                plan,
                config,
                traffic=traffic,
                trace_sink=trace_file,
                services=services,
            )
            summary = sim.run()
            sim.close()
        except DtnError as exc:
            raise CommandError(f"simulation failed: {exc}") from None
    finally:
        if trace_file is not None:
            trace_file.close()
    figures = summary.to_dict()
    if args.membership:
        for node, _ in args.crash:
            if node not in known:
                raise CommandError(f"--crash: node {node} is not in the plan")
        member = membership_figures(
            plan,
            seed=args.seed,
            duration_s=args.duration,
            loss=args.loss,
            crashes=args.crash,
        )
        figures.update(member)
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        _readable(summary, sys.stdout)
        if args.membership:
            print(
                "membership: " + ", ".join(f"{k} {member[k]}" for k in sorted(member)),
                file=sys.stdout,
            )
    return 0
