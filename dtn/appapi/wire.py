"""Application API framing and messages (spec/appapi.md).

Frame: one CBOR byte string (RFC 8949 major type 2, definite length) per
message -- the same framing as MTCP (draft-ietf-dtn-mtcpcl) -- whose content
is a CBOR map with a text key ``"type"``. Requests carry an integer ``"id"``
that the reply (``"ok"`` or ``"error"``) echoes; ``"bundle"`` messages are
pushed by the node without an id.

Message types (keys besides ``type`` and ``id``):

client -> node
    ``register``  endpoint: text
    ``unregister`` endpoint: text
    ``send``      destination: text, payload: bytes, ?source: text, ?lifetime_ms: uint
    ``delivered`` bundle_key: text            (no reply: confirms a pushed bundle)
    ``status``                                 (reply carries the status map)
    ``ping``                                   (local liveness; reply ``ok``)
    ``set_resources`` ?store_free_bytes, ?store_total_bytes, ?cpu_load,
                  ?battery_pct, ?sunlit, ?temperature_c (reply carries
                  ``resources``, every field as now advertised; values are
                  checked by ``dcis.dtn.node.resources``)
    ``service_request`` service: uint, requests: [* bytes] (at most
                  ``MAX_LOCAL_REQUESTS``; handed to the local service's
                  ``on_local_requests`` in one transaction, no bundles; the
                  reply carries ``replies``, one byte string per request,
                  and is sent only once that transaction is durable)
node -> client
    ``ok``        id, plus request-specific keys (``bundle_key``, ``status``, ...)
    ``error``     id, message: text
    ``bundle``    endpoint, source, payload, creation_ms, sequence, bundle_key
"""

from __future__ import annotations

from typing import Any

import cbor2

from dcis.crypto.cbor_guard import loads_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dtn.cl.mtcp import MtcpDecoder, bstr_head, encode_mtcp_frame
from dcis.dtn.errors import DecodeError, InvalidArgument

MAX_MESSAGE_BYTES = 128 * 1024 * 1024
"""Largest message accepted (a bundle payload plus a few keys): 128 MiB, so
that a 100 MB bundle, which LTP carries in one block, can be sent and received."""

CLIENT_TYPES = frozenset(
    {
        "register",
        "unregister",
        "send",
        "delivered",
        "status",
        "ping",
        "bundles",
        "set_resources",
        "service_request",
    }
)
NODE_TYPES = frozenset({"ok", "error", "bundle"})

# Required keys and their types, per message type.
_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "register": {"id": int, "endpoint": str},
    "unregister": {"id": int, "endpoint": str},
    "send": {"id": int, "destination": str, "payload": bytes},
    "delivered": {"bundle_key": str},
    "status": {"id": int},
    "ping": {"id": int},
    "bundles": {"id": int},
    "set_resources": {"id": int},
    "service_request": {"id": int, "service": int, "requests": list},
    "ok": {"id": int},
    "error": {"id": int, "message": str},
    "bundle": {
        "endpoint": str,
        "source": str,
        "payload": bytes,
        "creation_ms": int,
        "sequence": int,
        "bundle_key": str,
    },
}
_OPTIONAL: dict[str, dict[str, type | tuple[type, ...]]] = {
    "send": {"source": str, "lifetime_ms": int},
    "bundles": {"limit": int},
}


_BIG_BYTES = 128 * 1024
"""Byte values at least this long are spliced into a message, not encoded:
below it one ``cbor2.dumps`` (~5 us a call) beats a call per key, above it
cbor2's byte string writer costs more than the calls (spec/performance.md)."""


