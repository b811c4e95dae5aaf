"""Messages between the object store services of two nodes (service 18).

Each message is one bundle payload: a 2-byte big-endian header length, a
CBOR header array, then (STORE and BLOCK only) the block's raw bytes, so a
block is never copied into or out of a CBOR byte string (CDDL in
spec/dfs.md):

- ``STORE [1, oid, share, chunk, chunks] block``: keep this block;
- ``STORED [2, oid, share]``: every block of the share is on disk;
- ``FETCH [3, req, oid, share, [chunk...]]``: send me these blocks;
- ``BLOCK [4, req, oid, share, chunk] block``: one block, in answer;
- ``MISSING [5, req, oid, share, [chunk...]]``: I have not these (or they
  failed their checksum).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import cbor2

from dcis.crypto.cbor_guard import loads_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dfs.core.codec import OBJECT_ID_BYTES
from dcis.dfs.core.errors import DecodeError

MAX_CHUNKS = 1 << 24
"""Bound on a chunk index and on a FETCH/MISSING list."""


class Kind(IntEnum):
    """Message types."""

    STORE = 1
    STORED = 2
    FETCH = 3
    BLOCK = 4
    MISSING = 5


@dataclass(frozen=True, slots=True)
class Store:
    """Keep block ``chunk`` of share ``share`` (the object has ``chunks``)."""

    object_id: bytes
    share: int
    chunk: int
    chunks: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Stored:
    """The sender holds every block of ``share``."""

    object_id: bytes
    share: int


@dataclass(frozen=True, slots=True)
class Fetch:
    """Ask for blocks ``chunks`` of ``share``; ``req`` is echoed back."""

    req: int
    object_id: bytes
    share: int
    chunks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Block:
    """One block in answer to FETCH ``req``."""

    req: int
    object_id: bytes
    share: int
    chunk: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Missing:
    """The sender cannot serve blocks ``chunks`` of ``share``."""

    req: int
    object_id: bytes
    share: int
    chunks: tuple[int, ...]


Message = Store | Stored | Fetch | Block | Missing


def _frame(header: list[object], tail: bytes | memoryview = b"") -> bytes:
    h = cbor2.dumps(header)
    return b"".join((struct.pack(">H", len(h)), h, tail))


def encode_message(m: Message) -> bytes:
    """The bundle payload for ``m``."""
    if isinstance(m, Store):
        return _frame([Kind.STORE, m.object_id, m.share, m.chunk, m.chunks], m.data)
    if isinstance(m, Stored):
        return _frame([Kind.STORED, m.object_id, m.share])
    if isinstance(m, Fetch):
        return _frame([Kind.FETCH, m.req, m.object_id, m.share, list(m.chunks)])
    if isinstance(m, Block):
        return _frame([Kind.BLOCK, m.req, m.object_id, m.share, m.chunk], m.data)
    return _frame([Kind.MISSING, m.req, m.object_id, m.share, list(m.chunks)])


def _uint(x: object, bound: int = 1 << 64) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < bound:
        raise DecodeError("expected an unsigned integer in range")
    return x


def _oid(x: object) -> bytes:
    if not isinstance(x, bytes) or len(x) != OBJECT_ID_BYTES:
        raise DecodeError("expected a 16-byte object id")
    return x


def _chunks(x: object) -> tuple[int, ...]:
    if not isinstance(x, list) or len(x) > MAX_CHUNKS:
        raise DecodeError("expected a bounded list of chunk indices")
    return tuple(_uint(c, MAX_CHUNKS) for c in x)


def decode_message_untrusted(payload: bytes) -> Message:
    """Parse a peer's payload. Raises only DecodeError. Block data is a view
    into ``payload`` (no copy)."""
    if len(payload) < 2:
        raise DecodeError("short message")
    (hlen,) = struct.unpack_from(">H", payload)
    if 2 + hlen > len(payload):
        raise DecodeError("header runs past the payload")
    mv = memoryview(payload)
    try:
        h = loads_untrusted(mv[2 : 2 + hlen], what="dfs header")
    except CborDecodeError as exc:
        raise DecodeError(f"malformed header: {exc}") from None
    tail = mv[2 + hlen :]
    if not isinstance(h, list) or not h:
        raise DecodeError("header is not a non-empty array")
    kind = h[0]
    shapes = {
        Kind.STORE: 5,
        Kind.STORED: 3,
        Kind.FETCH: 5,
        Kind.BLOCK: 5,
        Kind.MISSING: 5,
    }
    if not isinstance(kind, int) or kind not in shapes or len(h) != shapes[Kind(kind)]:
        raise DecodeError("unknown message kind or wrong header length")
    if kind in (Kind.STORED, Kind.FETCH, Kind.MISSING) and len(tail):
        raise DecodeError("trailing bytes")
    if kind == Kind.STORE:
        chunks = _uint(h[4], MAX_CHUNKS + 1)
        chunk = _uint(h[3], MAX_CHUNKS)
        if chunk >= chunks:
            raise DecodeError("chunk index past the chunk count")
        return Store(_oid(h[1]), _uint(h[2], 256), chunk, chunks, tail)
    if kind == Kind.STORED:
        return Stored(_oid(h[1]), _uint(h[2], 256))
    if kind == Kind.FETCH:
        return Fetch(_uint(h[1]), _oid(h[2]), _uint(h[3], 256), _chunks(h[4]))
    if kind == Kind.BLOCK:
        return Block(
            _uint(h[1]), _oid(h[2]), _uint(h[3], 256), _uint(h[4], MAX_CHUNKS), tail
        )
    return Missing(_uint(h[1]), _oid(h[2]), _uint(h[3], 256), _chunks(h[4]))
