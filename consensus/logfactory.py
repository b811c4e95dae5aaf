"""Service factories that put the log on a node (``dtn-node``'s
``[services] factories``, ``Simulator(..., services=...)``, ``dcis sim
--services``).

``factory`` runs the log alone over a fixed member set read from the
environment variable ``DCIS_LOG_MEMBERS`` (``"1,2,3,4,5"``), for testbeds
without the membership service; a node that runs membership builds
``LogService(membership_view)`` in its own factory instead (the membership
service is a :class:`~dcis.consensus.membership.view.MembershipView`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from dcis.consensus.log.service import LogParams, LogService
from dcis.consensus.membership.view import MemberInfo, MemberState
from dcis.dtn.errors import InvalidArgument

MEMBERS_ENV = "DCIS_LOG_MEMBERS"


class FixedView:
    """A membership view of a fixed set of nodes, all alive."""

    def __init__(self, nodes: Sequence[int]) -> None:
        self._members = {
            n: MemberInfo(node=n, state=MemberState.ALIVE, incarnation=1) for n in nodes
        }

    def members(self) -> Mapping[int, MemberInfo]:
        """Every member, by node number."""
        return self._members

    def live(self) -> frozenset[int]:
        """All of them."""
        return frozenset(self._members)


def parse_members(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> (1, 2, 3); :class:`InvalidArgument` if malformed."""
    try:
        nodes = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError as exc:
        raise InvalidArgument(
            f"{MEMBERS_ENV}: expected node numbers like 1,2,3, got {text!r}"
        ) from exc
    if not nodes or any(n < 1 for n in nodes):
        raise InvalidArgument(
            f"{MEMBERS_ENV}: expected node numbers like 1,2,3, got {text!r}"
        )
    return nodes


def factory(node: int, incarnation: int) -> Sequence[LogService]:
    """The log service of ``node`` over the members in ``DCIS_LOG_MEMBERS``
    (just ``node`` when unset)."""
    text = os.environ.get(MEMBERS_ENV, "")
    members = parse_members(text) if text.strip() else (node,)
    return [LogService(FixedView(members), LogParams())]
