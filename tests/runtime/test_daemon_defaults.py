"""Safe defaults and clean stops of the daemons (issue 15), with real processes.

- ``dtn-node`` with ``[store] path = ":memory:"`` logs its effective config
  and a loud ``store_in_memory`` warning, and stops cleanly on SIGTERM;
- ``dcis testbed --workdir REL`` (a relative path) starts its daemons, and
  Ctrl-C (SIGINT) stops them: exit 130, one line, no traceback.

No sleeps: each step waits for what the processes write, bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def wait_for(pred: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll another process's output (there is no event to wait on)."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_memory_store_is_announced_loudly(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        'node = 9\nlisten = "127.0.0.1:0"\napp_socket = "n9.sock"\n'
        '[store]\npath = ":memory:"\n',
        encoding="utf-8",
    )
    err = tmp_path / "err.log"
    with err.open("wb") as f:
        proc = subprocess.Popen([str(BIN / "dtn-node"), "--config", str(cfg)], stderr=f)
    try:
        wait_for(lambda: b"node_started" in err.read_bytes())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = {
        d["event"]: d
        for d in (json.loads(line) for line in err.read_text().splitlines())
    }
    assert events["config"]["store"] == ":memory:"
    assert events["config"]["listen"] == "127.0.0.1:0"
    warning = events["store_in_memory"]
    assert warning["level"] == "warning"
    assert "LOST" in warning["detail"]


@pytest.mark.slow
def test_testbed_with_a_relative_workdir_stops_on_ctrl_c(tmp_path: Path) -> None:
    err = tmp_path / "err.log"
    with err.open("wb") as f:
        proc = subprocess.Popen(
            [
                str(BIN / "dcis"),
                "testbed",
                "--plan",
                str(ROOT / "tools" / "plans" / "chain4.ionrc"),
                "--duration",
                "600",
                "--traffic",
                str(ROOT / "examples" / "traffic.txt"),
                "--workdir",
                "rel/wd",
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=f,
            # Its own process group: if this test fails midway, killing the
            # group takes the daemons along instead of orphaning them.
            start_new_session=True,
        )
    socks = [tmp_path / "rel" / "wd" / f"node{n}.sock" for n in (1, 2, 3, 4)]
    try:
        # Every daemon read its config and opened its socket (a relative
        # workdir used to leave them unable to read their config).
        wait_for(lambda: all(p.exists() for p in socks))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = err.read_text()
    assert "Traceback" not in text
    assert text.splitlines() == ["interrupted: daemons stopped"]
    # The daemons stopped cleanly: each removed its socket on the way out.
    wait_for(lambda: not any(p.exists() for p in socks), 30)
    assert (tmp_path / "rel" / "wd" / "node1.toml").is_file()
