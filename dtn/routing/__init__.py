"""Contact plans and Contact Graph Routing (after CCSDS SABR 734.3-B-1). Sans-I/O.

See spec/routing.md for the algorithm, its complexity and where it differs from SABR.
"""

from dtn.routing.cgr import Route as Route
from dtn.routing.cgr import Router as Router
from dtn.routing.contact import Contact as Contact
from dtn.routing.contact import Range as Range
from dtn.routing.plan import ContactPlan as ContactPlan
from dtn.routing.plan import PlanError as PlanError
from dtn.routing.plan import RoutingError as RoutingError
from dtn.routing.plan import load_plan as load_plan
from dtn.routing.plan import parse_hdtn_json as parse_hdtn_json
from dtn.routing.plan import parse_ionrc as parse_ionrc
