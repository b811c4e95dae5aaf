"""The log's five promises (spec/consensus.md) as a hypothesis stateful
test over simulated partition schedules: rules submit, partition, heal,
crash, restart, loss and advance; per-step invariants for promises 1 and 5
(majority), and at teardown a heal-and-quiet followed by promises 2, 3, 4
and 5 (linearizability). A failure prints the cluster seed and the steps.
"""

from __future__ import annotations

from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dcis.consensus.log.api import CompareAndSet, Delete, Increment, Put, SetAdd
from dcis.consensus.log.service import LogParams
from dcis.consensus.testing import partitions
from tests.sim.log_run import LogRun

NODES = (1, 2, 3, 4, 5)
KEYS = ["a", "b", "c"]
VALUES = [b"0", b"1", b"2"]

ops = st.one_of(
    st.builds(Put, st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.builds(Delete, st.sampled_from(KEYS)),
    st.builds(
        CompareAndSet,
        st.sampled_from(KEYS),
        st.none() | st.sampled_from(VALUES),
        st.none() | st.sampled_from(VALUES),
    ),
    st.builds(Increment, st.just("n"), st.integers(-3, 3)),
    st.builds(SetAdd, st.just("s"), st.sampled_from([b"x", b"y"])),
)


class LogPromises(RuleBasedStateMachine):
    """Partitions, crashes and client writes against five log nodes."""

    run: LogRun

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        size=st.sampled_from([3, 5]),
        snapshot_every=st.sampled_from([8, 256]),
    )
    def start(self, seed: int, size: int, snapshot_every: int) -> None:
        note(f"cluster seed={seed} nodes={size} snapshot_every={snapshot_every}")
        self.run = LogRun(NODES[:size], seed, LogParams(snapshot_every=snapshot_every))
        self.run.advance(6_000)

    @rule(node=st.sampled_from(NODES), op=ops)
    def submit(self, node: int, op: Put) -> None:
        if node in self.run.nodes:
            self.run.submit(node, op)

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        self.run.cluster.partition(data.draw(partitions(self.run.nodes)))

    @rule()
    def heal(self) -> None:
        self.run.cluster.heal()

    @rule(node=st.sampled_from(NODES))
    def crash(self, node: int) -> None:
        if node in self.run.nodes:
            self.run.cluster.crash(node)

    @rule(node=st.sampled_from(NODES))
    def restart(self, node: int) -> None:
        if node in self.run.nodes:
            self.run.cluster.restart(node)

    @rule(loss=st.sampled_from([0.0, 0.1, 0.3]), dup=st.sampled_from([0.0, 0.2]))
    def lossy(self, loss: float, dup: float) -> None:
        self.run.cluster.loss = loss
        self.run.cluster.dup = dup

    @rule(ms=st.integers(100, 8_000))
    def advance(self, ms: int) -> None:
        self.run.advance(ms)

    @invariant()
    @precondition(lambda self: hasattr(self, "run"))
    def observed(self) -> None:
        self.run.observe()

    def teardown(self) -> None:
        if hasattr(self, "run"):
            self.run.settle()
            self.run.check_converged()


LogPromises.TestCase.settings = settings(
    settings.default, stateful_step_count=25, print_blob=True
)
test_log_promises = LogPromises.TestCase
