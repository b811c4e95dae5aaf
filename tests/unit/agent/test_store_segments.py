"""Large bundles in segment files: round trip, reclaim, crash recovery, migration,
group commit (``deferred_sync``)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dcis.dtn.agent.store import BundleState, StoreCorrupt, StoredBundle
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.storage.sqlite_store import SqliteStore

BIG = 10_000  # over the default inline limit (2048)


def rec(key: str, size: int) -> StoredBundle:
    return StoredBundle(
        key=key,
        destination="ipn:2.1",
        expiry_ms=10**9,
        state=BundleState.PENDING,
        size_bytes=size,
        received_ms=0,
    )


def payload(i: int, size: int = BIG) -> bytes:
    return (i.to_bytes(4, "big") * (size // 4 + 1))[:size]


def seg_files(db: Path) -> list[str]:
    d = Path(str(db) + ".segments")
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def record_fdatasyncs(
    monkeypatch: pytest.MonkeyPatch, into: list[str] | None = None, prefix: str = ""
) -> list[str]:
    """Patch ``os.fdatasync`` to append ``prefix`` + the synced file's name to
    ``into`` (a new list if None) before syncing; returns the list."""
    names: list[str] = [] if into is None else into
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        names.append(prefix + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return names


def test_large_bundles_live_in_segments_small_ones_inline(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db)
    s.put(rec("big", BIG), payload(1))
    s.put(rec("small", 100), payload(2, 100))
    assert s.get("big") == payload(1)
    assert s.get("small") == payload(2, 100)
    assert seg_files(db) == ["00000001.seg"]
    assert os.path.getsize(Path(str(db) + ".segments") / "00000001.seg") == BIG
    # The index row holds no copy of the big payload.
    raw = sqlite3.connect(db)
    assert raw.execute(
        "SELECT length(data) FROM bundles WHERE key='big'"
    ).fetchone() == (0,)
    assert raw.execute(
        "SELECT length(data) FROM bundles WHERE key='small'"
    ).fetchone() == (100,)
    raw.close()
    s.close()
    s2 = SqliteStore(db)
    assert s2.get("big") == payload(1)
    assert s2.used_bytes == BIG + 100
    assert len(s2) == 2
    assert s2.dropped_at_open == []
    s2.close()


def test_a_segment_is_removed_once_all_its_bundles_left(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db, segment_bytes=3 * BIG, segment_reclaim_bytes=BIG)
    for i in range(7):
        s.put(rec(f"k{i}", BIG), payload(i))
    # 3 per segment: 1..3 full, the 3rd active.
    assert seg_files(db) == ["00000001.seg", "00000002.seg", "00000003.seg"]
    for i in (0, 1):
        s.delete(f"k{i}")
    assert "00000001.seg" in seg_files(db)  # k2 still in it
    s.delete("k2")
    assert seg_files(db) == ["00000002.seg", "00000003.seg"]
    # An emptied active segment holding segment_reclaim_bytes goes too;
    # the next bundle starts a new one.
    s.delete("k6")
    assert seg_files(db) == ["00000002.seg"]
    assert [s.get(f"k{i}") for i in (3, 4, 5)] == [payload(i) for i in (3, 4, 5)]
    s.put(rec("k7", BIG), payload(7))
    assert seg_files(db) == ["00000002.seg", "00000004.seg"]
    assert s.get("k7") == payload(7)
    s.close()


def test_a_small_emptied_active_segment_keeps_taking_bundles(tmp_path: Path) -> None:
    # Every bundle forwarded within milliseconds empties the active segment
    # after each batch: below segment_reclaim_bytes it is not replaced (no
    # new file, directory fsync and unlink per batch).
    db = tmp_path / "b.db"
    s = SqliteStore(db, segment_bytes=100 * BIG, segment_reclaim_bytes=4 * BIG)
    seg = Path(str(db) + ".segments") / "00000001.seg"
    for i in range(3):
        s.put(rec(f"k{i}", BIG), payload(i))
        s.delete(f"k{i}")
        assert seg_files(db) == ["00000001.seg"]
        assert os.path.getsize(seg) == (i + 1) * BIG
    s.put(rec("k3", BIG), payload(3))
    s.delete("k3")  # now it holds segment_reclaim_bytes: replaced, removed
    assert seg_files(db) == []
    s.put(rec("k4", BIG), payload(4))
    assert seg_files(db) == ["00000002.seg"]
    s.put(rec("k5", BIG), payload(5))
    s.delete("k4")
    assert seg_files(db) == ["00000002.seg"]
    s.close()
    s2 = SqliteStore(db, segment_bytes=100 * BIG, segment_reclaim_bytes=4 * BIG)
    assert s2.get("k5") == payload(5)
    assert s2.dropped_at_open == []
    s2.close()


def _fake_disk(db: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make ``os.statvfs`` report a disk of ``free[0]`` bytes (100 MiB at
    first) less what the store's segment files hold; return ``free``."""
    import types

    free = [100 << 20]
    real = os.statvfs

    def statvfs(path: object) -> object:
        st = real(path)  # type: ignore[arg-type]
        held = sum(p.stat().st_size for p in Path(str(db) + ".segments").glob("*.seg"))
        return types.SimpleNamespace(
            f_bavail=(free[0] - held) // 4096, f_frsize=4096, f_blocks=st.f_blocks
        )

    monkeypatch.setattr(os, "statvfs", statvfs)
    return free


