"""Client library for the local application API (spec/appapi.md).

- :class:`Client` -- blocking, for scripts and the ``dcis`` commands.
- :func:`open_trio_client` -- for trio programs (``async with``).

Both register endpoints, send bundles (``send_file``: streamed from a file),
receive the bundles of their endpoints (confirming each to the node as it is
handed out; ``Client.receive_file``: the payload streamed into a file, a
:class:`SpooledBundle`), ask for the node status and ping the node. Errors the node reports raise :class:`ClientError`.
"""

from __future__ import annotations

from dcis.dtn.client.common import ClientError as ClientError
from dcis.dtn.client.common import ReceivedBundle as ReceivedBundle
from dcis.dtn.client.common import SpooledBundle as SpooledBundle
from dcis.dtn.client.sync import Client as Client
from dcis.dtn.client.trio_client import TrioClient as TrioClient
from dcis.dtn.client.trio_client import open_trio_client as open_trio_client
