"""Membership in simulation: join, graceful leave, crash, partition and heal
at N = 10, 100 (and 1,000, slow), each next to the plain-SWIM baseline
(contact-plan awareness off) on the same seeds; planned silence on the
Walker-style plans of dcis.dtn.sim.scenarios."""

from __future__ import annotations

import concurrent.futures
import gc
import math
import multiprocessing
import os
from pathlib import Path

import pytest

from dcis.consensus.membership.service import MembershipConfig
from dcis.consensus.membership.sim import MembershipSim
from dcis.consensus.membership.view import MemberState
from tests.sim.membership_helpers import heal_periods, states_of, walker

D, L, A = MemberState.DEAD, MemberState.LEFT, MemberState.ALIVE


def lifecycle(n: int, seed: int, aware: bool) -> tuple[MembershipSim, float | None]:
    """Late join, leave, crash, then a partition of half the nodes and its heal."""
    sim = MembershipSim(
        range(1, n + 1),
        seed=seed,
        roster=n > 10,  # a provisioned roster: no join flood of n adverts
        config=MembershipConfig(plan_aware=aware),
        join_at={n: 15.0},
    )
    sim.leave(2, 25.0)
    sim.crash(3, 30.0)
    half = range(1, n // 2 + 1)
    # Detection: four probe rounds, Lifeguard's longest suspicion
    # (6 x 4 x log10 N periods) and dissemination (3 log2 N periods).
    check = 50.0 + 24.0 * max(1.0, math.log10(n)) + 3 * math.log2(n)
    heal = check + 62.0
    sim.partition(half, check + 2.0, heal)
    sim.run_until(check)
    assert states_of(sim, 3) == {D}, "the crashed node is dead everywhere"
    assert states_of(sim, 2) == {L}, "the node that left is left everywhere"
    assert states_of(sim, n) == {A}, "the late joiner is alive everywhere"
    assert sim.detected_at.keys() == {3}
    sim.run_until(heal - 1.0)
    # During the partition each side suspects (or has declared dead) the other.
    other = set(range(n // 2 + 1, n + 1)) - {2, 3}
    mine = set(half) - {2, 3}
    a, b = sim.service(1), sim.service(n)
    assert a is not None
    assert b is not None
    gone = (MemberState.SUSPECT, D)
    assert any(a.state_of(x) in gone for x in other)
    assert any(b.state_of(x) in gone for x in mine)
    took = heal_periods(sim, heal, n)
    sim.run_until(heal + 5.0 + 3 * math.log2(n))
    # After the heal: no revival of the departed.
    assert states_of(sim, 3) == {D}
    assert states_of(sim, 2) == {L}
    return sim, took


@pytest.mark.parametrize("n", [10, pytest.param(100, marks=pytest.mark.slow)])
def test_lifecycle_against_the_baseline(n: int) -> None:
    bound = 3 * math.log2(n)
    for aware in (True, False):
        sim, took = lifecycle(n, seed=11, aware=aware)
        assert took is not None, aware
        assert took <= bound, (aware, took, bound)
        s = sim.summary(150.0)
        assert s["detect_s_p50"] is not None
        assert s["false_dead"] > 0
        assert s["membership_converged_s"] is not None


def _simulation_child() -> None:
    """A child that only simulates: lowest CPU priority, and no cyclic
    garbage collector. A run makes N^2 member entries and finds next to no
    cycles (about 600 objects in a whole N = 1,000 run), but the collector
    walked every entry some 20 times: 7 of 103 CPU s. The child exits after
    its run, which frees everything."""
    os.nice(19)
    gc.disable()


def _heal_periods_1000(aware: bool) -> float | None:
    """The N = 1,000 lifecycle's heal time in periods (run in a child)."""
    return lifecycle(1000, seed=12, aware=aware)[1]


@pytest.mark.slow
def test_lifecycle_1000_against_the_baseline() -> None:
    """N = 1,000, plan-aware and the plain-SWIM baseline on the same seed,
    in one test: the two simulate side by side, each in a child process
    (about two CPU minutes each). As two cases, pytest-xdist handed both
    to one worker in a suite run (a worker takes the next case when it
    finishes one), which ran them one after the other at the suite's end.

    The children run at the lowest CPU priority: pure simulation, they take
    only the CPU that the suite's real-time tests (live daemons with start
    bounds and plan windows) leave idle (and without the cyclic garbage
    collector: see _simulation_child)."""
    bound = 3 * math.log2(1000)
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=2,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_simulation_child,
    ) as pool:
        runs = {
            aware: pool.submit(_heal_periods_1000, aware) for aware in (True, False)
        }
        took = {aware: run.result() for aware, run in runs.items()}
    for aware, periods in took.items():
        assert periods is not None, aware
        assert periods <= bound, (aware, periods, bound)


def test_planned_silence_is_not_suspected_on_a_walker_plan() -> None:
    aware = walker(2, 5, duration_s=3_000, seed=3, aware=True, loss=0.0)
    base = walker(2, 5, duration_s=3_000, seed=3, aware=False, loss=0.0)
    assert aware.summary(3_000)["false_suspicions"] == 0
    assert base.summary(3_000)["false_suspicions"] > 0
    states = {
        aware.service(n).state_of(m)  # type: ignore[union-attr]
        for n in aware.running()
        for m in aware.running() - {n}
    }
    assert MemberState.UNREACHABLE in states
    assert states <= {
        A,
        MemberState.UNREACHABLE,
        None,
    }


def test_loss_false_suspicions_at_most_a_tenth_of_the_baseline() -> None:
    aware = walker(2, 5, duration_s=3_000, seed=4, aware=True, loss=0.1)
    base = walker(2, 5, duration_s=3_000, seed=4, aware=False, loss=0.1)
    fa, fb = (
        aware.summary(3_000)["false_suspicions"],
        base.summary(3_000)["false_suspicions"],
    )
    assert fb > 0
    assert fa * 10 <= fb, (fa, fb)


@pytest.mark.slow
def test_walker_100() -> None:
    for loss in (0.0, 0.1):
        aware = walker(10, 10, duration_s=3_000, seed=5, aware=True, loss=loss)
        base = walker(10, 10, duration_s=3_000, seed=5, aware=False, loss=loss)
        fa, fb = (
            aware.summary(3_000)["false_suspicions"],
            base.summary(3_000)["false_suspicions"],
        )
        if loss == 0.0:
            assert fa == 0
            assert fb > 0
        assert fa * 10 <= fb, (loss, fa, fb)


def test_same_seed_same_run() -> None:
    a, _ = lifecycle(10, seed=21, aware=True)
    b, _ = lifecycle(10, seed=21, aware=True)
    assert a.summary(100.0) == b.summary(100.0)
    assert a.messages == b.messages


def test_dcis_sim_membership_json_keys(tmp_path: Path) -> None:
    from dcis.dtn.routing.plan import format_ionrc
    from dcis.dtn.sim.scenarios import leo_constellation
    from dcis.tools.cli import main

    plan = tmp_path / "leo.ionrc"
    plan.write_text(
        format_ionrc(leo_constellation(planes=2, per_plane=3, duration_s=2_000, seed=1))
    )
    traffic = tmp_path / "traffic.txt"
    traffic.write_text("10 1 2 100\n")
    argv = [
        "sim",
        "--plan",
        str(plan),
        "--seed",
        "2",
        "--duration",
        "1500",
        "--traffic",
        str(traffic),
    ]
    import contextlib
    import io
    import json

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--json", "--membership", "--crash", "4@100"]) == 0
    doc = json.loads(out.getvalue())
    keys = {
        "membership_converged_s",
        "false_suspicions",
        "false_dead",
        "detect_s_p50",
        "detect_s_p99",
        "membership_msgs_per_node_s",
    }
    assert keys <= set(doc)
    assert doc["false_suspicions"] == 0
    assert doc["membership_msgs_per_node_s"] > 0
    plain = io.StringIO()
    with contextlib.redirect_stdout(plain):
        assert main([*argv, "--json"]) == 0
    assert not keys & set(json.loads(plain.getvalue()))


def test_digest_anti_entropy_is_bounded_and_brings_a_late_joiner_everything() -> None:
    """Anti-entropy swaps digests, then at most ``sync_max_updates`` signed
    updates per message (plus the piggyback): a node that joins late, with
    no roster, still learns all 40 members, in several bounded exchanges."""
    from dcis.consensus.membership.wire import Kind, decode_message_untrusted

    cfg = MembershipConfig(sync_max_updates=8, push_pull_periods=5)
    sim = MembershipSim(
        range(1, 41), seed=5, roster=True, config=cfg, join_at={40: 20.0}
    )
    sizes: dict[Kind, int] = {}
    route = sim._route

    def spy(frm: int, s: object) -> None:
        msg = decode_message_untrusted(s.payload)  # type: ignore[attr-defined]
        sizes[msg.kind] = max(sizes.get(msg.kind, 0), len(msg.updates))
        route(frm, s)  # type: ignore[arg-type]

    sim._route = spy  # type: ignore[method-assign]
    sim.run_until(120.0)
    late = sim.service(40)
    assert late is not None
    assert late.live() == frozenset(range(1, 41))
    assert states_of(sim, 40) == {A}
    cap = cfg.sync_max_updates + cfg.max_piggyback + 2
    assert Kind.PULL in sizes
    assert max(sizes.values()) <= cap, sizes
