"""The manifest, the placement record and the tombstone: what the object
store keeps in the replicated log (CDDL in spec/dfs.md).

Log keys (``<oid>`` is the object id in lowercase hex):

- ``dfs/m/<name>`` -> a manifest, or a tombstone once the name is removed;
- ``dfs/x/<oid>`` -> a tombstone: the object was removed or replaced (kept
  apart from the name, which a later put may reuse);
- ``dfs/p/<oid>`` -> the current placement ``[generation, [holder...]]``;
  absent means generation 0, the manifest's placement. Repairs replace it
  with a compare-and-set, so each generation has exactly one author.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cbor2

from dcis.crypto.cbor_guard import loads_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dfs.core.codec import OBJECT_ID_BYTES, check_kn, chunk_count, object_hash
from dcis.dfs.core.errors import DecodeError, InvalidArgument

MANIFEST_VERSION = 1
TOMBSTONE_VERSION = 101
MANIFEST_PREFIX = "dfs/m/"
PLACEMENT_PREFIX = "dfs/p/"
REMOVED_PREFIX = "dfs/x/"
MAX_NAME_BYTES = 1024


def manifest_key(name: str) -> str:
    """The log key of the object called ``name``."""
    return MANIFEST_PREFIX + name


def removed_key(object_id: bytes) -> str:
    """The log key of an object's tombstone."""
    return REMOVED_PREFIX + object_id.hex()


def placement_key(object_id: bytes) -> str:
    """The log key of an object's current placement."""
    return PLACEMENT_PREFIX + object_id.hex()


