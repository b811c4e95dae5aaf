"""The built wheel installs exactly one top-level package, ``dcis`` (issue 15):
a library embedded in flight software must not bring modules named ``tools``
or ``crypto`` next to the host program's own."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOPS = ("dtn", "crypto", "consensus", "dfs", "tools")


@pytest.mark.slow
def test_wheel_installs_only_dcis(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("dcis-*.whl")
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    py = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [
                str(py),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    before = {p.name for p in site.iterdir()}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    added = {p.name for p in site.iterdir()} - before
    packages = {n for n in added if not n.endswith(".dist-info") and n != "__pycache__"}
    assert packages == {"dcis"}, sorted(added)
    # Every module of every top-level folder is in the wheel, under dcis.
    installed = {p.relative_to(site / "dcis") for p in (site / "dcis").rglob("*.py")}
    for top in TOPS:
        for src in (ROOT / top).rglob("*.py"):
            assert Path(top) / src.relative_to(ROOT / top) in installed, src
    assert not (site / "dcis" / "__init__.py").exists()  # namespace package
    # The demo's contact plans travel with the module that reads them.
    shipped = {p.name for p in (site / "dcis" / "tools" / "plans").glob("*.ionrc")}
    assert shipped == {p.name for p in (ROOT / "tools" / "plans").glob("*.ionrc")}
    # Found in the installed copy (no source tree on the path), and the old
    # top-level names are not.
    probe = (
        "import importlib.util as u; "
        "print(list(u.find_spec('dcis').submodule_search_locations)); "
        "print([u.find_spec(n) for n in ('dtn', 'crypto', 'consensus', 'dfs', 'tools')])"
    )
    out = subprocess.run(
        [str(py), "-I", "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.splitlines()
    assert out == [repr([str(site / "dcis")]), repr([None] * 5)]
