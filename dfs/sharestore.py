"""The on-disk share store (edge module: the core's :class:`ShareStore` on
files).

Theory of operation
-------------------
Layout under ``root``: ``<oid hex>/<share>/<chunk>.blk``, one file per
block, plus ``<oid hex>/<share>/since`` (DTN ms of the first block, ASCII).
A block file is ``b"DFS1"``, the CRC-32C of the data (4 bytes, big-endian),
then the data.

A write is atomic (Tahoe-LAFS #200 is the warning): the bytes go to a
``.tmp`` file in the same directory, which is fsynced, renamed over the
final name, and the directory fsynced; a crash leaves the old block or the
new one, never a torn one, and leftover ``.tmp`` files are removed at open.
A read checks the magic, length and CRC and raises :class:`CorruptBlock`
on any mismatch: that is what the scrubber catches. Names are checked so
that nothing read from a peer can escape ``root``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from dcis.dfs.core.codec import OBJECT_ID_BYTES, Buf, crc32c
from dcis.dfs.core.errors import CorruptBlock, InvalidArgument, StoreFull

log = logging.getLogger(__name__)

MAGIC = b"DFS1"
HEADER = 8


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskShareStore:
    """A :class:`~dcis.dfs.core.store.ShareStore` in a directory. ``fsync=False``
    skips the syncs (tests of the layout only; never in a daemon)."""

    def __init__(
        self, root: str | Path, *, capacity_bytes: int | None = None, fsync: bool = True
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.capacity_bytes = capacity_bytes
        self.fsync = fsync
        self._used = 0
        for p in self.root.glob("*/*/*"):
            if p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
            elif p.name.endswith(".blk"):
                self._used += max(0, p.stat().st_size - HEADER)

    def _dir(self, object_id: bytes, share: int) -> Path:
        if len(object_id) != OBJECT_ID_BYTES or not 0 <= share < 256:
            raise InvalidArgument("bad object id or share number")
        return self.root / object_id.hex() / str(share)

    def _write(self, path: Path, data: bytes | memoryview | list[Buf]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            if isinstance(data, list):
                for part in data:
                    f.write(part)
            else:
                f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self.fsync:
            _fsync_dir(path.parent)

    def put_block(
        self, object_id: bytes, share: int, chunk: int, data: Buf, now_ms: int
    ) -> None:
        """Write one block atomically and durably. Raises StoreFull."""
        d = self._dir(object_id, share)
        path = d / f"{chunk}.blk"
        old = path.stat().st_size - HEADER if path.exists() else 0
        grow = len(data) - max(0, old)
        if self.capacity_bytes is not None and self._used + grow > self.capacity_bytes:
            raise StoreFull(f"{self._used + grow} > {self.capacity_bytes} bytes")
        if not d.exists():
            d.mkdir(parents=True)
            if self.fsync:
                _fsync_dir(d.parent)
                _fsync_dir(self.root)
        since = d / "since"
        if not since.exists():
            self._write(since, str(now_ms).encode())
        self._write(path, [MAGIC + struct.pack(">I", crc32c(data)), data])
        self._used += grow

    def get_block(self, object_id: bytes, share: int, chunk: int) -> Buf | None:
        """The block, None if absent; CorruptBlock if it fails its check."""
        path = self._dir(object_id, share) / f"{chunk}.blk"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptBlock(f"{path}: {exc}") from exc
        if len(raw) < HEADER or raw[:4] != MAGIC:
            raise CorruptBlock(f"{path}: bad header")
        (crc,) = struct.unpack_from(">I", raw, 4)
        data = raw[HEADER:]
        if crc32c(data) != crc:
            raise CorruptBlock(f"{path}: checksum mismatch")
        return data

    def chunks(self, object_id: bytes, share: int) -> list[int]:
        """Chunk indices held of this share, ascending."""
        d = self._dir(object_id, share)
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            stem, _, ext = p.name.partition(".")
            if ext == "blk" and stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def shares(self) -> Iterator[tuple[bytes, int, int]]:
        """Every (object id, share, first stored DTN ms) held."""
        for od in sorted(self.root.iterdir()):
            try:
                oid = bytes.fromhex(od.name)
            except ValueError:
                continue
            if len(oid) != OBJECT_ID_BYTES or not od.is_dir():
                continue
            for sd in sorted(od.iterdir()):
                if not sd.name.isdigit() or not 0 <= int(sd.name) < 256:
                    continue
                if not any(p.name.endswith(".blk") for p in sd.iterdir()):
                    continue
                try:
                    since = int((sd / "since").read_bytes())
                except (OSError, ValueError):
                    since = 0
                yield oid, int(sd.name), since

    def delete_block(self, object_id: bytes, share: int, chunk: int) -> None:
        """Drop one block (no error if absent)."""
        path = self._dir(object_id, share) / f"{chunk}.blk"
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            self._used -= max(0, size - HEADER)
        if not self.chunks(object_id, share):
            self.delete_share(object_id, share)

    def delete_share(self, object_id: bytes, share: int) -> None:
        """Drop every block of a share, and the object's directory once empty."""
        d = self._dir(object_id, share)
        if d.is_dir():
            for p in d.iterdir():
                if p.name.endswith(".blk"):
                    self._used -= max(0, p.stat().st_size - HEADER)
                p.unlink(missing_ok=True)
            d.rmdir()
        with contextlib.suppress(OSError):
            d.parent.rmdir()

    def used_bytes(self) -> int:
        """Bytes of block data held."""
        return self._used
