"""node.toml ``[dtn_routes]`` and the ``no_route`` log line (issue 17)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dcis.dtn.runtime import NodeConfig, open_node
from dcis.dtn.runtime.config import ConfigError, config_from_dict


def test_dtn_routes_parsed_and_checked() -> None:
    cfg = config_from_dict({"node": 2, "dtn_routes": {"dtn://ground/": 1}})
    assert cfg.dtn_routes == {"dtn://ground/": 1}
    for bad in (
        {"dtn://ground/x": 1},
        {"ipn:1.0": 1},
        {"dtn://g/": 0},
        {"dtn://g/": "1"},
    ):
        with pytest.raises(ConfigError, match=r"^dtn_routes: "):
            config_from_dict({"node": 2, "dtn_routes": bad})


async def test_a_waiting_bundle_is_logged_at_info_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dcis.dtn.node")
    cfg = NodeConfig(node=1, dtn_routes={"dtn://ground/": 3})
    async with open_node(cfg) as n1:
        key = await n1.send("dtn://ground/inbox", b"x")
        with pytest.raises(ValueError, match="no route to dtn://moon/x"):
            await n1.send("dtn://moon/x", b"x")
    lines = [
        r
        for r in caplog.records
        if r.getMessage() == "no_route" and r.levelno == logging.INFO
    ]
    assert len(lines) == 1
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["bundle"] == key
    assert "node 3" in fields["reason"]
