"""README.md's two-daemon walkthrough, run as written (issue 15).

The commands are read from the README's ``sh`` block after the
``walkthrough`` marker and run one by one, like a shell would: ``cmd &``
starts a background job, ``wait %N`` waits for job N, ``kill %N ...`` stops
jobs with SIGTERM. They run in a temporary copy of ``examples/``, with one
substitution: the example files' ports (4556, 4557) become free ports, so
the test never collides with anything else on the host. The app sockets and
stores go under the temporary directory through ``XDG_RUNTIME_DIR`` and
``XDG_STATE_HOME``, the variables the README names.

Real processes and sockets; no sleeps and no timing assertions (the
commands' own ``--wait`` and timeouts bound every step).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dcis.tools.cli import main as dcis_main
from tests.runtime.conftest import free_udp_ports

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def walkthrough_lines() -> list[str]:
    """The command lines of the README block after the walkthrough marker."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = text.index("<!-- walkthrough")
    block = re.search(r"```sh\n(.*?)```", text[marker:], re.S)
    assert block is not None, "no sh block after the walkthrough marker"
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip()]


def test_the_walkthrough_names_the_example_files() -> None:
    lines = walkthrough_lines()
    assert lines[0] == "dtn-node --config examples/node1.toml &"
    assert lines[1] == "dtn-node --config examples/node2.toml &"
    for name in ("node1.toml", "node2.toml", "hello.txt"):
        assert (ROOT / "examples" / name).is_file()


@pytest.mark.slow
def test_readme_walkthrough_gets_the_bundle_across(tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(ROOT / "examples", work / "examples")
    p1, p2 = free_udp_ports(2)
    for name in ("node1.toml", "node2.toml"):
        f = work / "examples" / name
        text = f.read_text(encoding="utf-8")
        assert '"127.0.0.1:4556"' in text
        assert '"127.0.0.1:4557"' in text
        text = text.replace('"127.0.0.1:4556"', f'"127.0.0.1:{p1}"')
        text = text.replace('"127.0.0.1:4557"', f'"127.0.0.1:{p2}"')
        f.write_text(text, encoding="utf-8")
    (tmp_path / "run").mkdir()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    jobs: list[subprocess.Popen[bytes]] = []
    outputs: dict[str, bytes] = {}
    try:
        for line in walkthrough_lines():
            argv = shlex.split(line)
            if argv[0] == "wait":
                job = jobs[int(argv[1].lstrip("%")) - 1]
                out, err = job.communicate(timeout=120)
                assert job.returncode == 0, (line, err)
                outputs[line] = out
            elif argv[0] == "kill":
                for spec in argv[1:]:
                    jobs[int(spec.lstrip("%")) - 1].send_signal(signal.SIGTERM)
                for spec in argv[1:]:
                    job = jobs[int(spec.lstrip("%")) - 1]
                    _out, err = job.communicate(timeout=60)
                    # A daemon stops cleanly on SIGTERM: exit 0.
                    assert job.returncode == 0, (spec, err[-2000:])
                    outputs[f"daemon {spec}"] = err
            elif argv[-1] == "&":
                assert argv[0] in ("dtn-node", "dcis"), line
                jobs.append(
                    subprocess.Popen(
                        argv[:-1],
                        cwd=work,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                    )
                )
            else:
                assert argv[0] == "dcis", line
                proc = subprocess.run(
                    argv, cwd=work, env=env, capture_output=True, timeout=120
                )
                assert proc.returncode == 0, (line, proc.stderr)
                outputs[line] = proc.stdout
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    hello = (ROOT / "examples" / "hello.txt").read_bytes()
    (recv_out,) = [v for k, v in outputs.items() if k.startswith("wait")]
    assert recv_out == hello
    (ping_out,) = [v for k, v in outputs.items() if k.startswith("dcis ping")]
    assert b"3 sent, 3 received, 0% loss" in ping_out
    (status_out,) = [v for k, v in outputs.items() if k.startswith("dcis status")]
    assert status_out.startswith(b"node 1 (ipn:1.0)")
    # The daemons said where they listen and store, with the defaults filled in.
    log = outputs["daemon %2"].decode()
    assert '"event": "config"' in log
    assert f'"listen": "127.0.0.1:{p2}"' in log
    assert str(tmp_path / "state" / "dcis" / "node-2" / "bundles.db") in log
    assert (tmp_path / "state" / "dcis" / "node-2").stat().st_mode & 0o777 == 0o700


def reference_lines() -> list[str]:
    """The README's command reference: the sh block under "The `dcis` command"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### The `dcis` command")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None
    lines = [ln.split("#", 1)[0].strip() for ln in block.group(1).splitlines()]
    return [ln for ln in lines if ln]


@pytest.mark.slow
def test_readme_command_reference_runs_as_written(tmp_path: Path) -> None:
    # The files the README names, at the paths it names them by.
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "tools" / "plans", tmp_path / "tools" / "plans")
    lines = reference_lines()
    assert len(lines) >= 8
    # In this process (each a fresh `dcis` would only add its start-up time),
    # from the directory the README's paths are relative to.
    old_cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for line in lines:
            argv = shlex.split(line)
            assert argv[0] == "dcis", line
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()) as err,
            ):
                try:
                    code = dcis_main(argv[1:])
                except SystemExit as exc:  # --help
                    code = exc.code if isinstance(exc.code, int) else 2
            assert code == 0, (line, err.getvalue())
            assert "Traceback" not in err.getvalue()
    finally:
        os.chdir(old_cwd)
    assert (tmp_path / "b.bin").read_bytes() == (
        ROOT / "examples" / "bundle.bin"
    ).read_bytes()
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
