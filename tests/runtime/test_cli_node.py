"""The dcis commands that talk to a running node (issue 15): several payloads
in one `send`, `recv` until --count, `bundles` listing the store, `ping
--json`, and the echo endpoint that nobody can take over."""

from __future__ import annotations

import io
import json
import signal
import sys
from pathlib import Path

import pytest
import trio

from dcis.dtn.client import Client
from dcis.dtn.runtime import open_node
from dcis.tools.cli import main as dcis
from tests.runtime.conftest import poll_until
from tests.runtime.test_appapi import pair

ROOT = Path(__file__).resolve().parents[2]


async def test_send_several_payloads_bundles_recv_and_ping(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c1, c2 = pair(tmp_path)
    s1, s2 = str(tmp_path / "n1.sock"), str(tmp_path / "n2.sock")
    a, b = tmp_path / "a.txt", tmp_path / "b.bin"
    a.write_bytes(b"file a")
    b.write_bytes(bytes(range(256)))
    async with open_node(c1), open_node(c2) as n2:

        def sync_part() -> None:
            # Two files twice each, then two stdin lines: six bundles, one process.
            args = ["send", "ipn:2.5", str(a), str(b), "--repeat", "2", "--json"]
            assert dcis([*args, "--socket", s1]) == 0
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"l1\nl2\n")))
            assert dcis(["send", "ipn:2.5", "--lines", "--socket", s1]) == 0

        await trio.to_thread.run_sync(sync_part)
        out = capsys.readouterr().out.splitlines()
        sent = [json.loads(line) for line in out[:4]]
        assert [(d["payload"], d["size"]) for d in sent] == [
            (str(a), 6),
            (str(a), 6),
            (str(b), 256),
            (str(b), 256),
        ]
        assert len(out) == 6
        keys = [d["bundle_key"] for d in sent] + out[4:]
        await poll_until(lambda: n2.status()["stored"] == 6, timeout_s=30)

        def listing() -> None:
            assert dcis(["bundles", "--json", "--socket", s2]) == 0
            assert dcis(["bundles", "--limit", "2", "--socket", s2]) == 0

        await trio.to_thread.run_sync(listing)
        lines = capsys.readouterr().out.splitlines()
        doc = json.loads(lines[0])
        assert doc["total"] == 6
        assert sorted(x["key"] for x in doc["bundles"]) == sorted(keys)
        assert {x["destination"] for x in doc["bundles"]} == {"ipn:2.5"}
        assert {x["from"] for x in doc["bundles"]} == {1}
        assert lines[1] == "6 bundle(s) stored, 2 shown"
        assert len(lines) == 4

        def receive_and_ping() -> None:
            assert (
                dcis(["recv", "ipn:2.5", "--count", "6", "--json", "--socket", s2]) == 0
            )
            # The echo endpoint answers ping; recv may not take it over.
            assert dcis(["recv", "ipn:2.7", "--count", "1", "--socket", s2]) == 2
            args = ["ping", "2", "--count", "2", "--interval", "0", "--json"]
            assert dcis([*args, "--socket", s1]) == 0
            # Nothing more for ipn:2.5: --timeout with --count unmet fails.
            assert (
                dcis(
                    [
                        "recv",
                        "ipn:2.5",
                        "--count",
                        "1",
                        "--timeout",
                        "0.2",
                        "--socket",
                        s2,
                    ]
                )
                == 1
            )
            with Client(s2) as c:
                assert c.bundles()["total"] == 0

        await trio.to_thread.run_sync(receive_and_ping)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    got = [json.loads(line) for line in lines[:6]]
    assert sorted(g["bundle_key"] for g in got) == sorted(keys)
    pings = [json.loads(line) for line in lines[6:9]]
    assert [p.get("seq") for p in pings[:2]] == [0, 1]
    assert pings[2]["summary"]["sent"] == 2
    assert pings[2]["summary"]["received"] == 2
    err = captured.err.splitlines()
    assert err[0].startswith("error: endpoint ipn:2.7 is this node's echo service")
    assert err[1] == "error: timed out after 0 of 1 bundle(s)"


async def test_ping_prints_its_summary_on_ctrl_c(tmp_path: Path) -> None:
    c1, c2 = pair(tmp_path)
    s1 = str(tmp_path / "n1.sock")
    out_file, err_file = tmp_path / "out", tmp_path / "err"
    argv = ["ping", "99", "--timeout", "600", "--json", "--socket", s1]
    async with open_node(c1) as n1, open_node(c2):
        # Node 99 is nobody's neighbour: the echo request waits in node 1's
        # store, and ping waits for it until interrupted.
        with out_file.open("wb") as out, err_file.open("wb") as err:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "dcis.tools.cli", *argv],
                cwd=ROOT,
                stdout=out,
                stderr=err,
            )
        try:
            await poll_until(lambda: n1.status()["stored"] == 1, timeout_s=60)
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(60):
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 130, err_file.read_text()
    assert "Traceback" not in err_file.read_text()
    summary = json.loads(out_file.read_text().splitlines()[-1])["summary"]
    assert summary == {"sent": 1, "received": 0, "loss_percent": 100.0}
