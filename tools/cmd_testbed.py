"""``dcis testbed --plan FILE --duration SECONDS --traffic FILE [--loss P] [--secure] [--json]``.

Starts one ``dtn-node`` process per plan node plus the link emulator on
loopback, runs the traffic (plan time 0 is the moment the testbed starts the
traffic), stops everything and prints the same summary keys as ``dcis sim``.
Ctrl-C stops the daemons and exits 130.

example:
  dcis testbed --plan tools/plans/chain4.ionrc --duration 12 --traffic examples/traffic.txt
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import trio

from dcis.dtn.errors import DtnError
from dcis.dtn.sim.traffic import parse_traffic
from dcis.tools.argtypes import add_traffic_run_arguments, non_negative_int
from dcis.tools.cli import EXIT_INTERRUPTED, CommandError
from dcis.tools.testbed import Testbed, TestbedOptions, default_workdir

MAX_TESTBED_DURATION_S = 86_400.0
"""The testbed runs in real time: a day is the longest run it accepts."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "testbed",
        help="run the plan's nodes as daemons behind the link emulator",
        description=__doc__,
    )
    add_traffic_run_arguments(
        p,
        duration_help="run until this plan time",
        loss_help="probability the emulator drops a datagram (default 0)",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="emulator loss seed (default 0)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep configs, stores and logs here (default: a temp dir, removed)",
    )
    p.add_argument(
        "--secure",
        action="store_true",
        help="end-to-end security on: an operator key, a certified key store per node (workdir/keys)",
    )
    p.add_argument(
        "--netns",
        action="store_true",
        help="each daemon in its own network namespace behind the emulator (Linux, needs root)",
    )
    p.add_argument(
        "--services",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="a node-service factory every daemon runs ([services] factories; repeatable), "
        "e.g. dcis.consensus.logfactory:factory with DCIS_LOG_MEMBERS=1,2,3,4,5",
    )
    p.set_defaults(func=run)


def _readable(s: dict[str, Any]) -> None:
    def lat(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f} s"

    print(
        f"testbed: {s['nodes']} daemons for {s['duration_s']:g} s (loss {s['loss']:g})"
    )
    print(
        f"bundles:   sent {s['sent']}, delivered {s['delivered']}, expired {s['expired']}, pending {s['pending']}, refused {s['refused']}"
    )
    reasons = ", ".join(f"{why} {n}" for why, n in s["deleted_reasons"].items())
    print(
        f"           duplicates delivered {s['duplicates_delivered']}, deleted {s['deleted']}"
        + (f" ({reasons})" if reasons else "")
    )
    print(
        f"latency:   p50 {lat(s['latency_p50_s'])}, p99 {lat(s['latency_p99_s'])}, max {lat(s['latency_max_s'])}"
    )
    e = s["emulator"]
    print(
        f"emulator:  {e['forwarded']} datagrams forwarded, dropped: {e['dropped_down']} link down, {e['dropped_loss']} loss, {e['dropped_rate']} over rate"
    )


def _is_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_interrupt(e) for e in exc.exceptions)
    return False


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.loss <= 1.0:
        raise CommandError(f"--loss must be a probability in [0, 1], got {args.loss}")
    if not 0 < args.duration <= MAX_TESTBED_DURATION_S:
        raise CommandError(
            f"--duration must be > 0 and <= {MAX_TESTBED_DURATION_S:g} s (a day of real time), got {args.duration:g}"
        )
    if not 0 < args.lifetime <= 10 * 365 * 86_400:
        raise CommandError(
            f"--lifetime must be > 0 and <= {10 * 365 * 86_400} s, got {args.lifetime:g}"
        )
    try:
        traffic = parse_traffic(args.traffic.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read traffic file {args.traffic}: {exc}") from None
    except DtnError as exc:
        raise CommandError(f"{args.traffic}: {exc}") from None
    if args.workdir is not None:
        # The daemons run from the repository root: give them absolute paths.
        workdir = args.workdir.resolve()
        if workdir.exists() and not workdir.is_dir():
            raise CommandError(
                f"--workdir {args.workdir}: exists and is not a directory"
            )
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(
                f"--workdir {args.workdir}: cannot create: {exc.strerror or exc}"
            ) from None
    else:
        workdir = default_workdir()
    try:
        opts = TestbedOptions(
            plan_path=args.plan,
            workdir=workdir,
            loss=args.loss,
            seed=args.seed,
            lifetime_s=args.lifetime,
            log_level="warning",
            secure=args.secure,
            netns=args.netns,
            services=tuple(args.services),
        )
        try:
            tb = Testbed(opts)
        except DtnError as exc:
            raise CommandError(f"plan {args.plan}: {exc}") from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for item in traffic:
            for n in (item.src, item.dst):
                if n not in tb.nodes:
                    raise CommandError(
                        f"{args.traffic}: traffic line {item.line}: node {n} is not in the plan"
                    )

        async def go() -> dict[str, Any]:
            async with tb.running():
                return await tb.run_traffic(traffic, args.duration)

        try:
            summary = trio.run(go)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        except BaseException as exc:
            # Ctrl-C reaches us wrapped in trio's exception groups; the
            # daemons were stopped on the way out.
            if _is_interrupt(exc):
                print("interrupted: daemons stopped", file=sys.stderr)
                return EXIT_INTERRUPTED
            raise
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        _readable(summary)
    sys.stdout.flush()
    return 0
