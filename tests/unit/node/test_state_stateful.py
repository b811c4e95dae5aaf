"""StagedState against a dict model (hypothesis stateful): staged writes are
visible at once, reach the backend only on commit, vanish on discard; the
commits into a transaction that rolls back (the backend back to what it
was at its start) are staged again: reads do not change, a discard keeps
them, the next commit writes them."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dcis.dtn.node.state import MemoryStateBackend, StagedState, StateBackend

KEYS = st.sampled_from(["a", "ab", "b", "ba", "c"])
VALUES = st.binary(max_size=8)


class StagedStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.backend: StateBackend = MemoryStateBackend()
        self.state = StagedState(self.backend, 5)
        self.committed: dict[str, bytes] = {}
        self.view: dict[str, bytes] = {}
        # What a discard returns to: the view at the last commit.
        self.base: dict[str, bytes] = {}
        # The backend when the open transaction began (None: none open).
        self.began: dict[str, bytes] | None = None

    @rule(key=KEYS, value=VALUES)
    def put(self, key: str, value: bytes) -> None:
        self.state.put(key, value)
        self.view[key] = value

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.state.delete(key)
        self.view.pop(key, None)

    @rule()
    def commit(self) -> None:
        self.state.commit(until_settled=self.began is not None)
        self.committed = dict(self.view)
        self.base = dict(self.view)

    @rule()
    def discard(self) -> None:
        self.state.discard()
        self.view = dict(self.base)

    @precondition(lambda self: self.began is None)
    @rule()
    def begin(self) -> None:
        self.began = dict(self.committed)

    @precondition(lambda self: self.began is not None)
    @rule(committed=st.booleans())
    def settle(self, committed: bool) -> None:
        assert self.began is not None
        if not committed:
            # The transaction rolls back: the backend as it began.
            for k in self.backend.service_keys(5):
                self.backend.service_delete(5, k)
            for k, v in self.began.items():
                self.backend.service_put(5, k, v)
            self.committed = self.began
        self.began = None
        self.state.settle(committed)

    @rule(prefix=st.sampled_from(["", "a", "b", "z"]))
    def keys(self, prefix: str) -> None:
        assert self.state.keys(prefix) == sorted(
            k for k in self.view if k.startswith(prefix)
        )

    @invariant()
    def reads_see_the_stage(self) -> None:
        for k in ("a", "ab", "b", "ba", "c"):
            assert self.state.get(k) == self.view.get(k)

    @invariant()
    def backend_holds_only_commits(self) -> None:
        assert {
            k: self.backend.service_get(5, k) for k in self.backend.service_keys(5)
        } == self.committed
        assert self.backend.service_keys(6) == []


TestStagedState = StagedStateMachine.TestCase


def test_bad_keys_and_values_are_refused() -> None:
    import pytest

    from dcis.dtn.errors import InvalidArgument

    s = StagedState(MemoryStateBackend(), 1)
    with pytest.raises(InvalidArgument):
        s.put("", b"x")
    with pytest.raises(InvalidArgument):
        s.put("k" * 2000, b"x")
    with pytest.raises(InvalidArgument):
        s.put("k", "text")  # type: ignore[arg-type]
    assert not s.dirty
