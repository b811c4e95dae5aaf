"""Issue 10 in a running node: config refusals, the app socket's safety, app
API clients that misbehave, and the limits' counters in the status."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import cbor2
import pytest
import trio
import trio.lowlevel

from dcis.dtn.appapi.wire import MessageReader
from dcis.dtn.cl.mtcp import encode_mtcp_frame
from dcis.dtn.cl.udp import AckMode
from dcis.dtn.runtime import NodeConfig, open_node
from dcis.dtn.runtime.config import ConfigError, config_from_dict, default_app_socket
from tests.runtime.conftest import free_udp_ports


def _cfg(tmp: Path, **kw: object) -> NodeConfig:
    (p,) = free_udp_ports(1)
    args: dict[str, object] = {
        "node": 1,
        "listen": ("127.0.0.1", p),
        "app_socket": str(tmp / "n1.sock"),
        "store_path": str(tmp / "n1.db"),
        **kw,
    }
    return NodeConfig(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "doc",
    [
        {"node": 2**63},
        {"node": 2**64 - 1},
        {"eid": "ipn:9223372036854775808.0"},
        {"node": 1, "neighbours": [{"node": 2**63, "address": "127.0.0.1:1"}]},
        {"node": 1, "limits": {"delivery_queue": 0}},
        {"node": 1, "limits": {"no_such_limit": 1}},
        {"node": 1, "limits": {"decoded_cache_bytes": -1}},
        {"node": 1, "neighbours": [{"node": 2, "address": "h:1", "ack": "maybe"}]},
    ],
)
def test_out_of_range_numbers_and_bad_limits_are_refused_at_load(
    doc: dict[str, object],
) -> None:
    with pytest.raises(ConfigError):
        config_from_dict(doc)


def test_ack_defaults_to_on_and_none_is_accepted() -> None:
    c = config_from_dict(
        {
            "node": 2**63 - 1,
            "neighbours": [
                {"node": 2, "address": "127.0.0.1:1"},
                {"node": 3, "address": "127.0.0.1:2", "ack": "none"},
            ],
            "limits": {"delivery_queue": 5, "decoded_cache_bytes": 0},
        }
    )
    assert [n.ack for n in c.neighbours] == [AckMode.ON, AckMode.NONE]
    assert c.limits.delivery_queue == 5
    assert c.limits.decoded_cache_bytes == 0  # 0: keep no decoded copies


def test_default_socket_is_never_in_a_shared_temp_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert default_app_socket(4) == "/run/dtn-node/dtn-node-4.sock"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert default_app_socket(4) == "/run/user/7/dtn-node-4.sock"


async def test_the_app_socket_is_private_and_never_taken_over(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    async with open_node(cfg):
        mode = stat.S_IMODE(os.stat(tmp_path / "n1.sock").st_mode)
        assert mode == 0o600
        # A second node on the same socket is refused (a second process on
        # the same store: tests/unit/agent/test_store_segments.py).
        other = _cfg(tmp_path, store_path=str(tmp_path / "n1b.db"))
        with pytest.raises(ConfigError, match="in use"):
            async with open_node(other):
                pass
    # A regular file at the path is refused, not deleted.
    (tmp_path / "f.sock").write_text("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        async with open_node(_cfg(tmp_path, app_socket=str(tmp_path / "f.sock"))):
            pass
    assert (tmp_path / "f.sock").read_text() == "precious"
    # A stale socket (its daemon gone) is replaced.
    async with open_node(cfg):
        pass


def _exchange(path: str, frames: bytes, replies: int) -> list[dict[str, object]]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(frames)
    reader = MessageReader()
    out: list[dict[str, object]] = []
    while len(out) < replies:
        chunk = s.recv(65536)
        assert chunk
        out += reader.feed(chunk)
    s.close()
    return out


async def test_non_integer_ids_and_clients_that_leave_early(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    async with open_node(cfg) as node:
        path = cfg.app_socket
        assert path is not None
        bad = b"".join(
            encode_mtcp_frame(cbor2.dumps(m))
            for m in (
                {"type": "delivered", "id": "seven", "bundle_key": "k"},
                {"type": "delivered", "id": [1], "bundle_key": "k"},
                {"type": "ping", "id": 1},
            )
        )
        got = await trio.to_thread.run_sync(_exchange, path, bad, 1)
        assert got == [{"type": "ok", "id": 1}]
        # Replies queued for a client that is gone: the node carries on.
        many = b"".join(
            encode_mtcp_frame(cbor2.dumps({"type": "status", "id": i}))
            for i in range(300)
        )

        def hit_and_run() -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.sendall(many)
            s.close()

        for _ in range(20):
            await trio.to_thread.run_sync(hit_and_run)
        await trio.lowlevel.checkpoint()
        got = await trio.to_thread.run_sync(
            _exchange,
            path,
            encode_mtcp_frame(cbor2.dumps({"type": "ping", "id": 9})),
            1,
        )
        assert got == [{"type": "ok", "id": 9}]
        st = node.status()
        assert st["counters"]["handler_errors"] == 0
        assert st["limits"]["delivery_queue"] == cfg.limits.delivery_queue
        for key in (
            "app_connections",
            "app_refused",
            "buffered_bytes",
            "delivery_deferred",
        ):
            assert key in st["counters"]
