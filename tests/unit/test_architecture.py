"""Sans-I/O rule (spec/design.md): protocol cores never read a clock, open a
socket, use trio or the global random generator. The simulator is held to the
same rule, since a seed must replay a run byte for byte.

import-linter (``make lint``) checks the layer arrows; this AST test catches
what it cannot: ``time``/``socket`` imports, file and OS access (``os``,
``sqlite3``, ``pathlib``, ``shutil``, ``tempfile``, the builtin ``open()``:
disk I/O belongs to the edge modules in ``dcis.dtn.storage``) and calls of ``random.<fn>()`` on the module-level
generator. Imports under ``if TYPE_CHECKING:`` only name types and are
allowed (e.g. ``Path`` in a signature of a driver-facing function).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_DIRS = [
    "dtn/bpv7",
    "dtn/routing",
    "dtn/agent",
    "dtn/node",
    "dtn/bpsec",
    "dtn/cl",
    "dtn/cl/tcpcl4",
    "dtn/appapi",
    "dtn/sim",
    "crypto",
    "dfs/core",
    "consensus/log",
    "consensus/membership",
]
# Pure modules at the top of dtn/ that the cores import (no folder of their own).
CORE_FILES = ["dtn/errors.py", "dtn/pieces.py", "dtn/time.py"]
BANNED_MODULES = {
    "time",
    "socket",
    "trio",
    "asyncio",
    "selectors",
    "os",
    "sqlite3",
    "pathlib",
    "shutil",
    "tempfile",
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def core_files() -> list[Path]:
    files: list[Path] = []
    for d in CORE_DIRS:
        files.extend(sorted((ROOT / d).rglob("*.py")))
    files.extend(ROOT / f for f in CORE_FILES)
    return files


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and _is_type_checking(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    found: list[str] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in BANNED_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            top = node.module.split(".")[0]
            if top in BANNED_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if top == "random" and any(a.name != "Random" for a in node.names):
                found.append(
                    f"line {node.lineno}: from random import (global generator)"
                )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "random"
            and node.func.attr != "Random"
        ):
            found.append(
                f"line {node.lineno}: random.{node.func.attr}() uses the global generator"
            )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "open"
        ):
            found.append(f"line {node.lineno}: open() touches a file")
    return found


def test_core_directories_exist() -> None:
    # Guards the test itself: if the tree moved, this must fail, not pass vacuously.
    assert (ROOT / "dtn" / "agent").is_dir()
    assert core_files(), "no core modules found"


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_is_sans_io(path: Path) -> None:
    assert violations(path) == []


def test_checker_catches_a_clock_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nimport random\nx = random.random()\n", encoding="utf-8"
    )
    assert len(violations(bad)) == 2


def test_checker_catches_disk_access_but_not_type_names(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "import os.path\n"
        "import sqlite3\n"
        "from pathlib import Path\n"
        "if TYPE_CHECKING:\n"
        "    from pathlib import PurePath\n"
        "    import os\n"
        "data = open('x').read()\n",
        encoding="utf-8",
    )
    assert [v.split(":")[0] for v in violations(bad)] == [
        "line 2",
        "line 3",
        "line 4",
        "line 8",
    ]
