"""A late write that fails at a sync (ENOSPC, EDQUOT, EIO the statvfs gate
did not foresee): its bundle -- acknowledged to nobody yet -- is refused,
its row deleted by a commit that sync makes durable; the rest of the batch
is synced as usual and the store goes on (spec/agent.md, "A late write
that fails")."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dcis.dtn.agent.store import StoreError
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.test_store_segments import BIG, _fake_disk, payload, rec


def _sync(s: SqliteStore) -> None:
    s.begin_sync()()
    s.end_sync()


def _refuse_writes_of(
    monkeypatch: pytest.MonkeyPatch, data: bytes, err: int = errno.ENOSPC
) -> list[int]:
    """Every ``pwritev`` of ``data`` (a payload) fails with ``err`` while
    the returned flag is set -- the disk the gate thought had room."""
    real = os.pwritev
    refusing = [1]

    def pwritev(fd: int, bufs: list[memoryview], off: int) -> int:
        if refusing[0] and b"".join(bytes(b) for b in bufs) == data:
            raise OSError(err, os.strerror(err))
        return real(fd, bufs, off)

    monkeypatch.setattr(os, "pwritev", pwritev)
    return refusing


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_late_write_refused_by_the_disk_drops_its_bundle_not_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    db = tmp_path / "b.db"
    free = _fake_disk(db, monkeypatch)
    free[0] = 1 << 40  # ample room: the gate lets late writes be held
    s = SqliteStore(db, deferred_sync=True, disk_reserve_bytes=1 << 20)
    s.put(rec("a", BIG), payload(1), write_later=True)
    s.put(rec("f", BIG), payload(2), write_later=True)
    s.put(rec("b", BIG), payload(3), write_later=True)
    s.put(rec("o", BIG), payload(4))  # written at once
    refusing = _refuse_writes_of(monkeypatch, payload(2), err)
    sync = s.begin_sync()  # raised StoreError before: the daemon stopped
    keys, why = s.take_unwritten()
    assert keys == ["f"]
    assert os.strerror(err) in why
    assert s.take_unwritten() == ([], why)  # taken once
    sync()
    s.end_sync()
    # Refused: gone from the store and its counts; the rest as ever.
    assert "f" not in s
    assert s.get("f") is None
    assert sorted(r.key for r in s.records()) == ["a", "b", "o"]
    assert len(s) == 3
    assert s.used_bytes == 3 * BIG
    assert s.late_bytes == 0  # f's held payload is forgotten too
    for k, i in (("a", 1), ("b", 3), ("o", 4)):
        assert s.get(k) == payload(i)
    # Space returns: the previous hop's resend is stored and written.
    refusing[0] = 0
    s.put(rec("f", BIG), payload(2), write_later=True)
    _sync(s)
    assert s.take_unwritten()[0] == []
    assert s.get("f") == payload(2)
    s.close()
    s2 = SqliteStore(db)
    assert s2.dropped_at_open == []
    assert s2.corrupt_at_open == []
    assert sorted(r.key for r in s2.records()) == ["a", "b", "f", "o"]
    assert s2.get("f") == payload(2)
    s2.close()


def test_a_late_write_that_fails_at_a_checkpoint_waits_for_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint writes the held payloads first; one the disk refuses
    # there stays held -- the transaction that ran the checkpoint is not
    # refused for it -- and the next sync refuses its bundle if the disk
    # still does.
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    s.put(rec("a", BIG), payload(1), write_later=True)
    s.put(rec("f", BIG), payload(2), write_later=True)
    _refuse_writes_of(monkeypatch, payload(2))
    s._since_checkpoint = s._checkpoint_every  # due at the next transaction
    with s.transaction():
        s.put(rec("x", 10), b"x" * 10)
    assert s.late_bytes == BIG  # f's, still held; a's written
    _sync(s)
    assert s.take_unwritten()[0] == ["f"]
    assert sorted(r.key for r in s.records()) == ["a", "x"]
    s.close()
    s2 = SqliteStore(db)
    assert s2.dropped_at_open == []
    assert sorted(r.key for r in s2.records()) == ["a", "x"]
    s2.close()


def test_kill_9_after_a_failed_late_write_finds_no_row_without_its_payload(
    tmp_path: Path,
) -> None:
    # The failed write is torn (a page of it reached the file before the
    # disk said ENOSPC). The sync that refused it acknowledged a, b and o;
    # then a kill -9. The open finds exactly those, every one whole, and
    # no row of f to drop: its deletion was made durable by that sync.
    db = tmp_path / "b.db"
    code = textwrap.dedent(
        f"""
        import errno, os, signal
        from dcis.dtn.agent.store import BundleState, StoredBundle
        from dcis.dtn.storage.sqlite_store import SqliteStore
        real = os.pwritev
        torn = [0]
        def pwritev(fd, bufs, off):
            if bytes(bufs[0][:1]) == b"f":
                if not torn[0]:  # a first page goes in, then the disk is full
                    torn[0] = 1
                    return real(fd, [bufs[0][:4096]], off)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, bufs, off)
        os.pwritev = pwritev
        s = SqliteStore({str(db)!r}, deferred_sync=True)
        def put(key, later):
            data = key.encode() * {BIG}
            s.put(StoredBundle(key=key, destination="ipn:2.1", expiry_ms=10**9,
                state=BundleState.PENDING, size_bytes=len(data), received_ms=0),
                data, write_later=later)
        put("a", True)
        put("f", True)
        put("b", True)
        put("o", False)
        s.begin_sync()()
        s.end_sync()
        assert s.take_unwritten()[0] == ["f"], s.take_unwritten()
        put("l", True)  # after the sync: never acknowledged, lost by the kill
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[3], timeout=60
    )
    assert r.returncode == -9
    s = SqliteStore(db)
    assert s.corrupt_at_open == []
    assert s.dropped_at_open == ["l"]  # f's row was gone already
    assert sorted(r.key for r in s.records()) == ["a", "b", "o"]
    for k in "abo":
        assert s.get(k) == k.encode() * BIG
    s.close()


