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

from collections.abc import Callable
from typing import Any

import cbor2

from dcis.crypto.cbor_guard import loads_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dtn.cl.mtcp import MtcpDecoder, bstr_head
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


# Flat messages (every request and reply on the bundle path: send, ok,
# bundle, delivered) are encoded and decoded here in Python rather than by
# cbor2: one cbor2.dumps of a 3-key map costs ~3.5 us, and untrusted input
# goes through dcis.crypto.cbor_guard's walk before cbor2.loads (~8 us for a
# 1 KB bundle message); these take a fraction of that (spec/performance.md).
# Anything else -- a nested array or map, a float, a tag, a non-text key,
# an integer beyond 64 bits -- takes the general path, so the bytes written
# and the values read are cbor2's in every case (tests/unit/appapi).

_KEYS: dict[str, bytes] = {}
"""Encoded CBOR text strings of map keys seen (a few dozen names at most)."""

_TRUE_FALSE_NULL = {0xF4: False, 0xF5: True, 0xF6: None}


def _head(major: int, n: int) -> bytes:
    """Shortest CBOR head of major type ``major`` (shifted) with argument ``n``."""
    if n < 24:
        return bytes((major | n,))
    if n < 0x100:
        return bytes((major | 24, n))
    if n < 0x10000:
        return bytes((major | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major | 26,)) + n.to_bytes(4, "big")
    return bytes((major | 27,)) + n.to_bytes(8, "big")


def _dumps_flat_map(msg: dict[str, Any]) -> bytes | None:
    """``cbor2.dumps(msg)`` for a map of fewer than 24 text keys whose values
    are ints of at most 64 bits, text, bytes, booleans or None; else None."""
    parts = _flat_map_parts(msg, _NEVER_SPLIT)
    return None if parts is None else parts[0]


_NEVER_SPLIT = 1 << 62
"""A ``large`` no byte string reaches: :func:`_flat_map_parts` joins all."""


def _flat_map_parts(msg: dict[str, Any], large: int) -> list[bytes] | None:
    """``cbor2.dumps(msg)`` (a flat map, as :func:`_dumps_flat_map` takes) as
    buffers: each byte value of at least ``large`` bytes is an item of its
    own, the caller's object itself, and the bytes between two such values
    are joined; None for a map this does not encode."""
    if len(msg) >= 24:
        return None
    out: list[bytes] = []
    parts = [bytes((0xA0 | len(msg),))]
    for key, value in msg.items():
        k = _KEYS.get(key)
        if k is None:
            if type(key) is not str:
                return None
            raw = key.encode()
            k = _head(0x60, len(raw)) + raw
            if len(_KEYS) < 256:
                _KEYS[key] = k
        parts.append(k)
        t = type(value)
        if t is bytes:
            parts.append(_head(0x40, len(value)))
            if len(value) >= large:
                out.append(b"".join(parts))
                out.append(value)
                parts = []
            else:
                parts.append(value)
        elif t is str:
            raw = value.encode()
            parts.append(_head(0x60, len(raw)))
            parts.append(raw)
        elif t is int:
            if 0 <= value < 0x10000000000000000:
                parts.append(_head(0x00, value))
            elif -0x10000000000000000 <= value < 0:
                parts.append(_head(0x20, -1 - value))
            else:
                return None
        elif value is None:
            parts.append(b"\xf6")
        elif value is True:
            parts.append(b"\xf5")
        elif value is False:
            parts.append(b"\xf4")
        else:
            return None
    if parts or not out:
        out.append(b"".join(parts))
    return out


def _view_text(view: memoryview) -> str:
    """The UTF-8 text in ``view`` (UnicodeDecodeError if it is not)."""
    return str(view, "utf-8")


