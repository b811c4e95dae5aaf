"""``dcis sim``: exact flags, one JSON object, `error:` lines for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dcis.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]

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


def test_json_prints_one_object_with_the_issue_keys(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    plan, traffic = files
    assert main([*sim_args(plan, traffic), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    obj = json.loads(out)
    for key in (
        "delivered",
        "expired",
        "pending",
        "sent",
        "latency_p50_s",
        "latency_p99_s",
        "trace_sha256",
    ):
        assert key in obj
    # 5 bundles 1 -> 4 over three store-and-forward hops; the one 4 -> 1 has no contact.
    assert (obj["sent"], obj["delivered"], obj["pending"], obj["expired"]) == (
        6,
        5,
        1,
        0,
    )
    assert obj["latency_p50_s"] >= 400  # the last hop opens at 400 s
    # Added later, never in place of an existing key: nothing deleted here.
    assert (obj["deleted"], obj["deleted_reasons"], obj["lost"]) == (0, {}, 0)
    assert len(obj["trace_sha256"]) == 64


def test_lifetime_and_loss_change_the_outcome(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    plan, traffic = files
    assert main([*sim_args(plan, traffic), "--json", "--lifetime", "300"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert (obj["delivered"], obj["expired"]) == (0, 6)
    assert main([*sim_args(plan, traffic), "--json", "--loss", "0.5"]) == 0
    lossy = json.loads(capsys.readouterr().out)
    assert lossy["lost_in_flight"] > 0
    assert lossy["delivered"] == 5  # hop-by-hop retransmission inside the contacts


def test_readable_summary_and_trace_file(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan, traffic = files
    trace = tmp_path / "trace.txt"
    assert main([*sim_args(plan, traffic), "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "delivered 5" in out
    assert "lost 0, deleted 0\n" in out
    assert "sha256" in out
    kinds = {line.split()[1] for line in trace.read_text().splitlines()}
    assert {"send", "transmit", "receive", "deliver"} <= kinds


def test_same_seed_same_json_across_processes_and_hash_seeds(
    files: tuple[Path, Path],
) -> None:
    # Determinism must not depend on PYTHONHASHSEED (set/dict order of strings).
    plan, traffic = files
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "dcis.tools.cli",
                *sim_args(plan, traffic),
                "--json",
                "--loss",
                "0.3",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
            check=True,
        )
        outs.append(json.loads(proc.stdout))
    assert outs[0] == outs[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dcis.tools.cli",
            *sim_args(plan, traffic)[:4],
            "4",
            *sim_args(plan, traffic)[5:],
            "--json",
            "--loss",
            "0.3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    assert (
        json.loads(proc.stdout)["trace_sha256"] != outs[0]["trace_sha256"]
    )  # another seed, another run


def test_bundles_wait_in_the_store_for_the_next_hops_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The testbed's twin (test_dcis_testbed_prints_the_sim_summary_keys) on
    # virtual time, where the wait can be asserted exactly: 1 -> 3 is sent at
    # t=0.2 and 2 -> 3 opens only at t=2.
    plan = tmp_path / "p.ionrc"
    plan.write_text(
        "a contact +0 +30 1 2 1000000\n"
        "a contact +0 +30 2 1 1000000\n"
        "a contact +2 +30 2 3 1000000\n"
        "a contact +2 +30 3 2 1000000\n"
        "a range +0 +30 1 2 0\na range +0 +30 2 3 0\n"
    )
    traffic = tmp_path / "t.txt"
    traffic.write_text("0.2 1 3 500 4\n")
    assert main(sim_args(plan, traffic, "--duration", "10", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["delivered"] == 4
    assert out["latency_p50_s"] >= 1.8