@pytest.mark.parametrize("deferred", [False, True])
def test_a_short_disk_takes_back_an_emptied_active_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deferred: bool
) -> None:

    from dcis.dtn.agent.store import DiskFull

    db = tmp_path / "b.db"
    free = _fake_disk(db, monkeypatch)
    s = SqliteStore(db, disk_reserve_bytes=1 << 20, deferred_sync=deferred)
    for i in range(3):
        s.put(rec(f"k{i}", BIG), payload(i))
        s.delete(f"k{i}")
    assert seg_files(db) == ["00000001.seg"]  # 3 * BIG of dead space, kept
    free[0] = (1 << 20) + 3 * BIG  # room for a bundle only without that space
    if deferred:
        # Refused; the dead segment goes at the driver's next sync.
        with pytest.raises(DiskFull):
            s.put(rec("a", BIG), payload(7))
        assert s.segments_waiting
        s.begin_sync()()
        s.end_sync()
        assert seg_files(db) == []
    s.put(rec("a", BIG), payload(7))
    assert seg_files(db) == ["00000002.seg"]
    assert s.get("a") == payload(7)
    s.close()


def test_on_a_short_disk_an_emptied_active_segment_goes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    real = os.statvfs

    def statvfs(path: object) -> object:
        st = real(path)  # type: ignore[arg-type]
        # 10 MiB free: less than the reserve plus segment_reclaim_bytes.
        return types.SimpleNamespace(
            f_bavail=(10 << 20) // 4096, f_frsize=4096, f_blocks=st.f_blocks
        )

    monkeypatch.setattr(os, "statvfs", statvfs)
    db = tmp_path / "b.db"
    s = SqliteStore(db, disk_reserve_bytes=1 << 20)
    s.put(rec("k0", BIG), payload(0))
    s.delete("k0")
    assert seg_files(db) == []  # as when it filled up: space back now
    s.put(rec("k1", BIG), payload(1))
    assert seg_files(db) == ["00000002.seg"]
    s.close()


def test_free_space_is_asked_every_64_puts_with_room_and_every_put_when_tight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    from dcis.dtn.agent.store import DiskFull

    free = [10 << 30]
    calls = [0]
    real = os.statvfs

    def statvfs(path: object) -> object:
        calls[0] += 1
        st = real(path)  # type: ignore[arg-type]
        held = sum(p.stat().st_size for p in (tmp_path / "b.db.segments").glob("*"))
        return types.SimpleNamespace(
            f_bavail=(free[0] - held) // 4096, f_frsize=4096, f_blocks=st.f_blocks
        )

    monkeypatch.setattr(os, "statvfs", statvfs)
    s = SqliteStore(tmp_path / "b.db", disk_reserve_bytes=4 << 20)
    for i in range(130):
        s.put(rec(f"k{i}", BIG), payload(i))
    assert calls[0] == 3  # puts 1, 65 and 129
    free[0] = (4 << 20) + 200 * BIG  # another process filled the disk
    for i in range(130, 194):
        s.put(rec(f"k{i}", BIG), payload(i))  # next look at put 193
    calls[0] = 0
    tried = 0
    refused = None
    for i in range(194, 300):
        tried += 1
        try:
            s.put(rec(f"k{i}", BIG), payload(i))
        except DiskFull as exc:
            refused = exc
            break
    assert refused is not None
    assert tried > 1
    assert calls[0] == tried  # tight: every put looks
    s.close()


def test_rolled_back_put_leaves_no_live_reference(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db)

    def aborted() -> None:
        with s.transaction():
            s.put(rec("a", BIG), payload(1))
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        aborted()
    assert s.get("a") is None
    assert "a" not in s
    assert s.used_bytes == 0
    s.close()
    s2 = SqliteStore(db)
    # Nothing points into the segment: removed as an orphan at open.
    assert seg_files(db) == []
    s2.close()


def test_duplicate_key_is_refused_before_writing(tmp_path: Path) -> None:
    from dcis.dtn.errors import InvalidArgument

    db = tmp_path / "b.db"
    s = SqliteStore(db)
    s.put(rec("a", BIG), payload(1))
    size = os.path.getsize(Path(str(db) + ".segments") / "00000001.seg")
    with pytest.raises(InvalidArgument):
        s.put(rec("a", BIG), payload(2))
    assert os.path.getsize(Path(str(db) + ".segments") / "00000001.seg") == size
    assert s.get("a") == payload(1)
    s.close()


