"""An app's ``delivered`` confirmations read together are handed to the
agent together (``Node._confirm_many``), and the room they make in the
delivery queue is filled once: before, each confirmation of a read took
``room`` deferred keys while the bundles handed over for the earlier ones
were not yet pushed, so a read of n confirmations handed over up to
n(n+1)/2 bundles and deferred the surplus again (a store read and a decode
each when not kept decoded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import trio

from dcis.dtn.appapi.wire import MessageReader
from dcis.dtn.cl.mtcp import encode_mtcp_frame
from dcis.dtn.runtime import open_node
from dcis.dtn.runtime.config import Limits
from tests.runtime.conftest import app_node_config


async def _read(
    stream: trio.SocketStream, reader: MessageReader, n: int
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while len(out) < n:
            chunk = await stream.receive_some(65536)
            assert chunk
            out += reader.feed(chunk)
    return out


async def test_a_read_of_confirmations_fills_the_delivery_queue_once(
    tmp_path: Path,
) -> None:
    cfg = app_node_config(
        tmp_path, limits=Limits(delivery_queue=4, decoded_cache_bytes=0)
    )
    async with open_node(cfg) as node:
        for i in range(12):
            await node.send("ipn:1.42", bytes([i]) * 10, source="ipn:1.0")
        assert cfg.app_socket is not None
        stream = await trio.open_unix_socket(cfg.app_socket)
        reader = MessageReader()
        async with stream:
            await stream.send_all(
                encode_mtcp_frame(
                    cbor2.dumps({"type": "register", "id": 1, "endpoint": "ipn:1.42"})
                )
            )
            got = await _read(stream, reader, 5)  # the reply, 4 bundles
            pushed = [m for m in got if m["type"] == "bundle"]
            assert len(pushed) == 4
            assert node.status()["counters"]["delivery_deferred"] == 8
            delivered = node.status()["counters"]["delivered"]
            # Four confirmations in one write: one read at the node.
            await stream.send_all(
                b"".join(
                    encode_mtcp_frame(
                        cbor2.dumps(
                            {"type": "delivered", "bundle_key": m["bundle_key"]}
                        )
                    )
                    for m in pushed
                )
            )
            more = await _read(stream, reader, 4)
            assert (
                len({m["bundle_key"] for m in more} - {m["bundle_key"] for m in pushed})
                == 4
            )
            # Four taken from the deferred eight, none deferred a second time.
            counters = node.status()["counters"]
            assert counters["delivery_deferred"] == 8
            assert counters["delivered"] == delivered + 4
