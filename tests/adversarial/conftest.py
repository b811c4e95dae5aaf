"""Live ``dtn-node`` daemons for the adversarial suite (issue 10, "Done when").

Each test starts real daemon processes on loopback, attacks them the way a
hostile network, client or environment would, and then checks the one
promise: every bundle the daemons acknowledged is delivered exactly once,
intact, and the daemons are still running. Real sockets and real time: the
tests poll other processes' state (no timing assertions) and are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.client import Client, ClientError
from tests.runtime.conftest import free_udp_ports

ROOT = Path(__file__).resolve().parents[2]


class Daemon:
    """One ``dtn-node`` process with its own node.toml, store and log file."""

    def __init__(
        self,
        workdir: Path,
        node: int,
        port: int,
        neighbours: dict[int, int],
        *,
        keystore: Path | None = None,
        store_dir: Path | None = None,
        extra: str = "",
        neighbour_extra: str = 'ack = "on"',
    ) -> None:
        self.node = node
        self.port = port
        self.dir = workdir / f"node{node}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.dir / "app.sock")
        store = (store_dir or self.dir) / f"node{node}.db"
        lines = [
            f"node = {node}",
            f'listen = "127.0.0.1:{port}"',
            f'app_socket = "{self.socket}"',
            'log_level = "info"',
            extra,
            "[store]",
            f'path = "{store}"',
            "[udp]",
            "ack_timeout_s = 0.3",
            "max_tries = 3",
        ]
        if keystore is not None:
            lines += ["[security]", f'keystore = "{keystore}"']
        for nb, nb_port in neighbours.items():
            lines += [
                "[[neighbours]]",
                f"node = {nb}",
                f'address = "127.0.0.1:{nb_port}"',
                neighbour_extra,
            ]
        self.config = self.dir / "node.toml"
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.log = self.dir / "log.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dcis.tools.dtn_node",
                    "--config",
                    str(self.config),
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_for(lambda: self._answers(), 30, f"node {self.node} did not start")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"node {self.node} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            )
        try:
            with Client(self.socket, timeout_s=2) as c:
                c.ping()
        except (OSError, ClientError):
            return False
        return True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, Any]:
        with Client(self.socket, timeout_s=10) as c:
            return c.status()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def events(self, name: str) -> list[dict[str, Any]]:
        """Log lines whose ``event`` is ``name``."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == name or doc.get("msg") == name:
                out.append(doc)
        return out

    def non_json_lines(self) -> list[str]:
        bad = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                json.loads(line)
            except ValueError:
                bad.append(line)
        return bad


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll another process's state until ``pred()`` (bounded)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    assert pred(), what


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def collect(sock: str, endpoint: str, want: int, timeout_s: float) -> list[Any]:
    """Receive bundles on ``endpoint`` until ``want`` arrived (or the time is
    up), then a little longer to catch duplicates; returns them all."""
    got: list[Any] = []
    with Client(sock, timeout_s=10) as c:
        c.register(endpoint)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and len(got) < want:
            b = c.receive(timeout_s=0.5)
            if b is not None:
                got.append(b)
        while (b := c.receive(timeout_s=1.0)) is not None:
            got.append(b)
    return got


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    """A list the test appends its daemons to; all are stopped afterwards."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def ports(n: int) -> list[int]:
    return free_udp_ports(n)


def raise_fd_limit(n: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


os.environ.setdefault("PYTHONUNBUFFERED", "1")
