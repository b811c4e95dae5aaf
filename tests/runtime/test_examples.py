"""The shipped embedding example runs and delivers what it sends."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embedded_node.py"


async def test_embedded_node_example_delivers_every_frame(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("embedded_node_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = await mod.main(tmp_path, count=4)
    assert got == [f"telemetry frame {i}".encode() for i in range(4)]
