"""The trio runtime: drives the sans-I/O agent with real sockets, a real clock
and the SQLite store. Embed it (``open_node``) or run ``dtn-node``."""

from __future__ import annotations

from dcis.dtn.client.common import ReceivedBundle as ReceivedBundle
from dcis.dtn.runtime.config import ConfigError as ConfigError
from dcis.dtn.runtime.config import NeighbourConfig as NeighbourConfig
from dcis.dtn.runtime.config import NodeConfig as NodeConfig
from dcis.dtn.runtime.config import load_config as load_config
from dcis.dtn.runtime.node import ECHO_SERVICE as ECHO_SERVICE
from dcis.dtn.runtime.node import Node as Node
from dcis.dtn.runtime.node import open_node as open_node
