"""Types shared by the sync and trio clients."""

from __future__ import annotations

import io
import os
from typing import Any

from dcis.dtn.agent.actions import Inbound
from dcis.dtn.errors import DtnError


class ClientError(DtnError):
    """The node refused a request, or the connection failed."""


ReceivedBundle = Inbound
"""A bundle delivered to a local endpoint, over the app API (the clients) or
in-process (``Node.endpoint``, re-exported as ``dcis.dtn.runtime.ReceivedBundle``):
``dcis.dtn.node.Inbound``, the one type for a delivered bundle."""


def received_from_message(m: dict[str, Any]) -> Inbound:
    """Build from a ``bundle`` message (already validated by the reader)."""
    return Inbound(
        m["endpoint"],
        m["source"],
        m["payload"],
        m["creation_ms"],
        m["sequence"],
        m["bundle_key"],
    )


def send_request(
    destination: str, payload: bytes, source: str | None, lifetime_ms: int | None
) -> dict[str, Any]:
    """The fields of a ``send`` request (without id)."""
    msg: dict[str, Any] = {
        "type": "send",
        "destination": destination,
        "payload": bytes(payload),
    }
    if source is not None:
        msg["source"] = source
    if lifetime_ms is not None:
        msg["lifetime_ms"] = lifetime_ms
    return msg


def send_head_fields(
    destination: str, source: str | None, lifetime_ms: int | None
) -> dict[str, Any]:
    """The fields of a ``send`` request whose payload is streamed (no id,
    no payload: see :func:`dcis.dtn.appapi.wire.encode_send_head`)."""
    msg: dict[str, Any] = {"type": "send", "destination": destination}
    if source is not None:
        msg["source"] = source
    if lifetime_ms is not None:
        msg["lifetime_ms"] = lifetime_ms
    return msg


def bytes_left(file: io.BufferedIOBase, size: int | None) -> int:
    """``size``, or the bytes of regular file ``file`` from its position to
    its end. Raises :class:`ClientError` if neither is known."""
    if size is not None:
        if size < 0:
            raise ClientError("size must be >= 0")
        return size
    try:
        return max(0, os.fstat(file.fileno()).st_size - file.tell())
    except (OSError, ValueError) as exc:
        raise ClientError(f"size not given and not known from the file: {exc}") from exc
