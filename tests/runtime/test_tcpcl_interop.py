"""A real TCPCLv3 peer (pyd3tn, as µD3TN speaks it) against our TCPCLv4 listener:
the version mismatch gets our contact header and SESS_TERM "version mismatch",
and the node keeps serving TCPCLv4."""

from __future__ import annotations

import logging
import socket

import pytest
import trio

from dcis.dtn.runtime import NodeConfig, open_node
from tests.runtime.conftest import poll_until

pytestmark = pytest.mark.interop


async def test_a_tcpclv3_peer_gets_a_clean_version_mismatch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pyd3tn.tcpcl import TCPCLConnection

    caplog.set_level(logging.INFO, logger="dcis.dtn.node")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = NodeConfig(node=5, store_path=":memory:", tcpcl_listen=("127.0.0.1", port))
    async with open_node(cfg) as node:
        answer: list[BaseException] = []

        def peer() -> None:
            conn = TCPCLConnection("dtn://ud3tn.dtn/", "127.0.0.1", port, timeout=5)
            try:
                conn.connect()
            except ValueError as exc:  # our v4 header is not v3
                answer.append(exc)
            finally:
                conn.sock.close()

        await trio.to_thread.run_sync(peer)
        assert answer
        assert "v3" in str(answer[0])
        await poll_until(
            lambda: any(
                r.getMessage() == "tcpcl_session_closed"
                and "version 3" in str(getattr(r, "fields", {}).get("reason"))
                for r in caplog.records
            ),
            timeout_s=10,
        )
        # still serving TCPCLv4
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"dtn!\x04\x00")
            assert await stream.receive_some(6) == b"dtn!\x04\x00"
            await stream.aclose()
        assert node.tcpcl is not None
