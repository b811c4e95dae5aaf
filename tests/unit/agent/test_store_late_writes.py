"""Late payload writes (``put(..., write_later=True)``, group commit): the
payload's bytes are written when the next sync begins, and never if the
bundle left before it; what nobody was told is held is all a ``kill -9``
before that sync can lose (spec/performance.md, "Seventh round")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dcis.dtn.agent.actions import Ack, Deliver
from dcis.dtn.agent.agent import Agent, AgentConfig, Received
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.late_writes import late_pair, seg, sync
from tests.unit.agent.test_store_segments import BIG, payload, rec

from .helpers import of


def test_a_payload_that_leaves_before_the_sync_is_never_written(
    tmp_path: Path,
) -> None:
    db = tmp_path / "b.db"
    s = late_pair(db)
    assert seg(db) == b""  # nothing written yet
    assert s.get("a") == payload(1)  # read back from memory meanwhile
    with s.transaction(durable=False):
        s.delete("a")  # delivered and confirmed before the sync
    sync(s)
    raw = seg(db)
    # b in its place, a's place a hole: a's bytes were never written.
    assert raw[BIG:] == payload(2)
    assert raw[:BIG] == bytes(BIG)
    assert s.get("b") == payload(2)
    s.close()
    s2 = SqliteStore(db)
    assert [r.key for r in s2.records()] == ["b"]
    assert s2.get("b") == payload(2)
    assert s2.dropped_at_open == []
    s2.close()


def test_a_discarded_late_payload_is_never_written(tmp_path: Path) -> None:
    # The agent removes bundles with discard (batched until the commit).
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    for i in range(3):
        s.put(rec(f"k{i}", BIG), payload(i), write_later=True)
    with s.transaction(durable=False):
        s.discard("k0")
        s.discard("k2")
    sync(s)
    assert seg(db) == bytes(BIG) + payload(1)  # k2's place: past the end
    s.close()
    s2 = SqliteStore(db)
    assert [r.key for r in s2.records()] == ["k1"]
    assert s2.dropped_at_open == []
    s2.close()


def test_a_late_payload_of_a_rolled_back_put_is_never_written(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)

    def fails() -> None:
        with s.transaction():
            s.put(rec("a", BIG), payload(1), write_later=True)
            raise RuntimeError("the block fails")

    with pytest.raises(RuntimeError):
        fails()
    s.put(rec("b", BIG), payload(2))  # an ordinary put: written at once
    assert seg(db)[BIG:] == payload(2)
    sync(s)
    assert seg(db)[:BIG] == bytes(BIG)
    assert [r.key for r in s.records()] == ["b"]
    s.close()


def test_without_group_commit_write_later_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db)
    s.put(rec("a", BIG), payload(1), write_later=True)
    assert seg(db) == payload(1)
    s.close()


def test_late_payloads_past_the_bound_are_written_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dcis.dtn.storage import segments

    monkeypatch.setattr(segments, "PENDING_MAX_BYTES", 2 * BIG)
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    for i in range(3):
        s.put(rec(f"k{i}", BIG), payload(i), write_later=True)
    assert seg(db) == bytes(2 * BIG) + payload(2)  # only the third, at once
    sync(s)
    assert seg(db) == payload(0) + payload(1) + payload(2)
    s.close()


def test_a_full_segment_takes_its_late_payloads_before_it_closes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True, segment_bytes=2 * BIG)
    for i in range(3):  # the third goes to segment 2
        s.put(rec(f"k{i}", BIG), payload(i), write_later=True)
    assert seg(db, 1) == payload(0) + payload(1)
    assert seg(db, 2) == b""
    sync(s)
    assert seg(db, 2) == payload(2)
    s.close()
    s2 = SqliteStore(db)
    assert [s2.get(f"k{i}") for i in range(3)] == [payload(i) for i in range(3)]
    s2.close()


@pytest.mark.parametrize(("first", "late"), [(BIG, BIG), (4096 + 10, 3000)])
def test_kill_9_before_the_sync_loses_only_late_payloads(
    tmp_path: Path, first: int, late: int
) -> None:
    # A late payload's row is committed, its bytes are not written: the
    # open after a kill -9 drops the row, as one a power cut cut short
    # (its previous hop, never answered, sends it again). An ordinary
    # put survives a kill -9 as before; so does a late one once synced.
    # A small late payload off a page boundary (4106 to 7106): its place,
    # a hole inside the file once "o" is written after it, holds no page
    # boundary -- all zeros, still dropped, never kept as corrupt.
    db = tmp_path / "b.db"
    code = textwrap.dedent(
        f"""
        import os, signal
        from dcis.dtn.agent.store import BundleState, StoredBundle
        from dcis.dtn.storage.sqlite_store import SqliteStore
        s = SqliteStore({str(db)!r}, deferred_sync=True)
        def put(key, later, size={BIG}):
            data = key.encode() * size
            s.put(StoredBundle(key=key, destination="ipn:2.1", expiry_ms=10**9,
                state=BundleState.PENDING, size_bytes=len(data), received_ms=0),
                data, write_later=later)
        put("s", True, {first})
        s.begin_sync()()
        s.end_sync()
        put("l", True, {late})
        put("o", False)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[3], timeout=60
    )
    assert r.returncode == -9
    s = SqliteStore(db)
    assert s.corrupt_at_open == []
    assert s.dropped_at_open == ["l"]
    assert sorted(r.key for r in s.records()) == ["o", "s"]
    assert s.get("o") == b"o" * BIG
    assert s.get("s") == b"s" * first
    s.close()


