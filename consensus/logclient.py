"""Clients of a node's log service (``ipn:<node>.17``) over the local app
API: :class:`LogClient` (blocking) and :class:`TrioLogClient` (trio).

Theory of operation: each request is one encoded
:class:`~dcis.consensus.log.wire.ClientRequest`, answered by a
:class:`~dcis.consensus.log.wire.ClientReply` with the same request id. When
the node supports it (probed once, with a status request), requests go
straight to the log service over the app API (``service_request``: no
bundles, one store transaction per call, the reply after its fsync), and
:meth:`LogClient.append_many` puts many appends in one call. Otherwise the
client registers an ephemeral endpoint of the local node, sends each request
as a bundle to ``ipn:<node>.17`` and waits for the reply bundle (other
bundles on the endpoint are ignored). In process, other services use
:class:`~dcis.consensus.log.service.LogService` directly (it is a
:class:`~dcis.consensus.log.api.KeyValueLog`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
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
    """The log refused a request, or no reply came in time. From
    ``append_many``, ``entries`` holds each op's entry id (None where
    refused): the others were accepted all the same."""

    def __init__(self, message: str, entries: Sequence[EntryId | None] = ()) -> None:
        super().__init__(message)
        self.entries = list(entries)


def _direct_reply(payload: bytes, req_id: int) -> ClientReply:
    try:
        msg = decode_message_untrusted(payload)
    except DecodeError as exc:
        raise LogClientError(f"bad reply from the log service: {exc}") from exc
    if not isinstance(msg, ClientReply):
        raise LogClientError("the log service's reply is not a client reply")
    if msg.req_id == 0 and not msg.ok:
        # Replies are in request order: the service could not decode this
        # one (e.g. a key too long for the wire format).
        return ClientReply(req_id=req_id, ok=False, error=msg.error)
    if msg.req_id != req_id:
        raise LogClientError("the log service's reply does not match the request")
    return msg


def _entries(replies: Sequence[ClientReply]) -> list[EntryId]:
    got = [r.entry if r.ok else None for r in replies]
    bad = [
        r.error or "append reply without an entry id"
        for r in replies
        if r.entry is None
    ]
    if bad:
        raise LogClientError(
            f"log refused {len(bad)} of {len(replies)} appends: {bad[0]}", got
        )
    return [e for e in got if e is not None]


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
        self._rng = random.Random(time.time_ns())
        status: dict[str, Any] = client.status()
        self.node = int(status["node"])
        self.direct = SERVICE_NUMBER in status.get("local_request_services", ())
        """True when requests go over ``service_request`` (no bundles): the
        node lists the log among its ``local_request_services``."""
        self.endpoint = ""
        if not self.direct:
            self.endpoint = client.register(
                f"ipn:{self.node}.{self._rng.randrange(10_000, 2**31)}"
            )

    def _ask_many(self, reqs: Sequence[ClientRequest]) -> list[ClientReply]:
        if not self.direct:
            return [self._ask_bundle(r) for r in reqs]
        payloads = [encode_message(r) for r in reqs]
        got = self.client.service_request(SERVICE_NUMBER, payloads)
        return [_direct_reply(p, r.req_id) for p, r in zip(got, reqs, strict=True)]

    def _ask(self, req: ClientRequest) -> ClientReply:
        return _checked(self._ask_many([req])[0])

    def _ask_bundle(self, req: ClientRequest) -> ClientReply:
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
                return reply

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

    def append_many(self, ops: Sequence[Op]) -> list[EntryId]:
        """Submit ``ops`` as the node's next tentative entries, in order; their
        ids. Over ``service_request`` all in one call (one transaction, one
        fsync, at most ``MAX_LOCAL_REQUESTS``). Raises
        :class:`LogClientError` (with ``entries``) if any was refused."""
        reqs = [
            ClientRequest(req_id=self._id(), kind=ClientKind.APPEND, op=op)
            for op in ops
        ]
        return _entries(self._ask_many(reqs))

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
        self.direct = False
        """True while requests go over ``service_request`` (no bundles)."""

    async def open(self) -> None:
        """Learn whether the node's log answers ``service_request``; if not,
        register the ephemeral endpoint for the bundle path."""
        status: dict[str, Any] = await self.client.status()
        self.node = int(status["node"])
        self.direct = SERVICE_NUMBER in status.get("local_request_services", ())
        if not self.direct:
            self.endpoint = await self.client.register(
                f"ipn:{self.node}.{self._rng.randrange(10_000, 2**31)}"
            )

    def _id(self) -> int:
        return self._rng.randrange(1, 2**63)

    async def _ask_many(self, reqs: Sequence[ClientRequest]) -> list[ClientReply]:
        if not self.direct:
            return [await self._ask_bundle(r) for r in reqs]
        payloads = [encode_message(r) for r in reqs]
        got = await self.client.service_request(SERVICE_NUMBER, payloads)
        return [_direct_reply(p, r.req_id) for p, r in zip(got, reqs, strict=True)]

    async def _ask(self, req: ClientRequest) -> ClientReply:
        return _checked((await self._ask_many([req]))[0])

    async def _ask_bundle(self, req: ClientRequest) -> ClientReply:
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

    async def append_many(self, ops: Sequence[Op]) -> list[EntryId]:
        """As :meth:`LogClient.append_many`."""
        reqs = [
            ClientRequest(req_id=self._id(), kind=ClientKind.APPEND, op=op)
            for op in ops
        ]
        return _entries(await self._ask_many(reqs))

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
