"""Every DCiS ``node.toml`` in spec/interop.md is one the daemon accepts (issue 17).

The document promises a *working* node.toml for each peer and shared CL;
this parses each TOML block that configures a node (it has ``node =``) with
the daemon's own validator. Key files a block names are created first
(HDTN's format, mode 0600), as a user following the document would.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from dcis.dtn.runtime.config import config_from_dict

SPEC = Path(__file__).resolve().parents[3] / "spec" / "interop.md"
BLOCKS = [
    b
    for b in re.findall(r"^```toml\n(.*?)^```", SPEC.read_text(), re.M | re.S)
    if re.search(r"^node = ", b, re.M)
]


def test_the_document_has_a_node_toml_per_peer_section() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("block", BLOCKS, ids=[str(i) for i in range(len(BLOCKS))])
def test_each_node_toml_is_accepted(block: str, tmp_path: Path) -> None:
    doc = tomllib.loads(block)
    for rule in doc.get("security", {}).get("rules", []):
        for k in ("key_file", "kek_file"):
            if k in rule:
                p = tmp_path / rule[k]
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("ab" * 32)
                p.chmod(0o600)
    cfg = config_from_dict(doc, base_dir=tmp_path)
    assert cfg.node == doc["node"]
    assert cfg.neighbours or "security" in doc
