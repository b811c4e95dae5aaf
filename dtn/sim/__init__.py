"""The deterministic, seeded constellation simulator (a driver of the agent core).

N agents in one process on a virtual clock; links open and close by the
contact plan, with light time, data rate, seeded loss, duplication and
reordering, imposed partitions, and node crash/restart. See
:mod:`dcis.dtn.sim.engine` and spec/simulator.md.
"""

from dcis.dtn.sim import engine
from dcis.dtn.sim.engine import *  # noqa: F403  (the names in engine.__all__)
from dcis.dtn.sim.trace import Trace
from dcis.dtn.sim.traffic import TrafficItem, parse_traffic

__all__ = ["Trace", "TrafficItem", "parse_traffic"]
__all__ += engine.__all__