@pytest.mark.parametrize("damage", ["truncate", "zeros", "unlink"])
def test_rows_whose_bytes_never_reached_disk_are_dropped_at_open(
    tmp_path: Path, damage: str
) -> None:
    # What a power cut before the fsync leaves: index rows committed, their
    # payload bytes missing, or the file extended but still zeros. Such
    # bundles were never acknowledged.
    db = tmp_path / "b.db"
    s = SqliteStore(db, synchronous="NORMAL")
    for i in range(3):
        s.put(rec(f"k{i}", BIG), payload(i))
    s.close()
    seg = Path(str(db) + ".segments") / "00000001.seg"
    if damage == "truncate":
        os.truncate(seg, 2 * BIG + 10)
        lost = ["k2"]
    elif damage == "zeros":
        b = bytearray(seg.read_bytes())
        b[BIG : 2 * BIG] = bytes(BIG)
        seg.write_bytes(bytes(b))
        lost = ["k1"]
    else:
        seg.unlink()
        lost = ["k0", "k1", "k2"]
    s2 = SqliteStore(db)
    assert sorted(s2.dropped_at_open) == lost
    assert s2.corrupt_at_open == []
    kept = [f"k{i}" for i in range(3) if f"k{i}" not in lost]
    assert sorted(r.key for r in s2.records()) == kept
    assert s2.used_bytes == BIG * len(kept)
    for k in kept:
        assert s2.get(k) == payload(int(k[1:]))
    s2.close()


def test_a_segment_record_damaged_after_its_commit_is_corrupt_not_unsynced(
    tmp_path: Path,
) -> None:
    # Issue 10: a byte flip in a record that reached the disk is damage to
    # an acknowledged bundle: kept apart as store_corrupt, never "unsynced",
    # never handed out.
    db = tmp_path / "b.db"
    s = SqliteStore(db, synchronous="NORMAL")
    for i in range(3):
        s.put(rec(f"k{i}", BIG), payload(i))
    s.close()
    seg = Path(str(db) + ".segments") / "00000001.seg"
    b = bytearray(seg.read_bytes())
    b[BIG + 5] ^= 0xFF
    seg.write_bytes(bytes(b))
    s2 = SqliteStore(db)
    assert s2.dropped_at_open == []
    assert s2.corrupt_at_open == ["k1"]
    with pytest.raises(StoreCorrupt):
        s2.get("k1")
    assert s2.get("k0") == payload(0)
    # Damage after open is caught on read as well.
    b = bytearray(seg.read_bytes())
    b[7] ^= 0x01
    seg.write_bytes(bytes(b))
    with pytest.raises(StoreCorrupt):
        s2.get("k0")
    s2.close()


def test_an_inline_row_carries_a_checksum(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db, synchronous="NORMAL")
    s.put(rec("small", 100), bytes(range(100)))
    s.close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE bundles SET data=? WHERE key='small'", (bytes(99) + b"x",))
    raw.commit()
    raw.close()
    s2 = SqliteStore(db)
    with pytest.raises(StoreCorrupt):
        s2.get("small")
    s2.close()


