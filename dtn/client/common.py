"""Types shared by the sync and trio clients."""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from dcis.dtn.agent.actions import Inbound, trusted_inbound
from dcis.dtn.client.push_reader import SpooledPayload
from dcis.dtn.errors import DtnError

SNDBUF_BYTES = 2 << 20
"""Send buffer the clients ask for on their connection (the kernel doubles it, up to
its ``wmem_max``): a 1 MB send goes out in one ``sendmsg``, not five or
more through the default ~208 KiB buffer, each a wake-up of the client's
writer and of the node's reader (spec/performance.md, fifth round)."""

MAX_PIECE_BYTES = 16 << 20
"""Most bytes of a large payload the clients read straight into one new
object (``recv(n)`` allocates ``n`` bytes before it knows how many come)."""


class ClientError(DtnError):
    """The node refused a request, or the connection failed."""


ReceivedBundle = Inbound
"""A bundle delivered to a local endpoint, over the app API (the clients) or
in-process (``Node.endpoint``, re-exported as ``dcis.dtn.runtime.ReceivedBundle``):
``dcis.dtn.node.Inbound``, the one type for a delivered bundle."""


@dataclass(frozen=True, slots=True)
class SpooledBundle:
    """A bundle delivered with its payload in a file (``Client.receive_file``):
    ``path`` (created mode 0600, fsynced before the node was told the bundle
    was delivered; the caller owns it) holds ``size`` bytes; the other
    fields are those of :data:`ReceivedBundle`."""

    endpoint: str
    source: str
    path: str
    size: int
    creation_ms: int
    sequence: int
    bundle_key: str


def received_from_message(m: dict[str, Any]) -> Inbound | SpooledBundle:
    """Build from a ``bundle`` message (already validated by the reader):
    a :class:`SpooledBundle` if its payload went to a file."""
    payload = m["payload"]
    if isinstance(payload, SpooledPayload):
        return SpooledBundle(
            m["endpoint"],
            m["source"],
            payload.path,
            payload.size,
            m["creation_ms"],
            m["sequence"],
            m["bundle_key"],
        )
    return trusted_inbound(
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


def spool(b: Inbound, directory: str) -> SpooledBundle:
    """Write an in-memory bundle's payload to a new file in ``directory``
    (mode 0600, fsynced). Raises :class:`ClientError`."""
    try:
        fd, path = tempfile.mkstemp(prefix="bundle-", suffix=".payload", dir=directory)
    except OSError as exc:
        raise ClientError(f"cannot create a file in {directory!r}: {exc}") from exc
    try:
        view = memoryview(b.payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise ClientError(f"cannot write {path!r}: {exc}") from exc
    os.close(fd)
    return SpooledBundle(
        b.endpoint,
        b.source,
        path,
        len(b.payload),
        b.creation_ms,
        b.sequence,
        b.bundle_key,
    )


def unspool(b: SpooledBundle) -> Inbound:
    """Read a spooled payload back into memory and remove its file. Raises
    :class:`ClientError`."""
    try:
        with open(b.path, "rb") as f:
            payload = f.read()
        os.unlink(b.path)
    except OSError as exc:
        raise ClientError(f"cannot read back {b.path!r}: {exc}") from exc
    return Inbound(
        b.endpoint, b.source, payload, b.creation_ms, b.sequence, b.bundle_key
    )


def fsync_path(path: str) -> None:
    """fsync the file at ``path``. Raises :class:`ClientError`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ClientError(f"cannot fsync {path!r}: {exc}") from exc
