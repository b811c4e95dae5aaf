"""Clients of a node's log service (``ipn:<node>.17``) over the local app
API: :class:`LogClient` (blocking) and :class:`TrioLogClient` (trio).

Theory of operation: the client registers an ephemeral endpoint of the local
node, sends one :class:`~dcis.consensus.log.wire.ClientRequest` bundle to the
node's log service and waits for the :class:`~dcis.consensus.log.wire.ClientReply`
with the same request id (other bundles on the endpoint are ignored). In
process, other services use :class:`~dcis.consensus.log.service.LogService`
directly (it is a :class:`~dcis.consensus.log.api.KeyValueLog`).
"""

from __future__ import annotations

import random
import time
from typing import Any

from dcis.consensus.log.api import EntryId, Level, Op
from dcis.consensus.log.cbor import Value
from dcis.consensus.log.service import SERVICE_NUMBER
from dcis.consensus.log.wire import (
    ClientKind,
    ClientReply,
    ClientRequest,
    decode_message_untrusted,
    encode_message,
)
from dcis.dtn.client import Client, ClientError, TrioClient
from dcis.dtn.errors import DecodeError


class LogClientError(ClientError):
    """The log refused a request, or no reply came in time."""


def _reply_of(payload: bytes, req_id: int) -> ClientReply | None:
    try:
        msg = decode_message_untrusted(payload)
    except DecodeError:
        return None
    if isinstance(msg, ClientReply) and msg.req_id == req_id:
        return msg
    return None


def _checked(reply: ClientReply) -> ClientReply:
    if not reply.ok:
        raise LogClientError(f"log refused: {reply.error}")
    return reply


class LogClient:
    """Blocking access to the local node's log over an open app-API client."""

    def __init__(self, client: Client, *, timeout_s: float = 10.0) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.node = int(client.status()["node"])
        self._rng = random.Random(time.time_ns())
        self.endpoint = client.register(
            f"ipn:{self.node}.{self._rng.randrange(10_000, 2**31)}"
        )

    def _ask(self, req: ClientRequest) -> ClientReply:
        self.client.send(
            f"ipn:{self.node}.{SERVICE_NUMBER}",
            encode_message(req),
            source=self.endpoint,
            lifetime_ms=int(self.timeout_s * 1000) + 1000,
        )
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            b = self.client.receive(timeout_s=max(0.0, left)) if left > 0 else None
            if b is None:
                raise LogClientError(
                    f"no reply from the log service within {self.timeout_s} s"
                )
            reply = _reply_of(b.payload, req.req_id)
            if reply is not None:
                return _checked(reply)

    def _id(self) -> int:
        return self._rng.randrange(1, 2**63)

    def append(self, op: Op) -> EntryId:
        """Submit ``op`` as the node's next tentative entry; its id."""
        reply = self._ask(
            ClientRequest(req_id=self._id(), kind=ClientKind.APPEND, op=op)
        )
        if reply.entry is None:
            raise LogClientError("append reply without an entry id")
        return reply.entry

    def get(self, key: str, level: Level = Level.COMMITTED) -> bytes | None:
        """The value of ``key`` at ``level`` on the node."""
        req = ClientRequest(
            req_id=self._id(), kind=ClientKind.GET, key=key, level=str(level)
        )
        return self._ask(req).value

    def status(self) -> dict[str, Value]:
        """The log's status (term, leader, commit_index, tentative_count, members, state_hash, ...)."""
        return dict(
            self._ask(ClientRequest(req_id=self._id(), kind=ClientKind.STATUS)).status
        )


class TrioLogClient:
    """The same over a :class:`~dcis.dtn.client.TrioClient`; call
    :meth:`open` once before use."""

    def __init__(self, client: TrioClient) -> None:
        self.client = client
        self.node = 0
        self.endpoint = ""
        self._rng = random.Random(time.time_ns())

    async def open(self) -> None:
        """Register the ephemeral endpoint."""
        status: dict[str, Any] = await self.client.status()
        self.node = int(status["node"])
        self.endpoint = await self.client.register(
            f"ipn:{self.node}.{self._rng.randrange(10_000, 2**31)}"
        )

    async def _ask(self, req: ClientRequest) -> ClientReply:
        await self.client.send(
            f"ipn:{self.node}.{SERVICE_NUMBER}",
            encode_message(req),
            source=self.endpoint,
        )
        while True:
            b = await self.client.receive()
            reply = _reply_of(b.payload, req.req_id)
            if reply is not None:
                return _checked(reply)

    async def append(self, op: Op) -> EntryId:
        """As :meth:`LogClient.append` (wrap in ``trio.fail_after`` for a timeout)."""
        reply = await self._ask(
            ClientRequest(
                req_id=self._rng.randrange(1, 2**63), kind=ClientKind.APPEND, op=op
            )
        )
        if reply.entry is None:
            raise LogClientError("append reply without an entry id")
        return reply.entry

    async def get(self, key: str, level: Level = Level.COMMITTED) -> bytes | None:
        """As :meth:`LogClient.get`."""
        req = ClientRequest(
            req_id=self._rng.randrange(1, 2**63),
            kind=ClientKind.GET,
            key=key,
            level=str(level),
        )
        return (await self._ask(req)).value

    async def status(self) -> dict[str, Value]:
        """As :meth:`LogClient.status`."""
        req = ClientRequest(
            req_id=self._rng.randrange(1, 2**63), kind=ClientKind.STATUS
        )
        return dict((await self._ask(req)).status)
