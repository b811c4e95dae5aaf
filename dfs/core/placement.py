"""Where shares go: the placement rule (spec/dfs.md, "Placement").

A node is *eligible* for a share of ``share_bytes`` when membership says it
is alive (not suspect, unreachable, dead or left), it is not excluded (it
already holds a share of the object), it advertises room for the share
(when it advertises a total at all), it is not hot (temperature at or
above ``max_temp_c``), it is not short of power (battery under
``min_battery_pct`` while in eclipse), and CGR finds a route to it.

Eligible nodes are ranked by, in order: power class (0 when sunlit or
battery at or above ``good_battery_pct`` or unknown; else 1); the earliest
arrival of the share at the node, in whole minutes; free storage, most
first; then node number. The first ``count`` are taken.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from dcis.consensus.membership.view import MemberInfo, MemberState
from dcis.dfs.core.errors import PlacementError


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementPolicy:
    """Thresholds of the placement rule."""

    max_temp_c: float = 60.0
    min_battery_pct: float = 20.0
    good_battery_pct: float = 50.0


def rank_nodes(
    members: Mapping[int, MemberInfo],
    *,
    share_bytes: int,
    exclude: Collection[int],
    eta: Callable[[int], int | None],
    now_ms: int,
    policy: PlacementPolicy = PlacementPolicy(),
) -> list[int]:
    """Eligible nodes, best first (the rule in the module docstring).
    ``eta(node)`` is CGR's earliest arrival at ``node`` (None: no route)."""
    ranked: list[tuple[int, int, int, int]] = []
    for node, info in members.items():
        if info.state != MemberState.ALIVE or node in exclude:
            continue
        r = info.resources
        if r.store_total_bytes and r.store_free_bytes < share_bytes:
            continue
        if r.temperature_c is not None and r.temperature_c >= policy.max_temp_c:
            continue
        if (
            r.battery_pct is not None
            and r.battery_pct < policy.min_battery_pct
            and r.sunlit is not True
        ):
            continue
        arrival = eta(node)
        if arrival is None:
            continue
        power = (
            0
            if r.sunlit is True
            or r.battery_pct is None
            or r.battery_pct >= policy.good_battery_pct
            else 1
        )
        minutes = max(0, arrival - now_ms) // 60_000
        ranked.append((power, minutes, -r.store_free_bytes, node))
    ranked.sort()
    return [node for *_, node in ranked]


def choose_holders(
    members: Mapping[int, MemberInfo],
    count: int,
    *,
    share_bytes: int,
    exclude: Collection[int],
    eta: Callable[[int], int | None],
    now_ms: int,
    policy: PlacementPolicy = PlacementPolicy(),
) -> list[int]:
    """The ``count`` best distinct eligible nodes; PlacementError if fewer."""
    ranked = rank_nodes(
        members,
        share_bytes=share_bytes,
        exclude=exclude,
        eta=eta,
        now_ms=now_ms,
        policy=policy,
    )
    if len(ranked) < count:
        raise PlacementError(f"need {count} eligible nodes, found {len(ranked)}")
    return ranked[:count]
