"""Messages between a local application (the ``dfs`` library, ``dcis put``
...) and its node's object store service, carried as bundles from the app's
endpoint ``ipn:N.<any>`` to ``ipn:N.18`` and back (CDDL in spec/dfs.md).

Requests (app -> service); ``req`` is the app's request number:

- ``[20, req, name, size, k / null, n / null]`` begin a put of ``size`` bytes;
- ``[21, req, offset, bytes]`` the next part of that put's data (in order);
- ``[22, req, op, arg]`` ``op`` one of ``get``, ``ls``, ``stat``, ``rm``.

Replies (service -> app):

- ``[30, req, result]`` done (a map; for get, after every DATA part);
- ``[31, req, kind, message]`` failed (``kind``: the error's class name);
- ``[32, req, offset, bytes]`` a piece of a get's object, in any order;
- ``[33, req, placed, n]`` a put's progress: shares confirmed by holders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from dcis.crypto.cbor_guard import loads_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dfs.core.errors import DecodeError

OPS = ("get", "ls", "stat", "rm")


@dataclass(frozen=True, slots=True)
class PutBegin:
    """Begin a put of ``size`` bytes as ``name``."""

    req: int
    name: str
    size: int
    k: int | None
    n: int | None


@dataclass(frozen=True, slots=True)
class PutPart:
    """Bytes ``offset .. offset+len(data)`` of a put's object."""

    req: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Call:
    """``get``/``ls``/``stat``/``rm`` with one text argument."""

    req: int
    op: str
    arg: str


@dataclass(frozen=True, slots=True)
class Ok:
    """A request succeeded; ``result`` is a CBOR map."""

    req: int
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Error:
    """A request failed."""

    req: int
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Data:
    """Part of a got object."""

    req: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Progress:
    """``placed`` of a put's ``n`` shares are confirmed."""

    req: int
    placed: int
    n: int


AppMessage = PutBegin | PutPart | Call | Ok | Error | Data | Progress


def encode_app(m: AppMessage) -> bytes:
    """The bundle payload for ``m``."""
    if isinstance(m, PutBegin):
        return cbor2.dumps([20, m.req, m.name, m.size, m.k, m.n])
    if isinstance(m, PutPart):
        return cbor2.dumps([21, m.req, m.offset, m.data])
    if isinstance(m, Call):
        return cbor2.dumps([22, m.req, m.op, m.arg])
    if isinstance(m, Ok):
        return cbor2.dumps([30, m.req, m.result])
    if isinstance(m, Error):
        return cbor2.dumps([31, m.req, m.kind, m.message])
    if isinstance(m, Data):
        return cbor2.dumps([32, m.req, m.offset, m.data])
    return cbor2.dumps([33, m.req, m.placed, m.n])


def _uint(x: object) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < 1 << 64:
        raise DecodeError("expected an unsigned integer")
    return x


def _opt(x: object) -> int | None:
    return None if x is None else _uint(x)


def _text(x: object) -> str:
    if not isinstance(x, str):
        raise DecodeError("expected text")
    return x


def _bytes(x: object) -> bytes:
    if not isinstance(x, bytes):
        raise DecodeError("expected a byte string")
    return x


_SHAPES = {20: 6, 21: 4, 22: 4, 30: 3, 31: 4, 32: 4, 33: 4}


def decode_app_untrusted(payload: bytes) -> AppMessage:
    """Parse an app request or reply. Raises only DecodeError."""
    try:
        h = loads_untrusted(payload, what="dfs app message")
    except CborDecodeError as exc:
        raise DecodeError(f"malformed CBOR: {exc}") from None
    if not isinstance(h, list) or not h or _SHAPES.get(h[0]) != len(h):
        raise DecodeError("unknown message kind or wrong length")
    kind, req = h[0], _uint(h[1])
    if kind == 20:
        return PutBegin(req, _text(h[2]), _uint(h[3]), _opt(h[4]), _opt(h[5]))
    if kind == 21:
        return PutPart(req, _uint(h[2]), _bytes(h[3]))
    if kind == 22:
        op = _text(h[2])
        if op not in OPS:
            raise DecodeError(f"unknown op {op!r}")
        return Call(req, op, _text(h[3]))
    if kind == 30:
        if not isinstance(h[2], dict):
            raise DecodeError("result is not a map")
        return Ok(req, h[2])
    if kind == 31:
        return Error(req, _text(h[2]), _text(h[3]))
    if kind == 32:
        return Data(req, _uint(h[2]), _bytes(h[3]))
    return Progress(req, _uint(h[2]), _uint(h[3]))
