"""dcis.consensus.testing: the linearizability checker and the Cluster's network."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from dcis.consensus.testing import (
    Cluster,
    Crash,
    Duplicate,
    Heal,
    Loss,
    Partition,
    RegisterOp,
    Restart,
    faults,
    linearizable,
    mesh_plan,
)
from dcis.dtn.node import IdleService
from dcis.dtn.node.service import Inbound, Send, ServiceContext


def op(
    call: int, ret: int, kind: str, arg: object = None, result: object = None
) -> RegisterOp:
    return RegisterOp(call, ret, "k", kind, arg, result)


def test_sequential_history_is_linearizable() -> None:
    h = [
        op(0, 1, "put", b"a"),
        op(2, 3, "read", None, b"a"),
        op(4, 5, "cas", (b"a", b"b"), True),
    ]
    assert linearizable(h)


def test_stale_read_after_a_completed_write_is_not() -> None:
    h = [op(0, 1, "put", b"a"), op(2, 3, "put", b"b"), op(4, 5, "read", None, b"a")]
    assert not linearizable(h)


def test_concurrent_ops_may_take_either_order() -> None:
    h = [op(0, 10, "put", b"a"), op(0, 10, "put", b"b"), op(11, 12, "read", None, b"a")]
    assert linearizable(h)
    h2 = [
        op(0, 10, "put", b"a"),
        op(0, 10, "put", b"b"),
        op(11, 12, "read", None, b"c"),
    ]
    assert not linearizable(h2)


def test_two_cas_from_absent_cannot_both_succeed() -> None:
    h = [op(0, 5, "cas", (None, b"x"), True), op(0, 5, "cas", (None, b"y"), True)]
    assert not linearizable(h)
    h[1] = op(0, 5, "cas", (None, b"y"), False)
    assert linearizable(h)


@given(st.lists(st.sampled_from([b"a", b"b", None]), max_size=8))
def test_any_sequential_register_run_is_linearizable(
    values: list[bytes | None],
) -> None:
    h: list[RegisterOp] = []
    cur: bytes | None = None
    t = 0
    for v in values:
        if v is None:
            h.append(op(t, t + 1, "delete"))
        else:
            h.append(op(t, t + 1, "cas", (cur, v), True))
        cur = v
        h.append(op(t + 2, t + 3, "read", None, cur))
        t += 4
    assert linearizable(h)


class Echo(IdleService):
    """A service that answers every bundle once and counts what it got."""

    service = 9

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.node = 0

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self.node = ctx.node
        return [Send(f"ipn:{p}.9", b"hello") for p in (1, 2, 3) if p != ctx.node]

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        self.got.append(inbound.payload)
        return []


def echo_factory(node: int, inc: int) -> Sequence[Echo]:
    return [Echo()]


def got(c: Cluster, n: int) -> int:
    svc = c.service(n, 9)
    assert isinstance(svc, Echo)
    return len(svc.got)


def test_network_delivers_cuts_loses_and_duplicates() -> None:
    c = Cluster([1, 2, 3], echo_factory, seed=1)
    c.advance(1_000)
    assert [got(c, n) for n in (1, 2, 3)] == [2, 2, 2]
    c.partition([frozenset({1}), frozenset({2, 3})])
    c.crash(1)
    c.restart(1)  # says hello again: cut from 2 and 3
    c.advance(2_000)
    assert [got(c, n) for n in (2, 3)] == [2, 2]
    assert len(c.history[1].of("cut")) == 2
    c.heal()
    c.dup = 1.0
    c.crash(2)
    c.restart(2)
    c.advance(3_000)
    assert got(c, 1) == 2  # two copies of 2's hello
    assert got(c, 3) == 4
    c.dup, c.loss = 0.0, 1.0
    c.crash(3)
    c.restart(3)
    c.advance(4_000)
    assert got(c, 1) == 2
    assert len(c.history[3].of("lost")) == 2


def test_plan_decides_who_can_talk() -> None:
    plan = mesh_plan([1, 2], duration_s=1.0)
    c = Cluster([1, 2, 3], echo_factory, seed=1, plan=plan)
    c.advance(500)
    assert got(c, 2) == 1  # from 1 only: 3 has no contact
    assert c.earliest_arrival(1, 2, 0) is not None
    assert c.earliest_arrival(1, 3, 0) is None


@given(faults([1, 2, 3], horizon_ms=1000))
def test_drawn_faults_are_well_formed(f: object) -> None:
    assert isinstance(f, Partition | Heal | Crash | Restart | Loss | Duplicate)
    assert 0 <= f.at_ms < 1000
    if isinstance(f, Partition):
        members = [n for g in f.groups for n in g]
        assert sorted(members) == [1, 2, 3]
