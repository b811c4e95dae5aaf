"""The deterministic, seeded constellation simulator (a driver of the agent core).

N agents in one process on a virtual clock; links open and close by the
contact plan, with light time, data rate, seeded loss, duplication and
reordering, imposed partitions, and node crash/restart. See
:mod:`dtn.sim.engine` and spec/simulator.md.
"""

from dtn.sim import engine
from dtn.sim.engine import *  # noqa: F403  (the names in engine.__all__)
from dtn.sim.trace import Trace
from dtn.sim.traffic import TrafficItem, parse_traffic

__all__ = ["Trace", "TrafficItem", "parse_traffic"]
__all__ += engine.__all__
