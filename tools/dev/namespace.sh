#!/usr/bin/env bash
# PENDING MIGRATION (issue 15, item 3): not applied yet. Proven on the
# integrated tree of stop 9 in a scratch clone (make lint clean; 1,672 tests of
# unit/property/interop/vectors/multiprocess passed). Run once on main, then
# delete this file in the same commit.
# After it: .venv/bin/ruff check --fix . && .venv/bin/ruff format . (it left 28
# import-sorting fixes on that trial).
# One import namespace (issue 15, item 3): the wheel installs only `dcis`
# (dcis.dtn, dcis.crypto, dcis.consensus, dcis.dfs, dcis.tools), built from the
# repository's existing top-level folders; the folder layout does not change.
#
# Run at the root of a checkout:   bash tools/dev/namespace.sh
# then:                            make venv   (re-installs: pyproject changed)
#                                  make lint && make test
# Idempotent: a second run changes nothing.
#
# What it does:
#  1. rewrites every reference to a module of ours, in code and strings alike:
#     `from dtn.x import`, `import crypto`, "tools.cli:main",
#     `python -m tools.demo`, "dtn.node.N" logger names, module names in docs,
#     import-linter contracts, mypy config  ->  dcis.dtn.x, dcis.tools.cli, ...
#     Only names of real subpackages/modules are rewritten (`dtn.x` where x is
#     a child of dtn/), so EID strings like "dtn:none" or file names like
#     "dtn.db" are left alone;
#  2. packaging: a small setup.py maps dcis.<top> -> <top>/ (package-dir) and
#     finds the subpackages at build time, so a new subpackage is never missed;
#     `dcis` itself is an implicit namespace package (no folder for it);
#  3. mypy and import-linter cannot follow setuptools' editable finder, so
#     they read a shim: .typing/dcis/<top> -> ../../<top> (committed
#     symlinks); mypy_path=.typing, and PYTHONPATH=.typing for lint-imports;
#  4. tests: rootdir stays on sys.path (tests import tests.runtime.conftest),
#     so tests/conftest.py installs an import blocker that makes a top-level
#     `import dtn` (the second path to the same module) fail loudly;
#  5. a slow test builds the wheel and installs it into an empty venv: exactly
#     one top-level package, dcis;
#  6. ruff fixes import order (dcis is first-party, sorts before tests) and
#     formats the rewritten files.
set -euo pipefail
test -f pyproject.toml && test -d dtn && test -d tools || {
    echo "error: run at the root of a DCiS checkout" >&2
    exit 2
}
PY=${PYTHON:-$(test -x .venv/bin/python && echo .venv/bin/python || command -v python3)}

"$PY" - <<'PYEOF'
from __future__ import annotations

import re
import subprocess
from pathlib import Path

TOPS = ("dtn", "crypto", "consensus", "dfs", "tools")
ROOT = Path(".")


def children(top: str) -> set[str]:
    out = set()
    for p in (ROOT / top).iterdir():
        if p.is_dir() and (p / "__init__.py").exists():
            out.add(p.name)
        elif p.suffix == ".py" and p.stem != "__init__":
            out.add(p.stem)
    return out


KIDS = {t: children(t) for t in TOPS if (ROOT / t).is_dir()}
# `dtn.bpv7`, `tools.cli`, ... not preceded by a word char, '.', '/', '-'
# (so `dcis.dtn.bpv7`, `spec/dtn.md`, `x-dtn.y` stay as they are).
DOTTED = re.compile(
    r"(?<![\w./\-])("
    + "|".join(KIDS)
    + r")\.("
    + "|".join(sorted({k for v in KIDS.values() for k in v}, key=len, reverse=True))
    + r")\b"
)
FROM_TOP = re.compile(r"^(\s*)from (" + "|".join(KIDS) + r") import ", re.M)
IMPORT_TOP = re.compile(r"^(\s*)import (" + "|".join(KIDS) + r")\s*$", re.M)


def rewrite(text: str) -> str:
    def dotted(m: re.Match[str]) -> str:
        top, kid = m.group(1), m.group(2)
        return f"dcis.{top}.{kid}" if kid in KIDS[top] else m.group(0)

    text = DOTTED.sub(dotted, text)
    text = FROM_TOP.sub(r"\1from dcis.\2 import ", text)
    text = IMPORT_TOP.sub(r"\1from dcis import \2", text)
    return text


SKIP_DIRS = {"dev", ".git", ".venv", ".typing", "build", ".mypy_cache", ".ruff_cache", ".hypothesis"}
files = []
for p in ROOT.rglob("*"):
    if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in p.parts):
        continue
    if p.is_symlink() or not p.is_file():
        continue
    if p.suffix in (".py", ".toml", ".md", ".sh", ".cfg", ".ini") or p.name in (
        "Makefile",
        "run",
    ):
        files.append(p)
changed = []
for p in files:
    old = p.read_text(encoding="utf-8")
    new = rewrite(old)
    if new != old:
        p.write_text(new, encoding="utf-8")
        changed.append(p)

# -- pyproject.toml ----------------------------------------------------------
pp = ROOT / "pyproject.toml"
t = pp.read_text(encoding="utf-8")
quoted = lambda name: f'"{name}"'  # noqa: E731


def relist(text: str, key: str, fn) -> str:
    """Rewrite the quoted items of every `key = [...]` line."""

    def one(m: re.Match[str]) -> str:
        items = re.sub(r'"([^"]+)"', lambda q: quoted(fn(q.group(1))), m.group(2))
        return m.group(1) + items

    return re.sub(rf"(?m)^({key}\s*=\s*)(\[[^\]]*\])", one, text)


