"""The simulator raises the collector's thresholds while it runs events
(``dcis.dtn.sim.engine.SIM_GC_THRESHOLDS``), and that changes nothing a
run produces: the same seed gives the same summary and trace hash whatever
the collector does, and the caller's thresholds are back afterwards."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from dcis.dtn.sim import SimConfig, SimSummary, Simulator
from dcis.dtn.sim import engine as sim_engine
from dcis.dtn.sim.scenarios import leo_constellation, random_traffic


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def _run(seen: list[tuple[int, int, int]] | None = None) -> SimSummary:
    plan = leo_constellation(planes=3, per_plane=4, duration_s=7_200.0, seed=3)
    traffic = random_traffic(
        nodes=sorted(plan.nodes), bundles=40, until_s=6_000.0, seed=4
    )

    def listener(_t: int, _kind: str, _node: int, _fields: tuple[object, ...]) -> None:
        if seen is not None:
            seen.append(gc.get_threshold())

    sim = Simulator(
        plan,
        SimConfig(seed=5, duration_s=7_200.0, loss=0.05),
        traffic=traffic,
        trace_listener=listener,
    )
    for hour in (1, 2):
        sim.run_until(hour * 3_600.0)
    return sim.summary()


def test_thresholds_raised_while_running_and_restored(
    thresholds: tuple[int, int, int],
) -> None:
    gc.set_threshold(700, 10, 10)
    seen: list[tuple[int, int, int]] = []
    summary = _run(seen)
    assert summary.transmissions > 0
    assert seen
    assert set(seen) == {
        tuple(
            max(a, b)
            for a, b in zip((700, 10, 10), sim_engine.SIM_GC_THRESHOLDS, strict=True)
        )
    }
    assert gc.get_threshold() == (700, 10, 10)


def test_collector_off_is_left_off(thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(0, 10, 10)
    seen: list[tuple[int, int, int]] = []
    _run(seen)
    assert set(seen) == {(0, 10, 10)}
    assert gc.get_threshold() == (0, 10, 10)


def test_collection_timing_changes_no_result(
    thresholds: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    raised = _run()
    # collect often instead: the caller's low thresholds are kept as they are
    monkeypatch.setattr(sim_engine, "SIM_GC_THRESHOLDS", (0, 0, 0))
    gc.set_threshold(50, 2, 2)
    often = _run()
    assert often == raised
    assert often.trace_sha256 == raised.trace_sha256
    assert raised.delivered > 0