def test_a_second_process_cannot_open_the_same_store(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db)
    code = (
        "import sys\n"
        "from dcis.dtn.agent.store import SqliteStore, StoreError\n"
        "try:\n"
        f"    SqliteStore({str(db)!r})\n"
        "except StoreError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert "in use by another process" in r.stdout
    s.close()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_opens_a_version_1_store_and_keeps_its_bundles(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    raw.executescript(
        """
        CREATE TABLE bundles (key TEXT PRIMARY KEY, destination TEXT NOT NULL,
            expiry_ms INTEGER NOT NULL, state TEXT NOT NULL, size_bytes INTEGER NOT NULL,
            received_ms INTEGER NOT NULL, prev_node INTEGER, frag_group TEXT,
            data BLOB NOT NULL);
        CREATE TABLE delivered (key TEXT PRIMARY KEY, expiry_ms INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        INSERT INTO store_meta VALUES ('schema', '1');
        """
    )
    raw.execute(
        "INSERT INTO bundles VALUES ('old', 'ipn:2.1', 5, 'queued', ?, 0, NULL, NULL, ?)",
        (BIG, payload(9)),
    )
    raw.commit()
    raw.close()
    s = SqliteStore(db)
    assert s.get("old") == payload(9)
    s.put(rec("new", BIG), payload(3))
    assert s.get("new") == payload(3)
    s.close()
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT value FROM store_meta").fetchone() == ("2",)
    raw.close()


def test_deferred_sync_counts_durable_commits_and_syncs_on_another_thread(
    tmp_path: Path,
) -> None:
    import threading

    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True, segment_bytes=BIG)
    assert s.write_generation == 0
    s.put(rec("a", BIG), payload(1))
    assert s.write_generation == 1
    with s.transaction(durable=False):
        s.set_state("a", BundleState.FORWARDING)
    assert s.write_generation == 1  # relaxed: nothing to acknowledge
    s.put(rec("b", BIG), payload(2))  # rotates: segment 1 full
    s.delete("a")
    gen = s.write_generation
    sync = s.begin_sync()
    # Work that goes on while the fsync runs is not covered by it.
    s.put(rec("c", BIG), payload(3))
    s.delete("b")
    t = threading.Thread(target=sync)
    t.start()
    t.join(30)
    s.end_sync()
    assert s.write_generation > gen
    # Segment 1 was empty when the sync began: removed; segment 2 emptied
    # after it: kept until the next sync.
    assert seg_files(db) == ["00000002.seg", "00000003.seg"]
    s.begin_sync()()
    s.end_sync()
    assert seg_files(db) == ["00000003.seg"]
    s.close()
    s2 = SqliteStore(db)
    assert [r.key for r in s2.records()] == ["c"]
    assert s2.get("c") == payload(3)
    s2.close()


def test_kill_9_after_commit_keeps_segment_bundles(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    code = textwrap.dedent(
        f"""
        import os, signal
        from dcis.dtn.agent.store import BundleState, SqliteStore, StoredBundle
        s = SqliteStore({str(db)!r}, deferred_sync=True)
        for i in range(20):
            data = (i.to_bytes(4, "big") * 20_000)[:70_000]
            s.put(StoredBundle(key=f"k{{i}}", destination="ipn:2.1", expiry_ms=10**9,
                state=BundleState.PENDING, size_bytes=len(data), received_ms=0), data)
        s.delete("k3")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[3], timeout=60
    )
    assert r.returncode == -9
    s = SqliteStore(db)
    assert s.dropped_at_open == []
    keys = {r.key for r in s.records()}
    assert keys == {f"k{i}" for i in range(20)} - {"k3"}
    for i in (0, 19):
        assert s.get(f"k{i}") == (i.to_bytes(4, "big") * 20_000)[:70_000]
    s.close()


@pytest.mark.parametrize("deferred", [False, True])
def test_a_failed_segment_removal_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deferred: bool
) -> None:
    from dcis.dtn.agent.store import StoreError

    db = tmp_path / "b.db"
    s = SqliteStore(db, segment_bytes=BIG, deferred_sync=deferred)
    s.put(rec("a", BIG), payload(1))
    s.put(rec("b", BIG), payload(2))  # rotates: segment 1 full

    def refuse(path: str) -> None:
        raise PermissionError(13, "refused", path)

    monkeypatch.setattr(os, "unlink", refuse)
    if deferred:
        s.delete("a")
        sync = s.begin_sync()
        with pytest.raises(StoreError):
            sync()  # segment 1 removed here, on the sync's thread (issue 18)
    else:
        with pytest.raises(StoreError):
            s.delete("a")  # FULL: segment 1 removed after this commit
    monkeypatch.undo()
    s.close()


def test_close_while_a_sync_runs_on_another_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sync's fdatasync of the WAL is under way on a worker thread when the
    # store thread closes the store: the worker's file must stay valid.
    import threading

    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    s.put(rec("a", 100), payload(1, 100))  # inline: the sync fsyncs the WAL only
    main = threading.get_ident()
    real_fdatasync = os.fdatasync
    entered, closed = threading.Event(), threading.Event()

    def fdatasync(fd: int) -> None:
        if threading.get_ident() != main:
            entered.set()
            assert closed.wait(30)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    sync = s.begin_sync()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            sync()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    assert entered.wait(30)
    s.close()
    closed.set()
    t.join(30)
    assert not t.is_alive()
    assert errors == []
    monkeypatch.undo()
    s2 = SqliteStore(db)
    assert s2.get("a") == payload(1, 100)
    s2.close()


def test_a_nearly_full_disk_refuses_new_bundles_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    from dcis.dtn.agent.store import DiskFull, StoreFull

    free = [100 << 20]
    real = os.statvfs

    def statvfs(path: object) -> object:
        st = real(path)  # type: ignore[arg-type]
        return types.SimpleNamespace(
            f_bavail=free[0] // 4096, f_frsize=4096, f_blocks=st.f_blocks
        )

    monkeypatch.setattr(os, "statvfs", statvfs)
    s = SqliteStore(
        tmp_path / "b.db", disk_reserve_bytes=4 << 20, ballast_bytes=1 << 16
    )
    s.put(rec("a", BIG), payload(1))
    free[0] = 4 << 20  # less than the reserve plus a bundle
    with pytest.raises(DiskFull) as exc:
        s.put(rec("b", BIG), payload(2))
    assert isinstance(exc.value, StoreFull)  # the agent refuses it: no ACK
    assert "disk full" in str(exc.value)
    assert "b" not in s
    free[0] = 100 << 20  # space came back: accepted again, no reopen
    s.put(rec("b", BIG), payload(2))
    assert s.get("b") == payload(2)
    assert os.path.getsize(str(tmp_path / "b.db") + ".ballast") == 1 << 16
    s.close()


def test_a_batch_with_a_key_already_stored_commits_nothing(tmp_path: Path) -> None:
    # Puts inside a transaction are written in one statement at its commit:
    # a key already stored (never done by the agent) fails that commit, and
    # the whole block rolls back -- its other bundles and marks too.
    from dcis.dtn.agent.store import StoreError
    from dcis.dtn.errors import InvalidArgument

    db = tmp_path / "b.db"
    s = SqliteStore(db)
    s.put(rec("a", BIG), payload(1))

    def duplicate_in_batch() -> None:
        with s.transaction():
            s.put(rec("b", BIG), payload(2))
            s.put(rec("c", 100), payload(3, 100))
            s.mark_delivered("d", 5)
            s.put(rec("a", 100), payload(4, 100))
            # Twice in one block is refused at once.
            with pytest.raises(InvalidArgument):
                s.put(rec("b", BIG), payload(2))

    with pytest.raises(StoreError):
        duplicate_in_batch()
    assert [r.key for r in s.records()] == ["a"]
    assert s.used_bytes == BIG
    assert len(s) == 1
    assert s.get("a") == payload(1)
    assert not s.is_delivered("d")

    # A block that swallows the error commits nothing either.
    def swallowed() -> None:
        with s.transaction():
            s.put(rec("a", 100), payload(4, 100))
            with pytest.raises(StoreError):
                s.records()  # must see the batched rows: writes them, fails
            s.mark_delivered("e", 5)

    with pytest.raises(StoreError):
        swallowed()
    assert not s.is_delivered("e")
    s.put(rec("b", BIG), payload(2))
    s.close()
    s2 = SqliteStore(db)
    assert {r.key for r in s2.records()} == {"a", "b"}
    assert s2.dropped_at_open == []
    assert s2.corrupt_at_open == []
    s2.close()


def test_an_open_makes_what_it_found_durable_before_removing_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A synced bundle is deleted, the process dies before that deletion is
    # synced (group commit), and the restart finds its segment empty. The
    # open must flush the WAL -- which it read the deletion back from, out
    # of the page cache -- before it unlinks the segment: else a power cut
    # after the restart brings the row back without its bytes, and an
    # acknowledged bundle is dropped.
    import dcis.dtn.storage.segments as segments_mod

    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    s.put(rec("a", BIG), payload(1))
    s.close()  # syncs: "a" is durable
    s = SqliteStore(db, deferred_sync=True)
    assert s.delete("a")
    seg = Path(str(db) + ".segments") / "00000001.seg"
    assert seg.exists()
    # kill -9: no sync, no close (the fds go with the process).
    assert s._segs is not None
    s._segs.close()
    s._db.close()
    s._unlock()

    events = record_fdatasyncs(monkeypatch, prefix="sync ")
    real_unlink = os.unlink

    def unlink(path: str) -> None:
        events.append("unlink " + os.path.basename(path))
        real_unlink(path)

    monkeypatch.setattr(segments_mod.os, "unlink", unlink)
    s2 = SqliteStore(db, deferred_sync=True)
    monkeypatch.undo()
    assert "a" not in s2
    assert not seg.exists()
    assert "unlink 00000001.seg" in events
    gone = events.index("unlink 00000001.seg")
    assert "sync b.db-wal" in events[:gone]
    s2.close()


@pytest.mark.parametrize("size", [100, BIG, 300_000])
@pytest.mark.parametrize("in_txn", [False, True])
def test_a_bundle_put_in_parts_is_stored_joined(
    tmp_path: Path, size: int, in_txn: bool
) -> None:
    # put takes encode_bundle_parts' buffers (the node's own large bundles):
    # written with one writev, checksummed over the buffers, read back as
    # the bytes they join to -- and a checksum that is the join's, so a
    # damaged copy is still caught.
    whole = payload(7, size)
    parts = (whole[:37], whole[37 : size - 5], whole[size - 5 :])
    db = tmp_path / "b.db"
    s = SqliteStore(db)
    if in_txn:
        with s.transaction():
            s.put(rec("p", size), parts)
    else:
        s.put(rec("p", size), parts)
    s.put(rec("q", size), whole)
    assert s.get("p") == whole
    s.close()
    s = SqliteStore(db)
    assert s.get("p") == whole == s.get("q")
    assert s.used_bytes == 2 * size
    s.close()


def test_parts_must_add_up_to_the_record_size(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "b.db")
    with pytest.raises(InvalidArgument):
        s.put(rec("p", BIG), (payload(1, 10), payload(2, BIG - 11)))
    assert s.get("p") is None
    s.close()


def test_a_sync_leaves_out_segments_whose_payloads_all_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Group commit: a payload that leaves the store before the next sync
    # (forwarded, or delivered and confirmed) needs no fdatasync of its
    # segment -- the sync's WAL fdatasync makes its row durably gone -- and
    # an emptied full segment is unlinked unsynced (its dirty pages dropped,
    # never written). A segment that still holds a live payload is synced,
    # before the WAL, as before.

    synced = record_fdatasyncs(monkeypatch)
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True, segment_bytes=2 * BIG)
    s.put(rec("a", BIG), payload(1))
    with s.transaction(durable=False):
        s.delete("a")  # left before any sync: segment 1 (active) is empty
    s.begin_sync()()
    s.end_sync()
    assert synced == ["b.db-wal"]
    synced.clear()
    s.put(rec("b", BIG), payload(2))  # segment 1 again: now live
    s.begin_sync()()
    s.end_sync()
    assert synced == ["00000001.seg", "b.db-wal"]
    synced.clear()
    s.put(rec("c", BIG), payload(3))  # fills segment 1 (rotates next put)
    s.put(rec("d", BIG), payload(4))  # segment 2, live
    s.delete("b")
    s.delete("c")  # segment 1: full and emptied, dead
    s.begin_sync()()
    s.end_sync()
    assert synced == ["00000002.seg", "b.db-wal"]
    assert seg_files(db) == ["00000002.seg"]
    s.close()
    s2 = SqliteStore(db)
    assert [r.key for r in s2.records()] == ["d"]
    assert s2.get("d") == payload(4)
    s2.close()


def test_an_open_after_kill_9_makes_what_it_found_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Group commit: bundles committed but never synced when the process is
    # killed (never acknowledged) are found again at the restart, out of
    # the page cache. The new process holds them and acknowledges a copy
    # resent by the previous hop as a duplicate at once (its
    # write_generation is 0, nothing to wait for); its syncs never touch a
    # segment written before the restart. So the open must flush what it
    # found -- the segments rows point into, the WAL, the database file --
    # even when it removes nothing: else a power cut after the restart
    # loses a bundle acknowledged after it.

    db = tmp_path / "b.db"
    code = textwrap.dedent(
        f"""
        import os, signal
        from dcis.dtn.agent.store import BundleState, SqliteStore, StoredBundle
        s = SqliteStore({str(db)!r}, deferred_sync=True)
        for key, size in (("a", {BIG}), ("i", 100)):
            s.put(StoredBundle(key=key, destination="ipn:2.1", expiry_ms=10**9,
                state=BundleState.PENDING, size_bytes=size, received_ms=0),
                b"x" * size)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[3], timeout=60
    )
    assert r.returncode == -9
    synced = record_fdatasyncs(monkeypatch)
    s = SqliteStore(db, deferred_sync=True)
    assert {r.key for r in s.records()} == {"a", "i"}
    assert s.write_generation == 0
    assert {"00000001.seg", "b.db-wal", "b.db"} <= set(synced)
    assert synced.index("00000001.seg") < synced.index("b.db-wal")
    s.close()
    # A clean close leaves nothing unsynced: the next open flushes nothing.
    synced.clear()
    s = SqliteStore(db, deferred_sync=True)
    assert synced == []
    s.close()


@pytest.mark.parametrize("deferred", [False, True])
def test_a_full_store_checkpoints_only_after_syncing_the_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deferred: bool
) -> None:
    # A checkpoint syncs the WAL, so every commit in it becomes durable --
    # relaxed and group-commit ones too, whose segment bytes may not be
    # synced yet. SQLite's automatic checkpoint (inside any COMMIT) would
    # make such rows durable before their bytes: a relaxed transaction that
    # deletes acknowledged bundles and stores their replacement (reassembly)
    # could then lose both to a power cut. So a FULL store turns it off and
    # checkpoints itself, after syncing the segments written since.
    import dcis.dtn.storage.sqlite_store as store_mod

    monkeypatch.setattr(store_mod, "_CHECKPOINT_FRAMES", 40)
    events = record_fdatasyncs(monkeypatch)
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=deferred)
    assert s._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    s._db.set_trace_callback(
        lambda sql: events.append("checkpoint") if "wal_checkpoint" in sql else None
    )
    wal_peak = 0
    for i in range(600):
        # Relaxed: never synced by its own commit (nor by a group sync:
        # this test never runs one), like a reassembly's transaction.
        with s.transaction(durable=False):
            s.put(rec(f"k{i}", BIG), payload(i))
            s.put(rec(f"s{i}", 500), payload(i, 500))
            if i:
                s.delete(f"k{i - 1}")
        wal_peak = max(wal_peak, os.path.getsize(str(db) + "-wal"))
    checkpoints = [n for n, e in enumerate(events) if e == "checkpoint"]
    assert checkpoints, "the WAL was never checkpointed"
    for n in checkpoints:
        # The live payload's segment was synced just before each checkpoint.
        assert events[n - 1].endswith(".seg"), events[max(0, n - 3) : n + 1]
    # Bounded: the WAL file (reused from its start after each checkpoint)
    # stays at what the first, unpaced interval of 64 transactions wrote
    # (~230 pages), not growing with the transactions (~2,200 without).
    assert wal_peak < 400 * 4096
    s.close()
    s2 = SqliteStore(db)
    assert s2.get("k599") == payload(599)
    assert s2.get("s0") == payload(0, 500)
    s2.close()


