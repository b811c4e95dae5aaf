"""A 1,000-node log (7 voters, the rest learners) through a partition and
its heal: every write from either side commits exactly once and every node
ends with the same state (marked slow)."""

from __future__ import annotations

import pytest

from dcis.consensus.log.api import Outcome, Put
from tests.sim.log_run import LogRun


@pytest.mark.slow
def test_thousand_nodes_partition_and_heal() -> None:
    nodes = tuple(range(1, 1001))
    run = LogRun(nodes, seed=11)
    run.advance(8_000)
    half = frozenset(nodes[::2])
    run.cluster.partition([half, frozenset(nodes) - half])
    run.advance(4_000)
    writers = [1, 2, 500, 501, 999, 1000]
    for i, n in enumerate(writers):
        run.submit(n, Put(f"k{i % 3}", f"v{n}".encode()))
    run.advance(10_000)
    run.settle(120_000)
    run.check_converged()
    first = run.log(1)
    assert first is not None
    assert all(first.outcome(eid) == Outcome.COMMITTED for eid in run.submitted)
    assert len(first.voters()) == 7
