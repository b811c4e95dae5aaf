"""Streaming puts and gets (issue 14, API ``put(name, data | file)`` and
``get(name) -> bytes | stream``): memory does not grow with the object.

Counted, not timed: the core's own high-water marks (``app_buffer_peak``:
bytes an app put holds before a whole chunk is encoded; ``get_buffer_peak``:
blocks a get holds while waiting for its chunks' k-th block) and, on the
client side, the largest read of the source file and the pieces written.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from dcis.dfs.api import PART_BYTES, Dfs
from dcis.dfs.core import appwire
from dcis.dfs.core.codec import block_len
from dcis.dfs.core.errors import InvalidArgument
from dcis.dfs.core.service import DfsConfig, OpState
from dcis.dfs.testing import AppTransport, Cluster
from dcis.dtn.node.service import Inbound

CHUNK = 4096
CFG = DfsConfig(chunk_size=CHUNK, k=3, n=6, fetch_window=4, fetch_ahead=8)
NODES = [1, 2, 3, 4, 5, 6, 7]


def data_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def app_put(c: Cluster, name: str, data: bytes, part: int) -> None:
    """Put ``data`` on node 1 as a local app would, ``part`` bytes a bundle."""
    app = "ipn:1.4242"
    c.app_send(1, app, appwire.encode_app(appwire.PutBegin(1, name, len(data), 3, 6)))
    for at in range(0, len(data), part):
        msg = appwire.PutPart(1, at, data[at : at + part])
        c.app_send(1, app, appwire.encode_app(msg))
        c.deliver()
    replies = [appwire.decode_app_untrusted(p) for p in c.app_inbox.pop(app)]
    assert any(isinstance(r, appwire.Ok) for r in replies), replies


@pytest.mark.parametrize("part", [1000, CHUNK, 3 * CHUNK + 17])
def test_app_put_buffers_less_than_a_chunk_whatever_the_size(part: int) -> None:
    peaks = []
    for size in (20 * CHUNK + 5, 200 * CHUNK + 5):
        c = Cluster(nodes=NODES, config=CFG)
        data = data_of(size)
        app_put(c, "obj", data, part)
        peaks.append(c.services[1].stats["app_buffer_peak"])
        op = c.services[2].get("obj", c.now_ms)
        c.flush(2)
        c.tick(1000)
        assert op.result() == data
    # Ten times the object, the same bound: less than a chunk plus a part.
    assert max(peaks) < CHUNK + part
    assert max(peaks) < 20 * CHUNK


def test_streamed_get_holds_a_bounded_window_of_blocks() -> None:
    peaks = []
    for chunks in (30, 300):
        c = Cluster(nodes=NODES, config=CFG)
        data = data_of(chunks * CHUNK)
        op = c.services[1].put("obj", data, c.now_ms)
        c.flush(1)
        # One of the three nearest holders is gone for good: the other two's
        # blocks wait until the reader gives up on it and asks another.
        reader = next(n for n in NODES if n not in op.manifest.placement)
        c.lose(op.manifest.placement[1])
        pieces: dict[int, memoryview] = {}
        svc = c.services[reader]
        got = svc.get("obj", c.now_ms, on_piece=pieces.__setitem__)
        assert got.data is None  # no buffer for the whole object
        c.flush(reader)
        for _ in range(20):
            if got.state != OpState.RUNNING:
                break
            c.tick(40_000)
        assert got.state == OpState.DONE, got.error
        assert b"".join(bytes(pieces[at]) for at in sorted(pieces)) == data
        with pytest.raises(InvalidArgument):
            got.result()  # a streamed get keeps no copy
        peaks.append(svc.stats["get_buffer_peak"])
    bound = (CFG.fetch_ahead + CFG.fetch_window) * 3 * block_len(CHUNK, 3)
    assert 0 < peaks[1] <= bound
    assert peaks[1] < 30 * CHUNK  # far below even the small object


def test_put_writer_rejects_bad_sequences() -> None:
    c = Cluster(nodes=NODES, config=CFG)
    svc = c.services[1]
    w = svc.put_begin("w", 10, c.now_ms)
    w.write(b"12345", c.now_ms)
    with pytest.raises(InvalidArgument):
        w.close(c.now_ms)  # 5 of 10 bytes
    with pytest.raises(InvalidArgument):
        w.write(b"1234567", c.now_ms)  # past the size
    w.write(b"67890", c.now_ms)
    op = w.close(c.now_ms)
    assert w.close(c.now_ms) is op
    with pytest.raises(InvalidArgument):
        w.write(b"", c.now_ms)
    with pytest.raises(InvalidArgument):
        svc.put_begin("neg", -1, c.now_ms)
    c.flush(1)
    g = svc.get("w", c.now_ms)
    c.flush(1)
    c.tick(1000)
    assert g.result() == b"1234567890"


class CountingFile(io.BytesIO):
    """A binary file that remembers its largest read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = 0

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.largest = max(self.largest, len(out))
        return out

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no descriptor")