def _trace_checkpoints(s: SqliteStore, events: list[str]) -> None:
    s._db.set_trace_callback(
        lambda sql: events.append("checkpoint") if "wal_checkpoint" in sql else None
    )


def test_a_checkpoint_waits_for_the_group_sync_in_flight(tmp_path: Path) -> None:
    # Group commit: begin_sync hands the dirty segments' fds to a worker
    # thread, which syncs them and then the WAL, while the store thread
    # goes on. A checkpoint on the store thread meanwhile would sync the
    # WAL -- making durable the rows those segments hold the bytes of --
    # before the worker has synced the segments (the reassembly case of
    # the test above, through a sync in flight).
    s = SqliteStore(tmp_path / "b.db", deferred_sync=True)
    events: list[str] = []
    _trace_checkpoints(s, events)
    with s.transaction(durable=False):
        s.put(rec("whole", BIG), payload(1))
    sync = s.begin_sync()  # the worker holds the segment's fd, unsynced
    for i in range(300):
        with s.transaction(durable=False):
            s.put(rec(f"s{i}", 500), payload(i, 500))
    assert events == [], "checkpointed while the segments of a sync were unsynced"
    sync()
    s.end_sync()
    with s.transaction(durable=False):
        s.put(rec("after", 500), payload(0, 500))
    assert events == ["checkpoint"], "the checkpoint held back is not taken after"
    s.close()


