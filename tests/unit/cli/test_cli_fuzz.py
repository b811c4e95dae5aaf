"""Every ``dcis`` subcommand and ``dtn-node`` under generated argv (issue 15).

Arguments come from each parser's own options (so runs get past argparse
often) mixed with hostile values: wrong types, negatives, huge and
non-finite numbers, missing, binary, empty and directory paths, relative
paths. Whatever the argv: the exit status is 0, 1 or 2, a failure prints
exactly one ``error:`` line on stderr (at most one otherwise), and nothing
ever prints a traceback.

No node runs during these tests, so the commands that talk to one fail fast;
``testbed`` never gets a valid plan (it would start daemons) and no
``dtn-node`` config here can start a node.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcis.tools.cli import build_parser
from dcis.tools.cli import main as dcis_main
from dcis.tools.dtn_node import main as dtn_node_main

ROOT = Path(__file__).resolve().parents[3]
CHAIN = (ROOT / "tools" / "plans" / "chain4.ionrc").read_text(encoding="utf-8")
BUNDLE_JSON = (
    '{"primary": {"version": 7, "flags": 0, "crc_type": 2, "destination": "ipn:2.1",'
    ' "source": "ipn:1.1", "report_to": "dtn:none", "creation_time": 1000,'
    ' "sequence": 0, "lifetime": 86400000},'
    ' "blocks": [{"type": 1, "number": 1, "flags": 0, "crc_type": 2, "data": "6869"}]}'
)

# Files every example can name, by relative path from the work directory.
FILES: dict[str, bytes] = {
    "plan.ionrc": CHAIN.encode(),
    "traffic.txt": b"0 1 4 100 2\n1 4 1 50\n",
    "huge_traffic.txt": b"0 1 4 1000000000000 100000000000000\n",
    "binary.bin": bytes(range(256)) * 4,
    "empty.txt": b"",
    "bundle.json": BUNDLE_JSON.encode(),
    "node.toml": b'node = 1\nlisten = "127.0.0.1:0"\nplan = "missing.ionrc"\n',
    "bad.toml": b"node = -3\n",
}
VALUES = st.one_of(
    st.sampled_from(
        [
            *FILES,
            "missing.txt",
            "sub/dir/missing.bin",
            ".",
            "..",
            "-",
            "0",
            "1",
            "2",
            "4",
            "-1",
            "-5",
            "2.5",
            "1e300",
            "-1e300",
            "nan",
            "inf",
            "99999999999999999999999",
            "100000000000",
            "3000000",
            "0x10",
            "abc",
            "",
            "ipn:2.1",
            "ipn:2.7",
            "ipn:1.0",
            "dtn:none",
            "now",
            "00ff",
            "00" * 32,
            "json",
            "ionrc",
            "out.png",
            "out.txt",
            "out",
            "1,2",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=12),
    # What a shell passes for bytes that are not UTF-8 (surrogateescape).
    st.binary(min_size=1, max_size=6).map(
        lambda b: b.decode("utf-8", "surrogateescape")
    ),
)


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = []

    def walk(prefix: tuple[str, ...], p: argparse.ArgumentParser) -> None:
        subs = _subparsers(p)
        if not subs:
            out.append((prefix, p))
        for name, sp in sorted(subs.items()):
            walk((*prefix, name), sp)

    walk((), build_parser())
    return out


COMMANDS = _commands()


def _options(p: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """(every option string but help, the required ones)."""
    every, required = [], []
    for a in p._actions:
        if not a.option_strings or isinstance(a, argparse._HelpAction):
            continue
        every.extend(a.option_strings)
        if a.required:
            required.append(a.option_strings[-1])
    return every, required


@st.composite
def dcis_argv(draw: st.DrawFn) -> list[str]:
    prefix, parser = draw(st.sampled_from(COMMANDS))
    every, required = _options(parser)
    argv = list(prefix)
    argv += draw(st.lists(VALUES, max_size=2))
    for opt in required:
        if draw(st.integers(0, 9)):
            argv += [opt, draw(VALUES)]
    for opt, value in draw(
        st.lists(st.tuples(st.sampled_from(every or ["-v"]), VALUES), max_size=4)
    ):
        argv += [opt] if draw(st.booleans()) else [opt, value]
    if prefix == ("testbed",):
        # A valid testbed run starts real daemons: keep its plan invalid.
        argv = [("binary.bin" if a == "plan.ionrc" else a) for a in argv]
    if draw(st.integers(0, 19)) == 0:
        argv.insert(
            draw(st.integers(0, len(argv))),
            draw(st.sampled_from(["--help", "--version", "-v", "-q"])),
        )
    return argv


class _Capture(io.TextIOWrapper):
    """A text stream with a ``buffer``, like sys.stdout (commands write bytes)."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", errors="strict")

    def getvalue(self) -> str:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue().decode("utf-8", errors="replace")


@contextlib.contextmanager
def _sandbox(workdir: Path) -> Iterator[tuple[_Capture, _Capture]]:
    """cwd = a fresh work directory holding FILES, empty stdin, captured
    stdout/stderr, and no node socket or state outside the directory."""
    workdir.mkdir()
    (workdir / "adir").mkdir()
    for name, data in FILES.items():
        (workdir / name).write_bytes(data)
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    old_stdin = sys.stdin
    out, err = _Capture(), _Capture()
    os.chdir(workdir)
    os.environ["XDG_RUNTIME_DIR"] = str(workdir)
    os.environ["XDG_STATE_HOME"] = str(workdir / "state")
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        sys.stdin = old_stdin
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


