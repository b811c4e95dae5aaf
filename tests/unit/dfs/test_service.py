"""The object store service over the in-memory cluster (dcis.dfs.testing)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dcis.consensus.log.api import Level
from dcis.crypto.keys import NodeIdentity
from dcis.dfs.core import wire
from dcis.dfs.core.errors import NotFound, PlacementError, Unrecoverable
from dcis.dfs.core.manifest import placement_key
from dcis.dfs.core.service import AccessDenied, Busy, DfsConfig, DfsService, OpState
from dcis.dfs.core.store import MemoryShareStore
from dcis.dfs.sharestore import DiskShareStore
from dcis.dfs.testing import Cluster, FakeContext, MemoryLog, StaticMembership
from dcis.dtn.node.service import Inbound

CFG = DfsConfig(
    chunk_size=1000,
    maintenance_interval_ms=60_000,
    push_grace_ms=120_000,
    gc_grace_ms=600_000,
)


def data_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def cluster(nodes: int = 12) -> Cluster:
    return Cluster(nodes=list(range(1, nodes + 1)), config=CFG)


def put(c: Cluster, node: int, name: str, data: bytes, **kw: int) -> bytes:
    op = c.services[node].put(name, data, c.now_ms, **kw)
    c.flush(node)
    assert op.state == OpState.DONE
    return op.manifest.object_id


def get(c: Cluster, node: int, name: str, ticks: int = 5) -> bytes:
    op = c.services[node].get(name, c.now_ms)
    c.flush(node)
    for _ in range(ticks):
        if op.state != OpState.RUNNING:
            break
        c.tick(40_000)
    return op.result()


def holders_of(c: Cluster, oid: bytes) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for n, s in c.stores.items():
        for o, share, _ in s.shares():
            if o == oid:
                out.setdefault(n, []).append(share)
    return out


def test_put_places_n_distinct_shares_and_any_node_reads() -> None:
    c = cluster()
    data = data_of(4321)
    op = c.services[2].put("x", data, c.now_ms)
    c.flush(2)
    assert op.placed == set(range(10))
    where = holders_of(c, op.manifest.object_id)
    assert len(where) == 10
    assert all(len(v) == 1 for v in where.values())
    for node in (1, 2, 12):
        assert get(c, node, "x") == data
    assert [m.name for m in c.services[7].ls()] == ["x"]
    st = c.services[2].stat("x")
    assert (st["k"], st["n"], st["size"]) == (3, 10, 4321)


def test_get_survives_n_minus_k_lost_holders() -> None:
    c = cluster()
    data = data_of(5000, 2)
    oid = put(c, 1, "obj", data, k=3, n=10)
    c.hub.commit()
    holders = sorted(holders_of(c, oid))
    reader = holders[0]
    for h in holders[1:8]:
        c.lose(h)
    assert get(c, reader, "obj") == data
    assert get(c, 11, "obj") == data


def test_get_fails_typed_when_fewer_than_k_remain() -> None:
    c = cluster()
    oid = put(c, 1, "obj", data_of(3000), k=3, n=10)
    holders = sorted(holders_of(c, oid))
    for h in holders[2:]:
        c.lose(h)
    with pytest.raises(Unrecoverable):
        get(c, holders[0], "obj", ticks=200)


def test_reads_inside_a_partition_with_a_tentative_manifest() -> None:
    c = cluster(12)
    c.partition([set(range(1, 6)), set(range(6, 13))])
    data = data_of(2500, 3)
    put(c, 2, "p", data, k=2, n=4)
    assert c.hub.commit() == 0  # the minority side cannot commit
    assert get(c, 3, "p") == data
    with pytest.raises(NotFound):
        c.services[9].get("p", c.now_ms)
    c.heal()
    c.hub.commit()
    assert get(c, 9, "p") == data


def test_repair_claims_commit_once_and_never_double_a_node() -> None:
    c = cluster(14)
    data = data_of(3500, 4)
    oid = put(c, 1, "r", data)
    c.hub.commit()
    gone = sorted(holders_of(c, oid))[3:5]
    for h in gone:
        c.lose(h)
    for svc in c.services.values():
        svc.maintain(c.now_ms)
    claims = sum(s.stats["repair_claims"] for s in c.services.values())
    assert claims == 8  # every live holder claimed...
    c.hub.commit()
    outcomes = [o for s in c.services.values() for o in s.claim_outcomes().values()]
    assert sorted(outcomes) == ["committed"] + ["rejected"] * 7  # ...one won
    for _ in range(3):
        c.tick(60_000)
        c.hub.commit()
    where = holders_of(c, oid)
    assert len(where) == 10
    assert all(len(v) == 1 for v in where.values())
    assert not set(where) & set(gone)
    assert c.hub.committed[placement_key(oid)]
    for h in sorted(where)[:7]:
        c.lose(h)
    assert get(c, sorted(where)[8], "r") == data


def test_repair_waits_when_no_spare_node() -> None:
    c = cluster(10)
    oid = put(c, 1, "r", data_of(100))
    c.hub.commit()
    c.lose(sorted(holders_of(c, oid))[4])
    for svc in c.services.values():
        svc.maintain(c.now_ms)
    assert sum(s.stats["repair_claims"] for s in c.services.values()) == 0


def test_scrub_finds_a_flipped_bit_and_rebuilds_the_share() -> None:
    c = cluster()
    data = data_of(4000, 5)
    oid = put(c, 1, "s", data)
    c.hub.commit()
    holder = sorted(holders_of(c, oid))[5]
    share = holders_of(c, oid)[holder][0]
    assert c.stores[holder].flip_bit(oid, share, 2, 100)
    c.tick(60_000)
    c.tick(60_000)
    assert c.services[holder].stats["corrupt"] == 1
    assert c.services[holder].stats["rebuilt_blocks"] == 1
    assert c.stores[holder].get_block(oid, share, 2) is not None
    for h in sorted(holders_of(c, oid)):
        if h != holder:
            c.lose(h)
            if len(holders_of(c, oid)) == 3:
                break
    assert get(c, holder, "s") == data


def test_lost_push_is_pulled_after_grace() -> None:
    c = cluster()
    data = data_of(2000, 6)
    op = c.services[1].put("g", data, c.now_ms)
    target = op.manifest.placement[4]
    c.crash(target)
    c.flush(1)
    c.in_flight = [
        f for f in c.in_flight if not f.send.destination.startswith(f"ipn:{target}.")
    ]
    c.start(target)
    c.tick(60_000)
    assert c.stores[target].chunks(op.manifest.object_id, 4) == []
    for _ in range(3):
        c.tick(60_000)
    assert c.stores[target].chunks(op.manifest.object_id, 4) == [0, 1]


def test_rm_reclaims_and_orphans_are_collected_after_grace() -> None:
    c = cluster()
    oid = put(c, 1, "d", data_of(1500))
    c.services[3].rm("d", c.now_ms)
    c.tick(60_000)
    assert holders_of(c, oid) == {}
    with pytest.raises(NotFound):
        c.services[1].get("d", c.now_ms)
    # An orphan: blocks nobody's manifest names.
    c.stores[5].put_block(bytes([7]) * 16, 0, 0, b"junk", c.now_ms)
    c.tick(60_000)
    assert holders_of(c, bytes([7]) * 16) == {5: [0]}
    for _ in range(10):
        c.tick(60_000)
    assert holders_of(c, bytes([7]) * 16) == {}


def test_overwrite_keeps_new_object_and_collects_old() -> None:
    c = cluster()
    old = put(c, 1, "o", data_of(900, 1))
    new_data = data_of(1900, 2)
    put(c, 2, "o", new_data)
    c.hub.commit()
    assert get(c, 4, "o") == new_data
    for _ in range(12):
        c.tick(60_000)
    assert holders_of(c, old) == {}


def test_keys_are_wrapped_for_readers_only() -> None:
    ids = {n: NodeIdentity.generate(n, entropy=bytes([n]) * 32) for n in (1, 2, 3)}
    c = Cluster(nodes=[1, 2, 3], config=DfsConfig(chunk_size=500, k=2, n=3))
    for n in (1, 2, 3):
        svc = DfsService(
            membership=StaticMembership(c, n), log=MemoryLog(c.hub, n),
            store=c.stores[n], config=c.config, identity=ids[n],
            readers={2: ids[2].kx_public}, entropy=random.Random(n).randbytes,
        )  # fmt: skip
        c.services[n] = svc
        svc.start(FakeContext(c, n, n), c.now_ms)
    data = data_of(1200, 9)
    op = c.services[1].put("secret", data, c.now_ms)
    c.flush(1)
    assert sorted(op.manifest.keys) == [1, 2]
    assert get(c, 2, "secret") == data
    with pytest.raises(AccessDenied):
        c.services[3].get("secret", c.now_ms)


def test_placement_needs_n_nodes() -> None:
    c = cluster(5)
    with pytest.raises(PlacementError):
        c.services[1].put("big", b"x", c.now_ms, k=3, n=10)


def test_hostile_bundles_are_dropped() -> None:
    c = cluster(3)
    svc = c.services[1]
    for src, payload in [
        ("ipn:2.18", b""),
        ("ipn:2.18", b"\x00\x05abc"),
        ("ipn:2.5", b"\x00\x01\x80"),
        ("dtn://x", b""),
    ]:
        out = svc.on_bundle(Inbound("ipn:1.18", src, payload, 0, 0, "k"), c.now_ms)
        assert out == []
    assert svc.stats["dropped"] == 4


def test_store_full_drops_store_messages() -> None:
    c = Cluster(nodes=[1, 2, 3], config=DfsConfig(chunk_size=500, k=2, n=3))
    c.stores[3] = MemoryShareStore(capacity_bytes=10)
    c.crash(3)
    c.start(3)
    op = c.services[1].put("f", data_of(400), c.now_ms)
    c.flush(1)
    assert c.services[3].stats["dropped"] == 1
    assert len(op.placed) == 2
    assert c.services[1].log.get("dfs/m/f", Level.TENTATIVE) is not None


def _on_disk_with_block_1_flipped(tmp_path: Path) -> tuple[Cluster, bytes, int, int]:
    """A cluster on disk stores, one object put; a byte of block 1 of one
    holder's share flipped at rest. Returns (cluster, oid, holder, share)."""
    c = cluster()
    for n in c.nodes:
        c.stores[n] = DiskShareStore(tmp_path / str(n), fsync=False)  # type: ignore[assignment]
        c.crash(n)
        c.start(n)
    oid = put(c, 1, "disk", data_of(3000, 8))
    c.hub.commit()
    holder = sorted(holders_of(c, oid))[3]
    share = holders_of(c, oid)[holder][0]
    path = tmp_path / str(holder) / oid.hex() / str(share) / "1.blk"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    return c, oid, holder, share


