"""A sync that keeps late payloads held (``begin_sync(keep_late=keys)``):
their rows become durable, their bytes are not written -- and never are
if the bundles leave first; a ``kill -9`` (or a power cut) before a later
sync drops such a row at the next open, a hole in the middle of a
segment as well as one past its end (spec/udpcl.md, "Hop ACKs at
delivery")."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.late_writes import late_pair, seg, sync
from tests.unit.agent.test_store_segments import BIG, payload, rec


def _reopened_after_kill_9(db: Path, steps: str) -> SqliteStore:
    """Run ``steps`` in a child holding ``s`` (a deferred-sync store on
    ``db``) and ``put(key)`` (puts ``key * BIG`` for a late write), kill -9
    it, and reopen the store."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from dcis.dtn.agent.store import BundleState, StoredBundle
        from dcis.dtn.storage.sqlite_store import SqliteStore
        s = SqliteStore({str(db)!r}, deferred_sync=True)
        def put(key):
            data = key.encode() * {BIG}
            s.put(StoredBundle(key=key, destination="ipn:2.1", expiry_ms=10**9,
                state=BundleState.DELIVERING, size_bytes=len(data), received_ms=0),
                data, write_later=True)
        """
    )
    code += textwrap.dedent(steps) + "os.kill(os.getpid(), signal.SIGKILL)\n"
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[3], timeout=60
    )
    assert r.returncode == -9
    return SqliteStore(db)


def test_a_kept_payload_stays_unwritten_through_the_sync_and_never_comes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "b.db"
    s = late_pair(db)
    sync(s, keep=("a",))
    # b written, a's place a hole (main: both written by the sync).
    assert seg(db) == bytes(BIG) + payload(2)
    assert s.get("a") == payload(1)  # from memory meanwhile
    with s.transaction(durable=False):
        s.discard("a")  # delivered and confirmed
    sync(s)
    assert seg(db) == bytes(BIG) + payload(2)  # a never written
    s.close()
    s2 = SqliteStore(db)
    assert [r.key for r in s2.records()] == ["b"]
    assert s2.dropped_at_open == []
    s2.close()


def test_a_kept_payload_is_written_by_a_sync_that_does_not_keep_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    s.put(rec("a", BIG), payload(1), write_later=True)
    sync(s, keep=("a", "no-such-key"))
    assert seg(db) == b""
    sync(s)
    assert seg(db) == payload(1)
    s.close()
    s2 = SqliteStore(db)
    assert s2.get("a") == payload(1)
    s2.close()


def test_kill_9_drops_a_synced_row_whose_kept_payload_never_came(
    tmp_path: Path,
) -> None:
    # "h" is a hole between written payloads, "t" is past the file's end;
    # both rows were made durable by a sync that kept their payloads.
    db = tmp_path / "b.db"
    s = _reopened_after_kill_9(
        db,
        """\
        put("w")
        put("h")
        put("x")
        put("t")
        s.begin_sync(keep_late=("h", "t"))()
        s.end_sync()
        """,
    )
    assert sorted(s.dropped_at_open) == ["h", "t"]
    assert sorted(r.key for r in s.records()) == ["w", "x"]
    assert s.get("w") == b"w" * BIG
    assert s.get("x") == b"x" * BIG
    assert s.corrupt_at_open == []
    s.close()


# ``begin_sync(keep_late_since=mark)``: the payloads put for a late write
# after ``late_mark()`` stay held through the sync (spec/performance.md,
# "Ninth round: the 64 KB path").


def test_a_sync_keeps_the_late_payloads_put_since_its_mark(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    s.put(rec("a", BIG), payload(1), write_later=True)
    mark = s.late_mark()
    s.put(rec("b", BIG), payload(2), write_later=True)
    s.begin_sync(keep_late_since=mark)()
    s.end_sync()
    # a written, b's place past the file's end (main: no keep_late_since).
    assert seg(db) == payload(1)
    assert s.get("b") == payload(2)  # from memory meanwhile
    assert s.late_bytes == BIG
    sync(s)  # a later sync with no mark writes it
    assert seg(db) == payload(1) + payload(2)
    assert s.late_bytes == 0
    s.close()
    s2 = SqliteStore(db)
    assert [s2.get(k) for k in ("a", "b")] == [payload(1), payload(2)]
    assert s2.dropped_at_open == []
    s2.close()


def test_a_mark_and_kept_keys_together_keep_both(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    s.put(rec("a", BIG), payload(1), write_later=True)
    s.put(rec("b", BIG), payload(2), write_later=True)
    mark = s.late_mark()
    s.put(rec("c", BIG), payload(3), write_later=True)
    with s.transaction(durable=False):
        s.discard("b")  # left before the sync: never written, mark or not
    s.begin_sync(keep_late=("a",), keep_late_since=mark)()
    s.end_sync()
    assert seg(db) == b""
    assert s.late_bytes == 2 * BIG
    sync(s)
    assert seg(db) == payload(1) + bytes(BIG) + payload(3)
    s.close()


def test_an_empty_mark_keeps_every_late_payload_and_a_mark_with_none_since_none(
    tmp_path: Path,
) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    empty = s.late_mark()
    s.put(rec("a", BIG), payload(1), write_later=True)
    s.begin_sync(keep_late_since=empty)()
    s.end_sync()
    assert seg(db) == b""
    s.begin_sync(keep_late_since=s.late_mark())()
    s.end_sync()
    assert seg(db) == payload(1)
    s.close()


def test_kill_9_drops_a_row_whose_payload_came_after_the_sync_s_mark(
    tmp_path: Path,
) -> None:
    db = tmp_path / "b.db"
    s = _reopened_after_kill_9(
        db,
        """\
        put("w")
        mark = s.late_mark()
        put("t")
        s.begin_sync(keep_late_since=mark)()
        s.end_sync()
        """,
    )
    assert s.dropped_at_open == ["t"]
    assert [r.key for r in s.records()] == ["w"]
    assert s.get("w") == b"w" * BIG
    s.close()
