"""The Raft roles of one log node and every transition between them, in one
table.

Theory of operation: a node is a follower until its election deadline passes
with no word from a leader; it then asks for *pre-votes* without bumping its
term (so a node cut off in a minority, which can never win, does not inflate
terms and depose a working leader when it returns). With pre-votes from a
majority it becomes a candidate (term + 1) and asks for votes; with votes
from a majority, leader. Any message with a higher term, or an append from
the current term's leader, makes a node a follower; a leader that has not
heard from a majority for an election timeout steps down (check-quorum); a
node the committed configuration leaves out stops taking part.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Role(StrEnum):
    """What a node is doing in the election."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class RoleEvent(StrEnum):
    """What can move a node between roles."""

    ELECTION_TIMEOUT = "election-timeout"
    PRE_VOTE_QUORUM = "pre-vote-quorum"
    VOTE_QUORUM = "vote-quorum"
    HIGHER_TERM = "higher-term"
    LEADER_HEARD = "leader-heard"
    QUORUM_LOST = "quorum-lost"
    REMOVED = "removed"


F, P, C, L = Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER
E = RoleEvent

TRANSITIONS: Final[dict[tuple[Role, RoleEvent], Role]] = {
    (F, E.ELECTION_TIMEOUT): P,
    (F, E.HIGHER_TERM): F,
    (F, E.LEADER_HEARD): F,
    (F, E.REMOVED): F,
    (P, E.ELECTION_TIMEOUT): P,  # a fresh pre-vote round
    (P, E.PRE_VOTE_QUORUM): C,
    (P, E.HIGHER_TERM): F,
    (P, E.LEADER_HEARD): F,
    (P, E.REMOVED): F,
    (C, E.ELECTION_TIMEOUT): P,  # split vote: back through pre-vote
    (C, E.VOTE_QUORUM): L,
    (C, E.HIGHER_TERM): F,
    (C, E.LEADER_HEARD): F,
    (C, E.REMOVED): F,
    (L, E.HIGHER_TERM): F,
    (L, E.QUORUM_LOST): F,
    (L, E.REMOVED): F,
}
"""(role, event) -> next role. A pair not listed is ignored (the event does
not apply in that role, e.g. a stale vote quorum at a follower)."""


def next_role(role: Role, event: RoleEvent) -> Role | None:
    """The role after ``event`` in ``role``, or None when it does not apply."""
    return TRANSITIONS.get((role, event))
