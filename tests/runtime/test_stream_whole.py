"""Stream convergence layers carry a bundle whole (issue 18, "Done when": a
1 MB bundle over MTCP is never fragmented); fragmentation only where the
link requires it (RFC 9171 5.8): MTCP's frame limit, UDP's ``mtu_bytes``.

A node in this process with an MTCP neighbour that is a plain socket server
on loopback, in a thread, decoding frames with our MTCP decoder. Real
sockets; no timing assertions."""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path

import pytest
import trio

from dcis.dtn.bpv7.bundle import Bundle, decode_bundle_untrusted
from dcis.dtn.bpv7.flags import BundleFlags
from dcis.dtn.bpv7.fragment import reassemble
from dcis.dtn.cl.mtcp import MtcpDecoder
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime.config import Limits

MB = 1 << 20


def _payload(n: int) -> bytes:
    seed = hashlib.sha256(b"whole").digest()
    return (seed * (n // len(seed) + 1))[:n]


def _sink(server: socket.socket, want_payload_bytes: int, out: list[Bundle]) -> None:
    """Accept one MTCP connection and decode frames until ``want_payload_bytes``
    of payload have arrived (all fragments, or one whole bundle)."""
    conn, _ = server.accept()
    conn.settimeout(30)
    dec = MtcpDecoder(max_bundle_bytes=64 * MB)
    have = 0
    with conn:
        while have < want_payload_bytes:
            chunk = conn.recv(1 << 20)
            if not chunk:
                return
            for raw in dec.feed(chunk):
                b = decode_bundle_untrusted(raw)
                out.append(b)
                have += len(b.payload)


async def _send_over_mtcp(
    tmp_path: Path, payload: bytes, limits: Limits
) -> tuple[list[Bundle], dict[str, int]]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(30)
    port = server.getsockname()[1]
    nb = NeighbourConfig(
        node=9, address=("127.0.0.1", port), cla="mtcp", always_on=True
    )
    cfg = NodeConfig(
        node=5,
        store_path=str(tmp_path / "n5.db"),
        neighbours=(nb,),
        limits=limits,
    )
    got: list[Bundle] = []
    try:
        async with open_node(cfg) as node, trio.open_nursery() as nursery:
            nursery.start_soon(
                trio.to_thread.run_sync, _sink, server, len(payload), got
            )
            with trio.fail_after(120):
                await node.send("ipn:9.4", payload, source="ipn:5.1")
        counters = dict(node.status()["counters"])
    finally:
        server.close()
    return got, counters


@pytest.mark.parametrize("size", [MB, 3 * MB + 17])
async def test_a_large_bundle_crosses_mtcp_whole(tmp_path: Path, size: int) -> None:
    payload = _payload(size)
    got, counters = await _send_over_mtcp(tmp_path, payload, Limits())
    assert len(got) == 1
    (b,) = got
    assert not b.primary.flags & BundleFlags.IS_FRAGMENT
    assert b.primary.fragment_offset is None
    assert b.payload == payload
    assert str(b.primary.source) == "ipn:5.1"
    assert counters["forwarded"] == 1


async def test_mtcp_fragments_only_above_its_frame_limit(tmp_path: Path) -> None:
    # A peer with a smaller frame limit (configured alike at both ends, MTCP
    # having no negotiation): the bundle goes in fragments that each fit.
    limit = 300_000
    payload = _payload(MB)
    got, _ = await _send_over_mtcp(
        tmp_path, payload, Limits(mtcp_max_frame_bytes=limit)
    )
    assert len(got) >= MB // limit + 1
    assert all(b.primary.flags & BundleFlags.IS_FRAGMENT for b in got)
    whole = reassemble(got)
    assert whole.payload == payload


class _OnLog(logging.Handler):
    """Sets ``event`` when the node logs ``message`` (the node logs from its
    trio thread, so a trio.Event may be set here)."""

    def __init__(self, message: str) -> None:
        super().__init__(logging.INFO)
        self.message = message
        self.event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.event.set()


async def test_a_batch_the_peer_refused_goes_again_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens at first: the MTCP sender's connect fails, the batch
    # (a large bundle sent in parts and small ones) is reported failed and
    # kept; once the peer listens, each bundle arrives once, intact.
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(30)
    port = server.getsockname()[1]
    nb = NeighbourConfig(
        node=9, address=("127.0.0.1", port), cla="mtcp", always_on=True
    )
    cfg = NodeConfig(node=5, store_path=str(tmp_path / "n5.db"), neighbours=(nb,))
    payloads = [_payload(300_000), b"small one", _payload(70_000)[::-1]]
    got: list[Bundle] = []
    caplog.set_level(logging.INFO, logger="dcis.dtn.node")
    refused = _OnLog("mtcp_send_failed")
    logging.getLogger("dcis.dtn.node").addHandler(refused)
    try:
        async with open_node(cfg) as node:
            for p in payloads:
                await node.send("ipn:9.4", p, source="ipn:5.1")
            with trio.fail_after(60):
                await refused.event.wait()  # the connect was refused
            server.listen(1)
            with trio.fail_after(60):
                await trio.to_thread.run_sync(
                    _sink, server, sum(map(len, payloads)), got
                )
            counters = dict(node.status()["counters"])
    finally:
        logging.getLogger("dcis.dtn.node").removeHandler(refused)
        server.close()
    assert sorted(b.payload for b in got) == sorted(payloads)
    assert counters["transmit_failed"] >= 1