def test_the_wal_stays_bounded_when_transactions_grow_after_an_idle_spell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Idle ticks (empty transactions) find empty WALs and push the pace to
    # a checkpoint every _CHECKPOINT_MAX_EVERY transactions; a burst of
    # larger ones must not then fill the WAL for that many transactions
    # (SQLite's own checkpoint looks at the pages after every commit).
    import dcis.dtn.storage.sqlite_store as store_mod

    monkeypatch.setattr(store_mod, "_CHECKPOINT_FRAMES", 40)
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    for _ in range(8200):
        with s.transaction(durable=False):
            pass
    assert s._checkpoint_every == store_mod._CHECKPOINT_MAX_EVERY
    wal_peak = 0
    n = 0
    for _ in range(150):
        with s.transaction():
            for _ in range(32):  # ~10 pages a transaction
                s.put(rec(f"k{n}", 1000), payload(n, 1000))
                n += 1
        wal_peak = max(wal_peak, os.path.getsize(str(db) + "-wal"))
    # ~2 x 40 frames plus one transaction, not ~1,500 pages.
    assert wal_peak < 200 * 4096
    s.close()


def test_a_group_commit_store_under_steady_load_still_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node's sync task begins the next sync right after end_sync (no
    # transaction in between) while bundles keep coming: every transaction
    # then runs with a sync in flight, and the checkpoint held back during
    # one must be taken at its end_sync, or the WAL grows without bound.
    import dcis.dtn.storage.sqlite_store as store_mod

    monkeypatch.setattr(store_mod, "_CHECKPOINT_FRAMES", 40)
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    events: list[str] = []
    _trace_checkpoints(s, events)
    sync = s.begin_sync()
    wal_peak = 0
    for i in range(600):
        with s.transaction():
            s.put(rec(f"k{i}", BIG), payload(i))
            s.put(rec(f"s{i}", 1500), payload(i, 1500))
        if i % 4 == 3:
            sync()
            s.end_sync()
            sync = s.begin_sync()
        wal_peak = max(wal_peak, os.path.getsize(str(db) + "-wal"))
    sync()
    s.end_sync()
    assert events, "never checkpointed"
    assert wal_peak < 400 * 4096
    s.close()


