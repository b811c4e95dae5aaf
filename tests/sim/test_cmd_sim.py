"""``dcis sim``: exact flags, one JSON object, `error:` lines for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.cli import main

PLAN = """\
a contact +0 +100 1 2 100000
a contact +200 +300 2 3 100000
a contact +400 +500 3 4 100000
a range +0 +1000 1 2 1
a range +0 +1000 2 3 1
a range +0 +1000 3 4 1
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    plan = tmp_path / "plan.ionrc"
    plan.write_text(PLAN, encoding="utf-8")
    traffic = tmp_path / "traffic.txt"
    traffic.write_text(
        "# at src dst size [count]\n1 1 4 1000 5\n\n2 4 1 100\n", encoding="utf-8"
    )
    return plan, traffic


def sim_args(plan: Path, traffic: Path, *extra: str) -> list[str]:
    return [
        "sim",
        "--plan",
        str(plan),
        "--seed",
        "3",
        "--duration",
        "1000",
        "--traffic",
        str(traffic),
        *extra,
    ]


@pytest.mark.parametrize(
    ("traffic_text", "extra", "message"),
    [
        ("1 1 4\n", (), "traffic line 1: expected"),
        ("# ok\n1 1 99 10\n", (), "traffic line 2: node 99 is not in the plan"),
        ("1 1 4 10\n", ("--loss", "1.5"), "--loss must be a probability"),
        ("1 1 4 10\n", ("--duration", "-5"), "--duration must be >= 0"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(
    files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    traffic_text: str,
    extra: tuple[str, ...],
    message: str,
) -> None:
    plan, traffic = files
    traffic.write_text(traffic_text, encoding="utf-8")
    assert main([*sim_args(plan, traffic), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert message in err[0]


def test_missing_files_and_bad_plan_are_errors(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan, traffic = files
    assert main(sim_args(tmp_path / "nope.ionrc", traffic)) == 2
    assert capsys.readouterr().err.startswith("error: plan ")
    assert main(sim_args(plan, tmp_path / "nope.txt")) == 2
    assert capsys.readouterr().err.startswith("error: cannot read traffic file")
    plan.write_text("a contact +0 +10 1\n", encoding="utf-8")
    assert main(sim_args(plan, traffic)) == 2
    assert capsys.readouterr().err.startswith("error: plan ")


def test_missing_required_flag_is_an_error_line(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    plan, traffic = files
    with pytest.raises(SystemExit) as exc:
        main(
            ["sim", "--plan", str(plan), "--traffic", str(traffic), "--duration", "10"]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert "--seed" in err[0]
