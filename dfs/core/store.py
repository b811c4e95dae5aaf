"""The share store interface, and an in-memory implementation.

A holder keeps each block of each share it holds as one record, keyed by
(object id, share, chunk), with a CRC-32C taken when it was written. A read
re-checks the CRC and raises :class:`CorruptBlock` on a mismatch, which is
how the scrubber finds a flipped bit. The on-disk store (:mod:`dcis.dfs.sharestore`)
makes each write atomic and durable before ``put_block`` returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from dcis.dfs.core.codec import Buf, crc32c
from dcis.dfs.core.errors import CorruptBlock, StoreFull


class ShareStore(Protocol):
    """Blocks of shares, by (object id, share, chunk)."""

    def put_block(
        self, object_id: bytes, share: int, chunk: int, data: Buf, now_ms: int
    ) -> None:
        """Keep a block durably (replacing any old copy). Raises StoreFull."""
        ...

    def get_block(self, object_id: bytes, share: int, chunk: int) -> Buf | None:
        """The block, None if absent; CorruptBlock if its checksum fails."""
        ...

    def chunks(self, object_id: bytes, share: int) -> list[int]:
        """Chunk indices held of this share, ascending."""
        ...

    def shares(self) -> Iterator[tuple[bytes, int, int]]:
        """Every (object id, share, first stored DTN ms) held."""
        ...

    def delete_block(self, object_id: bytes, share: int, chunk: int) -> None:
        """Drop one block (no error if absent)."""
        ...

    def delete_share(self, object_id: bytes, share: int) -> None:
        """Drop every block of a share."""
        ...

    def used_bytes(self) -> int:
        """Bytes of block data held."""
        ...


class MemoryShareStore:
    """A :class:`ShareStore` in a dict (tests, the simulator, benches). It
    outlives the service object, as a disk would a crash. ``flip_bit``
    damages a block in place, as radiation would."""

    def __init__(self, capacity_bytes: int | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        self._blocks: dict[tuple[bytes, int], dict[int, tuple[Buf, int]]] = {}
        self._since: dict[tuple[bytes, int], int] = {}
        self._used = 0

    def put_block(
        self, object_id: bytes, share: int, chunk: int, data: Buf, now_ms: int
    ) -> None:
        """See :meth:`ShareStore.put_block`."""
        key = (object_id, share)
        blocks = self._blocks.setdefault(key, {})
        old = blocks.get(chunk)
        grow = len(data) - (len(old[0]) if old else 0)
        if self.capacity_bytes is not None and self._used + grow > self.capacity_bytes:
            if not blocks:
                del self._blocks[key]
            raise StoreFull(f"{self._used + grow} > {self.capacity_bytes} bytes")
        blocks[chunk] = (data, crc32c(data))
        self._since.setdefault(key, now_ms)
        self._used += grow

    def get_block(self, object_id: bytes, share: int, chunk: int) -> Buf | None:
        """See :meth:`ShareStore.get_block` (a stored view comes back as is)."""
        rec = self._blocks.get((object_id, share), {}).get(chunk)
        if rec is None:
            return None
        if crc32c(rec[0]) != rec[1]:
            raise CorruptBlock(f"{object_id.hex()}/{share}/{chunk}")
        return rec[0]

    def chunks(self, object_id: bytes, share: int) -> list[int]:
        """See :meth:`ShareStore.chunks`."""
        return sorted(self._blocks.get((object_id, share), {}))

    def shares(self) -> Iterator[tuple[bytes, int, int]]:
        """See :meth:`ShareStore.shares`."""
        for (oid, share), blocks in list(self._blocks.items()):
            if blocks:
                yield oid, share, self._since.get((oid, share), 0)

    def delete_block(self, object_id: bytes, share: int, chunk: int) -> None:
        """See :meth:`ShareStore.delete_block`."""
        blocks = self._blocks.get((object_id, share))
        if blocks is not None and chunk in blocks:
            self._used -= len(blocks.pop(chunk)[0])
            if not blocks:
                self.delete_share(object_id, share)

    def delete_share(self, object_id: bytes, share: int) -> None:
        """See :meth:`ShareStore.delete_share`."""
        blocks = self._blocks.pop((object_id, share), {})
        self._since.pop((object_id, share), None)
        self._used -= sum(len(b) for b, _ in blocks.values())

    def used_bytes(self) -> int:
        """See :meth:`ShareStore.used_bytes`."""
        return self._used

    def flip_bit(self, object_id: bytes, share: int, chunk: int, bit: int) -> bool:
        """Flip one bit of a stored block (the checksum is left alone).
        Returns False when the block is absent or empty."""
        blocks = self._blocks.get((object_id, share), {})
        rec = blocks.get(chunk)
        if rec is None or not len(rec[0]):
            return False
        data = bytearray(rec[0])
        data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
        blocks[chunk] = (bytes(data), rec[1])
        return True
