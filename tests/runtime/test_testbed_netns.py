"""dcis testbed with every daemon in its own network namespace (optional:
skipped where ``ip netns`` is not permitted)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dcis.tools.cli import main as dcis
from tests.runtime.conftest import write_plan


def _netns_permitted() -> bool:
    name = f"dcisprobe{os.getpid()}"
    try:
        r = subprocess.run(
            ["ip", "netns", "add", name], capture_output=True, check=False
        )
    except OSError:
        return False
    if r.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return True


def _our_namespaces() -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    return [
        ln.split()[0] for ln in out.splitlines() if ln.startswith(f"dcis{os.getpid()}n")
    ]


@pytest.mark.skipif(not _netns_permitted(), reason="ip netns not permitted here")
def test_testbed_in_namespaces_crosses_two_hops_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(
        tmp_path / "p.ionrc",
        [
            "a contact +0 +60 1 2 10000000",
            "a contact +0 +60 2 1 10000000",
            "a contact +0 +60 2 3 10000000",
            "a contact +0 +60 3 2 10000000",
        ],
    )
    traffic = tmp_path / "t.txt"
    traffic.write_text("0.5 1 3 500 5\n", encoding="utf-8")
    rc = dcis(
        [
            "testbed",
            "--plan",
            str(plan),
            "--traffic",
            str(traffic),
            "--duration",
            "8",
            "--netns",
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["delivered"] == 5
    assert summary["emulator"]["forwarded"] >= 10  # every hop went through it
    assert _our_namespaces() == []
