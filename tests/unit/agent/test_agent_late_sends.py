"""Late payload writes for bundles an application sends (``Agent.send`` /
``send_many(..., write_later=True)``, a group-commit store): the daemon
answers an app's ``send`` only after the next sync, so the payload is
written when that sync begins -- and never if the bundle was forwarded and
deleted before it (over MTCP, most of them). Without the keyword (services,
library users) it is written at once, as before (spec/performance.md,
"Eighth round: late writes at node 1")."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dcis.dtn.agent import SendRequest, entries
from dcis.dtn.agent.actions import Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted
from dcis.dtn.storage.sqlite_store import SqliteStore

from .helpers import link, of

SIZE = 50_000


def _payload(i: int, size: int = SIZE) -> bytes:
    return bytes((i * 7 + j) % 251 for j in range(size))


def _seg(db: Path, n: int = 1) -> bytes:
    p = Path(f"{db}.segments") / f"{n:08d}.seg"
    return p.read_bytes() if p.exists() else b""


def _sync(s: SqliteStore) -> None:
    s.begin_sync()()
    s.end_sync()


def _node1(db: Path, config: AgentConfig | None = None) -> tuple[Agent, SqliteStore]:
    s = SqliteStore(db, deferred_sync=True)
    return Agent(node=1, store=s, config=config or AgentConfig()), s


def _requests(n: int, size: int = SIZE) -> list[SendRequest]:
    return [
        SendRequest("ipn:1.1", "ipn:2.1", _payload(i, size), 3_600_000)
        for i in range(n)
    ]


@pytest.mark.parametrize("hot", [0, entries.HOT_MAX_BUNDLES])
def test_an_app_bundle_forwarded_before_the_sync_is_never_written(
    tmp_path: Path, hot: int
) -> None:
    db = tmp_path / "n1.db"
    a, s = _node1(db, AgentConfig(keep_decoded=hot))
    keys, _ = a.send_many(_requests(2), 2_000, write_later=True)
    # Kept decoded: forwarded through the splice of the encoding just made;
    # else read back from the store -- from memory, the file holds nothing.
    assert (entries.hot_splice(a, str(keys[0])) is not None) == bool(hot)
    txs = of(a.on_contact_start(link(1, 2), 2_000), Transmit)
    assert len(txs) == 2
    assert [decode_bundle_untrusted(t.data).payload for t in txs] == [
        _payload(0),
        _payload(1),
    ]
    assert _seg(db) == b""
    stored = [s.get(str(k)) for k in keys]  # read back from memory meanwhile
    assert all(stored)
    # MTCP: the first is taken (written to the socket) before the sync.
    a.on_transmit_done_many([(txs[0].tx_id, True)], 2_001)
    _sync(s)
    raw = _seg(db)
    first = stored[0]
    assert first is not None
    assert raw[: len(first)] == bytes(len(first))  # never written: a hole
    assert raw[len(first) :] == stored[1]
    s.close()
    s2 = SqliteStore(db)
    assert [r.key for r in s2.records()] == [keys[1]]
    assert s2.get(str(keys[1])) == stored[1]
    assert s2.dropped_at_open == []
    s2.close()


def test_bundles_sent_without_the_keyword_are_written_at_once(tmp_path: Path) -> None:
    # A service's bundles (NodeCore.send from its context) and a library
    # user's: their callers may say "sent" before any sync.
    db = tmp_path / "n1.db"
    a, s = _node1(db)
    a.on_contact_start(link(1, 2), 1_000)
    key, acts = a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=_payload(0),
        lifetime_ms=3_600_000,
        now=2_000,
    )
    keys, _ = a.send_many(_requests(1), 2_000)
    assert _seg(db) == s.get(key) + s.get(str(keys[0]))  # type: ignore[operator]
    (tx,) = of(acts, Transmit)
    a.on_transmit_done_many([(tx.tx_id, True)], 2_001)
    _sync(s)
    assert _seg(db)[:SIZE] != bytes(SIZE)  # written, though it left before
    s.close()


def test_a_late_bundle_cut_at_transmission_is_read_from_memory(
    tmp_path: Path,
) -> None:
    # Over UDP the MTU cuts the bundle as it is sent (fragment_at). With no
    # decoded copy kept, the pieces are cut from the store's bytes -- held
    # in memory until the sync. Pieces not yet taken when the sync comes:
    # the bundle is written then, and reopens intact.
    db = tmp_path / "n1.db"
    mtu = 40_000
    a, s = _node1(db, AgentConfig(max_bundle_bytes=mtu, keep_decoded=0))
    a.on_contact_start(link(1, 2), 1_000)
    payload = _payload(3, 100_000)
    (key,), acts = a.send_many(
        [SendRequest("ipn:1.1", "ipn:2.1", payload, 3_600_000)],
        2_000,
        write_later=True,
    )
    txs = of(acts, Transmit)
    assert len(txs) == 3
    assert all(len(t.data) <= mtu for t in txs)
    pieces = [decode_bundle_untrusted(t.data) for t in txs]
    assert all(p.original_key == key for p in pieces)
    assert b"".join(p.payload for p in pieces) == payload
    assert _seg(db) == b""
    a.on_transmit_done_many([(txs[0].tx_id, True)], 2_001)
    _sync(s)  # two pieces still unacknowledged: the bundle is written
    stored = s.get(str(key))
    assert stored is not None
    assert _seg(db) == stored
    a.on_transmit_done_many([(t.tx_id, True) for t in txs[1:]], 2_002)
    assert a.stored == 0
    s.close()


def test_every_piece_taken_before_the_sync_leaves_a_hole(tmp_path: Path) -> None:
    db = tmp_path / "n1.db"
    a, s = _node1(db, AgentConfig(max_bundle_bytes=40_000, keep_decoded=0))
    a.on_contact_start(link(1, 2), 1_000)
    (key,), acts = a.send_many(
        [SendRequest("ipn:1.1", "ipn:2.1", _payload(4, 100_000), 3_600_000)],
        2_000,
        write_later=True,
    )
    size = len(s.get(str(key)) or b"")
    txs = of(acts, Transmit)
    a.on_transmit_done_many([(t.tx_id, True) for t in txs], 2_001)
    assert a.stored == 0
    a.send_many(_requests(1), 2_002)  # an ordinary one after it
    _sync(s)
    assert _seg(db)[:size] == bytes(size)
    s.close()


def test_kill_9_before_the_sync_loses_only_unanswered_sends(tmp_path: Path) -> None:
    # "answered": a sync came after the send (the daemon's reply waits for
    # it). "unanswered": no sync since; its app was never told the bundle
    # is held and sends it again. "service": a send without the keyword.
    db = tmp_path / "n1.db"
    code = textwrap.dedent(
        f"""
        import os, signal
        from dcis.dtn.agent import SendRequest
        from dcis.dtn.agent.agent import Agent
        from dcis.dtn.storage.sqlite_store import SqliteStore
        s = SqliteStore({str(db)!r}, deferred_sync=True)
        a = Agent(node=1, store=s)
        def req(tag):
            return SendRequest("ipn:1.1", "ipn:2.1", tag * {SIZE}, 3_600_000)
        (answered,), _ = a.send_many([req(b"a")], 1_000, write_later=True)
        s.begin_sync()()
        s.end_sync()
        (unanswered,), _ = a.send_many([req(b"u")], 1_001, write_later=True)
        service, _ = a.send(source="ipn:1.1", destination="ipn:2.1",
            payload=b"s" * {SIZE}, lifetime_ms=3_600_000, now=1_002)
        print(answered, unanswered, service, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[3],
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert r.returncode == -9, r.stderr
    answered, unanswered, service = r.stdout.split()
    s = SqliteStore(db, deferred_sync=True)
    assert s.dropped_at_open == [unanswered]
    a = Agent(node=1, store=s)
    a.recover(3_000)
    txs = of(a.on_contact_start(link(1, 2), 3_000), Transmit)
    got = {decode_bundle_untrusted(t.data).bundle_key: t for t in txs}
    assert sorted(got) == sorted([answered, service])
    assert decode_bundle_untrusted(got[answered].data).payload == b"a" * SIZE
    assert decode_bundle_untrusted(got[service].data).payload == b"s" * SIZE
    s.close()
