"""A node: one bundle agent plus the services on its endpoints (sans-I/O).

Public names: :class:`Inbound`, :class:`Send`, :class:`ServiceContext`,
:class:`Service` (and :class:`ServiceState`, :class:`IdleService`), :class:`NodeCore`,
:class:`EventKind` and :class:`EchoService` (spec/node.md).
"""

from dcis.dtn.agent.actions import EventKind as EventKind
from dcis.dtn.node.core import EndpointReserved as EndpointReserved
from dcis.dtn.node.core import NodeCore as NodeCore
from dcis.dtn.node.core import StateNotDurable as StateNotDurable
from dcis.dtn.node.echo import ECHO_SERVICE as ECHO_SERVICE
from dcis.dtn.node.echo import EchoService as EchoService
from dcis.dtn.node.service import (
    DEFAULT_LIFETIME_MS as DEFAULT_LIFETIME_MS,
)
from dcis.dtn.node.service import (
    RESERVED_SERVICES as RESERVED_SERVICES,
)
from dcis.dtn.node.service import (
    IdleService as IdleService,
)
from dcis.dtn.node.service import (
    Inbound as Inbound,
)
from dcis.dtn.node.service import (
    NodeCredentials as NodeCredentials,
)
from dcis.dtn.node.service import (
    Send as Send,
)
from dcis.dtn.node.service import (
    Service as Service,
)
from dcis.dtn.node.service import (
    ServiceContext as ServiceContext,
)
from dcis.dtn.node.service import (
    ServiceState as ServiceState,
)

__all__ = [
    "DEFAULT_LIFETIME_MS",
    "ECHO_SERVICE",
    "RESERVED_SERVICES",
    "EchoService",
    "EndpointReserved",
    "EventKind",
    "IdleService",
    "Inbound",
    "NodeCore",
    "NodeCredentials",
    "Send",
    "Service",
    "ServiceContext",
    "ServiceState",
    "StateNotDurable",
]
