"""A node: one bundle agent plus the services on its endpoints (sans-I/O).

Public names: :class:`Inbound`, :class:`Send`, :class:`ServiceContext`,
:class:`Service` (and :class:`ServiceState`); ``NodeCore``, ``EventKind`` and
``EchoService`` join them as the node-services work lands (spec/node.md).
"""

from dtn.node.service import (
    DEFAULT_LIFETIME_MS as DEFAULT_LIFETIME_MS,
)
from dtn.node.service import (
    RESERVED_SERVICES as RESERVED_SERVICES,
)
from dtn.node.service import (
    Inbound as Inbound,
)
from dtn.node.service import (
    NodeCredentials as NodeCredentials,
)
from dtn.node.service import (
    Send as Send,
)
from dtn.node.service import (
    Service as Service,
)
from dtn.node.service import (
    ServiceContext as ServiceContext,
)
from dtn.node.service import (
    ServiceState as ServiceState,
)

__all__ = [
    "DEFAULT_LIFETIME_MS",
    "RESERVED_SERVICES",
    "Inbound",
    "NodeCredentials",
    "Send",
    "Service",
    "ServiceContext",
    "ServiceState",
]
