"""The member state table: total, and the promises the spec makes of it."""

from __future__ import annotations

import pytest

from dcis.consensus.membership.table import TRANSITIONS, Effect, Input, step
from dcis.consensus.membership.view import MemberState

PAIRS = [(s, i) for s in MemberState for i in Input]


def test_table_is_total() -> None:
    assert set(TRANSITIONS) == set(PAIRS)


@pytest.mark.parametrize(("state", "inp"), PAIRS)
def test_every_pair(state: MemberState, inp: Input) -> None:
    new, eff = step(state, inp)
    assert isinstance(new, MemberState)
    gone = (MemberState.DEAD, MemberState.LEFT)
    news = (Input.ALIVE_NEWS, Input.SUSPECT_NEWS, Input.DEAD_NEWS, Input.LEFT_NEWS)
    # Only news (a signed, newer update) takes a member out of dead or left.
    if state in gone and new not in gone:
        assert inp in (Input.ALIVE_NEWS, Input.SUSPECT_NEWS)
        assert eff & Effect.UNTOMB
    # Expected silence never leads to suspicion or death by itself.
    if state == MemberState.UNREACHABLE and new in (
        MemberState.SUSPECT,
        MemberState.DEAD,
    ):
        assert inp == Input.DEAD_NEWS
    # No route is never a reason to suspect.
    if inp == Input.NO_ROUTE:
        assert new in (MemberState.UNREACHABLE, *gone)
    # A node declares death only at the end of a suspicion it ran.
    if eff & Effect.DECLARE_DEAD:
        assert (state, inp) == (MemberState.SUSPECT, Input.SUSPECT_TIMEOUT)
    # An ack never revives the dead.
    if inp == Input.PROBE_OK and state in gone:
        assert new == state
    # Entering a tombstone state always starts the tombstone clock.
    if new in gone and state not in gone:
        assert eff & Effect.TOMBSTONE
    if eff & Effect.FORGET:
        assert state in gone
        assert inp == Input.TOMBSTONE_EXPIRED
    if inp in news and eff & Effect.FORWARD:
        assert True
    # A suspicion timer runs only in suspect.
    if eff & Effect.START_TIMER:
        assert new == MemberState.SUSPECT
