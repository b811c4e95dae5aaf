"""The log on the real bundle-layer simulator (dcis.dtn.sim: BPv7 bundles,
agents, stores, CGR over a contact plan, store and forward through a
partition): a 2 | 3 partition with writes on both sides, a crash, then the
heal; promises 1-5 hold as on the harness's own network."""

from __future__ import annotations

import pytest

from dcis.consensus.log.api import CompareAndSet, Increment, Put
from tests.sim.log_run import LogRun


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_partition_heal_on_the_simulator(seed: int) -> None:
    run = LogRun((1, 2, 3, 4, 5), seed, on_simulator=True)
    run.advance(8_000)
    run.submit(1, Put("a", b"before"))
    run.advance(3_000)
    run.cluster.partition([frozenset({1, 2}), frozenset({3, 4, 5})])
    run.advance(5_000)
    run.submit(1, Put("a", b"minority"))
    run.submit(2, CompareAndSet("b", None, b"two"))
    run.submit(4, Put("a", b"majority"))
    run.submit(5, CompareAndSet("b", None, b"five"))
    run.submit(3, Increment("n", 2))
    run.submit(2, Increment("n", 3))
    run.advance(5_000)
    run.cluster.crash(3)
    run.advance(10_000)
    minority = run.log(1)
    assert minority is not None
    assert minority.get("a") == b"before"  # the minority cannot commit
    run.settle()
    run.check_converged()
    final = run.log(1)
    assert final is not None
    assert final.get("n") == b"5"
    assert final.get("b") == b"five"  # the majority's CAS committed first
    assert final.get("a") == b"minority"  # the minority's put committed on heal, last
