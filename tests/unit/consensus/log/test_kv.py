"""The key-value state machine: ops, rejections, exactly-once, merges."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dcis.consensus.log.api import (
    CompareAndSet,
    Delete,
    EntryId,
    Increment,
    Op,
    Outcome,
    Put,
    SetAdd,
    SetRemove,
)
from dcis.consensus.log.kv import KvState, decode_kv_untrusted
from dcis.consensus.log.wire import Entry, Hlc


def e(
    origin: int, seq: int, op: Op, ms: int = 0, parents: tuple[EntryId, ...] = ()
) -> Entry:
    return Entry(origin=origin, seq=seq, hlc=Hlc(ms), op=op, parents=parents)


def test_put_delete_cas() -> None:
    kv = KvState()
    assert kv.apply(e(1, 1, Put("k", b"a"))) == Outcome.COMMITTED
    assert kv.apply(e(1, 2, CompareAndSet("k", b"b", b"c"))) == Outcome.REJECTED
    assert kv.rejected[EntryId(1, 2)] == "compare-and-set precondition failed"
    assert kv.values == {"k": b"a"}
    assert kv.apply(e(2, 1, CompareAndSet("k", b"a", None))) == Outcome.COMMITTED
    assert kv.values == {}
    assert kv.apply(e(2, 2, CompareAndSet("k", None, b"z"))) == Outcome.COMMITTED
    assert kv.apply(e(2, 3, Delete("k"))) == Outcome.COMMITTED
    assert kv.values == {}
    assert kv.outcome(EntryId(1, 2)) == Outcome.REJECTED
    assert kv.outcome(EntryId(2, 3)) == Outcome.COMMITTED
    assert kv.outcome(EntryId(2, 4)) is None


def test_duplicate_is_skipped_and_gap_or_missing_parent_rejected() -> None:
    kv = KvState()
    assert kv.apply(e(1, 1, Put("k", b"a"))) == Outcome.COMMITTED
    assert kv.apply(e(1, 1, Put("k", b"b"))) is None
    assert kv.values == {"k": b"a"}
    assert kv.apply(e(1, 3, Put("k", b"c"))) == Outcome.REJECTED
    assert kv.outcome(EntryId(1, 2)) == Outcome.REJECTED
    assert (
        kv.apply(e(2, 1, Put("j", b"x"), parents=(EntryId(3, 1),))) == Outcome.REJECTED
    )
    assert "parent" in kv.rejected[EntryId(2, 1)]


def test_counter_and_set_merges_commute() -> None:
    ops: list[Op] = [
        Increment("n", 5),
        Increment("n", -7),
        SetAdd("s", b"x"),
        SetAdd("s", b"y"),
        SetRemove("s", b"x"),
    ]
    a = KvState().view([e(1, i + 1, op) for i, op in enumerate(ops)])
    b = KvState().view([e(1, i + 1, op) for i, op in enumerate(reversed(ops[:2]))])
    assert a["n"] == b"-2" == b["n"]
    assert a["s"] == b"y"


@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.sampled_from(["a", "b"]), st.binary(max_size=3))
    )
)
def test_snapshot_round_trip_and_hash(writes: list[tuple[int, str, bytes]]) -> None:
    kv = KvState()
    seqs: dict[int, int] = {}
    for origin, key, value in writes:
        seqs[origin] = seqs.get(origin, 0) + 1
        op: Op = (
            CompareAndSet(key, value, None) if value == b"\x00" else Put(key, value)
        )
        kv.apply(e(origin, seqs[origin], op))
    back = decode_kv_untrusted(kv.encode())
    assert back == kv
    assert back.state_hash() == kv.state_hash()
