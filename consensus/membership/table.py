"""The member state machine: one table of (state, input) -> (state, effects).

Theory of operation
-------------------
Each node keeps one entry per member it knows. The entry's state is one of
:class:`~dcis.consensus.membership.view.MemberState`; it moves only through
:data:`TRANSITIONS`, which :func:`step` reads. The service decides which
input happened (an update is *news* when its precedence key beats the
entry's, see :attr:`dcis.consensus.membership.wire.Update.key`) and carries out
the effects; everything the state machine decides lives here (h11's rule 1).

Inputs:

- ``ALIVE_NEWS``/``SUSPECT_NEWS``/``DEAD_NEWS``/``LEFT_NEWS``: a verified
  update that overrides what the entry holds;
- ``CONFIRM``: a suspect update at the same incarnation from another accuser
  (Lifeguard shortens the suspicion timeout);
- ``PROBE_OK``/``PROBE_FAILED``: this node's probe (direct, then through k
  relays) was answered / was not, within the plan-derived timeouts;
- ``SUSPECT_TIMEOUT``: the suspicion timer ran out;
- ``NO_ROUTE``/``ROUTE``: the contact plan gives no round trip to the member
  within the probe horizon (expected silence) / gives one again;
- ``TOMBSTONE_EXPIRED``: a dead or left entry's tombstone ran out.

``UNREACHABLE`` is local: it is never sent, never runs a suspicion timer and
never leads to ``DEAD`` by itself; only someone who *can* reach the member
(and failed) may declare it dead. ``DEAD`` and ``LEFT`` leave only through
news with a higher incarnation (the member came back), or by forgetting the
entry when the tombstone expires (the service keeps an incarnation floor so
that a stale full-state sync cannot revive it).
"""

from __future__ import annotations

from enum import Enum, IntFlag, auto

from dcis.consensus.membership.view import MemberState

__all__ = ["TRANSITIONS", "Effect", "Input", "step"]


class Input(Enum):
    """What happened to a member (see the module docstring)."""

    ALIVE_NEWS = auto()
    SUSPECT_NEWS = auto()
    DEAD_NEWS = auto()
    LEFT_NEWS = auto()
    CONFIRM = auto()
    PROBE_OK = auto()
    PROBE_FAILED = auto()
    SUSPECT_TIMEOUT = auto()
    NO_ROUTE = auto()
    ROUTE = auto()
    TOMBSTONE_EXPIRED = auto()


class Effect(IntFlag):
    """What the service must do after a transition."""

    NONE = 0
    FORWARD = auto()  # gossip the update that caused it
    START_TIMER = auto()  # (re)start the suspicion timer
    SHORTEN_TIMER = auto()  # one more independent confirmation (Lifeguard)
    CANCEL_TIMER = auto()
    ACCUSE = auto()  # sign and gossip our own suspect claim
    DECLARE_DEAD = auto()  # sign and gossip a dead claim
    TOMBSTONE = auto()  # start the tombstone clock
    UNTOMB = auto()  # the member came back: stop the tombstone clock
    FORGET = auto()  # drop the entry (keep the incarnation floor)


A = MemberState.ALIVE
S = MemberState.SUSPECT
U = MemberState.UNREACHABLE
D = MemberState.DEAD
L = MemberState.LEFT
I = Input  # noqa: E741
E = Effect
_GONE = E.FORWARD | E.CANCEL_TIMER | E.TOMBSTONE

