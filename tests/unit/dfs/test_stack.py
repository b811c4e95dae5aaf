"""dcis.dfs.stack: the daemon factory of membership + log + object store."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcis.dfs.stack import build, config_from_env, factory, member_keys, share_dir


def test_factory_builds_the_three_services_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DCIS_DFS_DIR", str(tmp_path))
    assert share_dir(3) == tmp_path / "node-3"
    services = factory(3, 1)
    assert [s.service for s in services] == [16, 17, 18]
    assert (tmp_path / "node-3").is_dir()
    m, log, dfs = build(4, tmp_path / "x")
    assert member_keys(m) == {}  # nothing verified before the service starts
    assert dfs.membership is m
    assert dfs.log is log
    assert m._resources.store_total_bytes > 0


def test_default_dir_follows_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DCIS_DFS_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert share_dir(7) == tmp_path / "dcis" / "dfs" / "node-7"


def test_maintenance_period_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DCIS_DFS_MAINTENANCE_MS", raising=False)
    assert config_from_env().maintenance_interval_ms == 60_000
    monkeypatch.setenv("DCIS_DFS_MAINTENANCE_MS", "2000")
    assert config_from_env().maintenance_interval_ms == 2000
    monkeypatch.setenv("DCIS_DFS_MAINTENANCE_MS", "soon")
    with pytest.raises(ValueError, match="DCIS_DFS_MAINTENANCE_MS"):
        config_from_env()


def test_fetch_slack_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DCIS_DFS_FETCH_SLACK_MS", raising=False)
    monkeypatch.delenv("DCIS_DFS_MAINTENANCE_MS", raising=False)
    assert config_from_env().fetch_slack_ms == 30_000
    monkeypatch.setenv("DCIS_DFS_FETCH_SLACK_MS", "2000")
    monkeypatch.setenv("DCIS_DFS_MAINTENANCE_MS", "5000")
    config = config_from_env()
    assert (config.fetch_slack_ms, config.maintenance_interval_ms) == (2000, 5000)
    for bad in ("soon", "-1"):
        monkeypatch.setenv("DCIS_DFS_FETCH_SLACK_MS", bad)
        with pytest.raises(ValueError, match="DCIS_DFS_FETCH_SLACK_MS"):
            config_from_env()
