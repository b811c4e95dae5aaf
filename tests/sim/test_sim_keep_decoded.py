"""The simulator's agents keep just-stored bundles decoded
(``engine.SIM_KEEP_DECODED``, issue 18 "Fourth round: per hop"): a hop then
decodes its bundle once, on receipt, instead of again from the store when it
forwards it. The copies must change nothing but CPU, and their memory must
follow the bundles stored.

Differential property: over random small plans, traffic, faults and crashes
(durable nodes whose store survives and is recovered), a run whose agents
keep ``SIM_KEEP_DECODED`` decoded bundles, one whose agents keep one (the
cache is always full: every eviction rule runs) and one whose agents keep
none give the same summary and the same ``trace_sha256`` -- every byte sent,
every delivery, expiry and custody step is the same. At checkpoints, each
agent's decoded copies are of bundles it stores, at most its bound.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcis.dtn.agent import entries
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import SimConfig, SimSummary, Simulator
from dcis.dtn.sim.engine import SIM_KEEP_DECODED, default_agent_factory
from dcis.dtn.time import DtnTime
from tests.sim.test_ledger_property import (
    check_ledger,
    crash_case,
    kept_memory_stores,
    scenarios,
)


def _keeping(n: int) -> Any:
    def factory(
        *, node: int, store: Any, plan: Any, plan_epoch: DtnTime, rng: random.Random
    ) -> Agent:
        return Agent(
            node=node,
            store=store,
            plan=plan,
            plan_epoch=plan_epoch,
            rng=rng,
            config=AgentConfig(keep_decoded=n),
        )

    return factory


def _check_bounded(sim: Simulator, most: int) -> None:
    for nd in sim.nodes.values():
        agent = nd.agent
        if agent is None:
            continue
        assert isinstance(agent, Agent)
        hot = agent._hot
        assert len(hot) <= most
        assert agent._hot_bytes == sum(got[1] for got in hot.values())
        assert agent._hot_bytes <= entries.HOT_MAX_BYTES
        # Only bundles still held: memory follows the bundles stored.
        assert all(agent.holds(k) for k in hot)


def _run(
    sc: dict[str, object], extra: dict[str, Any], factory: Any, most: int
) -> SimSummary:
    cfg = SimConfig(
        seed=sc["seed"],  # type: ignore[arg-type]
        duration_s=400.0,
        loss=sc["loss"],  # type: ignore[arg-type]
        duplicate=sc["duplicate"],  # type: ignore[arg-type]
        reorder=sc["reorder"],  # type: ignore[arg-type]
        lifetime_s=sc["lifetime_s"],  # type: ignore[arg-type]
        store_dir=extra.pop("store_dir", None),
    )
    sim = Simulator(
        sc["plan"],  # type: ignore[arg-type]
        cfg,
        traffic=sc["traffic"],  # type: ignore[arg-type]
        partitions=sc["partitions"],  # type: ignore[arg-type]
        agent_factory=factory,
        store_factory=kept_memory_stores(),
        **extra,
    )
    t = 0.0
    while t < cfg.duration_s:
        t += 40.0
        sim.run_until(t)
        _check_bounded(sim, most)
    s = sim.run()
    check_ledger(sim, s)
    return s


def test_the_default_agents_keep_decoded_bundles() -> None:
    agent = default_agent_factory(
        node=1,
        store=MemoryStore(),
        plan=ContactPlan([], []),
        plan_epoch=DtnTime(0),
        rng=random.Random(0),
    )
    assert isinstance(agent, Agent)
    assert agent.config.keep_decoded == SIM_KEEP_DECODED > 0


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(), data=st.data(), crash=st.booleans())
def test_decoded_copies_change_nothing_but_cpu(
    sc: dict[str, object], data: st.DataObject, crash: bool
) -> None:
    extra: dict[str, Any] = {}
    if crash:
        crashes, specs = crash_case(sc, data)
        extra = {
            "store_dir": Path("/nonexistent"),
            "crashes": crashes,
            "node_specs": specs,
        }
    default = _run(sc, dict(extra), default_agent_factory, SIM_KEEP_DECODED)
    one = _run(sc, dict(extra), _keeping(1), 1)
    none = _run(sc, dict(extra), _keeping(0), 0)
    assert default == none
    assert one == none
