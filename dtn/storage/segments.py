"""Append-only segment files holding the large bundles of a :class:`SqliteStore`.

SQLite is a fine index but a poor home for 64 KB blobs: each one is written to
the WAL a 4 KB page (and a syscall) at a time, copied again into the database
file at every checkpoint, and its pages are rewritten when the bundle leaves.
A bundle over ``SqliteStore``'s inline limit is instead appended, in one
``write``, to the newest file of a directory of numbered segments
(``00000001.seg`` ...); its index row keeps ``(segment, offset, length,
crc32c)``. A segment is unlinked once every bundle in it has left the store
*and* that departure is durable (see :meth:`SegmentLog.drop_dead`); the
active segment, once emptied, only if it holds ``reclaim_bytes`` (else it
keeps taking payloads: no new file per emptying batch). Layout and crash
rules: spec/agent.md, "Segment files".

Crash safety, with the index's own durability rules: a segment file is
fsynced before (or, in deferred mode, in the same sync as) the WAL that
commits rows pointing into it, so a row acknowledged as durable always finds
its bytes. A row whose bytes did not reach the disk (a power cut before the
sync; such a bundle was never acknowledged) is found at open by its length or
CRC-32C and dropped. Process death (``kill -9``) loses nothing: the bytes are
in the page cache.

Late writes (``append(..., later=True)``, group commit only): the payload's
place is reserved at once and its row committed, but its bytes are written
only when the next :meth:`SegmentLog.take_dirty` hands the segments to a sync
-- and not at all if its row was deleted by then (:meth:`SegmentLog.forget`):
a bundle delivered or forwarded within a sync period costs no write (a
``writev`` of 64 KB into the page cache, and dropping those pages again, was
~35 us of CPU). Such a payload is lost by a ``kill -9`` before that sync, its
row then dropped at open like one a power cut cut short: the store uses it
only for bundles nobody was told it holds (their previous hop is answered
after the sync). Its place in the file stays a hole if it is never written.
A sync may keep some held payloads held (``take_dirty(keep=...)``): a
driver that promises nothing about those bundles until a later sync --
or until they have left (delivered and confirmed) -- so that their bytes
need never be written (spec/udpcl.md, "Hop ACKs at delivery").

Threads: everything runs on the store's thread except :meth:`sync_files`
and :meth:`unlink_files`, which a driver may run on a worker thread while
the store keeps writing; they touch only the fds :meth:`take_dirty` handed
over (dups, which they close), the directory, and the files of dead
segments :meth:`release_dead` handed over (no payload is read from a dead
segment, and only a transaction in progress -- never one side of a sync --
can bring one back to life), so nothing needs a lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Collection, Iterable

from dcis.dtn.errors import DtnError

_IOV_MAX = 1024  # buffers per writev (Linux)

PENDING_MAX_BYTES = 16 << 20
"""The most payload bytes held for a late write; past it, payloads are
written at once (a driver that syncs rarely cannot make the store hold more)."""

__all__ = ["SegmentError", "SegmentLog"]

_SUFFIX = ".seg"


class SegmentError(DtnError):
    """A segment file could not be created, written or read."""


def _name(seg: int) -> str:
    return f"{seg:08d}{_SUFFIX}"


class SegmentLog:
    """A directory of append-only payload files with per-segment live counts.

    ``segment_bytes``: a segment stops taking new payloads once it holds at
    least this many bytes (a payload is never split across segments).
    ``reclaim_bytes``: the active segment, once every payload in it has left,
    is closed (and removed after the next sync) only if it holds at least
    this many bytes; a smaller one keeps taking payloads after its dead
    ones. An emptied active segment therefore holds less than
    ``reclaim_bytes`` of dead space (or, after rolled-back appends, less than
    ``segment_bytes`` plus one payload), and :meth:`retire_empty_active`
    gives even that back when the disk runs short.
    """

    def __init__(
        self,
        directory: str,
        *,
        segment_bytes: int = 64 << 20,
        reclaim_bytes: int = 16 << 20,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.reclaim_bytes = reclaim_bytes
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise SegmentError(
                f"cannot create segment directory {directory!r}: {exc}"
            ) from exc
        existing = self.on_disk()
        # Never append to a segment written before: its tail past the last
        # indexed payload may hold a torn write.
        self._active = max(existing, default=0) + 1
        self._active_fd: int | None = None
        self._active_off = 0
        self._live: dict[int, int] = {}  # segment -> payloads indexed in it
        self._readers: dict[int, int] = {}  # segment -> read-only fd
        self._dirty: set[int] = set()  # written since the last sync_files
        self._dir_dirty = False  # a segment was created since the last sync
        # No live payloads and not the active one: unlink when safe.
        self._dead: set[int] = set()
        # Late writes: (segment, offset) -> the payload's buffers, in order.
        self._pending: dict[tuple[int, int], list[bytes | memoryview]] = {}
        self._pending_bytes = 0

    # -- inventory

    def on_disk(self) -> list[int]:
        """Segment numbers present in the directory, ascending."""
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise SegmentError(f"cannot list {self.directory!r}: {exc}") from exc
        out = []
        for n in names:
            stem = n[: -len(_SUFFIX)]
            if n.endswith(_SUFFIX) and stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def adopt(
        self, counts: dict[int, int], before_unlink: Callable[[], None] | None = None
    ) -> list[int]:
        """At open: ``counts`` maps each segment to the payloads the index
        still points into. Segments on disk with none are removed (a crash
        came between a commit and the unlink, or before the sync of the
        commit that emptied them); returns their numbers. ``before_unlink``
        runs first when there are any (the store makes what it found
        durable there)."""
        self._live = {s: n for s, n in counts.items() if n > 0}
        orphans = [s for s in self.on_disk() if s not in self._live]
        if orphans and before_unlink is not None:
            before_unlink()
        for s in orphans:
            self._unlink(s)
        return orphans

    def _path(self, seg: int) -> str:
        return os.path.join(self.directory, _name(seg))

    def path_of(self, seg: int) -> str:
        """The file of segment ``seg``."""
        return self._path(seg)

    # -- writing (store thread)

    def append(
        self, data: bytes | memoryview | tuple[bytes, ...], *, later: bool = False
    ) -> tuple[int, int]:
        """Write ``data`` -- one buffer, or buffers in order, written with
        one ``writev`` (a large payload is not joined to its bundle's head
        first) -- at the end of the active segment: ``(segment, offset)``.

        ``later``: only reserve its place; the bytes are written by the next
        :meth:`take_dirty` unless :meth:`forget` drops them first (module
        docstring, "Late writes"). Bytes given as a view of a buffer that
        may change are copied; ``bytes`` are kept as they are. Written at
        once all the same when :data:`PENDING_MAX_BYTES` are held already.

        The payload is not counted as live until :meth:`ref` (the index row
        commit); bytes of a rolled-back transaction stay as dead space.
        """
        if self._active_fd is not None and self._active_off >= self.segment_bytes:
            self._rotate()
        if self._active_fd is None:
            self._open_active()
        fd = self._active_fd
        assert fd is not None
        seg, off = self._active, self._active_off
        parts: list[bytes | memoryview] = (
            list(data) if isinstance(data, tuple) else [data]
        )
        size = sum(map(len, parts))
        if later and self._pending_bytes + size <= PENDING_MAX_BYTES:
            self._pending[(seg, off)] = [_kept(b) for b in parts]
            self._pending_bytes += size
            self._active_off = off + size
            return seg, off
        self._write(seg, off, parts)
        self._active_off = off + size
        return seg, off

    def _write(self, seg: int, off: int, parts: list[bytes | memoryview]) -> None:
        """``parts`` at ``off`` of ``seg``, short writes continued. Raises
        :class:`SegmentError`; the active segment is then closed (it may
        end in a torn write)."""
        bufs = [memoryview(b) for b in parts]
        own: int | None = None
        try:
            if seg == self._active and self._active_fd is not None:
                fd = self._active_fd
            else:  # a late write into a segment closed since
                fd = own = os.open(self._path(seg), os.O_WRONLY | os.O_CLOEXEC)
            while bufs:
                n = os.pwritev(fd, bufs[:_IOV_MAX], off)
                if n == 0:  # no progress (never for a healthy file): not a loop
                    raise OSError(errno.EIO, "write made no progress")
                off += n
                while n and bufs:  # a short write goes on where it stopped
                    if n >= len(bufs[0]):
                        n -= len(bufs.pop(0))
                    else:
                        bufs[0] = bufs[0][n:]
                        n = 0
                while bufs and not bufs[0]:
                    bufs.pop(0)
        except OSError as exc:
            # The file may end in a torn write: later payloads go to a new one.
            if seg == self._active and own is None:
                self._rotate(settle=False)
            raise SegmentError(f"cannot write segment {seg}: {exc}") from exc
        finally:
            if own is not None:
                os.close(own)
        self._dirty.add(seg)

    def forget(self, seg: int, off: int) -> None:
        """The row of the payload at ``off`` in ``seg`` is deleted by a
        committed transaction: if its late write is still to come, it
        never comes."""
        parts = self._pending.pop((seg, off), None)
        if parts is not None:
            self._pending_bytes -= sum(map(len, parts))

    def write_pending(
        self,
        seg: int | None = None,
        *,
        keep: Collection[tuple[int, int]] = (),
        failed: list[tuple[tuple[int, int], SegmentError]] | None = None,
    ) -> None:
        """Write the payloads held for a late write (only ``seg``'s, if
        given), in order, except those at the ``(segment, offset)`` places
        in ``keep`` (they stay held). Raises :class:`SegmentError`; what
        was not written stays held. ``failed``: a write that fails does
        not raise but is listed there (its place and error; the payload
        stays held), and the others are still written."""
        for key in [
            k
            for k in self._pending
            if (seg is None or k[0] == seg) and (not keep or k not in keep)
        ]:
            s, off = key
            if s in self._dead:
                self.forget(s, off)  # nothing in it is read again
                continue
            parts = self._pending[key]
            try:
                self._write(s, off, parts)
            except SegmentError as exc:
                if failed is None:
                    raise
                failed.append((key, exc))
                continue
            del self._pending[key]
            self._pending_bytes -= sum(map(len, parts))

    def _open_active(self) -> None:
        path = self._path(self._active)
        try:
            # Not O_APPEND: every write names its offset (pwritev), so that
            # a late write lands in the place reserved for it.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SegmentError(f"cannot create segment {path!r}: {exc}") from exc
        self._active_fd = fd
        self._active_off = os.fstat(fd).st_size
        self._dir_dirty = True

    def _rotate(self, *, settle: bool = True) -> None:
        seg = self._active
        if settle:
            # Its held payloads go in before it closes (rows of a
            # transaction still open may point at them). If that write
            # fails they stay held, for the next take_dirty (whose sync
            # then fails if it fails again): a rotation never raises -- it
            # may come in a commit, after COMMIT, with live counts still
            # to apply.
            with contextlib.suppress(SegmentError):
                self.write_pending(seg)
        self._close_active()
        self._active = seg + 1
        if self._live.get(seg, 0) == 0:
            self._dead.add(seg)

    def _close_active(self) -> None:
        fd, self._active_fd = self._active_fd, None
        if fd is not None:
            # sync_files holds a dup of it if it needs one.
            os.close(fd)
        self._active_off = 0

    def ref(self, seg: int, delta: int) -> None:
        """Payloads in ``seg`` gained (``delta`` > 0) or lost index rows (a
        committed transaction). An inactive segment left with none is dead."""
        n = self._live.get(seg, 0) + delta
        if n > 0:
            self._live[seg] = n
            self._dead.discard(seg)
        else:
            self._live.pop(seg, None)
            if seg != self._active:
                self._dead.add(seg)
            elif self._active_fd is not None and self._active_off >= max(
                1, self.reclaim_bytes
            ):
                # The active segment emptied and holds enough to be worth
                # a new file: a new one takes the next payloads, so this
                # one's space comes back. Below ``reclaim_bytes`` it keeps
                # taking payloads: when every bundle is forwarded within
                # milliseconds the active segment empties after almost
                # every batch, and a rotation each time (create, directory
                # fsync, unlink) cost more than the bundles' own writes.
                self._rotate()

    def active_is_dead(self) -> bool:
        """Whether the active segment holds bytes but no live payloads."""
        return (
            self._active_fd is not None
            and self._active_off > 0
            and self._live.get(self._active, 0) == 0
        )

    def retire_empty_active(self) -> bool:
        """If :meth:`active_is_dead`, close the active segment so that it is
        removed after the next sync (the disk is short: its dead space must
        come back even below ``reclaim_bytes``). True if it was closed."""
        if self.active_is_dead():
            self._rotate()
            return True
        return False

    @property
    def pending_bytes(self) -> int:
        """Payload bytes held for a late write now."""
        return self._pending_bytes

    def pending_places(self) -> frozenset[tuple[int, int]]:
        """The ``(segment, offset)`` places of the payloads held for a late
        write now."""
        return frozenset(self._pending)

    def pending_since(
        self, before: Collection[tuple[int, int]]
    ) -> set[tuple[int, int]]:
        """The places of the payloads held now that ``before`` (an earlier
        :meth:`pending_places`) did not hold: put since then."""
        return {k for k in self._pending if k not in before}

    def has_dead(self) -> bool:
        """Whether segments wait for :meth:`drop_dead` (cheap: asked after
        every agent call)."""
        return bool(self._dead)

    def dead(self) -> set[int]:
        """Segments waiting for :meth:`drop_dead` now."""
        return set(self._dead)

    def drop_dead(self, only: set[int] | None = None) -> int:
        """Unlink dead segments; call only once the commits that emptied them
        are durable (else a power cut could bring back rows pointing into a
        missing file -- they would be dropped at open, but a bundle a
        rolled-back delete should have kept would be gone). ``only``: just
        those (the ones dead when a sync began). Returns how many."""
        dead = list(self._dead if only is None else self._dead & only)
        for s in dead:
            self._unlink(s)
        self._dead.difference_update(dead)
        return len(dead)

    def release_dead(self, only: set[int]) -> list[str]:
        """Store thread: close the readers of the dead segments in ``only``
        and return their paths, for :meth:`unlink_files` on a worker thread
        once the commits that emptied them are durable (unlinking a large
        file frees its blocks, which can take milliseconds: not on the
        event loop). They stay dead until :meth:`forget_dead`."""
        paths: list[str] = []
        for seg in sorted(self._dead & only):
            fd = self._readers.pop(seg, None)
            if fd is not None:
                os.close(fd)
            paths.append(self._path(seg))
        return paths

    @staticmethod
    def unlink_files(paths: Iterable[str]) -> None:
        """Any thread: remove the segment files from :meth:`release_dead`."""
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise SegmentError(f"cannot remove segment {path!r}: {exc}") from exc

    def forget_dead(self, only: set[int]) -> None:
        """Store thread: the segments in ``only`` were removed by
        :meth:`unlink_files`."""
        self._dead.difference_update(only)

    def _unlink(self, seg: int) -> None:
        fd = self._readers.pop(seg, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self._path(seg))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SegmentError(f"cannot remove segment {seg}: {exc}") from exc

    # -- reading (store thread)

    def read(self, seg: int, off: int, length: int) -> bytes | None:
        """The ``length`` bytes at ``off`` in ``seg`` (held for a late
        write, or in the file); None if the file is missing or shorter."""
        held = self._pending.get((seg, off))
        if held is not None:
            data = b"".join(held)
            return data if len(data) == length else None
        fd = self._readers.get(seg)
        if fd is None:
            try:
                fd = os.open(self._path(seg), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise SegmentError(f"cannot open segment {seg}: {exc}") from exc
            if len(self._readers) >= 64:
                os.close(self._readers.pop(next(iter(self._readers))))
            self._readers[seg] = fd
        try:
            data = os.pread(fd, length, off)
        except OSError as exc:
            raise SegmentError(f"cannot read segment {seg}: {exc}") from exc
        return data if len(data) == length else None

    # -- durability

    def take_dirty(
        self,
        *,
        skip_dead: bool = False,
        keep: Collection[tuple[int, int]] = (),
        failed: list[tuple[tuple[int, int], SegmentError]] | None = None,
    ) -> tuple[list[int], bool]:
        """Store thread: dups of the fds written since the last call, and
        whether the directory gained a file -- the work of one
        :meth:`sync_files`. The caller owns (and closes) the fds.

        ``skip_dead``: leave out the segments with no live payload -- call
        it only between transactions, with the index's sync to follow.
        Every row that pointed into such a segment is deleted by a commit
        that sync makes durable, so none of its bytes is ever read again:
        an inactive one is unlinked after that sync (its dirty pages
        dropped, never written), the active one is synced with the next
        live payload written to it. A payload that leaves before its
        node's sync -- forwarded, or delivered and confirmed -- then costs
        no disk write at all (spec/performance.md, "Sixth round").

        Payloads held for a late write are written first (raises
        :class:`SegmentError` if that fails) -- but those at the places in
        ``keep``, which stay held through this sync (not durable after it:
        their caller promises nothing on their account until a later one,
        and drops nothing if they leave first). ``failed``: as for
        :meth:`write_pending` -- a late write that fails is listed there
        instead of raising (the caller deletes its row before the sync)."""
        if self._pending:
            self.write_pending(keep=keep, failed=failed)
        fds: list[int] = []
        try:
            for seg in self._dirty:
                if skip_dead and not self._live.get(seg):
                    continue
                if seg == self._active and self._active_fd is not None:
                    fds.append(os.dup(self._active_fd))
                else:
                    try:
                        fds.append(os.open(self._path(seg), os.O_RDONLY | os.O_CLOEXEC))
                    except FileNotFoundError:
                        continue  # already dead and removed
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise SegmentError(f"cannot open segments to sync: {exc}") from exc
        self._dirty.clear()
        dir_dirty, self._dir_dirty = self._dir_dirty, False
        return fds, dir_dirty

    def sync_files(self, fds: Iterable[int], dir_dirty: bool) -> None:
        """Any thread: flush ``fds`` (from :meth:`take_dirty`; closes them)
        to the disk and, if a segment was created, fsync the directory.

        ``fdatasync``, not ``fsync``: it writes the data and the metadata
        needed to read it back (the file's size, its blocks) but not its
        times -- what a segment's bytes need to survive a power cut, with
        one journal update less per file on ext4."""
        err: OSError | None = None
        for fd in fds:
            try:
                os.fdatasync(fd)
            except OSError as exc:
                err = err or exc
            finally:
                os.close(fd)
        if dir_dirty:
            try:
                dfd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError as exc:
                err = err or exc
        if err is not None:
            raise SegmentError(f"cannot fsync segments in {self.directory!r}: {err}")

    def close(self) -> None:
        """Close every file (unsynced data stays with the OS; payloads held
        for a late write are written first if they can be)."""
        if self._pending:
            # If they cannot be written, their rows are dropped at the next
            # open: they were never promised.
            with contextlib.suppress(SegmentError):
                self.write_pending()
        self._close_active()
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()


def _kept(buf: bytes | memoryview) -> bytes | memoryview:
    """``buf`` as it can be kept until a late write: ``bytes`` and views of
    ``bytes`` as they are, anything else (a view of a buffer that may be
    reused) copied."""
    if type(buf) is bytes:
        return buf
    if isinstance(buf, memoryview) and type(buf.obj) is bytes:
        return buf
    return bytes(buf)
