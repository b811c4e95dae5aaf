"""The object store on the real stack in the simulator: membership (16),
the log (17) and the object store (18) on five NodeCores over a contact
plan. A put commits its manifest through the log; another node reads the
object; a holder is lost for good, membership declares it dead, one repair
claim commits and the new holder rebuilds the share."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from dcis.consensus.log.api import Level
from dcis.consensus.log.service import LogService
from dcis.consensus.membership.service import MembershipService
from dcis.consensus.membership.sim import credentials_for
from dcis.consensus.membership.view import MemberState
from dcis.dfs.core.codec import crc32c
from dcis.dfs.core.manifest import Manifest, manifest_key
from dcis.dfs.core.service import DfsConfig, DfsService, GetOp, OpState
from dcis.dfs.core.store import MemoryShareStore
from dcis.dfs.stack import member_keys
from dcis.dfs.testing import CommandService
from dcis.dtn.node import Service
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import SimConfig, Simulator

NODES = [1, 2, 3, 4, 5, 6]
DURATION_S = 20_000
CFG = DfsConfig(chunk_size=1024, k=2, n=4, maintenance_interval_ms=30_000)


def mesh_plan() -> ContactPlan:
    contacts = [
        Contact(a, b, 0, DURATION_S, 1e7) for a in NODES for b in NODES if a != b
    ]
    ranges = [Range(a, b, 0, DURATION_S, 0.05) for a in NODES for b in NODES if a != b]
    return ContactPlan(contacts, ranges)


@pytest.mark.slow
def test_put_get_and_repair_on_membership_and_log() -> None:
    stores = {n: MemoryShareStore() for n in NODES}
    cmds: dict[int, CommandService] = {}
    logs: dict[int, LogService] = {}
    views: dict[int, MembershipService] = {}

    creds = credentials_for(NODES, seed=4)

    def factory(node: int, incarnation: int) -> Sequence[Service]:
        m = MembershipService()
        log = LogService(m)
        dfs = DfsService(
            membership=m,
            log=log,
            store=stores[node],
            config=CFG,
            readers=lambda: member_keys(m),
            entropy=random.Random(f"{node}:{incarnation}").randbytes,
        )
        cmds[node], logs[node], views[node] = CommandService(dfs), log, m
        return [m, log, dfs, cmds[node]]

    sim = Simulator(
        mesh_plan(),
        SimConfig(seed=4, duration_s=DURATION_S),
        services=factory,
        credentials=creds,
    )
    sim.run_until(120)
    assert all(
        info.state == MemberState.ALIVE for info in views[1].members().values()
    ), views[1].members()
    data = random.Random(5).randbytes(5000)
    put: list[Manifest] = []
    cmds[1].queue.append(
        lambda dfs, now: put.append(dfs.put("obj", data, now).manifest)
    )
    sim.run_until(sim.now_s + 60)
    m = put[0]
    assert (
        sorted(m.keys) == NODES
    )  # the key is sealed to every member, not in the clear
    for n in NODES:
        assert logs[n].get(manifest_key("obj"), Level.COMMITTED) is not None, n
    reader = next(n for n in NODES if n not in m.placement)
    got: list[GetOp] = []
    cmds[reader].queue.append(lambda dfs, now: got.append(dfs.get("obj", now)))
    sim.run_until(sim.now_s + 30)
    assert got[0].state == OpState.DONE
    assert got[0].result() == data

    lost = m.placement[2]
    sim.crash(lost)
    stores[lost] = MemoryShareStore()
    for _ in range(60):
        sim.run_until(sim.now_s + 30)
        live = [n for n in NODES if n != lost]
        dfs = cmds[live[0]].dfs
        holders = dfs.placement(m, Level.COMMITTED).holders
        if lost not in holders and all(
            len(stores[h].chunks(m.object_id, i)) == m.chunks
            for i, h in enumerate(holders)
        ):
            break
    holders = cmds[live[0]].dfs.placement(m, Level.COMMITTED).holders
    assert lost not in holders
    assert len(set(holders)) == m.n
    for i, h in enumerate(holders):
        for j in range(m.chunks):
            block = stores[h].get_block(m.object_id, i, j)
            assert block is not None
            assert crc32c(block) == m.block_crcs[j][i]
    claims = sum(cmds[n].dfs.stats["repair_claims"] for n in live)
    assert claims >= 1
    sim.close()
