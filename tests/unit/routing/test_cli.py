"""`dcis route` and `dcis plan`: the issue's JSON, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.storage.plan_files import load_plan
from dcis.tools.cli import main

PLANS = Path(__file__).resolve().parents[2] / "vectors" / "plans"
TUTORIAL = str(PLANS / "hdtn_cgrTutorial.json")


def route_1_to_5_json(capsys: pytest.CaptureFixture[str], *extra: str) -> Any:
    """`dcis route --json` from 1 to 5 over the tutorial plan with ``extra``; it must exit 0."""
    args = ["route", "--plan", TUTORIAL, "--from", "1", "--to", "5", *extra, "--json"]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_route_json_is_exactly_the_issue_shape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = route_1_to_5_json(capsys, "--routes", "3")
    assert doc == {
        "routes": [
            {
                "arrival": 3,
                "hops": [1, 3, 4, 5],
                "contacts": [[1, 3, 0, 60], [3, 4, 0, 30], [4, 5, 0, 10]],
            },
            {
                "arrival": 4,
                "hops": [1, 2, 3, 4, 5],
                "contacts": [
                    [1, 2, 0, 60],
                    [2, 3, 0, 60],
                    [3, 4, 0, 30],
                    [4, 5, 0, 10],
                ],
            },
            {"arrival": 11, "hops": [1, 5], "contacts": [[1, 5, 10, 20]]},
        ]
    }


def test_route_at_and_size(capsys: pytest.CaptureFixture[str]) -> None:
    # ready at 12: D-E 0-10 is gone, C-D still open; 125000 bytes take 1 s per hop at 1 Mbit/s
    (route,) = route_1_to_5_json(capsys, "--at", "12", "--size", "125000")["routes"]
    assert route["hops"] == [1, 5]
    assert route["arrival"] == 12 + 1 + 1


def test_unreachable_prints_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    # No route is a failed operation: exit 1 (issue 15), with the same output.
    assert (
        main(["route", "--plan", TUTORIAL, "--from", "1", "--to", "99", "--json"]) == 1
    )
    assert json.loads(capsys.readouterr().out) == {"routes": []}
    assert main(["route", "--plan", TUTORIAL, "--from", "1", "--to", "99"]) == 1
    assert "no route" in capsys.readouterr().out


def test_bad_plan_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.ionrc"
    bad.write_text("a contact +0 +10 1 2 100\na contact +0 +10 1 two 100\n")
    assert main(["route", "--plan", str(bad), "--from", "1", "--to", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert f"{bad}:2:" in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["route", "--plan", TUTORIAL, "--from", "1", "--to", "5", "--routes", "0"])
    assert info.value.code == 2
    capsys.readouterr()


def test_plan_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "show", str(PLANS / "hdtn_10nodes.json"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["contacts"] == 362
    assert info["nodes"][:4] == [10, 20, 30, 40]
    assert len(info["warnings"]) == 6
    assert main(["plan", "show", str(PLANS / "ion_bench-cgr_global.ionrc")]) == 0
    assert "8 contacts, 4 ranges, 4 nodes" in capsys.readouterr().out


def test_plan_plot_writes_a_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plan.png"
    assert main(["plan", "plot", TUTORIAL, "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()


def test_plan_convert_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ion = tmp_path / "t.ionrc"
    back = tmp_path / "t.json"
    assert main(["plan", "convert", TUTORIAL, "-o", str(ion)]) == 0
    assert main(["plan", "convert", str(ion), "-o", str(back)]) == 0
    assert load_plan(back) == load_plan(TUTORIAL)
    capsys.readouterr()