def test_kill_9_inside_a_late_write_drops_its_row(tmp_path: Path) -> None:
    # A kill -9 inside the pwritev of a late payload: the kernel stops the
    # write at a page, and a payload written at once after it made the file
    # longer, so the row's bytes are its first pages and a hole. The row was
    # never acknowledged (its ACK waits for the sync): dropped at open, not
    # kept as corrupt (which logs an error and reports a deleted bundle).
    db = tmp_path / "b.db"
    size = 5 * 4096 + 123
    code = textwrap.dedent(
        f"""
        import os, signal
        from dcis.dtn.agent.store import BundleState, StoredBundle
        from dcis.dtn.storage.sqlite_store import SqliteStore
        s = SqliteStore({str(db)!r}, deferred_sync=True)
        def put(key, later, size):
            data = key.encode() * size
            s.put(StoredBundle(key=key, destination="ipn:2.1", expiry_ms=10**9,
                state=BundleState.PENDING, size_bytes=len(data), received_ms=0),
                data, write_later=later)
        put("l", True, {size})
        put("o", False, {BIG})
        ((seg, off),) = s._db.execute(
            "SELECT seg, seg_off FROM bundles WHERE key='l'").fetchall()
        # What the cut write left: l's bytes up to the second page boundary.
        cut = (off // 4096 + 2) * 4096 - off
        fd = os.open({str(db)!r} + ".segments/%08d.seg" % seg, os.O_WRONLY)
        os.pwrite(fd, b"l" * cut, off)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[3], timeout=60
    )
    assert r.returncode == -9
    s = SqliteStore(db)
    assert s.corrupt_at_open == []
    assert s.dropped_at_open == ["l"]
    assert [r.key for r in s.records()] == ["o"]
    assert s.get("o") == b"o" * BIG
    s.close()


def test_a_payload_damaged_after_its_sync_is_kept_as_corrupt(tmp_path: Path) -> None:
    # Damage inside a written payload (not a hole to its end) is not a cut
    # write: the row stays, listed as corrupt.
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    s.put(rec("a", BIG), payload(1), write_later=True)
    sync(s)
    s.close()
    seg = Path(f"{db}.segments") / "00000001.seg"
    raw = bytearray(seg.read_bytes())
    raw[BIG - 1] ^= 0xFF  # the last byte
    seg.write_bytes(bytes(raw))
    s2 = SqliteStore(db)
    assert s2.corrupt_at_open == ["a"]
    assert s2.dropped_at_open == []
    s2.close()


def _frame(seq: int, size: int) -> bytes:
    return encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=bytes([seq + 1]) * size,
            creation_ms=1_000_000,
            sequence=seq,
            lifetime_ms=3_600_000,
        )
    )


def test_the_agent_writes_late_only_what_a_previous_hop_still_holds(
    tmp_path: Path,
) -> None:
    # Received with a hop ACK to come (UDP, LTP): written at the sync, not
    # at all if delivered and confirmed first. Received without one (MTCP:
    # the sender let go when it wrote it): written at once, as before.
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    a = Agent(node=2, store=s, config=AgentConfig(keep_decoded=8))
    a.register("ipn:2.1")
    acked, held, mtcp = (_frame(i, 50_000) for i in range(3))
    with s.transaction():
        acts = a.on_receive_many(
            [
                Received("udp", 1, acked, 7),
                Received("udp", 1, held, 8),
                Received("mtcp", None, mtcp, None),
            ],
            2_000_000,
        )
    keys = [d.bundle_key for d in of(acts, Deliver)]
    assert seg(db) == bytes(2 * len(acked)) + mtcp  # only MTCP's bytes so far
    a.on_delivered_many([keys[0], keys[2]], 2_000_001)
    sync(s)
    raw = seg(db)
    assert raw[: len(acked)] == bytes(len(acked))  # never written
    assert raw[len(acked) : 2 * len(acked)] == held
    s.close()
    s2 = SqliteStore(db)
    assert [r.key for r in s2.records()] == [keys[1]]
    assert s2.get(keys[1]) == held
    assert os.path.getsize(f"{db}.segments/00000001.seg") == len(raw)
    s2.close()


def _fail_next_write(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    """The next ``pwritev`` (a segment write) fails with ``err``, once."""
    real = os.pwritev
    left = [1]

    def pwritev(fd: int, bufs: list[memoryview], off: int) -> int:
        if left[0]:
            left[0] = 0
            raise OSError(err, os.strerror(err))
        return real(fd, bufs, off)

    monkeypatch.setattr(os, "pwritev", pwritev)


def test_a_failed_late_write_when_a_commit_rotates_loses_no_committed_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A commit that empties the active segment rotates it, writing its held
    # payloads first -- among them one this very commit put (its live count
    # comes after). When that write fails, the commit (done) must neither
    # raise nor leave the count short: else the next sync forgets the
    # payload as one in a dead segment and removes the file, while the row
    # stays -- and that sync releases the bundle's hop ACK.
    import errno

    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True, segment_reclaim_bytes=1)
    s.put(rec("a", BIG), payload(1))
    sync(s)
    _fail_next_write(monkeypatch, errno.EIO)
    with s.transaction():
        s.delete("a")  # forwarded: segment 1 is empty...
        s.put(rec("b", BIG), payload(2), write_later=True)  # ...but for b
    assert [r.key for r in s.records()] == ["b"]
    sync(s)  # b's write is tried again here (and succeeds)
    assert s.get("b") == payload(2)
    s.close()
    s2 = SqliteStore(db)
    assert s2.dropped_at_open == []
    assert s2.get("b") == payload(2)
    s2.close()


def test_a_failed_late_write_at_a_checkpoint_does_not_fail_later_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint writes the held payloads before it syncs the segments.
    # A write that fails there (a full disk for a moment) took nothing out
    # of the dirty set and lost nothing (the payloads are still held): it
    # refuses nothing -- neither that transaction nor any later sync of the
    # node; the next sync writes the payload (test_store_late_write_failure:
    # or refuses its bundle, if the disk still refuses it).
    import errno

    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    s.put(rec("a", BIG), payload(1), write_later=True)
    _fail_next_write(monkeypatch, errno.ENOSPC)
    s._since_checkpoint = s._checkpoint_every  # due at the next transaction
    with s.transaction():
        pass
    assert s.late_bytes == BIG  # still held
    sync(s)  # a is written now; the node goes on
    assert s.take_unwritten()[0] == []
    s.close()
    s2 = SqliteStore(db)
    assert s2.get("a") == payload(1)
    s2.close()


def test_a_bundle_reassembled_from_held_pieces_is_written_late(tmp_path: Path) -> None:
    # Its pieces came over UDP and are acknowledged only after the next
    # sync (agent.held): the whole bundle is written at that sync, and not
    # at all when it is delivered and confirmed first -- as a bundle
    # received whole over UDP.
    db = tmp_path / "b.db"
    s = SqliteStore(db, deferred_sync=True)
    a = Agent(
        node=2,
        store=s,
        config=AgentConfig(keep_decoded=8, hold_fragments_ms={"udp": 200}),
    )
    a.register("ipn:2.1")
    wholes = [decode_bundle_untrusted(_frame(i, 60_000)) for i in range(2)]
    pieces = [
        Received("udp", 1, encode_bundle(f), 10 * i + j)
        for i, w in enumerate(wholes)
        for j, f in enumerate(fragment_bundle(w, 25_000))
    ]
    with s.transaction():
        acts = a.on_receive_many(pieces, 2_000_000)
    assert len(of(acts, Ack)) == 6  # every piece's, after the puts
    confirmed, kept = (d.bundle_key for d in of(acts, Deliver))
    assert seg(db).strip(b"\0") == b""  # nothing written yet
    a.on_delivered_many([confirmed], 2_000_001)
    sync(s)
    raw = seg(db)
    stored = encode_bundle(wholes[1])
    assert raw.strip(b"\0") == stored.strip(b"\0")  # only the one still held
    s.close()
    s2 = SqliteStore(db)
    assert [r.key for r in s2.records()] == [kept]
    assert s2.get(kept) == stored
    s2.close()