def encode_message(msg: dict[str, Any]) -> bytes:
    """Frame one message. Raises :class:`InvalidArgument` if it lacks a known ``type``.

    The bytes are those of ``encode_mtcp_frame(cbor2.dumps(msg))``, built
    without copying a large payload more than once: cbor2 writes a long
    byte string an order of magnitude slower than a join (issue 18,
    spec/performance.md), so the map is encoded key by key and its large
    byte values are spliced in after their CBOR heads."""
    parts = encode_message_parts(msg)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def encode_message_parts(msg: dict[str, Any]) -> list[bytes]:
    """Frame one message as buffers whose concatenation is :func:`encode_message`'s
    bytes: each byte value of at least 128 KiB is its own item, the caller's
    object itself (not copied), so a writer can hand it to the socket as it
    is. Raises :class:`InvalidArgument` if ``msg`` lacks a known ``type``."""
    if msg.get("type") not in _SCHEMA:
        raise InvalidArgument(f"unknown message type {msg.get('type')!r}")
    if len(msg) >= 24 or not any(
        type(v) is bytes and len(v) >= _BIG_BYTES for v in msg.values()
    ):
        return [encode_mtcp_frame(cbor2.dumps(msg))]
    parts: list[bytes] = []
    small: list[bytes] = [bytes([0xA0 | len(msg)])]
    for key, value in msg.items():
        small.append(cbor2.dumps(key))
        if type(value) is bytes and len(value) >= _BIG_BYTES:
            small.append(bstr_head(len(value)))
            parts.append(b"".join(small))
            parts.append(value)
            small = []
        else:
            small.append(cbor2.dumps(value))
    if small:
        parts.append(b"".join(small))
    size = sum(len(p) for p in parts)
    parts[0] = bstr_head(size) + parts[0]
    return parts


def encode_send_head(
    msg: dict[str, Any],
    payload_bytes: int,
    *,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> bytes:
    """The start of a ``send`` request whose payload is streamed: the frame
    head, the map and its keys, ``msg``'s fields (everything but ``payload``)
    and the head of the payload byte string, which comes last in the map.
    The caller then writes exactly ``payload_bytes`` bytes, and the frame is
    the same as :func:`encode_message` of the map with the payload in that
    place. Raises :class:`InvalidArgument` for a message that is not a
    ``send`` without its payload, or that would exceed ``max_message_bytes``."""
    if msg.get("type") != "send" or "payload" in msg:
        raise InvalidArgument("encode_send_head takes a send request without payload")
    if payload_bytes < 0 or len(msg) >= 23:
        raise InvalidArgument("bad payload length or too many keys")
    parts = [bytes([0xA0 | (len(msg) + 1)])]
    for key, value in msg.items():
        parts.append(cbor2.dumps(key))
        parts.append(cbor2.dumps(value))
    parts.append(cbor2.dumps("payload"))
    parts.append(bstr_head(payload_bytes))
    body = sum(len(p) for p in parts) + payload_bytes
    if body > max_message_bytes:
        raise InvalidArgument(
            f"a message of {body} bytes exceeds the {max_message_bytes}-byte limit"
        )
    return bstr_head(body) + b"".join(parts)


def decode_message_untrusted(body: bytes) -> dict[str, Any]:
    """Decode and validate one message body (a frame's content).

    Raises only :class:`DecodeError` (not CBOR, not a map, unknown type, a
    required key missing or of the wrong type).
    """
    try:
        msg = loads_untrusted(body, what="appapi message")
    except CborDecodeError as exc:
        raise DecodeError(str(exc), where="appapi message") from None
    if not isinstance(msg, dict):
        raise DecodeError("message must be a CBOR map", where="appapi message")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in _SCHEMA:
        raise DecodeError(f"unknown message type {kind!r}", where="appapi message")
    for key, typ in _SCHEMA[kind].items():
        value = msg.get(key)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise DecodeError(
                f"key {key!r} missing or not {getattr(typ, '__name__', typ)}",
                where=f"appapi {kind}",
            )
    for key, typ in _OPTIONAL.get(kind, {}).items():
        if key in msg and (not isinstance(msg[key], typ) or isinstance(msg[key], bool)):
            raise DecodeError(
                f"key {key!r} is not {getattr(typ, '__name__', typ)}",
                where=f"appapi {kind}",
            )
    return msg


class MessageReader:
    """Split a stream into validated messages (sans-I/O).

    ``feed(data)`` returns the messages completed; raises :class:`DecodeError`
    on a bad frame or message (the stream is then unusable: close it).
    """

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._frames = MtcpDecoder(max_bundle_bytes=max_message_bytes)

    def feed(self, data: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
        """Consume stream bytes; return complete messages."""
        return [decode_message_untrusted(b) for b in self._frames.feed(data)]

    @property
    def buffered_bytes(self) -> int:
        """Bytes of a message received only in part (held in memory)."""
        return self._frames.buffered_bytes
