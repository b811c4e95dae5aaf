"""The data pipeline: chunk, encrypt, erasure-code; and back.

Theory of operation
-------------------
An object of ``size`` bytes is cut into chunks of ``chunk_size`` bytes (the
last one shorter). Chunk ``j`` is sealed with XChaCha20-Poly1305 under the
object's 32-byte key with the 24-byte nonce ``object_id || j`` (16 + 8 bytes,
big-endian; the key is fresh per object, so a nonce never repeats under a
key) and the associated data ``b"dcis-dfs" || object_id || j``. The sealed
chunk (plaintext + 16-byte tag) is zero-padded to a multiple of ``k`` and
cut into ``k`` primary blocks; zfec computes the ``n - k`` check blocks.
Block ``i`` of every chunk together form *share* ``i``.

Each chunk's ciphertext hash (BLAKE3) and each block's CRC-32C go in the
manifest. A reader checks a block's CRC before using it (radiation flips),
the decoded ciphertext's hash (a repairer, who has no key, stops here) and
then the AEAD tag. The object hash is BLAKE3 over the chunk hashes in order.

Speed: zfec and libsodium run on whole blocks; the only copies are the
padding of a chunk's ciphertext and, on decode, the join of k blocks.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import blake3
import fastcrc
import zfec

from dcis.dfs.core._sodium import new_buffer, open_into, seal_padded
from dcis.dfs.core.errors import DecodeError, InvalidArgument

KEY_BYTES = 32
OBJECT_ID_BYTES = 16
TAG_BYTES = 16
DEFAULT_CHUNK_SIZE = 1 << 20
_AAD_PREFIX = b"dcis-dfs"

Buf = bytes | memoryview
"""A block: bytes, or a view into a larger buffer (no copy)."""

crc32c = fastcrc.crc32.iscsi
"""CRC-32C of a bytes-like object (the per-block and on-disk checksum)."""

_encoders: dict[tuple[int, int], zfec.Encoder] = {}
_decoders: dict[tuple[int, int], zfec.Decoder] = {}


def _encoder(k: int, n: int) -> zfec.Encoder:
    enc = _encoders.get((k, n))
    if enc is None:
        enc = _encoders[(k, n)] = zfec.Encoder(k, n)
    return enc


def _decoder(k: int, n: int) -> zfec.Decoder:
    dec = _decoders.get((k, n))
    if dec is None:
        dec = _decoders[(k, n)] = zfec.Decoder(k, n)
    return dec


def check_kn(k: int, n: int) -> None:
    """Raise InvalidArgument unless 1 <= k <= n <= 256 (zfec's range)."""
    if not 1 <= k <= n <= 256:
        raise InvalidArgument(f"need 1 <= k <= n <= 256, got k={k} n={n}")


def chunk_count(size: int, chunk_size: int) -> int:
    """Number of chunks of an object of ``size`` bytes (an empty object has one)."""
    return max(1, -(-size // chunk_size))


def chunk_plain_len(size: int, chunk_size: int, j: int) -> int:
    """Plaintext length of chunk ``j``."""
    return max(0, min(chunk_size, size - j * chunk_size))


def block_len(plain_len: int, k: int) -> int:
    """Length of each of the n blocks of a chunk of ``plain_len`` bytes."""
    return -(-(plain_len + TAG_BYTES) // k)


def _nonce(object_id: bytes, j: int) -> bytes:
    return object_id + struct.pack(">Q", j)


def _aad(object_id: bytes, j: int) -> bytes:
    return _AAD_PREFIX + object_id + struct.pack(">Q", j)


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    """One chunk through the pipeline: its n blocks (index = share number),
    the ciphertext's BLAKE3 hash and each block's CRC-32C."""

    blocks: list[Buf]
    cipher_hash: bytes
    crcs: list[int]


def encode_chunk(
    plain: Buf, *, key: bytes, object_id: bytes, j: int, k: int, n: int
) -> EncodedChunk:
    """Seal chunk ``j`` and erasure-code it into ``n`` blocks. ``plain`` may
    be a view into the whole object (no copy)."""
    mv = seal_padded(plain, _aad(object_id, j), _nonce(object_id, j), key, k)
    size = len(mv) // k
    primary = [mv[i * size : (i + 1) * size] for i in range(k)]
    check = _encoder(k, n).encode(primary, list(range(k, n))) if n > k else []
    # Primary blocks stay views of the padded ciphertext: no copy.
    blocks: list[Buf] = list(primary)
    blocks.extend(check)
    cipher_hash = chunk_hash(mv[: len(plain) + TAG_BYTES])
    return EncodedChunk(blocks, cipher_hash, [crc32c(b) for b in blocks])


def decode_ciphertext(
    blocks: Mapping[int, Buf], *, plain_len: int, k: int, n: int
) -> bytes:
    """The chunk's ciphertext from any ``k`` of its blocks (by share number).
    Raises DecodeError when fewer than k blocks are given or sizes disagree."""
    if len(blocks) < k:
        raise DecodeError(f"need {k} blocks, got {len(blocks)}")
    size = block_len(plain_len, k)
    nums = sorted(blocks)[:k]
    ins = [blocks[i] for i in nums]
    if any(len(b) != size for b in ins):
        raise DecodeError("block of the wrong length")
    ct_len = plain_len + TAG_BYTES
    if nums == list(range(k)):
        out: Sequence[Buf] = ins
    else:
        out = _decoder(k, n).decode(ins, nums)
    if ct_len == k * size:
        return b"".join(out)
    parts: list[Buf] = []
    left = ct_len
    for b in out:
        parts.append(b if left >= size else memoryview(b)[:left])
        left -= len(parts[-1])
        if not left:
            break
    return b"".join(parts)


def block_from_ciphertext(ct: bytes, want: int, *, k: int, n: int) -> bytes:
    """Block number ``want`` of a chunk whose (unpadded) ciphertext is ``ct``
    (repair: decode from k blocks, check the hash, then this; no key needed)."""
    size = -(-len(ct) // k)
    padded = ct + bytes(size * k - len(ct))
    mv = memoryview(padded)
    if want < k:
        return bytes(mv[want * size : (want + 1) * size])
    primary = [mv[i * size : (i + 1) * size] for i in range(k)]
    return bytes(_encoder(k, n).encode(primary, [want])[0])


def decrypt_chunk(ct: bytes, *, key: bytes, object_id: bytes, j: int) -> bytes:
    """Open a sealed chunk; raises DecodeError when the tag does not verify."""
    out = new_buffer(len(ct) - TAG_BYTES) if len(ct) >= TAG_BYTES else None
    if out is None:
        raise DecodeError(f"chunk {j} shorter than its tag")
    decrypt_into(out, ct, key=key, object_id=object_id, j=j)
    return bytes(out)


def decrypt_into(
    out: memoryview, ct: bytes, *, key: bytes, object_id: bytes, j: int
) -> None:
    """Open a sealed chunk straight into ``out`` (its place in the object);
    DecodeError when the tag does not verify or the length is wrong."""
    try:
        open_into(out, ct, _aad(object_id, j), _nonce(object_id, j), key)
    except DecodeError as exc:
        raise DecodeError(f"chunk {j}: {exc}") from exc


def chunk_hash(ct: Buf) -> bytes:
    """BLAKE3 (32 bytes) of a chunk's ciphertext."""
    return blake3.blake3(ct).digest()


def object_hash(chunk_hashes: Sequence[bytes]) -> bytes:
    """BLAKE3 over the chunks' ciphertext hashes, in order."""
    return blake3.blake3(b"".join(chunk_hashes)).digest()
