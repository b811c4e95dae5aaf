"""The bundle store on disk: :class:`SqliteStore`, SQLite in WAL mode with
bundle bytes in segment files (:mod:`dcis.dtn.storage.segments`); the
default store of daemons. An edge module: it owns file I/O, which the
sans-I/O cores (:mod:`dcis.dtn.agent` and the rest, tests/unit/
test_architecture.py) may not do.

Theory of operation
-------------------
:class:`SqliteStore` implements :class:`~dcis.dtn.agent.store.BundleStore`,
whose module states the durability contract and the size bound; this
module is how it keeps them on disk (see spec/agent.md, "The bundle store",
for the schema, the segment files, the ballast file that keeps room for
deletes on a full disk, and the deferred fsync). One process holds a store
at a time (an ``flock`` on ``<path>.lock``).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, suppress
from types import TracebackType
from typing import Literal

from dcis.dtn.agent.store import (
    MAX_INT64,
    BundleState,
    DiskFull,
    StoreCorrupt,
    StoredBundle,
    StoreError,
    Wire,
    _check_put,
    _check_room,
)
from dcis.dtn.bpv7.crc import crc32c
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.storage.segments import SegmentError, SegmentLog

__all__ = ["SqliteStore"]


def _as_is(value: bytes | None) -> bytes | None:
    return value


# sqlite3 binds an int, float or str parameter directly, but sends every
# other one (None, bytes) through its adapter look-up: not registered, it
# asks ``PrepareProtocol.__adapt__`` and ``value.__conform__``, and the
# first miss builds and clears an AttributeError -- ~2,000 instructions a
# parameter, and a row of a 1 KB bundle has four or five such (the blob,
# the NULL segment, offset, fragment group, previous node). Registered,
# the value is found and bound as it is (~100 instructions): the same
# values bound, for every sqlite3 user of the process (spec/performance.md,
# "Eighth round: the 1 KB path").
sqlite3.register_adapter(bytes, _as_is)
sqlite3.register_adapter(type(None), _as_is)

# Lock files this process holds: path -> [fd, users]. The lock keeps other
# processes out; inside one process a store may be opened again (a test's
# simulated crash abandons the first object without closing it).
_LOCKS: dict[str, list[int]] = {}


def _lock(path: str) -> str:
    """Take the exclusive lock of the store at ``path`` (an flock on
    ``<path>.lock``, held until the last store of this process on it
    closes): a second daemon on the same files would corrupt both. Returns
    the lock's name for :func:`_unlock`. Raises :class:`StoreError`."""
    import fcntl

    name = os.path.realpath(path) + ".lock"
    held = _LOCKS.get(name)
    if held is not None:
        held[1] += 1
        return name
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open bundle store {path!r}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StoreError(
                f"bundle store {path!r} is in use by another process"
            ) from None
        raise StoreError(f"cannot lock bundle store {path!r}: {exc}") from exc
    _LOCKS[name] = [fd, 1]
    return name


def _unlock(name: str) -> None:
    held = _LOCKS.get(name)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _LOCKS[name]
        os.close(held[0])  # closing releases the flock


