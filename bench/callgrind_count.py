"""The callgrind side of the per-bundle benches (``send_core.py``,
``receive_core.py``, ``fragment_path.py``): each runs itself again under
``valgrind --tool=callgrind`` with ``--inner``, collecting only inside
``functools.reduce`` (the benches' measured loop) -- user-space
instructions, the same count run after run, where CPU time on a shared
machine moves by tens of percent."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def tree() -> str:
    """The checkout whose ``dcis`` this Python imports."""
    import dcis.dtn

    return str(Path(dcis.dtn.__file__).resolve().parent.parent)


def per_bundle(script: str, name: str) -> tuple[float, int] | None:
    """Run ``script`` with this process's arguments (less ``--callgrind``,
    plus ``--inner``, after which it must print ``bundles N``) under
    callgrind: (instructions per bundle, N), or None (said why) when
    valgrind is missing or the run printed no count."""
    if shutil.which("valgrind") is None:
        print(f"{name}: --callgrind needs valgrind")
        return None
    with tempfile.TemporaryDirectory() as d:
        argv = [a for a in sys.argv[1:] if a != "--callgrind"]
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--toggle-collect=functools_reduce",
                f"--callgrind-out-file={d}/cg.out",
                sys.executable,
                script,
                *argv,
                "--inner",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    done = re.search(r"bundles (\d+)", run.stdout)
    got = re.search(r"Collected : (\d+)", run.stderr)
    if done is None or got is None:
        print(run.stdout + run.stderr)
        return None
    n = int(done.group(1))
    return int(got.group(1)) / n, n