def ns(name: str) -> str:
    head = name.split(".")[0]
    return f"dcis.{name}" if head in KIDS else name


# import-linter: one root package; module names in every contract.
t = relist(t, "root_packages", lambda n: "dcis" if n in KIDS else n)
t = re.sub(
    r'(?m)^(root_packages\s*=\s*)\["dcis"(?:,\s*"dcis")*\]', r'\1["dcis"]', t
)
for key in ("layers", "source_modules", "forbidden_modules", "containers", "modules"):
    t = relist(t, key, ns)
# mypy: check the shim (see .typing below).
t = re.sub(r'(?m)^files\s*=\s*\[[^\]]*\]\n', 'files = [".typing/dcis"]\nmypy_path = ".typing"\nexplicit_package_bases = true\n', t) if 'mypy_path = ".typing"' not in t else t
# packaging: setup.py maps the namespace; drop packages.find.
t = re.sub(r"(?ms)^\[tool\.setuptools\.packages\.find\]\n.*?(?=^\[|\Z)", "", t)
# ruff: the shim's symlinks are not more sources; dcis is first-party.
if '".typing"' not in t.split("[tool.ruff]")[1].split("[tool.ruff.lint]")[0]:
    t = re.sub(
        r'(?m)^(extend-exclude\s*=\s*\[)([^\]]*)\]',
        lambda m: m.group(1) + m.group(2).rstrip() + ', ".typing"]',
        t,
        count=1,
    )
if "[tool.ruff.lint.isort]" not in t:
    t = t.replace(
        "[tool.mypy]",
        '[tool.ruff.lint.isort]\nknown-first-party = ["dcis", "tests"]\n\n[tool.mypy]',
        1,
    )
pp.write_text(t, encoding="utf-8")

# -- Makefile: import-linter (grimp) cannot walk the editable namespace either;
# it reads the same shim.
mk = ROOT / "Makefile"
m = mk.read_text(encoding="utf-8")
if "PYTHONPATH=.typing" not in m:
    m = m.replace("\t$(VENV)/bin/lint-imports", "\tPYTHONPATH=.typing $(VENV)/bin/lint-imports")
    mk.write_text(m, encoding="utf-8")

# -- setup.py: package-dir and the package list, found at build time ---------
(ROOT / "setup.py").write_text(
    '''"""Packaging glue that pyproject.toml cannot say: every top-level folder
(dtn, crypto, consensus, dfs, tools) is installed under one namespace, dcis
(``package-dir``), and its subpackages are found when the wheel is built.
The folder layout stays as it is; ``dcis`` itself is an implicit namespace
package, so the wheel adds exactly one top-level name to site-packages."""

from setuptools import find_packages, setup

TOPS = ("dtn", "crypto", "consensus", "dfs", "tools")

setup(
    package_dir={f"dcis.{top}": top for top in TOPS},
    packages=[
        f"dcis.{name}"
        for name in find_packages(include=[f"{top}" for top in TOPS] + [f"{top}.*" for top in TOPS])
    ],
)
''',
    encoding="utf-8",
)

# -- .typing: the mypy shim ----------------------------------------------------
shim = ROOT / ".typing" / "dcis"
shim.mkdir(parents=True, exist_ok=True)
for top in KIDS:
    link = shim / top
    if not link.is_symlink():
        link.symlink_to(Path("..") / ".." / top)

# -- tests/conftest.py: no second import path --------------------------------
conf = ROOT / "tests" / "conftest.py"
c = conf.read_text(encoding="utf-8")
if "_OneNamespace" not in c:
    c += '''

class _OneNamespace(importlib.abc.MetaPathFinder):
    """The repository root is on sys.path (tests import ``tests.*``), which
    would make ``import dtn`` load a second copy of ``dcis.dtn``: refuse it."""

    NAMES = frozenset({"dtn", "crypto", "consensus", "dfs", "tools"})

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.split(".")[0] in self.NAMES:
            raise ModuleNotFoundError(
                f"import dcis.{fullname}, not {fullname} (one namespace: dcis)",
                name=fullname,
            )
        return None


sys.meta_path.insert(0, _OneNamespace())
'''
    c = c.replace("import os\n", "import importlib.abc\nimport os\nimport sys\n", 1)
    conf.write_text(c, encoding="utf-8")

# -- the wheel test ----------------------------------------------------------
wt = ROOT / "tests" / "unit" / "test_wheel_namespace.py"
if not wt.exists():
    wt.write_text(
        '''"""The built wheel installs exactly one top-level package, ``dcis`` (issue 15):
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
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("dcis-*.whl")
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    py = env / "bin" / "python"
    site = Path(subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    before = {p.name for p in site.iterdir()}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True,
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
    # Found in the installed copy (no source tree on the path), and the old
    # top-level names are not.
    probe = (
        "import importlib.util as u; "
        "print(list(u.find_spec('dcis').submodule_search_locations)); "
        "print([u.find_spec(n) for n in ('dtn', 'crypto', 'consensus', 'dfs', 'tools')])"
    )
    out = subprocess.run(
        [str(py), "-I", "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout.splitlines()
    assert out == [repr([str(site / "dcis")]), repr([None] * 5)]
''',
        encoding="utf-8",
    )

for p in changed:
    print(f"rewrote {p}")
PYEOF

# Import order (dcis.* is first-party and sorts before tests.*) and layout.
if test -x .venv/bin/ruff; then
    .venv/bin/ruff check --quiet --fix --select I . || true
    .venv/bin/ruff format --quiet .
fi
echo "namespace: done. Now: make venv (re-install), make lint, make test" >&2