def test_close_syncs_the_segments_of_relaxed_commits_before_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's checkpoint at close syncs the WAL: a relaxed commit (a
    # reassembly) becomes durable there, so its segment bytes must be
    # synced first, as before a checkpoint of the store's own.

    synced = record_fdatasyncs(monkeypatch)
    s = SqliteStore(tmp_path / "b.db")
    with s.transaction(durable=False):
        s.put(rec("whole", BIG), payload(1))
    assert synced == []
    s.close()
    assert synced == ["00000001.seg"]


def test_a_failed_checkpoint_after_its_segment_sync_does_not_fail_later_syncs(
    tmp_path: Path,
) -> None:
    # A checkpoint that fails after the segments it took were synced (an
    # error other than a full disk -- that one is only counted:
    # test_store_checkpoint_full) puts no acknowledged byte at risk: that
    # transaction is refused, but the next
    # group syncs succeed and the checkpoint is taken when next due. (Were
    # it treated as a failed segment sync, a full disk for a moment would
    # stop the node for good.)
    import sqlite3

    from dcis.dtn.agent.store import StoreError

    s = SqliteStore(tmp_path / "b.db", deferred_sync=True)
    with s.transaction():
        s.put(rec("acked-after-sync", BIG), payload(1))

    def deny_checkpoint(action: int, arg1: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_PRAGMA and arg1 == "wal_checkpoint":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    s._db.set_authorizer(deny_checkpoint)
    s._since_checkpoint = s._checkpoint_every  # due at the next transaction
    with pytest.raises(StoreError, match="checkpoint failed"), s.transaction():
        pass
    s._db.set_authorizer(None)
    with s.transaction():
        s.put(rec("after", BIG), payload(2))
    s.begin_sync()()  # succeeds: the first failure did not poison it
    s.end_sync()
    events: list[str] = []
    _trace_checkpoints(s, events)
    s._since_checkpoint = s._checkpoint_every
    with s.transaction():
        pass
    assert events == ["checkpoint"], "the checkpoint is not tried again"
    s.close()
    s2 = SqliteStore(tmp_path / "b.db")
    assert s2.get("acked-after-sync") == payload(1)
    assert s2.get("after") == payload(2)
    s2.close()


def test_a_failed_segment_sync_at_a_checkpoint_fails_the_next_group_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Group commit: a checkpoint syncs the segments written since the last
    # sync on the store thread. When that fdatasync fails the kernel may
    # have dropped their pages, and they are no longer in the dirty set:
    # the next group sync (the WAL alone) must not then succeed and so
    # acknowledge the bundles whose bytes were in them -- it fails, as a
    # failed sync of its own does (the node stops).
    import errno

    import dcis.dtn.storage.sqlite_store as store_mod
    from dcis.dtn.agent.store import StoreError

    s = SqliteStore(tmp_path / "b.db", deferred_sync=True)
    with s.transaction():
        s.put(rec("acked-after-sync", BIG), payload(1))
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            raise OSError(errno.EIO, "I/O error")
        real_fdatasync(fd)

    monkeypatch.setattr(store_mod.os, "fdatasync", fdatasync)
    s._since_checkpoint = s._checkpoint_every  # due at the next transaction
    with pytest.raises(StoreError, match="checkpoint failed"), s.transaction():
        pass
    monkeypatch.setattr(store_mod.os, "fdatasync", real_fdatasync)
    sync = s.begin_sync()
    with pytest.raises(StoreError, match="sync failed"):
        sync()
    with pytest.raises(StoreError, match="sync failed"):
        s.close()  # (closed all the same)


@pytest.mark.parametrize("deferred", [False, True])
def test_a_short_disk_in_a_block_never_removes_a_segment_the_block_put_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deferred: bool
) -> None:
    # Without group commit a put that finds the disk short retires the
    # emptied active segment and removes it at once -- but a bundle put
    # earlier in the same block (its row not committed yet, so not counted
    # live) has its bytes there. The agent goes on after the refused put
    # and commits the first bundle: its row must still find its bytes.
    import contextlib

    from dcis.dtn.agent.store import DiskFull

    db = tmp_path / "b.db"
    free = _fake_disk(db, monkeypatch)
    s = SqliteStore(db, disk_reserve_bytes=1 << 20, deferred_sync=deferred)
    s.put(rec("k0", BIG), payload(0))
    s.delete("k0")  # the active segment: dead space only
    free[0] = (1 << 20) + 3 * BIG  # room for one more bundle, not two
    with s.transaction():
        s.put(rec("a", BIG), payload(1))
        with contextlib.suppress(DiskFull):  # refused, or room made for it
            s.put(rec("b", BIG), payload(2))
    assert s.get("a") == payload(1)
    s.close()
    s2 = SqliteStore(db, disk_reserve_bytes=1 << 20)
    assert s2.get("a") == payload(1)
    assert s2.dropped_at_open == []
    s2.close()
