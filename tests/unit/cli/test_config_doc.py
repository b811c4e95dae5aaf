"""spec/config.md lists every ``node.toml`` key, and only keys the parser
accepts (issue 15): the documentation cannot drift from the code silently."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from dcis.dtn.runtime.config import (
    _TCPCL_INTS,
    LIMIT_KEYS,
    ConfigError,
    config_from_dict,
)
from dcis.dtn.runtime.ltp import _INT_KEYS as LTP_KEYS
from dcis.dtn.runtime.security import SECURITY_KEYS

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "spec" / "config.md").read_text(encoding="utf-8")


def documented() -> dict[str, set[str]]:
    """Section name ('' for the top level) -> keys in its table's first column."""
    out: dict[str, set[str]] = {}
    section = ""
    for line in DOC.splitlines():
        m = re.match(r"## `\[\[?(\w+)(?:\.\w+)?\]?\]`", line)
        if m:
            section = m.group(1)
        elif line.startswith("## Top level"):
            section = ""
        m = re.match(r"\| `(\w+)`(?:, `(\w+)`)? \|", line)
        if m:
            out.setdefault(section, set()).update(g for g in m.groups() if g)
    return out


def accepted() -> dict[str, set[str]]:
    """The key sets config_from_dict checks, read from its source."""
    src = (ROOT / "dtn" / "runtime" / "config.py").read_text(encoding="utf-8")
    out: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(src)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "_check_keys"
        ):
            keys = {
                e.value
                for e in ast.walk(node.args[1])
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            }
            arg = node.args[2]
            if isinstance(arg, ast.Constant):
                section = str(arg.value).rstrip(".")
            elif isinstance(arg, ast.Name) and arg.id == "p" and "node" in keys:
                section = "neighbours"
            else:
                continue
            out[section] = {str(k) for k in keys}
    out["limits"] = set(LIMIT_KEYS)
    out["tcpcl"] = {*_TCPCL_INTS, "tls_cert", "tls_key", "tls_ca", "require_tls"}
    out["ltp"] = set(LTP_KEYS)
    out["security"] = set(SECURITY_KEYS)
    return out


def test_every_key_is_documented_and_every_documented_key_exists() -> None:
    doc, code = documented(), accepted()
    # Tables are keys of the top level; the doc gives them sections instead.
    tables = {s for s in code if s} | {"dtn_routes"}
    assert code[""] - tables == doc[""], "top level"
    for section in sorted(tables - {"dtn_routes"}):
        assert code[section] == doc.get(section), section
    assert "dtn_routes" in DOC


@pytest.mark.parametrize(
    ("section", "key"),
    sorted((s, k) for s, keys in documented().items() for k in keys),
)
def test_the_parser_knows_each_documented_key(section: str, key: str) -> None:
    bogus = object()  # never valid: the parser must object to the value, not the key
    base: dict[str, object] = {"node": 1}
    if section == "":
        doc = {**base, key: bogus} if key not in ("node", "eid") else {key: bogus}
    elif section == "neighbours":
        doc = {**base, "neighbours": [{"node": 2, "address": "h:1", key: bogus}]}
    else:
        doc = {**base, section: {key: bogus}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    assert "unknown key" not in str(info.value), str(info.value)
