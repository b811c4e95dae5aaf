"""Contact plans and Contact Graph Routing (after CCSDS SABR 734.3-B-1). Sans-I/O.

See spec/routing.md for the algorithm, its complexity and where it differs from SABR.
"""

from typing import Any

from dcis.dtn.routing.cgr import Route as Route
from dcis.dtn.routing.cgr import Router as Router
from dcis.dtn.routing.contact import Contact as Contact
from dcis.dtn.routing.contact import Range as Range
from dcis.dtn.routing.plan import ContactPlan as ContactPlan
from dcis.dtn.routing.plan import PlanError as PlanError
from dcis.dtn.routing.plan import RoutingError as RoutingError
from dcis.dtn.routing.plan import parse_hdtn_json as parse_hdtn_json
from dcis.dtn.routing.plan import parse_ionrc as parse_ionrc


def __getattr__(name: str) -> Any:
    # For code written before plan files moved to the edge (issue 11):
    # import load_plan from dcis.dtn.storage.
    if name == "load_plan":
        from dcis.dtn.storage.plan_files import load_plan

        return load_plan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
