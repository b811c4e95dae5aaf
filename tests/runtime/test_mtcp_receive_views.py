"""Review of the MTCP receive views: frames read whole reach the agent as
views of the node's one read buffer, which every connection's next read
overwrites. Several MTCP peers at once (their reads interleave in that
buffer, shrunk here to 16 KiB so that it is reused all the time), bundles
for this node (some in fragments) and bundles forwarded over MTCP: every
payload delivered or forwarded is the one sent.

Plain sockets in threads play the peers and the next hop; real sockets on
loopback; no timing assertions."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
import trio

from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.fragment import fragment_bundle, reassemble
from dcis.dtn.cl.mtcp import MtcpDecoder, encode_mtcp_frame
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime import node as node_mod
from tests.runtime.conftest import poll_until

PEERS = 3
PER_PEER = 60


def _payload(n: int, tag: str) -> bytes:
    seed = hashlib.sha256(tag.encode()).digest()
    return (seed * (n // len(seed) + 1))[:n]


def _stream(peer: int) -> tuple[bytes, list[bytes], list[bytes]]:
    """The MTCP stream of one peer; the payloads for ipn:5.3 (whole after
    reassembly) and those for ipn:9.4, in order."""
    frames: list[bytes] = []
    local: list[bytes] = []
    remote: list[bytes] = []
    for i in range(PER_PEER):
        size = (100, 1_500, 9_000, 40_000)[i % 4] + peer
        dest = "ipn:5.3" if i % 3 else "ipn:9.4"
        p = _payload(size, f"{peer}/{i}")
        b = make_bundle(
            destination=dest,
            source=f"ipn:{20 + peer}.1",
            payload=p,
            # A clock (fragments carry no bundle age block).
            creation_ms=int((time.time() - 946_684_800) * 1000),
            sequence=i,
            lifetime_ms=3_600_000,
        )
        parts: list[Bundle] = [b]
        if dest == "ipn:5.3" and i % 5 == 0:
            parts = fragment_bundle(b, 3_000)
        frames += [encode_mtcp_frame(encode_bundle(x)) for x in parts]
        (local if dest == "ipn:5.3" else remote).append(p)
    return b"".join(frames), local, remote


def _sink(server: socket.socket, want: int, out: list[Bundle]) -> None:
    conn, _ = server.accept()
    conn.settimeout(60)
    dec = MtcpDecoder()
    with conn:
        while len(out) < want:
            chunk = conn.recv(1 << 16)
            if not chunk:
                return
            out += [decode_bundle_untrusted(raw) for raw in dec.feed(chunk)]


async def test_concurrent_mtcp_peers_views_of_one_small_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_mod, "_READ_BYTES", 16 * 1024)
    views = [0]
    real_as_is = node_mod._as_is

    def counted(frame: bytes | memoryview) -> bytes | memoryview:
        views[0] += type(frame) is memoryview
        return real_as_is(frame)

    monkeypatch.setattr(node_mod, "_as_is", counted)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(60)
    nb = NeighbourConfig(
        node=9,
        address=("127.0.0.1", server.getsockname()[1]),
        cla="mtcp",
        always_on=True,
    )
    cfg = NodeConfig(
        node=5,
        mtcp_listen=("127.0.0.1", 0),
        store_path=str(tmp_path / "n5.db"),
        neighbours=(nb,),
    )
    streams = [_stream(p) for p in range(PEERS)]
    want_local = sorted(p for _, loc, _ in streams for p in loc)
    want_remote = sorted(p for _, _, rem in streams for p in rem)
    forwarded: list[Bundle] = []
    try:
        async with (
            open_node(cfg) as node,
            node.endpoint("ipn:5.3") as inbox,
            trio.open_nursery() as nursery,
        ):
            assert node.mtcp_address is not None
            addr = node.mtcp_address
            nursery.start_soon(
                trio.to_thread.run_sync, _sink, server, len(want_remote), forwarded
            )

            def peer(data: bytes) -> None:
                with socket.create_connection(addr, timeout=60) as s:
                    pos, step = 0, 1
                    while pos < len(data):
                        s.sendall(data[pos : pos + step])
                        pos += step
                        step = step * 13 % 70_001 + 1

            for data, _, _ in streams:
                nursery.start_soon(trio.to_thread.run_sync, peer, data)
            with trio.fail_after(120):
                got = [(await inbox.receive()).payload for _ in want_local]
            await poll_until(lambda: len(forwarded) >= len(want_remote), timeout_s=60)
            assert sorted(got) == want_local
            whole = [reassemble([b]) if b.is_fragment else b for b in forwarded]
            assert sorted(b.payload for b in whole) == want_remote
            assert node.status()["counters"]["buffered_bytes"] == 0
            nursery.cancel_scope.cancel()
    finally:
        server.close()
    assert views[0] > PEERS * PER_PEER // 4  # most frames came as views
