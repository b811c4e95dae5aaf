"""``dcis log`` and the app-API log client, against a log service behind a
fake app-API connection (the real daemon path is the testbed's)."""

from __future__ import annotations

import json
from collections import deque
from types import TracebackType
from typing import Any

import pytest

from dcis.consensus.log.service import SERVICE_NUMBER, LogService
from dcis.consensus.logclient import LogClient, LogClientError
from dcis.consensus.testing import Cluster
from dcis.dtn.client import ReceivedBundle
from dcis.dtn.node.service import Inbound
from dcis.tools import cmd_log
from dcis.tools.cli import main
from tests.sim.log_run import StaticView


class FakeAppClient:
    """The parts of dcis.dtn.client.Client the log client uses, wired to node 1's
    log service in a one-node cluster."""

    def __init__(self, cluster: Cluster, *, mute: bool = False) -> None:
        self.cluster = cluster
        self.mute = mute
        self.inbox: deque[ReceivedBundle] = deque()
        self.registered: list[str] = []

    def __enter__(self) -> FakeAppClient:
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"node": 1}

    def register(self, endpoint: str) -> str:
        self.registered.append(endpoint)
        return endpoint

    def send(
        self,
        destination: str,
        payload: bytes,
        *,
        source: str | None = None,
        lifetime_ms: int | None = None,
    ) -> str:
        assert destination == f"ipn:1.{SERVICE_NUMBER}"
        assert source in self.registered
        svc = self.cluster.service(1, SERVICE_NUMBER)
        assert isinstance(svc, LogService)
        now = self.cluster.now_ms
        for s in svc.on_bundle(Inbound(destination, source, payload, now, 0, "k"), now):
            if not self.mute and s.destination == source:
                self.inbox.append(
                    ReceivedBundle(
                        endpoint=source,
                        source=destination,
                        payload=s.payload,
                        creation_ms=now,
                        sequence=0,
                        bundle_key="r",
                    )
                )
        self.cluster.call(1, lambda s: None, SERVICE_NUMBER)
        self.cluster.advance(self.cluster.now_ms + 50)
        return "k"

    def receive(self, timeout_s: float | None = None) -> ReceivedBundle | None:
        return self.inbox.popleft() if self.inbox else None


@pytest.fixture
def one_node() -> Cluster:
    c = Cluster([1], lambda n, inc: [LogService(StaticView([1]))], seed=2)
    c.advance(5_000)
    return c


def test_cli_append_get_status(
    one_node: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(
        cmd_log, "connect", lambda args, timeout_s: FakeAppClient(one_node)
    )
    assert main(["log", "append", "k", "v1", "--node", "1"]) == 0
    assert capsys.readouterr().out == "1.1 tentative\n"
    assert main(["log", "get", "k", "--node", "1", "--level", "tentative"]) == 0
    assert capsys.readouterr().out == "v1\n"
    assert main(["log", "append", "k", "v2", "--cas", "v1", "--node", "1"]) == 0
    capsys.readouterr()
    assert main(["log", "append", "k", "v3", "--cas", "nope", "--node", "1"]) == 0
    capsys.readouterr()
    one_node.advance(one_node.now_ms + 1_000)
    assert main(["log", "get", "k", "--node", "1"]) == 0
    assert capsys.readouterr().out == "v2\n"
    assert main(["log", "get", "missing", "--node", "1"]) == 1
    capsys.readouterr()
    assert main(["log", "status", "--json", "--node", "1"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["commit_index"] == 4
    assert status["leader"] == 1
    assert status["members"] == [1]
    assert status["tentative_count"] == 0
    svc = one_node.service(1, SERVICE_NUMBER)
    assert isinstance(svc, LogService)
    assert status["state_hash"] == svc.state_hash()
    assert main(["log", "status", "--node", "1"]) == 0
    assert "commit_index: 4" in capsys.readouterr().out


def test_client_times_out_without_a_reply(
    one_node: Cluster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = LogClient(FakeAppClient(one_node, mute=True), timeout_s=0.0)  # type: ignore[arg-type]
    with pytest.raises(LogClientError):
        client.status()
    monkeypatch.setattr(
        cmd_log, "connect", lambda args, timeout_s: FakeAppClient(one_node, mute=True)
    )
    assert main(["log", "status", "--node", "1", "--timeout", "0.001"]) == 2
    assert capsys.readouterr().err.startswith("error:")
