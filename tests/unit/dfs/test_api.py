"""The dfs library API (sync and trio) through the app protocol, against the
in-memory cluster."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest

from dcis.dfs.api import PART_BYTES, Dfs, TrioDfs
from dcis.dfs.core import appwire
from dcis.dfs.core.errors import DecodeError, InvalidArgument, NotFound, PlacementError
from dcis.dfs.core.service import DfsConfig
from dcis.dfs.testing import AppTransport, Cluster
from dcis.dtn.client.common import ReceivedBundle
from dcis.dtn.node.service import Inbound

CFG = DfsConfig(chunk_size=4096, k=2, n=4)


def make() -> tuple[Cluster, Dfs]:
    c = Cluster(nodes=[1, 2, 3, 4, 5], config=CFG)
    return c, Dfs(AppTransport(c, 1), timeout_s=5)


def test_put_get_ls_stat_rm_round_trip(tmp_path: Path) -> None:
    c, fs = make()
    data = random.Random(1).randbytes(PART_BYTES + 12345)
    seen: list[tuple[str, int, int]] = []
    res = fs.put(
        "a/one", data, progress=lambda w, d, t: seen.append((w, d, t)), wait_placed_s=1
    )
    assert (res["size"], res["k"], res["n"], res["placed"]) == (len(data), 2, 4, 4)
    assert ("bytes", len(data), len(data)) in seen
    assert fs.get("a/one") == data
    assert b"".join(fs.get_stream("a/one")) == data
    f = tmp_path / "two"
    f.write_bytes(b"file bytes")
    fs.put("a/two", f)
    fs.put("b", io.BytesIO(b"stream bytes"), k=1, n=2)
    assert [e["name"] for e in fs.ls("a/")] == ["a/one", "a/two"]
    assert [e["name"] for e in fs.ls()] == ["a/one", "a/two", "b"]
    st = fs.stat("b")
    assert (st["k"], st["n"], st["size"]) == (1, 2, 12)
    assert [s["state"] for s in st["shares"]] == ["ok", "ok"]
    other = Dfs(AppTransport(c, 4), timeout_s=5)
    assert other.get("a/two") == b"file bytes"
    assert fs.rm("a/two")["name"] == "a/two"
    with pytest.raises(NotFound):
        other.get("a/two")
    with pytest.raises(NotFound):
        fs.stat("nope")


def test_errors_come_back_typed() -> None:
    _, fs = make()
    with pytest.raises(PlacementError):
        fs.put("x", b"data", k=3, n=9)
    with pytest.raises(InvalidArgument):
        fs.put("", b"data")
    fs.put("empty", b"")
    assert fs.get("empty") == b""


def test_service_refuses_bad_app_requests() -> None:
    c = Cluster(
        nodes=[1, 2], config=DfsConfig(chunk_size=100, k=1, n=2, max_app_bytes=250)
    )
    svc = c.services[1]
    app = "ipn:1.77"

    def ask(m: appwire.AppMessage | bytes) -> list[appwire.AppMessage]:
        payload = m if isinstance(m, bytes) else appwire.encode_app(m)
        out = svc.on_bundle(Inbound("ipn:1.18", app, payload, 0, 0, "k"), c.now_ms)
        return [
            appwire.decode_app_untrusted(s.payload) for s in out if s.destination == app
        ]

    assert ask(b"\xff\x00") == []
    assert svc.stats["dropped"] == 1
    # A put is streamed (less than a chunk buffered): its size is not
    # bounded by max_app_bytes, the number of open puts is (2 x 100 <= 250).
    assert ask(appwire.PutBegin(1, "big", 5000, None, None)) == []
    assert ask(appwire.PutBegin(2, "ok", 10, None, None)) == []
    third = ask(appwire.PutBegin(4, "more", 10, None, None))
    assert isinstance(third[0], appwire.Error)
    assert third[0].kind == "InvalidArgument"
    bad = ask(appwire.PutPart(2, 3, b"abc"))
    assert isinstance(bad[0], appwire.Error)
    orphan = ask(appwire.PutPart(9, 0, b"abc"))
    assert isinstance(orphan[0], appwire.Error)
    reply = ask(appwire.Ok(3, {}))
    assert isinstance(reply[0], appwire.Error)


def test_app_wire_round_trip_and_hostile() -> None:
    msgs: list[appwire.AppMessage] = [
        appwire.PutBegin(1, "n", 5, None, 3),
        appwire.PutPart(1, 0, b"abc"),
        appwire.Call(2, "stat", "n"),
        appwire.Ok(2, {"a": 1}),
        appwire.Error(2, "NotFound", "n"),
        appwire.Data(3, 10, b"x"),
        appwire.Progress(1, 2, 3),
    ]
    for m in msgs:
        assert appwire.decode_app_untrusted(appwire.encode_app(m)) == m
    for bad in (
        b"",
        b"\x80",
        appwire.encode_app(appwire.Call(1, "x", "y"))[:-1],
        b"\x83\x16\x01\x63abc",
    ):
        with pytest.raises(DecodeError):
            appwire.decode_app_untrusted(bad)


class _TrioTransport:
    def __init__(self, t: AppTransport) -> None:
        self.t = t

    async def status(self) -> dict[str, Any]:
        return {"node": self.t.node}

    async def register(self, endpoint: str) -> str:
        return self.t.register(endpoint)

    async def send(
        self, destination: str, payload: bytes, *, source: str | None = None
    ) -> str:
        return self.t.send(destination, payload, source=source)

    async def receive(self) -> ReceivedBundle:
        b = self.t.receive()
        assert b is not None
        return b


async def test_trio_api() -> None:
    c = Cluster(nodes=[1, 2, 3, 4], config=CFG)
    fs = await TrioDfs.create(_TrioTransport(AppTransport(c, 2)), timeout_s=5)  # type: ignore[arg-type]
    data = random.Random(2).randbytes(10_000)
    assert (await fs.put("t", data))["size"] == 10_000
    assert await fs.get("t") == data
    assert [e["name"] for e in await fs.ls()] == ["t"]
    assert (await fs.stat("t"))["n"] == 4
    await fs.rm("t")
    with pytest.raises(NotFound):
        await fs.get("t")