def _loads_flat_map(body: bytes | memoryview) -> dict[str, Any] | None:
    """The map ``body`` encodes when it is exactly one definite-length map
    of fewer than 24 text keys (shorter than 256 bytes) whose values are
    integers, text, byte strings, booleans or null -- what
    ``loads_untrusted`` would return; None for any other input, valid or
    not (the caller then takes the general path, which decides)."""
    n = len(body)
    if n == 0 or not 0xA0 <= body[0] <= 0xB7:
        return None
    pos = 1
    out: dict[str, Any] = {}
    text: Callable[[Any], str] = bytes.decode if type(body) is bytes else _view_text
    try:
        for _ in range(body[0] & 0x1F):
            ib = body[pos]
            if 0x60 <= ib <= 0x77:
                end = pos + 1 + (ib & 0x1F)
                pos += 1
            elif ib == 0x78:
                end = pos + 2 + body[pos + 1]
                pos += 2
            else:
                return None
            if end > n:
                return None
            key = text(body[pos:end])
            pos = end
            ib = body[pos]
            pos += 1
            major = ib >> 5
            ai = ib & 0x1F
            if ai < 24:
                arg = ai
            elif ai < 28:
                end = pos + (1 << (ai - 24))
                if end > n:
                    return None
                arg = int.from_bytes(body[pos:end], "big")
                pos = end
            else:
                return None
            if major == 0:
                out[key] = arg
            elif major == 1:
                out[key] = -1 - arg
            elif major == 2 or major == 3:
                end = pos + arg
                if end > n:
                    return None
                # A view's slice (a large frame still in the read buffer)
                # is copied once, here.
                value = body[pos:end]
                if major == 3:
                    out[key] = text(value)
                else:
                    out[key] = bytes(value)  # a bytes slice: itself
                pos = end
            elif major == 7 and ib in _TRUE_FALSE_NULL:
                out[key] = _TRUE_FALSE_NULL[ib]
            else:
                return None
    except (IndexError, UnicodeDecodeError):
        return None
    return out if pos == n else None


def encode_message(msg: dict[str, Any]) -> bytes:
    """Frame one message. Raises :class:`InvalidArgument` if it lacks a known ``type``.

    The bytes are those of ``encode_mtcp_frame(cbor2.dumps(msg))``, built
    without copying a large payload more than once: cbor2 writes a long
    byte string an order of magnitude slower than a join (issue 18,
    spec/performance.md), so the map is encoded key by key and its large
    byte values are spliced in after their CBOR heads."""
    parts = encode_message_parts(msg)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def encode_message_parts(
    msg: dict[str, Any], *, large: int = _BIG_BYTES
) -> list[bytes]:
    """Frame one message as buffers whose concatenation is :func:`encode_message`'s
    bytes: each byte value of at least ``large`` bytes (128 KiB) is its own
    item, the caller's object itself (not copied), so a writer can hand it
    to the socket as it is (a writer that gathers buffers passes less).
    Raises :class:`InvalidArgument` if ``msg`` lacks a known ``type``."""
    if msg.get("type") not in _SCHEMA:
        raise InvalidArgument(f"unknown message type {msg.get('type')!r}")
    flat = _flat_map_parts(msg, large)
    if flat is not None:
        # A flat map (every message the node and the clients send): its
        # small values encoded here, not by one cbor2.dumps call each
        # (~4 us apiece: ~85 us for a send request with a large payload).
        flat[0] = bstr_head(sum(len(p) for p in flat)) + flat[0]
        return flat
    if len(msg) >= 24 or not any(
        type(v) is bytes and len(v) >= large for v in msg.values()
    ):
        body = cbor2.dumps(msg)
        return [bstr_head(len(body)) + body]
    parts: list[bytes] = []
    small: list[bytes] = [bytes([0xA0 | len(msg)])]
    for key, value in msg.items():
        small.append(cbor2.dumps(key))
        if type(value) is bytes and len(value) >= large:
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


_BUNDLE_START = _head(0x60, 4) + b"type" + _head(0x60, 6) + b"bundle"
_K_ENDPOINT = _head(0x60, 8) + b"endpoint"
_K_SOURCE = _head(0x60, 6) + b"source"
_K_PAYLOAD = _head(0x60, 7) + b"payload"
_K_CREATION = _head(0x60, 11) + b"creation_ms"
_K_SEQUENCE = _head(0x60, 8) + b"sequence"
_K_BUNDLE_KEY = _head(0x60, 10) + b"bundle_key"


