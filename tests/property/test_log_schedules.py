"""The public partition harness (dcis.consensus.testing) drawn schedules, run
against the log: after every schedule heals, promises 2-5 hold; and the
harness itself is deterministic and does what a schedule says."""

from __future__ import annotations

from hypothesis import given, note
from hypothesis import strategies as st

from dcis.consensus.log.api import CompareAndSet, Put
from dcis.consensus.log.service import LogParams, LogService
from dcis.consensus.testing import Cluster, Crash, Restart, Schedule, schedules
from tests.sim.log_run import LogRun, StaticView

NODES = (1, 2, 3)

writes = st.lists(
    st.tuples(
        st.integers(0, 14_999),
        st.sampled_from(NODES),
        st.one_of(
            st.builds(Put, st.sampled_from(["a", "b"]), st.sampled_from([b"1", b"2"])),
            st.builds(
                CompareAndSet,
                st.sampled_from(["a", "b"]),
                st.none() | st.just(b"1"),
                st.just(b"2"),
            ),
        ),
    ),
    max_size=8,
)


@given(
    schedules(NODES, horizon_ms=15_000, max_faults=6), writes, st.integers(0, 2**32 - 1)
)
def test_log_heals_under_any_schedule(
    schedule: Schedule, ops: list[tuple[int, int, Put]], seed: int
) -> None:
    note(f"cluster seed={seed}")
    run = LogRun(NODES, seed, LogParams(snapshot_every=16))
    events = sorted(
        [(f.at_ms, 0, f) for f in schedule.faults]
        + [(at, 1, (n, op)) for at, n, op in ops],
        key=lambda x: (x[0], x[1]),
    )
    for at, kind, what in events:
        if at > run.cluster.now_ms:
            run.advance(at - run.cluster.now_ms)
        if kind == 0:
            run.cluster.apply(what)  # type: ignore[arg-type]
        else:
            node, op = what  # type: ignore[misc]
            run.submit(node, op)
    run.advance(max(0, schedule.heal_ms - run.cluster.now_ms))
    run.settle()
    run.check_converged()


@given(schedules(NODES, horizon_ms=5_000, max_faults=4), st.integers(0, 1000))
def test_cluster_is_deterministic_and_follows_the_schedule(
    schedule: Schedule, seed: int
) -> None:
    def once() -> dict[int, list[tuple[int, str, str]]]:
        view = StaticView(NODES)
        c = Cluster(NODES, lambda n, inc: [LogService(view)], seed=seed)
        hist = c.run(schedule, until_ms=8_000)
        for n in NODES:
            assert c.alive(n)  # everything restarted at heal
        return {
            n: [(e.at_ms, e.kind, e.detail) for e in h.events] for n, h in hist.items()
        }

    first = once()
    assert once() == first
    for n in NODES:
        crashes = [f for f in schedule.faults if isinstance(f, Crash) and f.node == n]
        starts = [e for e in first[n] if e[1] == "start"]
        crashed = [e for e in first[n] if e[1] == "crash"]
        assert len(crashed) <= len(crashes)
        assert len(starts) == len(crashed) + 1
        restarts = [
            f for f in schedule.faults if isinstance(f, Restart) and f.node == n
        ]
        assert len(starts) <= 1 + len(restarts) + 1
