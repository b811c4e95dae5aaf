"""The testbed scenario of issue 14 on the in-memory cluster with on-disk
share stores (the daemon wiring is not there yet): a 100 MiB object, 3-of-10,
n - k holders killed, read back intact; a byte flipped in one share file,
found by the scrubber and repaired; every share good on n distinct nodes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dcis.dfs.core.codec import crc32c
from dcis.dfs.core.errors import CorruptBlock
from dcis.dfs.core.service import DfsConfig, OpState
from dcis.dfs.sharestore import DiskShareStore
from dcis.dfs.testing import Cluster


@pytest.mark.slow
def test_kill_n_minus_k_holders_then_scrub_and_repair_a_flipped_byte(
    tmp_path: Path,
) -> None:
    c = Cluster(nodes=list(range(1, 13)), config=DfsConfig())
    for n in c.nodes:
        c.stores[n] = DiskShareStore(tmp_path / str(n), fsync=False)  # type: ignore[assignment]
        c.crash(n)
        c.start(n)
    data = random.Random(14).randbytes(100 << 20)
    op = c.services[1].put("big", data, c.now_ms)
    c.flush(1)
    c.hub.commit()
    m = op.manifest
    assert op.placed == set(range(10))
    killed = list(m.placement[1:8])
    for h in killed:
        c.crash(h)
    reader = next(n for n in c.nodes if n not in m.placement)
    got = c.services[reader].get("big", c.now_ms)
    c.flush(reader)
    assert got.state == OpState.DONE
    assert got.result() == data
    assert got.shares_fetched == {0, 8, 9}
    for h in killed:
        c.start(h)
    c.deliver()
    # Flip one byte of one block file of share 4.
    holder = m.placement[4]
    path = tmp_path / str(holder) / m.object_id.hex() / "4" / "7.blk"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01
    path.write_bytes(bytes(raw))
    for _ in range(4):  # scrub budget: 256 blocks a round; a holder has 100
        c.tick(60_000)
        c.hub.commit()
    assert c.services[holder].stats["corrupt"] == 1
    assert c.services[holder].stats["rebuilt_blocks"] == 1
    holders = c.services[1].placement(m).holders
    assert len(set(holders)) == 10
    for i, h in enumerate(holders):
        for j in range(m.chunks):
            try:
                block = c.stores[h].get_block(m.object_id, i, j)
            except CorruptBlock:
                pytest.fail(f"share {i} chunk {j} on node {h} still corrupt")
            assert block is not None
            assert crc32c(block) == m.block_crcs[j][i]
