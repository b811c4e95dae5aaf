"""Steps shared by the late-write store tests (``test_store_late_writes.py``,
``test_store_keep_late.py``): a group-commit store with payloads put
``write_later``, one sync, and the bytes of a segment file."""

from __future__ import annotations

from pathlib import Path

from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.test_store_segments import BIG, payload, rec


def seg(db: Path, n: int = 1) -> bytes:
    """Segment file ``n`` of the store at ``db`` (empty if there is none)."""
    p = Path(f"{db}.segments") / f"{n:08d}.seg"
    return p.read_bytes() if p.exists() else b""


def sync(s: SqliteStore, keep: tuple[str, ...] = ()) -> None:
    """One group-commit sync, keeping the late payloads of ``keep`` held."""
    s.begin_sync(keep_late=keep)()
    s.end_sync()


def late_pair(db: Path) -> SqliteStore:
    """A group-commit store at ``db`` holding "a" and "b" (payloads 1 and
    2, BIG bytes each), both put ``write_later`` and not yet synced."""
    s = SqliteStore(db, deferred_sync=True)
    s.put(rec("a", BIG), payload(1), write_later=True)
    s.put(rec("b", BIG), payload(2), write_later=True)
    return s