def test_a_bundle_reassembled_from_held_pieces_refused_at_the_sync_is_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bundle reassembled from pieces held in memory is written late. Its
    # pieces' Acks name no bundle: the agent says which previous hops the
    # bundles it forgets came from (the driver withholds their Acks) and
    # refuses them; the pieces sent again make it anew.
    from dcis.dtn.agent.actions import Ack, Deliver, Event
    from dcis.dtn.agent.agent import Agent, AgentConfig, Received
    from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle
    from dcis.dtn.bpv7.fragment import fragment_bundle
    from tests.unit.agent.test_store_late_writes import _frame

    from .helpers import of

    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    a = Agent(
        node=2,
        store=s,
        config=AgentConfig(keep_decoded=8, hold_fragments_ms={"udp": 200}),
    )
    whole = decode_bundle_untrusted(_frame(0, 60_000))
    pieces = [
        Received("udp", 1, encode_bundle(f), j)
        for j, f in enumerate(fragment_bundle(whole, 25_000))
    ]
    with s.transaction():
        acts = a.on_receive_many(pieces, 2_000_000)
    key = whole.bundle_key
    assert len(of(acts, Ack)) == 3
    assert a.stored == 1
    real = os.pwritev

    def pwritev(fd: int, bufs: list[memoryview], off: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwritev", pwritev)
    sync = s.begin_sync()
    keys, why = s.take_unwritten()
    assert keys == [key]
    refused, hops = a.forget_unstored([*keys, "not-held"], why)
    sync()
    s.end_sync()
    monkeypatch.setattr(os, "pwritev", real)
    assert hops == {1}
    assert [(e.kind, e.bundle_key) for e in of(refused, Event)] == [("refused", key)]
    assert a.stored == 0
    assert not a.holds(key)
    assert list(s.records()) == []
    # The previous hop sends the pieces again: taken in as new.
    with s.transaction():
        again = a.on_receive_many(
            [Received("udp", 1, p.data, 10 + i) for i, p in enumerate(pieces)],
            2_000_100,
        )
    assert a.stored == 1
    assert of(again, Deliver) == []
    assert len(of(again, Ack)) == 3
    s.begin_sync()()
    s.end_sync()
    assert s.take_unwritten()[0] == []
    assert s.get(key) == encode_bundle(whole)
    s.close()


def test_a_write_that_makes_no_progress_is_a_store_error_not_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``pwritev`` that returns 0 (an odd file system; never a healthy
    one) fails the put with a typed error; the loop that continues short
    writes does not spin on it, and the store goes on."""
    s = SqliteStore(tmp_path / "b.db")
    real = os.pwritev
    calls = [0]

    def pwritev(fd: int, bufs: list[memoryview], off: int) -> int:
        if bytes(bufs[0][:1]) == b"z":
            calls[0] += 1
            if calls[0] > 3:
                raise RuntimeError("the write loop spun on a zero-byte write")
            return 0
        return real(fd, bufs, off)

    monkeypatch.setattr(os, "pwritev", pwritev)
    with pytest.raises(StoreError, match="no progress"):
        s.put(rec("z", BIG), b"z" * BIG)
    assert calls[0] == 1
    s.put(rec("a", BIG), payload(1))
    assert s.get("a") == payload(1)
    assert s.get("z") is None