def check_name(name: str) -> None:
    """Raise InvalidArgument unless ``name`` is a usable object name: 1 to
    1024 bytes of UTF-8 (no lone surrogates), no control characters."""
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"object name {name!r} is not valid UTF-8") from None
    if not name or size > MAX_NAME_BYTES or any(ord(c) < 32 for c in name):
        raise InvalidArgument(f"bad object name {name!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """Everything a reader needs besides the shares themselves.

    ``placement[i]`` is the node first given share ``i``; ``chunk_hashes[j]``
    the BLAKE3 hash of chunk ``j``'s ciphertext; ``block_crcs[j][i]`` the CRC-32C
    of block ``i`` of chunk ``j``; ``keys`` maps a reader node to the object
    key sealed to its X25519 key (node 0: the key in the clear, for nodes run
    without security).
    """

    object_id: bytes
    name: str
    size: int
    chunk_size: int
    k: int
    n: int
    placement: tuple[int, ...]
    chunk_hashes: tuple[bytes, ...]
    block_crcs: tuple[tuple[int, ...], ...]
    root: bytes
    keys: dict[int, bytes] = field(hash=False)
    writer: int
    created_ms: int

    def __post_init__(self) -> None:
        check_kn(self.k, self.n)
        check_name(self.name)
        if len(self.object_id) != OBJECT_ID_BYTES:
            raise InvalidArgument("object_id must be 16 bytes")
        if self.size < 0 or self.chunk_size <= 0 or self.created_ms < 0:
            raise InvalidArgument("bad size, chunk_size or created_ms")
        if len(self.placement) != self.n or len(set(self.placement)) != self.n:
            raise InvalidArgument("placement must name n distinct nodes")
        chunks = chunk_count(self.size, self.chunk_size)
        if len(self.chunk_hashes) != chunks or len(self.block_crcs) != chunks:
            raise InvalidArgument("one hash and one CRC row per chunk")
        if any(len(h) != 32 for h in self.chunk_hashes):
            raise InvalidArgument("chunk hashes are 32 bytes")
        if any(len(row) != self.n for row in self.block_crcs):
            raise InvalidArgument("one CRC per block")
        if self.root != object_hash(self.chunk_hashes):
            raise InvalidArgument("root is not the hash of the chunk hashes")

    @property
    def chunks(self) -> int:
        """Number of chunks."""
        return len(self.chunk_hashes)


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What ``dfs/m/<name>`` holds after ``rm``: the removed object id."""

    object_id: bytes
    removed_ms: int


@dataclass(frozen=True, slots=True)
class Placement:
    """The current holders of an object's shares: ``holders[i]`` holds share
    ``i``; ``generation`` counts the repairs that changed it."""

    generation: int
    holders: tuple[int, ...]


def encode_manifest(m: Manifest) -> bytes:
    """The manifest as CBOR (spec/dfs.md ``manifest``)."""
    return cbor2.dumps(
        [
            MANIFEST_VERSION,
            m.object_id,
            m.name,
            m.size,
            m.chunk_size,
            m.k,
            m.n,
            list(m.placement),
            list(m.chunk_hashes),
            [list(r) for r in m.block_crcs],
            m.root,
            dict(sorted(m.keys.items())),
            m.writer,
            m.created_ms,
        ]
    )


def encode_tombstone(t: Tombstone) -> bytes:
    """The tombstone as CBOR (spec/dfs.md ``tombstone``)."""
    return cbor2.dumps([TOMBSTONE_VERSION, t.object_id, t.removed_ms])


def _loads(data: bytes, what: str) -> object:
    # Guarded: cbor2's C decoder leaks on some malformed items (dcis.crypto.cbor_guard).
    try:
        return loads_untrusted(data, what=what)
    except CborDecodeError as exc:
        raise DecodeError(f"{what}: malformed CBOR ({exc})") from None


def _uint(x: object, what: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise DecodeError(f"{what}: expected an unsigned integer")
    return x


def _bytes(x: object, what: str) -> bytes:
    if not isinstance(x, bytes):
        raise DecodeError(f"{what}: expected a byte string")
    return x


def _list(x: object, what: str) -> list[object]:
    if not isinstance(x, list):
        raise DecodeError(f"{what}: expected an array")
    return x


def decode_record_untrusted(data: bytes) -> Manifest | Tombstone:
    """A ``dfs/m/`` value: a manifest or a tombstone. Raises only DecodeError."""
    item = _list(_loads(data, "manifest"), "manifest")
    if not item:
        raise DecodeError("manifest: empty array")
    version = item[0]
    if version == TOMBSTONE_VERSION and len(item) == 3:
        return Tombstone(_bytes(item[1], "tombstone"), _uint(item[2], "tombstone"))
    if version != MANIFEST_VERSION or len(item) != 14:
        raise DecodeError("manifest: unknown version or length")
    name = item[2]
    keys = item[11]
    if not isinstance(name, str) or not isinstance(keys, dict):
        raise DecodeError("manifest: bad name or keys")
    try:
        return Manifest(
            object_id=_bytes(item[1], "object_id"),
            name=name,
            size=_uint(item[3], "size"),
            chunk_size=_uint(item[4], "chunk_size"),
            k=_uint(item[5], "k"),
            n=_uint(item[6], "n"),
            placement=tuple(_uint(x, "placement") for x in _list(item[7], "placement")),
            chunk_hashes=tuple(_bytes(x, "hash") for x in _list(item[8], "hashes")),
            block_crcs=tuple(
                tuple(_uint(c, "crc") for c in _list(row, "crcs"))
                for row in _list(item[9], "crcs")
            ),
            root=_bytes(item[10], "root"),
            keys={_uint(r, "reader"): _bytes(w, "key") for r, w in keys.items()},
            writer=_uint(item[12], "writer"),
            created_ms=_uint(item[13], "created_ms"),
        )
    except InvalidArgument as exc:
        raise DecodeError(f"manifest: {exc}") from exc


def decode_manifest_untrusted(data: bytes) -> Manifest:
    """A manifest (not a tombstone). Raises only DecodeError."""
    rec = decode_record_untrusted(data)
    if not isinstance(rec, Manifest):
        raise DecodeError("a tombstone, not a manifest")
    return rec


def encode_placement(p: Placement) -> bytes:
    """The placement record as CBOR (spec/dfs.md ``placement``)."""
    return cbor2.dumps([p.generation, list(p.holders)])


def decode_placement_untrusted(data: bytes, n: int) -> Placement:
    """A ``dfs/p/`` value for an object of ``n`` shares. Raises only DecodeError."""
    item = _list(_loads(data, "placement"), "placement")
    if len(item) != 2:
        raise DecodeError("placement: expected [generation, holders]")
    holders = tuple(_uint(h, "holder") for h in _list(item[1], "holders"))
    if len(holders) != n or len(set(holders)) != n:
        raise DecodeError("placement: need n distinct holders")
    return Placement(_uint(item[0], "generation"), holders)