def test_scrub_on_disk_finds_a_flipped_byte(tmp_path: Path) -> None:
    c, oid, holder, share = _on_disk_with_block_1_flipped(tmp_path)
    c.tick(60_000)
    c.tick(60_000)
    assert c.services[holder].stats["corrupt"] == 1
    assert c.stores[holder].get_block(oid, share, 1) is not None
    assert sorted(len(v) for v in holders_of(c, oid).values()) == [1] * 10


def test_open_gets_are_bounded() -> None:
    c = Cluster(
        nodes=[1, 2, 3], config=DfsConfig(chunk_size=100, k=2, n=3, max_fetches=2)
    )
    put(c, 1, "x", data_of(300))
    c.crash(2)
    c.crash(3)
    ops = [c.services[1].get("x", c.now_ms) for _ in range(4)]
    assert all(op.state == OpState.RUNNING for op in ops)
    with pytest.raises(Busy):
        c.services[1].get("x", c.now_ms)


def test_a_holder_missing_from_a_young_view_is_not_repaired() -> None:
    c = cluster(12)
    oid = put(c, 1, "y", data_of(500))
    c.hub.commit()
    absent = sorted(holders_of(c, oid))[2]

    class Young(StaticMembership):
        def members(self):  # type: ignore[no-untyped-def]
            return {n: m for n, m in super().members().items() if n != absent}

    for n, svc in c.services.items():
        svc.membership = Young(c, n)
        svc.maintain(c.now_ms)
    assert sum(s.stats["repair_claims"] for s in c.services.values()) == 0


def test_not_found_reads_as_a_sentence() -> None:
    """An operator sees what is missing, not a KeyError's quoted repr."""
    assert str(NotFound("no object named 'big' on this node")) == (
        "no object named 'big' on this node"
    )


def test_a_fetch_that_finds_a_bad_block_logs_it_and_rebuilds_the_share(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer's FETCH can reach a bad block before the scrub does (a fetch
    queued while the holder was down): the operator sees it in the log as
    from the scrub, and the share is rebuilt."""
    c, oid, holder, share = _on_disk_with_block_1_flipped(tmp_path)
    with caplog.at_level("WARNING", logger="dcis.dfs"):
        c.services[holder]._on_fetch(2, wire.Fetch(1, oid, share, (0, 1)))
    assert c.services[holder].stats["corrupt"] == 1
    assert any("found a bad block" in r.getMessage() for r in caplog.records)
    c.tick(60_000)
    c.tick(60_000)
    assert c.stores[holder].get_block(oid, share, 1) is not None
