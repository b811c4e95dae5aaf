"""Service factories that put membership on a node: for the simulator
(``Simulator(..., services=factory)``), ``dcis sim --services`` and the
daemon's ``[services] factories = ["dcis.consensus.membership.node:factory"]``.

The node must run with credentials (``[security]`` on a daemon,
``Simulator(..., credentials=...)``): membership signs its updates.
"""

from __future__ import annotations

from collections.abc import Sequence

from dcis.consensus.membership.service import MembershipConfig, MembershipService
from dcis.dtn.node.service import Service

__all__ = ["factory", "sparse_factory"]


def factory(node: int, incarnation: int) -> Sequence[Service]:
    """Membership with the defaults (1 s period, 30 s horizon): for
    connected plans and the testbed."""
    return [MembershipService()]


def sparse_factory(node: int, incarnation: int) -> Sequence[Service]:
    """Membership for sparse plans (contacts minutes apart): 5 s period,
    a 10-minute horizon."""
    cfg = MembershipConfig(period_ms=5_000, probe_timeout_ms=1_000, horizon_ms=600_000)
    return [MembershipService(cfg)]