def encode_bundle_message_parts(
    *,
    endpoint: str,
    source: str,
    payload: bytes,
    creation_ms: int,
    sequence: int,
    bundle_key: str,
    large: int = _BIG_BYTES,
) -> list[bytes]:
    """:func:`encode_message_parts` of the ``bundle`` message with these
    fields, in this order (the node pushes one per delivered bundle: its
    keys are written once, here, not encoded per message). A payload of at
    least ``large`` bytes is an item of its own, not copied."""
    if not (
        type(payload) is bytes
        and type(creation_ms) is int
        and type(sequence) is int
        and 0 <= creation_ms < 0x10000000000000000
        and 0 <= sequence < 0x10000000000000000
    ):
        return encode_message_parts(
            {
                "type": "bundle",
                "endpoint": endpoint,
                "source": source,
                "payload": payload,
                "creation_ms": creation_ms,
                "sequence": sequence,
                "bundle_key": bundle_key,
            }
        )
    ep = endpoint.encode()
    src = source.encode()
    key = bundle_key.encode()
    first = b"".join(
        (
            b"\xa7",
            _BUNDLE_START,
            _K_ENDPOINT,
            _head(0x60, len(ep)),
            ep,
            _K_SOURCE,
            _head(0x60, len(src)),
            src,
            _K_PAYLOAD,
            _head(0x40, len(payload)),
        )
    )
    rest = b"".join(
        (
            _K_CREATION,
            _head(0x00, creation_ms),
            _K_SEQUENCE,
            _head(0x00, sequence),
            _K_BUNDLE_KEY,
            _head(0x60, len(key)),
            key,
        )
    )
    size = len(first) + len(payload) + len(rest)
    if len(payload) >= large:
        return [bstr_head(size) + first, payload, rest]
    return [b"".join((bstr_head(size), first, payload, rest))]


_KEY_REPLY_START = (
    b"\xa3" + _head(0x60, 4) + b"type" + _head(0x60, 2) + b"ok" + _head(0x60, 2) + b"id"
)


def encode_key_reply(mid: int, bundle_key: str) -> bytes:
    """:func:`encode_message` of ``{"type": "ok", "id": mid, "bundle_key":
    bundle_key}`` -- the node's answer to each app send, written here with
    its keys encoded once (~2.3 -> ~0.8 us a reply). ``mid`` must be an
    int in 0 .. 2**64-1 (the node's request ids are)."""
    if type(mid) is not int or not 0 <= mid < 0x10000000000000000:
        return encode_message({"type": "ok", "id": mid, "bundle_key": bundle_key})
    key = bundle_key.encode()
    body = b"".join(
        (_KEY_REPLY_START, _head(0x00, mid), _K_BUNDLE_KEY, _head(0x60, len(key)), key)
    )
    return bstr_head(len(body)) + body


_DELIVERED_START = (
    b"\xa2" + _head(0x60, 4) + b"type" + _head(0x60, 9) + b"delivered" + _K_BUNDLE_KEY
)


def encode_delivered(bundle_key: str) -> bytes:
    """:func:`encode_message` of ``{"type": "delivered", "bundle_key":
    bundle_key}`` -- an app's confirmation of each bundle pushed to it,
    written here with its keys encoded once (the general encoder took ~2.4
    us a confirmation)."""
    key = bundle_key.encode()
    body = b"".join((_DELIVERED_START, _head(0x60, len(key)), key))
    return bstr_head(len(body)) + body


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


_VIEW_DECODE_BYTES = 16 * 1024
"""A frame handed over as a view shorter than this is decoded from a copy."""


def decode_message_untrusted(body: bytes | memoryview) -> dict[str, Any]:
    """Decode and validate one message body (a frame's content: bytes, or a
    view of a read buffer -- the message keeps nothing of it).

    Raises only :class:`DecodeError` (not CBOR, not a map, unknown type, a
    required key missing or of the wrong type).
    """
    if type(body) is not bytes and len(body) < _VIEW_DECODE_BYTES:
        # Slicing bytes is cheaper than slicing a view: a small frame is
        # copied first (~1.5 us less per 1 KB message), a large one is not.
        body = bytes(body)
    msg: Any = _loads_flat_map(body)
    if msg is None:
        try:
            msg = loads_untrusted(bytes(body), what="appapi message")
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
        # Frames read whole are decoded from the read itself (a view): the
        # payload of a send is copied once, not into a frame then out of it.
        return self._frames.feed_frames(data, decode_message_untrusted)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of a message received only in part (held in memory)."""
        return self._frames.buffered_bytes
