"""``make demo`` (tools/demo.py, tools/demo_stack.py) does what it prints.

The two testbed parts run real ``dtn-node`` daemons over loopback UDP
behind the link emulator for about a minute each (marked slow; no timing
assertions: each of the demo's checks polls up to its own generous bound).
The summary and the plans are checked without daemons.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dcis.dtn.storage.plan_files import load_plan
from dcis.tools import demo, demo_stack


def test_summary_passes_only_when_every_check_passed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert demo.summary([("a", True), ("b", True)], 1.0)
    out = capsys.readouterr().out
    assert "PASS  a" in out
    assert "PASS: all 2 checks passed" in out
    assert not demo.summary([("a", True), ("b", False)], 1.0)
    out = capsys.readouterr().out
    assert "FAIL  b" in out
    assert "FAIL: 1 of 2 checks failed" in out


def test_wire_intro_round_trips_and_refuses_a_corrupted_copy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert demo.wire_intro()
    assert "a corrupted copy is refused" in capsys.readouterr().out


def test_stack_plan_cuts_the_two_sides_only_in_the_window() -> None:
    plan = load_plan(demo_stack.PLAN)
    assert sorted(plan.nodes) == list(demo_stack.NODES)
    cut, heal = demo_stack.CUT_S, demo_stack.HEAL_S

    def in_contact(a: int, b: int, at_s: float) -> bool:
        return any(
            c.frm == a and c.to == b and c.start_s <= at_s < c.end_s
            for c in plan.contacts
        )

    middle = (cut + heal) / 2
    for a in demo_stack.NODES:
        for b in demo_stack.NODES:
            if a == b:
                continue
            across = (a in demo_stack.SMALL) != (b in demo_stack.SMALL)
            assert in_contact(a, b, cut - 1)
            assert in_contact(a, b, heal + 1)
            assert in_contact(a, b, middle) != across, (a, b)
    assert demo_stack.CRASHED in demo_stack.SMALL
    assert demo_stack.WRITER in demo_stack.SMALL
    assert demo_stack.READER in demo_stack.BIG


@pytest.mark.slow
async def test_delivery_part_delivers_every_bundle_once() -> None:
    checks = await demo.run_part("delivery", demo.delivery)
    assert checks == [(checks[0][0], True)], checks


@pytest.mark.slow
async def test_stack_part_passes_every_check(tmp_path: Path) -> None:
    checks = await demo_stack.run_stack(tmp_path / "tb")
    assert [what for what, _ in checks] == [
        "membership: every node's view converges to 6 alive",
        "log: writes on both sides of a cut, one state everywhere after the heal",
        "membership: the killed node is seen dead",
        "object store: 3-of-6 object read back after 3 holders are killed",
    ]
    failed = [what for what, ok in checks if not ok]
    assert not failed, (failed, _logs(tmp_path / "tb"))


def _logs(workdir: Path) -> str:
    """The daemons' last log lines, for a failure message."""
    out = []
    for log in sorted(workdir.glob("node*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        out.append(f"{log.name}: " + "\n".join(lines[-5:]))
    return "\n".join(out)