TRANSITIONS: dict[tuple[MemberState, Input], tuple[MemberState, Effect]] = {
    # alive
    (A, I.ALIVE_NEWS): (A, E.FORWARD),
    (A, I.SUSPECT_NEWS): (S, E.FORWARD | E.START_TIMER),
    (A, I.CONFIRM): (S, E.FORWARD | E.START_TIMER),
    (A, I.DEAD_NEWS): (D, _GONE),
    (A, I.LEFT_NEWS): (L, _GONE),
    (A, I.PROBE_OK): (A, E.NONE),
    (A, I.PROBE_FAILED): (S, E.ACCUSE | E.START_TIMER),
    (A, I.SUSPECT_TIMEOUT): (A, E.NONE),
    (A, I.NO_ROUTE): (U, E.NONE),
    (A, I.ROUTE): (A, E.NONE),
    (A, I.TOMBSTONE_EXPIRED): (A, E.NONE),
    # suspect: only a refutation (alive news) clears it, not an ack
    (S, I.ALIVE_NEWS): (A, E.FORWARD | E.CANCEL_TIMER),
    (S, I.SUSPECT_NEWS): (S, E.FORWARD | E.START_TIMER),
    (S, I.CONFIRM): (S, E.FORWARD | E.SHORTEN_TIMER),
    (S, I.DEAD_NEWS): (D, _GONE),
    (S, I.LEFT_NEWS): (L, _GONE),
    (S, I.PROBE_OK): (S, E.NONE),
    (S, I.PROBE_FAILED): (S, E.NONE),
    (S, I.SUSPECT_TIMEOUT): (D, E.DECLARE_DEAD | E.TOMBSTONE),
    (S, I.NO_ROUTE): (U, E.CANCEL_TIMER),
    (S, I.ROUTE): (S, E.NONE),
    (S, I.TOMBSTONE_EXPIRED): (S, E.NONE),
    # unreachable: expected silence; claims are passed on, never timed here
    (U, I.ALIVE_NEWS): (U, E.FORWARD),
    (U, I.SUSPECT_NEWS): (U, E.FORWARD),
    (U, I.CONFIRM): (U, E.FORWARD),
    (U, I.DEAD_NEWS): (D, _GONE),
    (U, I.LEFT_NEWS): (L, _GONE),
    (U, I.PROBE_OK): (A, E.NONE),
    (U, I.PROBE_FAILED): (U, E.NONE),
    (U, I.SUSPECT_TIMEOUT): (U, E.NONE),
    (U, I.NO_ROUTE): (U, E.NONE),
    (U, I.ROUTE): (A, E.NONE),
    (U, I.TOMBSTONE_EXPIRED): (U, E.NONE),
    # dead: back only with a higher incarnation (news), never by an ack
    (D, I.ALIVE_NEWS): (A, E.FORWARD | E.UNTOMB),
    (D, I.SUSPECT_NEWS): (S, E.FORWARD | E.START_TIMER | E.UNTOMB),
    (D, I.CONFIRM): (D, E.NONE),
    (D, I.DEAD_NEWS): (D, E.FORWARD | E.TOMBSTONE),
    (D, I.LEFT_NEWS): (L, E.FORWARD | E.TOMBSTONE),
    (D, I.PROBE_OK): (D, E.NONE),
    (D, I.PROBE_FAILED): (D, E.NONE),
    (D, I.SUSPECT_TIMEOUT): (D, E.NONE),
    (D, I.NO_ROUTE): (D, E.NONE),
    (D, I.ROUTE): (D, E.NONE),
    (D, I.TOMBSTONE_EXPIRED): (D, E.FORGET),
    # left: as dead
    (L, I.ALIVE_NEWS): (A, E.FORWARD | E.UNTOMB),
    (L, I.SUSPECT_NEWS): (S, E.FORWARD | E.START_TIMER | E.UNTOMB),
    (L, I.CONFIRM): (L, E.NONE),
    (L, I.DEAD_NEWS): (D, E.FORWARD | E.TOMBSTONE),
    (L, I.LEFT_NEWS): (L, E.FORWARD | E.TOMBSTONE),
    (L, I.PROBE_OK): (L, E.NONE),
    (L, I.PROBE_FAILED): (L, E.NONE),
    (L, I.SUSPECT_TIMEOUT): (L, E.NONE),
    (L, I.NO_ROUTE): (L, E.NONE),
    (L, I.ROUTE): (L, E.NONE),
    (L, I.TOMBSTONE_EXPIRED): (L, E.FORGET),
}
"""Every (state, input) pair, with the next state and the effects."""


def step(state: MemberState, inp: Input) -> tuple[MemberState, Effect]:
    """The next state and effects for ``inp`` in ``state`` (total: every
    pair is in the table)."""
    return TRANSITIONS[(state, inp)]
