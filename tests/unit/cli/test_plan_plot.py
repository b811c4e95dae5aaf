"""`dcis plan plot` (issue 15): rows per node pair, format from the extension,
pages, h:mm axis. What the pictures look like is checked by eye (the closing
note of issue 15 describes them); these tests hold the parts a program can."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan, format_ionrc
from dcis.dtn.sim.scenarios import leo_constellation
from dcis.tools.cli import main
from dcis.tools.cmd_plan import _hm, plot_rows

PNG = b"\x89PNG\r\n\x1a\n"


def test_symmetric_pairs_share_a_row_and_asymmetric_ones_do_not() -> None:
    plan = ContactPlan(
        [
            Contact(1, 2, 0.0, 10.0, 100.0),
            Contact(2, 1, 0.0, 10.0, 100.0),
            Contact(2, 3, 0.0, 10.0, 100.0),
            Contact(3, 2, 5.0, 10.0, 100.0),
        ],
        [Range(1, 2, 0.0, 10.0, 0.5)],
    )
    order, windows = plot_rows(plan)
    assert order == [(1, 2, True), (2, 3, False), (3, 2, False)]
    assert windows[(3, 2, False)] == [(5.0, 10.0, 100.0)]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0:00"),
        (59.0, "0:00"),
        (119.0, "0:01"),
        (3600.0, "1:00"),
        (86_400.0, "24:00"),
        (-90.0, "-0:01"),
    ],
)
def test_time_axis_is_hours_and_minutes(seconds: float, text: str) -> None:
    assert _hm(seconds) == text


def test_walker_plan_pages_and_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    plan_file = tmp_path / "walker.ionrc"
    plan_file.write_text(
        format_ionrc(leo_constellation(planes=6, per_plane=11, duration_s=6 * 3600)),
        encoding="utf-8",
    )
    # 66 satellites: 132 linked pairs, one row each; 50 rows a page -> 3 pictures.
    out = tmp_path / "w.png"
    args = ["plan", "plot", str(plan_file), "--max-rows", "50", "--dpi", "30"]
    assert main([*args, "-o", str(out)]) == 0
    pages = sorted(tmp_path.glob("w-*.png"))
    assert [p.name for p in pages] == ["w-1.png", "w-2.png", "w-3.png"]
    assert all(p.read_bytes()[:8] == PNG for p in pages)
    assert main([*args, "--ground", "1,2", "-o", str(tmp_path / "w.svg")]) == 0
    assert b"<svg" in (tmp_path / "w-1.svg").read_bytes()[:400]
    capsys.readouterr()
    for bad in ("w.txt", "w"):
        assert main([*args, "-o", str(tmp_path / bad)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("error: -o "), err
        assert ".png" in err[0]
        assert not (tmp_path / bad).exists()
