"""An app's ``send`` on a FULL (group-commit) node: its reply waits for the
sync, so the daemon lets the store write the payload at that sync
(``write_later``) -- never for the node's own bundles (``Node.send``, the
services), whose callers may say "sent" before it. The reply still comes
only once the bytes are on disk (spec/performance.md, "Eighth round: late
writes at node 1")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from dcis.dtn.agent.store import StoredBundle, Wire
from dcis.dtn.client import open_trio_client
from dcis.dtn.runtime import NodeConfig, open_node
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.runtime.conftest import free_udp_ports


async def test_app_sends_are_written_at_the_sync_the_node_s_own_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    later: dict[str, bool] = {}
    put = SqliteStore.put

    def spy(self: SqliteStore, record: StoredBundle, data: Wire, **kw: Any) -> None:
        later[record.key] = bool(kw.get("write_later"))
        put(self, record, data, **kw)

    monkeypatch.setattr(SqliteStore, "put", spy)
    (port,) = free_udp_ports(1)
    cfg = NodeConfig(
        node=1,
        listen=("127.0.0.1", port),
        app_socket=str(tmp_path / "n1.sock"),
        store_path=str(tmp_path / "n1.db"),
        store_synchronous="FULL",
    )
    big = bytes(range(256)) * 200  # in a segment file, not the index
    async with open_node(cfg) as node, open_trio_client(str(cfg.app_socket)) as app:
        with trio.fail_after(20):
            by_app = await app.send("ipn:2.1", big)  # held: no route to node 2
            own = await node.send("ipn:2.1", big, source="ipn:1.0")
        assert later.pop(by_app) is True
        # The node's own (and any a service sent meanwhile): at once.
        assert later.pop(own) is False
        assert not any(later.values())
        # Answered after the sync that wrote it: its bytes are in the file.
        assert node.agent is not None
        store = node.agent.store
        assert isinstance(store, SqliteStore)
        stored = store.get(by_app)
        assert stored is not None
        segs = sorted((tmp_path / "n1.db.segments").glob("*.seg"))
        assert stored in b"".join(p.read_bytes() for p in segs)