def test_client_put_reads_a_file_by_parts_and_get_writes_in_place(
    tmp_path: Path,
) -> None:
    c = Cluster(nodes=NODES, config=CFG)
    fs = Dfs(AppTransport(c, 1), timeout_s=5)
    data = data_of(3 * PART_BYTES + 999)
    src = tmp_path / "src"
    src.write_bytes(data)
    reads: list[int] = []
    real_open = Path.open

    def spy_open(self: Path, *a: object, **kw: object) -> object:
        f = real_open(self, *a, **kw)  # type: ignore[call-overload]
        real_read = f.read

        def read(n: int = -1) -> bytes:
            out: bytes = real_read(n)
            reads.append(len(out))
            return out

        f.read = read
        return f

    mp = pytest.MonkeyPatch()
    mp.setattr(Path, "open", spy_open)
    try:
        res = fs.put("big", src, k=3, n=6)
    finally:
        mp.undo()
    assert res["size"] == len(data)
    assert reads
    assert max(reads) <= PART_BYTES
    assert sum(reads) == len(data)
    out = tmp_path / "out"
    other = Dfs(AppTransport(c, 7), timeout_s=5)
    with out.open("wb") as f:
        f.write(b"stale bytes that must go" * 100_000)
        f.seek(0)
        assert other.get_into("big", f) == len(data)
    assert out.read_bytes() == data
    # A stream without a descriptor (a pipe) is read whole: still correct.
    pipe = CountingFile(b"from a pipe")
    fs.put("pipe", pipe)
    assert other.get("pipe") == b"from a pipe"


def test_refused_put_stops_before_sending_the_data() -> None:
    c = Cluster(nodes=[1, 2], config=CFG)  # too few nodes for 3-of-6
    sent: list[bytes] = []
    t = AppTransport(c, 1)
    real_send = t.send

    def send(destination: str, payload: bytes, **kw: object) -> str:
        sent.append(payload)
        return real_send(destination, payload, **kw)  # type: ignore[arg-type]

    t.send = send  # type: ignore[method-assign]
    fs = Dfs(t, timeout_s=5)
    from dcis.dfs.core.errors import PlacementError

    with pytest.raises(PlacementError):
        fs.put("x", data_of(5 * PART_BYTES), k=3, n=6)
    assert len(sent) <= 2  # the PutBegin (and at most one part)


def test_inbound_part_for_a_refused_put_is_an_error() -> None:
    c = Cluster(nodes=NODES, config=CFG)
    svc = c.services[1]
    out = svc.on_bundle(
        Inbound(
            "ipn:1.18",
            "ipn:1.9",
            appwire.encode_app(appwire.PutPart(5, 0, b"abc")),
            0,
            0,
            "k",
        ),
        c.now_ms,
    )
    (reply,) = [appwire.decode_app_untrusted(s.payload) for s in out]
    assert isinstance(reply, appwire.Error)


@pytest.mark.parametrize("check_ms", [1_000, 10**9])
def test_get_brings_in_another_holder_once_membership_suspects_one(
    check_ms: int,
) -> None:
    """A holder among the first k crashes: membership calls it suspect, and
    the get asks another holder within ``holder_check_ms``, long before the
    (here ten-minute) fetch slack; with the check off it is still waiting."""
    cfg = DfsConfig(
        chunk_size=CHUNK, k=3, n=6, fetch_slack_ms=600_000, holder_check_ms=check_ms
    )
    c = Cluster(nodes=NODES, config=cfg)
    data = data_of(10 * CHUNK)
    op = c.services[1].put("obj", data, c.now_ms)
    c.flush(1)
    reader = next(n for n in NODES if n not in op.manifest.placement)
    got = c.services[reader].get("obj", c.now_ms)
    # The nearest holder (lowest node number, all else equal) is asked
    # first; it crashes before it answers.
    first = min(op.manifest.placement)
    c.crash(first)
    c.flush(reader)
    for _ in range(5):
        c.tick(1_000)
    if check_ms == 1_000:
        assert got.state == OpState.DONE
        assert got.result() == data
        assert first not in {op.manifest.placement[i] for i in got.shares_fetched}
    else:
        assert got.state == OpState.RUNNING
