"""The role table: every (role, event) pair, h2-style."""

from __future__ import annotations

import pytest

from dcis.consensus.log.roles import TRANSITIONS, Role, RoleEvent, next_role


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("event", list(RoleEvent))
def test_every_pair_is_a_role_or_ignored(role: Role, event: RoleEvent) -> None:
    got = next_role(role, event)
    assert got is None or got in Role
    if event in (RoleEvent.HIGHER_TERM, RoleEvent.REMOVED):
        assert got == Role.FOLLOWER  # always demotes
    if role == Role.LEADER:
        assert got in (None, Role.FOLLOWER)  # a leader only steps down


def test_only_path_to_leader_is_through_pre_vote_and_vote() -> None:
    into_leader = [k for k, v in TRANSITIONS.items() if v == Role.LEADER]
    assert into_leader == [(Role.CANDIDATE, RoleEvent.VOTE_QUORUM)]
    into_candidate = [k for k, v in TRANSITIONS.items() if v == Role.CANDIDATE]
    assert into_candidate == [(Role.PRE_CANDIDATE, RoleEvent.PRE_VOTE_QUORUM)]
