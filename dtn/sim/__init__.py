"""The deterministic, seeded constellation simulator (a driver of the agent core).

N agents in one process on a virtual clock; links open and close by the
contact plan, with light time, data rate, seeded loss, duplication and
reordering, imposed partitions, and node crash/restart. See
:mod:`dtn.sim.engine` and spec/simulator.md.
"""

from dtn.sim.engine import (
    SIM_EPOCH,
    AgentFactory,
    BundleRecord,
    Crash,
    NodeSpec,
    Partition,
    PlanLike,
    SimAgent,
    SimConfig,
    SimSummary,
    Simulator,
    StoreFactory,
)
from dtn.sim.trace import Trace
from dtn.sim.traffic import TrafficItem, parse_traffic

__all__ = [
    "SIM_EPOCH",
    "AgentFactory",
    "BundleRecord",
    "Crash",
    "NodeSpec",
    "Partition",
    "PlanLike",
    "SimAgent",
    "SimConfig",
    "SimSummary",
    "Simulator",
    "StoreFactory",
    "Trace",
    "TrafficItem",
    "parse_traffic",
]
