"""The dissemination queue hands out what a plain scan of the queue would."""

from __future__ import annotations

import heapq
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dcis.consensus.membership.gossip import GossipQueue
from dcis.consensus.membership.wire import Status, Update


def _update(subject: int, inc: int) -> Update:
    return Update(subject=subject, incarnation=inc, status=Status.ALIVE, signer=subject)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 40), st.integers(0, 3)),
        st.tuples(st.just("discard"), st.integers(1, 40), st.just(0)),
        st.tuples(st.just("take"), st.integers(1, 8), st.integers(1, 6)),
    ),
    max_size=120,
)


@given(ops)
def test_take_matches_the_fewest_sent_scan(steps: list[tuple[str, int, int]]) -> None:
    """Reference: a dict of [sent, subject, update] and heapq.nsmallest."""
    q = GossipQueue()
    ref: dict[int, list[Any]] = {}
    for op, a, b in steps:
        if op == "put":
            q.put(_update(a, b))
            ref[a] = [0, a, _update(a, b)]
        elif op == "discard":
            q.discard(a)
            ref.pop(a, None)
        else:
            picked = list(ref.values())
            if len(picked) > a:
                picked = heapq.nsmallest(a, picked)
            want = []
            for item in picked:
                want.append(item[2])
                item[0] += 1
                if item[0] >= b:
                    del ref[item[1]]
            assert q.take(a, b) == want
        assert len(q) == len(ref)
        assert all(q.get(s) == item[2] for s, item in ref.items())