_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    key TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    expiry_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    prev_node INTEGER,
    frag_group TEXT,
    data BLOB NOT NULL,
    seg INTEGER,
    seg_off INTEGER,
    crc INTEGER
);
CREATE TABLE IF NOT EXISTS delivered (
    key TEXT PRIMARY KEY,
    expiry_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_expiry ON delivered (expiry_ms);
CREATE TABLE IF NOT EXISTS store_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS service_state (
    service INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (service, key)
) WITHOUT ROWID;
"""
_SCHEMA_VERSION = "2"
# Version 1 kept every bundle inline; 2 adds where a large one sits in the
# segment files (data is then the empty blob). Opening a version-1 store
# adds the columns; its bundles stay inline.
_MIGRATE_1_TO_2 = (
    "ALTER TABLE bundles ADD COLUMN seg INTEGER",
    "ALTER TABLE bundles ADD COLUMN seg_off INTEGER",
    "ALTER TABLE bundles ADD COLUMN crc INTEGER",
)


_ROOM_PUTS = 64
# FULL stores checkpoint the WAL themselves (SQLite's automatic checkpoint is
# off), aiming at SQLite's own default of 1,000 pages a checkpoint: the
# transactions between two checkpoints are paced from the pages the last
# one found (within 1 .. _CHECKPOINT_MAX_EVERY).
_CHECKPOINT_FRAMES = 1000
_CHECKPOINT_MAX_EVERY = 4096
_ROOM_SLACK = 256 << 20
"""Free space over the reserve above which puts skip most statvfs calls."""


_INSERT = (
    "INSERT INTO bundles (key, destination, expiry_ms, state, size_bytes, received_ms,"
    " prev_node, frag_group, data, seg, seg_off, crc)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_HAS_KEY = "SELECT 1 FROM bundles WHERE key=?"
# Discarded keys go to SQLite in one DELETE per chunk of at most this many
# (below the 999 variables of older SQLite builds); a chunk is padded (its
# last key repeated) to a power of two, so a few statements serve every
# size and stay in sqlite3's statement cache.
_DISCARD_CHUNK = 256
_DISCARD_SQL = {
    n: "DELETE FROM bundles WHERE key IN ("
    + ",".join("?" * n)
    + ") RETURNING size_bytes, seg, seg_off"
    for n in (1 << i for i in range(_DISCARD_CHUNK.bit_length()))
}
_MARK = (
    "INSERT INTO delivered (key, expiry_ms) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET expiry_ms=max(expiry_ms, excluded.expiry_ms)"
)


class _Txn:
    """One ``transaction()`` block of a :class:`SqliteStore` (an object
    with ``__enter__``/``__exit__``, not a generator: a write outside any
    block enters one)."""

    __slots__ = ("_durable", "_store")

    def __init__(self, store: SqliteStore, durable: bool | None) -> None:
        self._store = store
        self._durable = durable

    def __enter__(self) -> None:
        self._store._begin(self._durable)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self._store._end(exc)
        return False


class _Savepoint:
    """One ``savepoint()`` block: a durable block whose statements commit
    all or none (SQLite's SAVEPOINT inside an open transaction)."""

    __slots__ = ("_mark", "_store")

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._mark: tuple[int, ...] | None = None

    def __enter__(self) -> None:
        store = self._store
        store._begin(True)
        if store._depth > 1:
            try:
                store._exec("SAVEPOINT nested")
            except BaseException as exc:
                store._end(exc)
                raise
            self._mark = store._batched()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        store = self._store
        try:
            if self._mark is not None:
                store._end_savepoint(self._mark, exc is not None)
        finally:
            store._end(exc)
        return False


class SqliteStore:
    """A :class:`BundleStore` in one SQLite file, WAL mode.

    ``synchronous`` picks the durability level (see spec/agent.md):

    - ``"FULL"`` (default): every commit fsyncs the WAL. An acknowledged
      bundle survives ``kill -9`` and a power loss. Measured here at ~5,000
      single-bundle commits/s; the agent groups the writes of one call (and
      ``on_receive_many`` those of many) into one commit.
    - ``"NORMAL"``: commits are written to the OS but fsynced only at WAL
      checkpoints. Survives ``kill -9`` (the OS holds the pages) but an OS
      crash or power loss may lose the last commits -- of bundles already
      acknowledged. Faster (no fsync per commit).

    Bundles over ``inline_max_bytes`` are kept in append-only segment files
    in the directory ``<path>.segments`` (:mod:`dcis.dtn.storage.segments`), the
    index rows in SQLite; smaller ones inline. At open the large ones are
    checked against their CRC-32C: a row whose bytes never reached the disk
    (a power cut before the fsync; never acknowledged) is dropped and its key
    listed in :attr:`dropped_at_open`. ``segment_bytes``: a segment takes
    no new payload once it holds this much; ``segment_reclaim_bytes``: an
    emptied active segment is replaced (and removed) only once it holds this
    much, else it keeps taking payloads (see :class:`SegmentLog`).

    ``deferred_sync=True`` (group commit, for a driver with a worker
    thread): commits never fsync on the calling thread. A durable commit
    instead advances :attr:`write_generation`; the driver calls
    :meth:`begin_sync` (store thread), runs the function it returns on any
    thread, then :meth:`end_sync` -- and acknowledges what was written up to
    that generation only then. ``close()`` syncs. The durability contract
    of the module docstring then holds at ``end_sync``, not at commit.

    Raises :class:`StoreError` if the file cannot be opened or is not a
    bundle store, and on later I/O errors. Not thread-safe: use it from one
    thread at a time (it may be created in one thread and used in another).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        limit_bytes: int = 1 << 30,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        inline_max_bytes: int = 2048,
        segment_bytes: int = 64 << 20,
        segment_reclaim_bytes: int = 16 << 20,
        deferred_sync: bool = False,
        disk_reserve_bytes: int = 0,
        ballast_bytes: int = 0,
    ) -> None:
        if limit_bytes < 0:
            raise InvalidArgument(f"limit_bytes must be >= 0, got {limit_bytes}")
        if synchronous not in ("FULL", "NORMAL"):
            raise InvalidArgument(
                f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}"
            )
        self._path = os.fspath(path)
        self._limit = limit_bytes
        self._depth = 0
        self._full = synchronous == "FULL"
        self._mode: str = synchronous
        self._sync_now: str = synchronous
        self._must_sync = False
        self._inline_max = inline_max_bytes
        self._deferred = deferred_sync
        self._write_gen = 0
        # (segment, +1 or -1) per row written or deleted by the open transaction
        self._refs: list[tuple[int, int]] = []
        # Payloads of this transaction's puts held for a late write, and of
        # its deletes and discards: (segment, offset) -- forgotten if it
        # rolls back, or once it commits (SegmentLog.forget), respectively.
        self._late: list[tuple[int, int]] = []
        self._left: list[tuple[int, int]] = []
        # Writes of the open transaction batched until its commit (or until
        # a statement that must see them): bundle rows to insert, their
        # keys, delivered keys to mark (key -> expiry).
        self._rows: list[tuple[object, ...]] = []
        self._row_keys: set[str] = set()
        self._marks: dict[str, int] = {}
        # Keys discarded in the open transaction, not deleted yet (in order).
        self._gone: dict[str, None] = {}
        self._failed = False
        # Told whether the open transaction committed (when_settled).
        self._settle: list[Callable[[bool], None]] = []
        self._relaxed = False
        self._saved = (0, 0)
        self._wal_fd: int | None = None
        self._sync_dead: set[int] = set()
        # begin_sync handed segment fds to a sync not yet ended: no
        # checkpoint may sync the WAL before that sync has synced them.
        self._syncing = False
        # A checkpoint's sync failed (group commit): what it took from the
        # dirty set may be lost, so no later sync may succeed.
        self._sync_failure: str | None = None
        self._reserve = disk_reserve_bytes
        self._ballast_bytes = ballast_bytes
        self._ballast_path = self._path + ".ballast"
        self._ballast_out = False
        self._puts = 0
        self._own_checkpoints = False
        self._since_checkpoint = 0
        self._checkpoint_every = 64
        # The WAL file's size at the last checkpoint (it is reused from its
        # start, not shrunk) and the size of a frame (page + header).
        self._wal_high = 0
        self._frame_bytes = 4096 + 24
        # Puts and bytes since the last statvfs, and the bytes that may be
        # written before the next (see _check_disk).
        self._room_puts = 0
        self._room_bytes = 0
        self._room_left = 0
        self.dropped_at_open: list[str] = []
        self.corrupt_at_open: list[str] = []
        # Bundles refused at a sync's start: their late writes failed.
        self._unwritten: list[str] = []
        self._unwritten_why = ""
        # WAL checkpoints the disk refused (SQLITE_FULL) since the last
        # take_checkpoint_failures(), and the last one's text.
        self._checkpoints_failed = 0
        self._checkpoint_why = ""
        in_memory = self._path in ("", ":memory:")
        # A WAL left with frames in it: the last process did not close the
        # store (a clean close checkpoints and removes it). What this open
        # finds may then never have been synced (see _check_segments).
        try:
            self._unclean = not in_memory and os.path.getsize(self._path + "-wal") > 0
        except OSError:
            self._unclean = False
        self._lock_name: str | None = None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a
            # transaction() block is exactly one SQLite transaction.
            self._db = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open bundle store {self._path!r}: {exc}") from exc
        if not in_memory:
            try:
                self._lock_name = _lock(self._path)
            except StoreError:
                self._db.close()
                raise
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"bundle store {self._path!r}: WAL mode unavailable (got {mode!r})"
                )
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            # A checkpoint syncs the WAL (synchronous NORMAL included), which
            # makes every commit in it durable: SQLite's own, run inside any
            # COMMIT, would make durable the rows of a relaxed or group-commit
            # transaction whose segment bytes are not synced yet -- e.g. a
            # reassembly that deletes acknowledged fragments and stores the
            # whole bundle. A FULL store checkpoints itself, segments first
            # (_checkpoint_if_due).
            self._own_checkpoints = self._full and not in_memory
            if self._own_checkpoints:
                self._db.execute("PRAGMA wal_autocheckpoint=0")
                page = self._db.execute("PRAGMA page_size").fetchone()[0]
                self._frame_bytes = int(page) + 24
            # Many SQLite builds (Debian's) default to secure_delete=ON: every
            # deleted bundle's pages are overwritten with zeros, i.e. each
            # forwarded bundle is written twice more (WAL, then checkpoint).
            # FAST zeroes deleted content only in pages written anyway
            # (b-tree pages), not the overflow pages holding large payloads;
            # those stay in the free list until reused (spec/udpcl.md).
            self._db.execute("PRAGMA secure_delete=FAST")
            self._db.executescript(_SCHEMA)
            row = self._db.execute(
                "SELECT value FROM store_meta WHERE name='schema'"
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO store_meta (name, value) VALUES ('schema', ?)",
                    (_SCHEMA_VERSION,),
                )
            elif row[0] == "1":
                for stmt in _MIGRATE_1_TO_2:
                    self._db.execute(stmt)
                self._db.execute(
                    "UPDATE store_meta SET value=? WHERE name='schema'",
                    (_SCHEMA_VERSION,),
                )
            elif row[0] != _SCHEMA_VERSION:
                raise StoreError(
                    f"bundle store {self._path!r} has schema {row[0]!r}, expected {_SCHEMA_VERSION!r}"
                )
            self._used = int(
                self._db.execute(
                    "SELECT COALESCE(SUM(size_bytes), 0) FROM bundles"
                ).fetchone()[0]
            )
            self._count = int(
                self._db.execute("SELECT COUNT(*) FROM bundles").fetchone()[0]
            )
            self._segs = (
                None
                if in_memory
                else SegmentLog(
                    self._path + ".segments",
                    segment_bytes=segment_bytes,
                    reclaim_bytes=segment_reclaim_bytes,
                )
            )
            if self._segs is not None:
                self._check_segments(self._segs)
                if ballast_bytes:
                    self._ballast_out = not self._lay_ballast()
        except sqlite3.Error as exc:
            self._db.close()
            self._unlock()
            raise StoreError(f"bundle store {self._path!r}: {exc}") from exc
        except SegmentError as exc:
            self._db.close()
            self._unlock()
            raise StoreError(f"bundle store {self._path!r}: {exc}") from exc
        except StoreError:
            self._db.close()
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock_name is not None:
            _unlock(self._lock_name)
            self._lock_name = None

    def _check_segments(self, segs: SegmentLog) -> None:
        """At open: drop rows whose payload never reached the disk (missing,
        cut short or still zeros, or written only up to a page and zeros
        after it: a power cut before their fsync, or a ``kill -9`` before or
        inside a late write; never acknowledged), keep -- and list in :attr:`corrupt_at_open` -- rows
        whose payload is all there but fails its CRC (damaged after the
        commit: reading it raises :class:`StoreCorrupt`), adopt the live
        counts, remove segments nothing points into."""
        rows = self._db.execute(
            "SELECT key, seg, seg_off, size_bytes, crc FROM bundles"
            " WHERE seg IS NOT NULL ORDER BY seg, seg_off"
        ).fetchall()
        counts: dict[int, int] = {}
        bad: list[tuple[str, int]] = []
        for key, seg, off, size, crc in rows:
            data = segs.read(seg, off, size)
            if data is None:
                bad.append((key, size))
                continue
            if crc32c(data) != crc:
                if _cut_short(data, off):
                    bad.append((key, size))
                    continue
                self.corrupt_at_open.append(key)
            counts[seg] = counts.get(seg, 0) + 1
        if bad:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "DELETE FROM bundles WHERE key=?", [(k,) for k, _ in bad]
            )
            self._db.execute("COMMIT")
            self._used -= sum(n for _, n in bad)
            self._count -= len(bad)
            self.dropped_at_open = [k for k, _ in bad]
        if self._unclean:
            # After a kill -9 the rows and bytes found may sit unsynced in
            # the page cache, and this process never syncs a segment
            # written before it: yet it holds them, and acknowledges a copy
            # resent by the previous hop as a duplicate at once. Flush what
            # was found before anything is promised (and removed).
            self._sync_found(segs, counts)
            segs.adopt(counts)
        else:
            segs.adopt(counts, lambda: self._sync_found(segs, counts))

    def _sync_found(self, segs: SegmentLog, counts: dict[int, int]) -> None:
        """At open, before segments no row points into are removed: flush
        what was found -- the segment files rows point into, the WAL, the
        database file. After a ``kill -9`` SQLite reads back commits that
        were never synced (they sat in the page cache): without this,
        removing a segment those commits emptied, and a power cut after
        it, would bring back rows pointing into a missing file (and the
        rows kept must then not lose their bytes either). Also run, removal
        or not, by an open after an unclean exit (``_unclean``): the bundles
        found are held and may be acknowledged as duplicates at once."""
        names = [segs.path_of(seg) for seg in sorted(counts)]
        for name in (*names, self._path + "-wal", self._path):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def inline_max_bytes(self) -> int:
        """Bundles up to this size are kept in their index rows; larger
        ones in segment files (where ``write_later`` can hold them)."""
        return self._inline_max

    @property
    def limit_bytes(self) -> int:
        """Maximum total bundle bytes accepted by :meth:`put`."""
        return self._limit

    @property
    def used_bytes(self) -> int:
        """Total bundle bytes held now."""
        if self._gone:
            self._flush_gone()
        return self._used

    def __len__(self) -> int:
        if self._gone:
            self._flush_gone()
        return self._count

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if key in self._row_keys:
            return True
        if key in self._gone:
            return False
        return (
            self._exec("SELECT 1 FROM bundles WHERE key=?", (key,)).fetchone()
            is not None
        )

    def _exec(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        if self._failed:
            raise self._refused()
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            if self._depth and not self._db.in_transaction:
                self._poison()
            raise StoreError(f"bundle store {self._path!r}: {exc}") from exc

    def _poison(self) -> None:
        """A write in the open transaction failed: nothing of the block may
        commit (:meth:`_end` rolls it back and raises). If SQLite rolled
        the whole transaction back already (SQLITE_FULL, an I/O error),
        what the block wrote before is gone, and what it writes after must
        not commit statement by statement either: every later statement,
        put and batched write of the block is refused (:meth:`_refused`),
        whether or not the new transaction opened here (only a second
        guard) could begin."""
        if not self._depth:
            return
        self._failed = True
        self._settled(False)
        if not self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("BEGIN IMMEDIATE")

    def _refused(self) -> StoreError:
        """The error for a write (or a statement) in a block whose earlier
        write failed (:meth:`_poison`)."""
        return StoreError(
            f"bundle store {self._path!r}: an earlier write in this transaction"
            " failed; nothing more is written until it ends"
        )

    def _see(self, key: str) -> None:
        """Before a statement on ``key``'s row: write the batched rows if
        one of them is its, and the batched discards if one of them is
        (other batched writes cannot change its result)."""
        if key in self._row_keys:
            self._flush_rows()
        if key in self._gone:
            self._flush_gone()

    def _set_sync(self, level: str) -> None:
        if level != self._sync_now:
            self._exec(f"PRAGMA synchronous={level}")
            self._sync_now = level

    def _begin(self, durable: bool | None) -> None:
        # durable=None: the write methods' own blocks -- join an outer
        # transaction as it is, or be a durable one on their own.
        if self._depth:
            if durable:
                self._must_sync = True
            self._depth += 1
            return
        # The safety level cannot change inside a transaction: pick it now.
        # A non-durable commit skips the fsync; WAL frames are written in
        # order, so the next durable commit makes it durable too.
        if self._own_checkpoints:
            self._since_checkpoint += 1
            self._checkpoint_if_due()
        relaxed = self._full and durable is False
        self._set_sync("NORMAL" if relaxed or self._deferred else self._mode)
        self._exec("BEGIN IMMEDIATE")
        self._relaxed = relaxed
        self._saved = (self._used, self._count)
        self._depth = 1
        self._must_sync = False
        self._failed = False
        self._puts = 0
        self._refs.clear()
        self._late.clear()
        self._left.clear()

    def _checkpoint_if_due(self) -> None:
        """Between transactions (FULL), every ``_checkpoint_every`` of
        them: sync every segment written since the last sync, then
        checkpoint (which syncs the WAL, copies it into the database and
        syncs that), so rows never become durable before the bytes they
        point at. The pace follows the WAL pages each checkpoint finds
        (~``_CHECKPOINT_FRAMES``), as SQLite's own would; in group-commit
        mode that is about one extra segment sync per 1,000 pages of index
        rows, none otherwise (a FULL commit syncs its segments anyway).
        Raises :class:`StoreError` (before the transaction begins, or
        from :meth:`end_sync`) when a sync fails -- not when the disk
        refuses the checkpoint's copy into the database (counted:
        :meth:`take_checkpoint_failures`)."""
        if self._syncing:
            # Group commit: the segments of the commits before the sync in
            # flight are synced by its worker, not yet perhaps; the
            # checkpoint waits for end_sync (a driver under load begins the
            # next sync right after it: no transaction runs in between).
            return
        # Also due when the WAL outgrows twice the pages aimed at (and its
        # size at the last checkpoint): the pace, set from earlier
        # transactions (idle ones write nothing), must not let a burst of
        # larger ones fill it for thousands of transactions.
        wal = self._wal_bytes()
        if self._since_checkpoint < self._checkpoint_every and wal <= max(
            self._wal_high, 2 * _CHECKPOINT_FRAMES * self._frame_bytes
        ):
            return
        self._since_checkpoint = 0
        self._wal_high = wal
        try:
            # (Writes the held payloads first: see _sync_dirty_segments.)
            self._sync_dirty_segments()
        except (OSError, SegmentError) as exc:
            if self._deferred:
                # The segments taken are out of the dirty set: a group sync
                # of the WAL alone would acknowledge bundles whose bytes the
                # kernel may have dropped. Every later sync fails instead.
                self._sync_failure = str(exc)
            raise StoreError(
                f"bundle store {self._path!r}: checkpoint failed: {exc}"
            ) from exc
        try:
            row = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
                # The disk refused the copy into the database: the segments
                # are synced and the WAL keeps its frames (the commits stay
                # durable there), so nothing acknowledged is at risk. Not a
                # failure: counted (take_checkpoint_failures), and tried
                # again when next due.
                self._checkpoints_failed += 1
                self._checkpoint_why = str(exc)
                return
            # Any other error (a failed fsync of the WAL or the database:
            # what the kernel kept is unknown) is a failed sync.
            raise StoreError(
                f"bundle store {self._path!r}: checkpoint failed: {exc}"
            ) from exc
        frames = int(row[1]) if row is not None else 0
        if frames < _CHECKPOINT_FRAMES // 2:
            self._checkpoint_every = min(
                self._checkpoint_every * 2, _CHECKPOINT_MAX_EVERY
            )
        elif frames > 2 * _CHECKPOINT_FRAMES:
            self._checkpoint_every = max(self._checkpoint_every // 2, 1)

    def _wal_bytes(self) -> int:
        """The WAL file's size (one fstat; 0 before it exists)."""
        try:
            fd = self._wal_fd_open()
            return 0 if fd is None else os.fstat(fd).st_size
        except OSError:
            return 0

    def _wal_fd_open(self) -> int | None:
        """The store's own read-only fd of the WAL file, opened on first use
        (None before the file exists). Raises OSError on other failures."""
        if self._wal_fd is None:
            try:
                self._wal_fd = os.open(self._path + "-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
        return self._wal_fd

    def _sync_dirty_segments(self) -> None:
        """Fsync every segment file written since its last sync (before a
        commit or checkpoint makes rows pointing into them durable). Raises
        :class:`SegmentError` or OSError.

        The payloads held for a late write (group commit) are written
        first. One the disk refuses here stays held and raises nothing:
        the next :meth:`begin_sync` tries it again -- and refuses its
        bundle if it fails there too. Its row may become durable without
        its bytes meanwhile, as one whose payload a sync keeps held
        (``keep_late``): dropped at open, never acknowledged."""
        if self._segs is not None:
            self._segs.sync_files(*self._segs.take_dirty(failed=[]))

    def _rollback(self) -> None:
        """The open transaction ends without effect: counters back, pending
        rows and marks and segment references dropped."""
        self._depth = 0
        self._failed = False
        self._used, self._count = self._saved
        self._refs.clear()
        if self._segs is not None:
            for seg, off in self._late:
                self._segs.forget(seg, off)
        self._late.clear()
        self._left.clear()
        self._rows.clear()
        self._row_keys.clear()
        self._marks.clear()
        self._gone.clear()
        # The original exception matters more than a failed rollback.
        with suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
        self._settled(False)

    def savepoint(self) -> AbstractContextManager[None]:
        """A durable block whose statements (service state:
        :meth:`service_put`, :meth:`service_delete`) commit all or none:
        inside a transaction, an exception leaving the block undoes what
        the block wrote and the transaction goes on (a SQL ``SAVEPOINT``);
        outside one, it is a transaction of its own. Bundle writes are
        batched until the commit, not undone by it: if the block made some,
        the whole transaction fails instead (as after a failed write)."""
        return _Savepoint(self)

    def _batched(self) -> tuple[int, ...]:
        """What the open transaction holds besides its statements."""
        return (
            len(self._rows),
            len(self._marks),
            len(self._gone),
            len(self._refs),
            len(self._late),
            self._used,
            self._count,
        )

    def _end_savepoint(self, mark: tuple[int, ...], failed: bool) -> None:
        """Close a :meth:`savepoint` block nested in a transaction:
        release it, or (``failed``) undo its statements."""
        if self._failed:
            return  # the whole transaction is lost already
        if not failed:
            self._exec("RELEASE nested")
            return
        if self._batched() != mark:
            self._poison()
            return
        try:
            self._db.execute("ROLLBACK TO nested")
            self._db.execute("RELEASE nested")
        except sqlite3.Error:
            self._poison()

    def when_settled(self, fn: Callable[[bool], None]) -> None:
        """Call ``fn(True)`` once the open transaction has committed, or
        ``fn(False)`` once nothing of it can commit: when it rolls back, or
        at once when a write fails inside it (:meth:`_poison`: SQLite may
        have rolled it back under the block already) -- so that a caller
        holding in memory what it wrote into a nested block (``NodeCore``:
        a service's state commit, its sends) knows whether that became a
        commit. ``fn`` runs inside the store's own calls: it must not raise
        or use the store. Raises :class:`InvalidArgument` outside a
        transaction."""
        if not self._depth:
            raise InvalidArgument("when_settled outside a transaction")
        if self._failed:
            fn(False)
        else:
            self._settle.append(fn)

    def _settled(self, committed: bool) -> None:
        fns, self._settle = self._settle, []
        for fn in fns:
            fn(committed)

    def _end(self, exc: BaseException | None) -> None:
        if self._depth > 1:
            self._depth -= 1
            return
        if exc is not None:
            self._rollback()
            return
        if self._failed:
            # A batched write failed inside the block (already raised there)
            # and the caller went on: nothing of the block may commit.
            self._rollback()
            raise StoreError(
                f"bundle store {self._path!r}: a write in this transaction failed;"
                " rolled back"
            )
        try:
            self._flush_gone()
            self._flush_rows()
            self._flush_marks()
        except StoreError:
            self._rollback()
            raise
        self._depth = 0
        relaxed = self._relaxed
        needs_durability = not relaxed or self._must_sync
        fsynced = self._full and not self._deferred and needs_durability
        try:
            if fsynced:
                # Payload bytes reach the disk before the rows that point
                # at them (SQLite fsyncs the WAL in COMMIT below).
                self._sync_dirty_segments()
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                # SQLITE_FULL: a transaction that only deletes or updates
                # (what frees space) gets the ballast and commits again
                # (the transaction stays open after a failed COMMIT); new
                # bundles never take it.
                if not (
                    getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                    and not self._puts
                    and self._release_ballast()
                    and self._db.in_transaction
                ):
                    # Rolled back: the caller's next try has the ballast's room.
                    raise
                self._db.execute("COMMIT")
        except (sqlite3.Error, SegmentError) as exc:
            self._rollback()
            raise StoreError(
                f"bundle store {self._path!r}: commit failed: {exc}"
            ) from exc
        self._settled(True)
        # Committed from here on: whatever fails below, the bookkeeping of a
        # committed transaction is applied (a rollback would drop the
        # segment references of committed rows, and their bytes with them).
        unsynced: sqlite3.Error | None = None
        if relaxed and self._must_sync and not self._deferred:
            unsynced = self._sync_joined_commit()
            if unsynced is not None:
                fsynced = False  # the segments it emptied stay until synced
        if self._deferred and needs_durability:
            self._write_gen += 1
        if self._segs is not None:
            # Deleted for good: a payload still held for a late write is
            # never written (before the refs, which may close its segment).
            for seg, off in self._left:
                self._segs.forget(seg, off)
            self._left.clear()
            self._late.clear()
            for seg, delta in self._refs:
                self._segs.ref(seg, delta)
            if self._refs and self._segs.active_is_dead() and not self._room_is_ample():
                # Kept for reuse below segment_reclaim_bytes -- unless the
                # disk is short: then its space comes back now, as if
                # it had filled up.
                free = self._free_bytes()
                if free is not None and free - self._reserve < self._segs.reclaim_bytes:
                    self._segs.retire_empty_active()
            self._refs.clear()
            if fsynced or not self._full:
                # The commit that emptied them is as durable as this store
                # promises (FULL: fsynced now; NORMAL: never fsynced anyway).
                self._drop_dead(None)
        if unsynced is not None:
            raise StoreError(
                f"bundle store {self._path!r}: committed, but its sync failed: {unsynced}"
            ) from unsynced

    def _sync_joined_commit(self) -> sqlite3.Error | None:
        """After the COMMIT of a relaxed transaction a durable write joined:
        a checkpoint fsyncs the WAL first, which makes that commit durable.
        The disk refusing the checkpoint's copy into the database
        (SQLITE_FULL, after the WAL is synced) is counted as
        :meth:`_checkpoint_if_due` counts it, and the checkpoint is due
        again at the next transaction; any other error is returned (a
        failed sync: what the kernel kept is unknown)."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
                self._checkpoints_failed += 1
                self._checkpoint_why = str(exc)
                self._since_checkpoint = self._checkpoint_every
                return None
            return exc
        return None

    def _flush_rows(self) -> None:
        """Insert the rows of the puts batched in the open transaction: one
        ``executemany``, not one statement (and one Python call chain) per
        bundle. Raises :class:`StoreError` (and poisons the transaction)
        when SQLite refuses them -- a key already stored, a full disk."""
        rows = self._rows
        if not rows:
            return
        if self._failed:
            raise self._refused()
        try:
            self._db.executemany(_INSERT, rows)
        except sqlite3.Error as exc:
            self._poison()
            raise StoreError(
                f"bundle store {self._path!r}: cannot insert {len(rows)} bundle rows: {exc}"
            ) from exc
        finally:
            rows.clear()
            self._row_keys.clear()

    def _flush_gone(self) -> None:
        """Delete the keys discarded in the open transaction: one statement
        per :data:`_DISCARD_CHUNK` keys, not one per key. Raises
        :class:`StoreError` (and poisons the transaction) when SQLite
        refuses."""
        gone = self._gone
        if not gone:
            return
        if self._failed:
            raise self._refused()
        keys = list(gone)
        gone.clear()
        try:
            for i in range(0, len(keys), _DISCARD_CHUNK):
                chunk = keys[i : i + _DISCARD_CHUNK]
                n = len(chunk)
                if n & (n - 1):
                    padded = 1 << n.bit_length()
                    chunk += chunk[-1:] * (padded - n)
                    n = padded
                for size, seg, off in self._db.execute(_DISCARD_SQL[n], chunk):
                    self._used -= size
                    self._count -= 1
                    if seg is not None:
                        self._refs.append((seg, -1))
                        self._left.append((seg, off))
        except sqlite3.Error as exc:
            self._poison()
            raise StoreError(
                f"bundle store {self._path!r}: cannot delete {len(keys)} bundles: {exc}"
            ) from exc

    def _flush_marks(self) -> None:
        """Write the delivered keys batched in the open transaction (one
        ``executemany``)."""
        marks = self._marks
        if not marks:
            return
        if self._failed:
            raise self._refused()
        try:
            self._db.executemany(_MARK, list(marks.items()))
        except sqlite3.Error as exc:
            self._poison()
            raise StoreError(
                f"bundle store {self._path!r}: cannot mark {len(marks)} keys delivered: {exc}"
            ) from exc
        finally:
            marks.clear()

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[None]:
        """See :meth:`BundleStore.transaction`: one SQLite transaction, at
        most one fsync (none when ``durable=False``)."""
        return _Txn(self, durable)

    def _lay_ballast(self) -> bool:
        """Fill ``<path>.ballast`` with ``ballast_bytes``: space only this
        store can give back, so that on a full disk deleting bundles (which
        writes to the WAL) still works. False when there is no room."""
        try:
            fd = os.open(
                self._ballast_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError:
            return False
        try:
            have = os.fstat(fd).st_size
            if have < self._ballast_bytes:
                os.lseek(fd, have, os.SEEK_SET)
                chunk = b"\0" * min(1 << 16, self._ballast_bytes)
                while have < self._ballast_bytes:
                    have += os.write(fd, chunk[: self._ballast_bytes - have])
                os.fsync(fd)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def _release_ballast(self) -> bool:
        """The disk is full: give the ballast back (True if there was one)."""
        if not self._ballast_bytes or self._ballast_out:
            return False
        with suppress(OSError):
            os.unlink(self._ballast_path)
        self._ballast_out = True
        return True

    def _free_bytes(self) -> int | None:
        assert self._segs is not None
        try:
            st = os.statvfs(self._segs.directory)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def _room_is_ample(self) -> bool:
        """Whether the last statvfs left so much room over the reserve that
        no statvfs is needed now (see :meth:`_check_disk`)."""
        return bool(
            self._room_left
            and not self._ballast_out
            and self._room_puts < _ROOM_PUTS
            and self._room_bytes <= self._room_left
        )

    def _check_disk(self, needed: int) -> None:
        if self._segs is None:
            return
        # With plenty of room (the last statvfs left _ROOM_SLACK over the
        # reserve) a put asks again only every _ROOM_PUTS puts or
        # _ROOM_SLACK / 2 bytes: a statvfs per 1 KB bundle is ~1% of its
        # CPU. Only other processes' writes in between go unseen, and
        # they cannot take the disk below the reserve by more than that
        # margin before the next look; a tight disk is asked every time.
        self._room_puts += 1
        self._room_bytes += needed
        if self._room_is_ample():
            return
        free = self._free_bytes()
        self._room_puts = self._room_bytes = 0
        self._room_left = (
            0 if free is None else max(0, free - self._reserve - _ROOM_SLACK) // 2
        )
        if self._ballast_out:
            # Refuse new bundles until the ballast is back in place.
            room = free is None or free - needed - self._ballast_bytes >= self._reserve
            if not room or not self._lay_ballast():
                raise DiskFull(
                    needed_bytes=needed,
                    free_bytes=free or 0,
                    reserve_bytes=self._reserve,
                )
            self._ballast_out = False
        if free is not None and free - needed < self._reserve:
            # The emptied active segment's dead space comes back: now (after
            # the fsyncs that make its emptying durable) without group
            # commit, else at the driver's next sync.
            try:
                # (Writes the payloads it holds for a late write first.)
                retired = self._segs.retire_empty_active()
            except SegmentError as exc:
                raise StoreError(f"bundle store {self._path!r}: {exc}") from exc
            # Not while a put of the open block points into a dead segment
            # (its row is not counted live before the commit): the sync
            # would remove the file under it. It goes after the commit.
            ours = {seg for seg, delta in self._refs if delta > 0}
            if retired and not self._deferred and not ours & self._segs.dead():
                try:
                    self.begin_sync()()
                finally:
                    self.end_sync()
                free = self._free_bytes()
                if free is None or free - needed >= self._reserve:
                    return
            raise DiskFull(
                needed_bytes=needed, free_bytes=free, reserve_bytes=self._reserve
            )

    def _disk_full(self, needed: int) -> DiskFull:
        """The error for a write the file system refused for lack of space."""
        return DiskFull(needed_bytes=needed, free_bytes=0, reserve_bytes=self._reserve)

    def put(
        self,
        record: StoredBundle,
        data: Wire,
        *,
        force: bool = False,
        write_later: bool = False,
    ) -> None:
        """See :meth:`BundleStore.put`. Also raises :class:`DiskFull` (a
        :class:`StoreFull`) when the file system is (nearly) full.

        ``write_later`` (group commit only, and only while the disk has
        ample room): a payload kept in a segment file is written at the
        next sync's start, not now, and not at all if the bundle has left
        by then (:class:`SegmentLog`, "Late writes"). Its row commits as
        usual, but until that sync a ``kill -9`` loses the bundle (its row
        is dropped at the next open): for bundles that nobody is told are
        stored before the sync.

        Inside a :meth:`transaction` the index row is written with the
        block's other puts in one statement when the block commits (or
        before a statement that must see it); a key already in the store
        is then refused when the block commits -- the block rolls back with
        a :class:`StoreError` -- not by this call. (The agent never puts a
        key it holds.) Outside a block the row is written at once and a
        duplicate key raises :class:`InvalidArgument` here."""
        _check_put(record, data)
        if self._gone:
            # Room, and a key discarded earlier in the block, as after it.
            self._flush_gone()
        if not force:
            _check_room(record, self._used, self._limit)
            self._check_disk(record.size_bytes)
        later = (
            write_later
            and self._deferred
            and not force
            and self._segs is not None
            and self._room_is_ample()
        )
        if self._depth:
            self._put(record, data, batch=True, later=later)
            return
        with _Txn(self, None):
            self._put(record, data, batch=False, later=later)

    def _put(
        self, record: StoredBundle, data: Wire, *, batch: bool, later: bool = False
    ) -> None:
        if self._failed:
            raise self._refused()
        key = record.key
        if key in self._row_keys:
            raise InvalidArgument(f"bundle {key!r} is already stored")
        seg = off = None
        size = record.size_bytes  # checked: the data's length
        # Every row carries a checksum of the store's own: a bundle
        # without a CRC of its own is still never handed out damaged.
        if isinstance(data, tuple):
            crc = 0
            for part in data:  # over the buffers in place, as over the join
                crc = crc32c(part, crc)
        else:
            crc = crc32c(data)
        if self._segs is not None and size > self._inline_max:
            # A put of its own looks the key up before writing the payload.
            # A batched one does not (one statement per bundle less): a
            # duplicate is then refused by the primary key at the commit,
            # which rolls the block back, and its payload stays as dead
            # space in the segment, like a rolled-back put's.
            if not batch and self._db.execute(_HAS_KEY, (key,)).fetchone():
                raise InvalidArgument(f"bundle {key!r} is already stored")
            try:
                seg, off = self._segs.append(data, later=later)
                if later:
                    self._late.append((seg, off))
            except SegmentError as exc:
                if isinstance(exc.__cause__, OSError) and exc.__cause__.errno in (
                    errno.ENOSPC,
                    errno.EDQUOT,
                ):
                    raise self._disk_full(size) from exc
                raise StoreError(f"bundle store {self._path!r}: {exc}") from exc
            blob = b""
        elif isinstance(data, tuple):
            blob = b"".join(data)
        else:
            blob = data if type(data) is bytes else bytes(data)
        row = (
            key,
            record.destination,
            record.expiry_ms,
            record.state.value,
            record.size_bytes,
            record.received_ms,
            record.prev_node,
            record.frag_group,
            blob,
            seg,
            off,
            crc,
        )
        if batch:
            self._rows.append(row)
            self._row_keys.add(key)
        else:
            try:
                self._db.execute(_INSERT, row)
            except sqlite3.IntegrityError as exc:
                raise InvalidArgument(f"bundle {key!r} is already stored") from exc
            except sqlite3.Error as exc:
                if self._depth and not self._db.in_transaction:
                    self._poison()  # SQLite rolled the block's writes back
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise self._disk_full(size) from exc
                raise StoreError(f"bundle store {self._path!r}: {exc}") from exc
        self._used += record.size_bytes
        self._count += 1
        self._puts += 1
        if seg is not None:
            self._refs.append((seg, 1))

    def get(self, key: str) -> bytes | None:
        """See :meth:`BundleStore.get`. Raises :class:`StoreCorrupt` when the
        bytes fail the checksum stored with them (rows from before checksums
        were kept inline have none and are returned as they are)."""
        self._see(key)
        row = self._exec(
            "SELECT data, seg, seg_off, size_bytes, crc FROM bundles WHERE key=?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        if row[1] is None or self._segs is None:
            data: bytes | None = bytes(row[0])
        else:
            try:
                data = self._segs.read(row[1], row[2], row[3])
            except SegmentError as exc:
                raise StoreError(f"bundle store {self._path!r}: {exc}") from exc
            if data is None:
                raise StoreCorrupt(key, "segment record missing or cut short")
        assert data is not None
        if row[4] is not None and (len(data) != row[3] or crc32c(data) != int(row[4])):
            raise StoreCorrupt(key, "checksum mismatch")
        return data

    def get_unchecked(self, key: str) -> bytes | None:
        """The stored bytes of ``key`` without the checksum check (to read
        what is left of a :class:`StoreCorrupt` bundle's primary block for
        its status report); None when absent."""
        self._see(key)
        row = self._exec(
            "SELECT data, seg, seg_off, size_bytes FROM bundles WHERE key=?", (key,)
        ).fetchone()
        if row is None:
            return None
        if row[1] is None or self._segs is None:
            return bytes(row[0])
        try:
            return self._segs.read(row[1], row[2], row[3])
        except SegmentError as exc:
            raise StoreError(f"bundle store {self._path!r}: {exc}") from exc

    @staticmethod
    def _row_to_record(row: tuple[object, ...]) -> StoredBundle:
        (
            key,
            destination,
            expiry_ms,
            state,
            size_bytes,
            received_ms,
            prev_node,
            frag_group,
        ) = row
        return StoredBundle(
            key=str(key),
            destination=str(destination),
            expiry_ms=int(expiry_ms),  # type: ignore[call-overload]
            state=BundleState(str(state)),
            size_bytes=int(size_bytes),  # type: ignore[call-overload]
            received_ms=int(received_ms),  # type: ignore[call-overload]
            prev_node=None if prev_node is None else int(prev_node),  # type: ignore[call-overload]
            frag_group=None if frag_group is None else str(frag_group),
        )

    _COLUMNS = "key, destination, expiry_ms, state, size_bytes, received_ms, prev_node, frag_group"

    def record(self, key: str) -> StoredBundle | None:
        """See :meth:`BundleStore.record`."""
        self._see(key)
        row = self._exec(
            f"SELECT {self._COLUMNS} FROM bundles WHERE key=?", (key,)
        ).fetchone()
        return None if row is None else self._row_to_record(row)

    def set_state(self, key: str, state: BundleState) -> None:
        """See :meth:`BundleStore.set_state`."""
        if not self._depth:
            with _Txn(self, None):
                self.set_state(key, state)
            return
        self._see(key)
        self._exec("UPDATE bundles SET state=? WHERE key=?", (state.value, key))

    def delete(self, key: str) -> bool:
        """See :meth:`BundleStore.delete`."""
        if not self._depth:
            with _Txn(self, None):
                return self.delete(key)
        self._see(key)
        row = self._exec(
            "DELETE FROM bundles WHERE key=? RETURNING size_bytes, seg, seg_off",
            (key,),
        ).fetchone()
        if row is None:
            return False
        self._used -= row[0]
        self._count -= 1
        if row[1] is not None:
            self._refs.append((row[1], -1))
            self._left.append((row[1], row[2]))
        return True

    def discard(self, key: str) -> None:
        """See :meth:`BundleStore.discard`. Inside a :meth:`transaction`
        block the key is deleted with the block's other discards, in one
        statement, when the block commits -- or before a statement, a put
        or a count that must see it gone (``used_bytes``, ``len``)."""
        if not self._depth:
            self.delete(key)
            return
        if key in self._row_keys:
            self._flush_rows()  # its row first: then gone, in order
        self._gone[key] = None

    def records(self) -> Iterator[StoredBundle]:
        """See :meth:`BundleStore.records` (ordered by arrival, oldest first)."""
        self._flush_gone()
        self._flush_rows()
        rows = self._exec(
            f"SELECT {self._COLUMNS} FROM bundles ORDER BY rowid"
        ).fetchall()
        return iter([self._row_to_record(r) for r in rows])

    def mark_delivered(self, key: str, expiry_ms: int) -> None:
        """See :meth:`BundleStore.mark_delivered` (``expiry_ms`` is capped at 2**63-1)."""
        expiry_ms = min(expiry_ms, MAX_INT64)
        if not self._depth:
            with _Txn(self, None):
                self._exec(_MARK, (key, expiry_ms))
            return
        # Batched: written with the block's other marks in one statement.
        marks = self._marks
        had = marks.get(key)
        marks[key] = expiry_ms if had is None else max(had, expiry_ms)

    def is_delivered(self, key: str) -> bool:
        """See :meth:`BundleStore.is_delivered`."""
        if key in self._marks:
            return True
        return (
            self._exec("SELECT 1 FROM delivered WHERE key=?", (key,)).fetchone()
            is not None
        )

    def delivered_among(self, keys: Iterable[str]) -> set[str]:
        """See :meth:`BundleStore.delivered_among`: one ``SELECT`` per 500
        keys (a statement per received bundle was ~3% of a receiving
        node's CPU at 1 KB)."""
        marks = self._marks
        todo = list(dict.fromkeys(keys))
        found = {k for k in todo if k in marks}
        for i in range(0, len(todo), 500):
            chunk = todo[i : i + 500]
            rows = self._exec(
                "SELECT key FROM delivered WHERE key IN"
                f" ({','.join('?' * len(chunk))})",
                tuple(chunk),
            ).fetchall()
            found.update(r[0] for r in rows)
        return found

    def purge_delivered(self, now_ms: int) -> int:
        """See :meth:`BundleStore.purge_delivered` (uses an index on expiry)."""
        with _Txn(self, None):
            self._flush_marks()
            return self._exec(
                "DELETE FROM delivered WHERE expiry_ms < ?", (now_ms,)
            ).rowcount

    @property
    def delivered_count(self) -> int:
        """How many delivered keys are remembered."""
        self._flush_marks()
        return int(self._exec("SELECT COUNT(*) FROM delivered").fetchone()[0])

    # -- node services' durable state (dcis.dtn.node.state.StateBackend): rows of
    # the same database, so they commit in the transaction that wrote them

    def service_get(self, service: int, key: str) -> bytes | None:
        """Service ``service``'s value under ``key``, or None."""
        row = self._exec(
            "SELECT value FROM service_state WHERE service=? AND key=?",
            (service, key),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def service_put(self, service: int, key: str, value: bytes) -> None:
        """Set service ``service``'s ``key`` to ``value``."""
        with _Txn(self, None):
            self._exec(
                "INSERT OR REPLACE INTO service_state (service, key, value) VALUES (?, ?, ?)",
                (service, key, bytes(value)),
            )

    def service_delete(self, service: int, key: str) -> None:
        """Remove service ``service``'s ``key`` (no-op if absent)."""
        with _Txn(self, None):
            self._exec(
                "DELETE FROM service_state WHERE service=? AND key=?", (service, key)
            )

    def service_keys(self, service: int, prefix: str = "") -> list[str]:
        """Service ``service``'s keys starting with ``prefix``, sorted."""
        rows = self._exec(
            "SELECT key FROM service_state WHERE service=? ORDER BY key", (service,)
        ).fetchall()
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

    # -- group commit (deferred_sync=True)

    @property
    def write_generation(self) -> int:
        """Durable commits so far (deferred mode; 0 otherwise)."""
        return self._write_gen

    @property
    def segments_waiting(self) -> bool:
        """Emptied segments wait for a sync before they can be removed
        (deferred mode: a driver should sync even with nothing to ACK)."""
        return self._segs is not None and self._segs.has_dead()

    @property
    def late_bytes(self) -> int:
        """Payload bytes held for a late write (``put(write_later=True)``),
        to be written by the next :meth:`begin_sync` unless their bundles
        leave first."""
        return 0 if self._segs is None else self._segs.pending_bytes

    def late_mark(self) -> frozenset[tuple[int, int]]:
        """What is held for a late write now, for :meth:`begin_sync`'s
        ``keep_late_since``."""
        return frozenset() if self._segs is None else self._segs.pending_places()

    def begin_sync(
        self,
        *,
        keep_late: Collection[str] = (),
        keep_late_since: frozenset[tuple[int, int]] | None = None,
    ) -> Callable[[], None]:
        """Store thread: snapshot what the next sync must cover -- every
        commit made so far -- and return the function doing it (fsync of the
        segment files written since the last sync, then of the WAL, then
        removal of the segments emptied by then), safe to run on another thread while this store keeps writing. Raises
        :class:`StoreError` (from the returned function) on an I/O error.

        ``keep_late``: keys of bundles put with ``write_later`` whose
        payloads, if still held, stay held through this sync: their rows
        are durable after it, their bytes not (a ``kill -9`` or power cut
        before a later sync drops such a row at the next open). For a
        driver that promises nothing about those bundles until a later
        sync, or until they have left the store.

        ``keep_late_since``: a :meth:`late_mark` taken earlier, with
        :attr:`write_generation` read at the same moment: the payloads put
        for a late write since then stay held through this sync, as
        ``keep_late``'s do -- for a driver that promises nothing about the
        commits after that generation until a later sync."""
        segs = self._segs
        fds: list[int] = []
        dir_dirty = False
        try:
            if segs is not None:
                keep: Collection[tuple[int, int]] = (
                    self._late_places(keep_late) if keep_late else ()
                )
                if keep_late_since is not None:
                    since = segs.pending_since(keep_late_since)
                    if since:
                        keep = since.union(keep) if keep else since
                # Between transactions a late write that fails (ENOSPC, say:
                # the statvfs gate foresaw no shortage) is listed, not
                # raised: its row is deleted below, before the WAL's sync.
                failed: list[tuple[tuple[int, int], SegmentError]] | None = (
                    None if self._depth else []
                )
                # Between transactions: the live counts are every commit's.
                # A segment with no live payload needs no sync: the WAL's
                # fdatasync below makes every row into it durably gone.
                fds, dir_dirty = segs.take_dirty(
                    skip_dead=not self._depth, keep=keep, failed=failed
                )
                if failed:
                    self._drop_unwritten(failed)
            # The sync fsyncs (and closes) its own dup of the WAL, so a
            # close() on this thread meanwhile cannot pull the fd from under it.
            wal_fd = self._wal_dup()
        except (OSError, SegmentError, sqlite3.Error, StoreError) as exc:
            for fd in fds:
                os.close(fd)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"bundle store {self._path!r}: {exc}") from exc
        self._sync_dead = segs.dead() if segs is not None else set()
        self._syncing = True
        # Dead segments are removed by the worker too, after the fsyncs that
        # make their emptying durable: an unlink frees the file's blocks.
        dead_paths = segs.release_dead(self._sync_dead) if segs is not None else []
        failure = self._sync_failure

        def sync() -> None:
            try:
                if segs is not None:
                    segs.sync_files(fds, dir_dirty)
                if wal_fd is not None:
                    # SQLite syncs its WAL with fdatasync too (Linux).
                    os.fdatasync(wal_fd)
                if failure is not None:
                    raise StoreError(
                        f"bundle store {self._path!r}: sync failed: a checkpoint's"
                        f" sync failed before: {failure}"
                    )
                if dead_paths:
                    SegmentLog.unlink_files(dead_paths)
            except (OSError, SegmentError) as exc:
                raise StoreError(
                    f"bundle store {self._path!r}: sync failed: {exc}"
                ) from exc
            finally:
                if wal_fd is not None:
                    os.close(wal_fd)

        return sync

    def _drop_unwritten(
        self, failed: list[tuple[tuple[int, int], SegmentError]]
    ) -> None:
        """At a sync's start, between transactions: the late writes of
        ``failed`` (places and errors) could not be made. Their bundles were
        never acknowledged (their senders are answered after this sync or,
        for a payload a mark kept, a later one), so they are refused now
        rather than held without their bytes: their
        rows are deleted by a commit the sync makes durable with the rest,
        their held payloads forgotten, and their keys listed for
        :meth:`take_unwritten` (the driver withholds their ACKs and replies,
        and the agent forgets them). Raises :class:`StoreError` if even
        that commit fails (the disk is beyond a shortage; a restart drops
        the rows, as after a ``kill -9`` before the late write)."""
        assert self._segs is not None
        places = [place for place, _ in failed]
        keys: list[str] = []
        for seg, off in places:
            row = self._db.execute(
                "SELECT key FROM bundles WHERE seg=? AND seg_off=?", (seg, off)
            ).fetchone()
            if row is not None:
                keys.append(str(row[0]))
        # No checkpoint may start this transaction: it would try the same
        # writes first (the sync in progress covers the commit instead).
        syncing, self._syncing = self._syncing, True
        try:
            with self.transaction(durable=False):
                for key in keys:
                    self.discard(key)
        finally:
            self._syncing = syncing
        for seg, off in places:
            self._segs.forget(seg, off)  # (a row already gone: still held)
        self._unwritten += keys
        self._unwritten_why = str(failed[0][1])

    def take_unwritten(self) -> tuple[list[str], str]:
        """Keys of the bundles dropped by the syncs begun since the last
        call because their late writes failed (:meth:`begin_sync`), and the
        first error's text; empties the list. Cheap when empty (a driver
        asks after every :meth:`begin_sync`)."""
        keys, self._unwritten = self._unwritten, []
        return keys, self._unwritten_why

    def take_checkpoint_failures(self) -> tuple[int, str]:
        """How many WAL checkpoints the disk refused (SQLITE_FULL: not a
        failed sync, see :meth:`_checkpoint_if_due`) since the last call,
        and the last one's text; resets the count."""
        n, self._checkpoints_failed = self._checkpoints_failed, 0
        return n, self._checkpoint_why

    def _late_places(self, keys: Collection[str]) -> set[tuple[int, int]]:
        """The ``(segment, offset)`` of the committed rows of ``keys`` kept
        in segments (one statement per 256 keys)."""
        places: set[tuple[int, int]] = set()
        todo = list(keys)
        for i in range(0, len(todo), 256):
            chunk = todo[i : i + 256]
            marks = ",".join("?" * len(chunk))
            for seg, off in self._db.execute(
                f"SELECT seg, seg_off FROM bundles WHERE key IN ({marks})"
                " AND seg IS NOT NULL",
                chunk,
            ):
                places.add((seg, off))
        return places

    def _wal_dup(self) -> int | None:
        """Store thread: a new fd of the WAL file (None before it exists)."""
        fd = self._wal_fd_open()
        return None if fd is None else os.dup(fd)

    def end_sync(self) -> None:
        """Store thread, after the function from :meth:`begin_sync` returned:
        segments emptied by commits it covered are removed; a FULL store
        checkpoints if one is due. Raises :class:`StoreError` when that
        checkpoint's sync fails (not when the disk refuses its copy into
        the database: :meth:`take_checkpoint_failures`)."""
        if self._segs is not None:
            self._segs.forget_dead(self._sync_dead)  # removed by the sync
        self._sync_dead = set()
        self._syncing = False
        if self._own_checkpoints and not self._depth:
            self._checkpoint_if_due()

    def _drop_dead(self, only: set[int] | None) -> None:
        assert self._segs is not None
        try:
            self._segs.drop_dead(only)
        except SegmentError as exc:
            raise StoreError(f"bundle store {self._path!r}: {exc}") from exc

    def close(self) -> None:
        """Close the database (a clean close also checkpoints the WAL, and
        in deferred mode syncs first)."""
        try:
            if self._deferred:
                self.begin_sync()()
                self.end_sync()
            elif self._own_checkpoints:
                # SQLite's checkpoint at close syncs the WAL: the segments
                # of relaxed commits first (as in _checkpoint_if_due).
                try:
                    self._sync_dirty_segments()
                except SegmentError as exc:
                    raise StoreError(f"bundle store {self._path!r}: {exc}") from exc
        finally:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
            if self._segs is not None:
                self._segs.close()
            self._db.close()
            self._unlock()


PAGE_BYTES = 4096


def _cut_short(data: bytes, off: int) -> bool:
    """Whether ``data`` (a payload at ``off`` in its segment, failing its
    CRC) is zeros from its start, or from a page boundary of the file, on:
    the mark of a write that never came or was cut short -- a power cut
    before its fsync, a ``kill -9`` before a late write (its place a hole
    inside the file when a payload after it was written at once), or inside
    the ``pwritev`` of one, which the kernel stops at a page (spec/agent.md,
    "Segment files"). A payload
    damaged after its fsync keeps its bytes up to its end (bit rot, an
    overwrite) and is kept as corrupt; one that really ended in a page of zeros and was damaged
    elsewhere is dropped too, as it would be lost either way."""
    kept = len(data.rstrip(b"\0"))
    if kept == len(data):
        return False
    if kept == 0:
        return True
    first_page = -(-(off + kept) // PAGE_BYTES) * PAGE_BYTES - off
    return first_page < len(data)
