"""The placement rule and the in-memory share store."""

from __future__ import annotations

import pytest

from dcis.consensus.membership.view import MemberInfo, MemberState, Resources
from dcis.dfs.core.errors import CorruptBlock, PlacementError, StoreFull
from dcis.dfs.core.placement import choose_holders, rank_nodes
from dcis.dfs.core.store import MemoryShareStore

NOW = 1_000_000


def member(
    node: int, state: MemberState = MemberState.ALIVE, **res: object
) -> MemberInfo:
    return MemberInfo(node=node, state=state, incarnation=1, resources=Resources(**res))  # type: ignore[arg-type]


def test_rule_order_power_then_contact_then_free_then_number() -> None:
    members = {
        1: member(1, battery_pct=30.0, sunlit=False),  # power class 1
        2: member(2, store_free_bytes=10, store_total_bytes=100),
        3: member(3, store_free_bytes=50, store_total_bytes=100),
        4: member(4),  # unknown resources: free counts as 0
        5: member(5, store_free_bytes=90, store_total_bytes=100),  # far contact
    }
    eta = {1: NOW, 2: NOW, 3: NOW, 4: NOW, 5: NOW + 3 * 60_000}
    got = rank_nodes(members, share_bytes=5, exclude=(), eta=eta.get, now_ms=NOW)
    assert got == [3, 2, 4, 5, 1]


def test_ineligible_nodes_are_skipped() -> None:
    members = {
        1: member(1, state=MemberState.SUSPECT),
        2: member(2, state=MemberState.DEAD),
        3: member(3, store_free_bytes=1, store_total_bytes=100),  # no room
        4: member(4, temperature_c=70.0),  # hot
        5: member(5, battery_pct=10.0, sunlit=False),  # low in eclipse
        6: member(6, battery_pct=10.0, sunlit=True),  # low but charging: ok
        7: member(7),  # no route
        8: member(8),  # excluded
        9: member(9),
    }
    eta = {n: NOW for n in members if n != 7}
    got = rank_nodes(members, share_bytes=5, exclude={8}, eta=eta.get, now_ms=NOW)
    assert sorted(got) == [6, 9]
    with pytest.raises(PlacementError):
        choose_holders(members, 3, share_bytes=5, exclude={8}, eta=eta.get, now_ms=NOW)


def test_store_checksum_flip_and_capacity() -> None:
    s = MemoryShareStore(capacity_bytes=10)
    oid = bytes(16)
    s.put_block(oid, 1, 0, b"abcd", 5)
    s.put_block(oid, 1, 1, b"efgh", 6)
    assert s.chunks(oid, 1) == [0, 1]
    assert list(s.shares()) == [(oid, 1, 5)]
    with pytest.raises(StoreFull):
        s.put_block(oid, 2, 0, b"xyz", 7)
    assert s.used_bytes() == 8
    assert s.flip_bit(oid, 1, 0, 3)
    with pytest.raises(CorruptBlock):
        s.get_block(oid, 1, 0)
    assert s.get_block(oid, 1, 1) == b"efgh"
    s.delete_block(oid, 1, 0)
    s.delete_share(oid, 1)
    assert s.used_bytes() == 0
    assert list(s.shares()) == []