def _run(main: object, argv: list[str], workdir: Path) -> tuple[int, str, str]:
    with _sandbox(workdir) as (out, err):
        try:
            code = main(argv)  # type: ignore[operator]
        except SystemExit as exc:  # --help, --version and argparse errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _check(argv: list[str], code: int, out: str, err: str) -> None:
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err + out, (argv, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if code == 2:
        assert len(errors) == 1, (argv, err)
    else:
        assert len(errors) <= 1, (argv, err)


_counter = iter(range(10**9))


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(argv=dcis_argv())
def test_dcis_never_tracebacks(tmp_path: Path, argv: list[str]) -> None:
    code, out, err = _run(dcis_main, argv, tmp_path / f"run{next(_counter)}")
    _check(argv, code, out, err)


DTN_NODE_VALUES = st.one_of(
    VALUES,
    st.sampled_from(
        ["bad.toml", "node.toml", "binary.bin", "adir", "--log-level", "debug", "loud"]
    ),
)


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    argv=st.lists(
        st.one_of(
            st.sampled_from(["--config", "--log-level", "--version", "-h"]),
            DTN_NODE_VALUES,
        ),
        max_size=5,
    )
)
def test_dtn_node_never_tracebacks(tmp_path: Path, argv: list[str]) -> None:
    # No file here configures a node that can start: each run ends at once.
    code, out, err = _run(dtn_node_main, argv, tmp_path / f"run{next(_counter)}")
    lines = [line for line in err.splitlines() if not line.startswith("{")]
    _check(argv, code, out, "\n".join(lines))
    assert "Traceback" not in err


def test_every_subcommand_is_reached() -> None:
    # Guards the generator: a new subcommand is fuzzed without editing this file.
    names = {" ".join(prefix) for prefix, _ in COMMANDS}
    assert {
        "send",
        "recv",
        "ping",
        "status",
        "bundles",
        "route",
        "sim",
        "testbed",
    } <= names
    assert {
        "bundle decode",
        "bundle encode",
        "plan plot",
        "keys issue",
        "keys show",
    } <= names


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "operator-init", "--store", "op"],
        [
            "sim",
            "--plan",
            "plan.ionrc",
            "--seed",
            "-1",
            "--duration",
            "10",
            "--traffic",
            "traffic.txt",
        ],
        [
            "sim",
            "--plan",
            "plan.ionrc",
            "--seed",
            "1",
            "--duration",
            "10",
            "--traffic",
            "huge_traffic.txt",
        ],
        [
            "testbed",
            "--plan",
            "plan.ionrc",
            "--duration",
            "1e300",
            "--traffic",
            "traffic.txt",
        ],
        [
            "testbed",
            "--plan",
            "plan.ionrc",
            "--duration",
            "5",
            "--traffic",
            "traffic.txt",
            "--workdir",
            "binary.bin",
        ],
        ["ping", "2", "--size", "100000000000", "--node", "1"],
        ["recv", "ipn:2.1", "--count", "-1", "--node", "1"],
        ["recv", "ipn:2.1", "--timeout", "-1", "--node", "1"],
        ["route", "--plan", "plan.ionrc", "--from", "1", "--to", "4", "--at", "-5"],
        ["ping", "2", "--interval", "-1", "--node", "1"],
        ["bundle", "decode", "--key", "00ff", "binary.bin"],
        ["plan", "plot", "plan.ionrc", "-o", "out.txt"],
    ],
)
def test_the_issues_examples_are_usage_errors(tmp_path: Path, argv: list[str]) -> None:
    """Each input issue 15 saw crash or run away is now refused up front."""
    code, out, err = _run(dcis_main, argv, tmp_path / "w")
    if argv[:2] == ["keys", "operator-init"]:
        assert code == 0, err
        return
    assert code == 2, (argv, out, err)
    _check(argv, code, out, err)


def test_keys_issue_with_a_huge_validity_is_refused_and_show_still_works(
    tmp_path: Path,
) -> None:
    w = tmp_path / "w"
    steps = [
        (["keys", "operator-init", "--store", "op"], 0),
        (
            [
                "keys",
                "node-init",
                "--store",
                "n5",
                "--node",
                "5",
                "--request",
                "req.json",
            ],
            0,
        ),
        (
            [
                "keys",
                "issue",
                "--store",
                "op",
                "--request",
                "req.json",
                "--days",
                "3000000",
            ],
            2,
        ),
        (
            [
                "keys",
                "issue",
                "--store",
                "op",
                "--request",
                "req.json",
                "--days",
                "365",
                "--install",
                "n5",
            ],
            0,
        ),
        (["keys", "show", "--store", "n5"], 0),
    ]
    w.mkdir()
    for argv, want in steps:
        code, _out, err = _run_in(dcis_main, argv, w)
        assert code == want, (argv, err)
        assert "Traceback" not in err


def _run_in(main: object, argv: list[str], workdir: Path) -> tuple[int, str, str]:
    """Like _run, in an existing directory (state kept between calls)."""
    old = os.getcwd()
    out, err = _Capture(), _Capture()
    os.chdir(workdir)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)  # type: ignore[operator]
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("prefix", "parser"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS]
)
def test_every_help_text_has_an_example(
    prefix: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    text = parser.format_help()
    assert "example" in text, " ".join(prefix)
    # The example line runs the command it documents.
    assert f"dcis {' '.join(prefix)}" in text
