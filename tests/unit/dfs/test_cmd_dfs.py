"""``dcis put/get/ls/stat/rm`` against the in-memory cluster (the app API
connection replaced by dcis.dfs.testing.AppTransport)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcis.dfs.core.service import DfsConfig
from dcis.dfs.testing import AppTransport, Cluster
from dcis.tools import cli, cmd_dfs


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    c = Cluster(nodes=[1, 2, 3, 4, 5, 6], config=DfsConfig(chunk_size=1000, k=2, n=4))
    monkeypatch.setattr(cmd_dfs, "connect", lambda args, timeout_s: AppTransport(c, 1))
    return c


def test_put_get_ls_stat_rm(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(bytes(range(256)) * 20)
    assert (
        cli.main(["put", str(src), "dir/obj", "--k", "3", "--n", "5", "--socket", "s"])
        == 0
    )
    out = capsys.readouterr().out
    assert "put dir/obj: 5120 bytes, k=3 n=5" in out
    assert "shares placed 5/5" in out
    dst = tmp_path / "out.bin"
    assert cli.main(["get", "dir/obj", "-o", str(dst), "--socket", "s"]) == 0
    assert dst.read_bytes() == src.read_bytes()
    assert cli.main(["get", "dir/obj", "--json", "-o", str(dst), "--socket", "s"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == 5120
    assert cli.main(["ls", "dir/", "--json", "--socket", "s"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["dir/obj"]
    assert cli.main(["ls", "--socket", "s"]) == 0
    assert "3/5  dir/obj" in capsys.readouterr().out
    assert cli.main(["stat", "dir/obj", "--json", "--socket", "s"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["k"], st["n"], st["size"]) == (3, 5, 5120)
    assert len(set(st["holders"])) == 5
    assert all(s["state"] == "ok" for s in st["shares"])
    assert cli.main(["stat", "dir/obj", "--socket", "s"]) == 0
    assert "share   4" in capsys.readouterr().out
    assert cli.main(["rm", "dir/obj", "--socket", "s"]) == 0
    assert "removed dir/obj" in capsys.readouterr().out
    assert cli.main(["get", "dir/obj", "--socket", "s"]) == 2
    assert "error:" in capsys.readouterr().err


def test_bad_input_is_one_error_line(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["put", str(tmp_path / "missing"), "x", "--socket", "s"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read")
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert cli.main(["put", str(f), "x", "--k", "5", "--n", "9", "--socket", "s"]) == 2
    assert "error:" in capsys.readouterr().err
