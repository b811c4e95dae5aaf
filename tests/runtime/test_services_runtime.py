"""Node services on the trio runtime (issue 11): ``open_node(services=)``,
``[services] factories``, one clock under ``MockClock``, the node's own
endpoints refused to app clients, app bundles to local services."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.node import IdleService, Inbound, Send, Service, ServiceContext
from dcis.dtn.node.state import MemoryStateBackend
from dcis.dtn.runtime import NodeConfig, open_node
from dcis.dtn.runtime.config import ConfigError, config_from_dict
from dcis.dtn.runtime.services import load_factory, next_incarnation
from dcis.tools.cli import main as dcis


class Ticker(IdleService):
    """Ticks every ``period_ms``; answers ``ipn:N.30`` bundles with
    ``answer:<payload>``; counts its starts in ctx.state."""

    service = 30

    def __init__(self, period_ms: int = 600_000) -> None:
        self.period_ms = period_ms
        self.ticks: list[int] = []
        self.ctx: ServiceContext | None = None
        self._next: int | None = None

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self.ctx = ctx
        self._next = now_ms + self.period_ms
        return []

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        return [Send(inbound.source, b"answer:" + inbound.payload)]

    def on_tick(self, now_ms: int) -> list[Send]:
        self.ticks.append(now_ms)
        self._next = now_ms + self.period_ms
        return []

    def next_deadline(self) -> int | None:
        return self._next

    def stop(self) -> None:
        self._next = None


async def test_a_whole_node_runs_under_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticker = Ticker()
    cfg = NodeConfig(node=1)
    async with open_node(cfg, services=lambda n, i: [ticker]) as node:
        assert ticker.ctx is not None
        t0 = node.now_ms()
        start = trio.current_time()
        async with node.endpoint("ipn:1.1") as ch:
            await node.send("ipn:1.7", b"ping", source="ipn:1.1")
            await node.send("ipn:1.30", b"q", source="ipn:1.1")
            with trio.fail_after(1):
                got = [await ch.receive(), await ch.receive()]
        assert sorted((g.source, g.payload) for g in got) == [
            ("ipn:1.30", b"answer:q"),
            ("ipn:1.7", b"ping"),
        ]
        await trio.sleep(3630)  # past the 6th tick: no tie with it
        # One clock: an hour of trio's (virtual) time is an hour of DTN time.
        assert node.now_ms() - t0 == pytest.approx(
            (trio.current_time() - start) * 1000, abs=2
        )
        assert len(ticker.ticks) == 6
        assert [
            b - a for a, b in zip(ticker.ticks, ticker.ticks[1:], strict=False)
        ] == [600_000] * 5
        assert node.status()["services"] == [7, 30]


async def test_incarnation_counts_starts_in_the_store(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    seen: list[int] = []

    def factory(node: int, incarnation: int) -> Sequence[Service]:
        seen.append(incarnation)
        return []

    cfg = NodeConfig(node=3, store_path=str(tmp_path / "n3.db"))
    for _ in range(3):
        async with open_node(cfg, services=factory):
            pass
    assert seen == [1, 2, 3]
    state = MemoryStateBackend()
    assert [next_incarnation(state) for _ in range(2)] == [1, 2]


async def test_app_clients_cannot_take_the_nodes_endpoints(tmp_path: Path) -> None:
    sock = str(tmp_path / "n1.sock")
    cfg = NodeConfig(node=1, app_socket=sock)
    async with (
        open_node(cfg, services=lambda n, i: [Ticker()]),
        open_trio_client(sock) as c,
    ):
        for ep in ("ipn:1.0", "ipn:1.7", "ipn:1.16", "ipn:1.30"):
            with pytest.raises(ClientError, match="apps cannot register"):
                await c.register(ep)
        with pytest.raises(ClientError, match="belongs to a node service"):
            await c.send("ipn:1.1", b"x", source="ipn:1.7")
        assert (await c.status())["endpoints"] == []
        # The echo service is still there, and a local service answers.
        assert await c.register("ipn:1.1") == "ipn:1.1"
        await c.send("ipn:1.7", b"still here", source="ipn:1.1")
        await c.send("ipn:1.30", b"q", source="ipn:1.1")
        with trio.fail_after(30):
            got = {(await c.receive()).payload for _ in range(2)}
        assert got == {b"still here", b"answer:q"}

        def ping() -> int:
            return dcis(
                ["ping", "1", "--count", "1", "--interval", "0", "--socket", sock]
            )

        assert await trio.to_thread.run_sync(ping) == 0


def test_services_table_in_node_toml() -> None:
    cfg = config_from_dict(
        {"node": 2, "services": {"factories": ["examples.gossip_counter:factory"]}}
    )
    assert cfg.service_factories == ("examples.gossip_counter:factory",)
    for bad in (["nocolon"], [":x"], ["m:"], [3]):
        with pytest.raises(ConfigError, match=r"services\.factories\[0\]"):
            config_from_dict({"node": 2, "services": {"factories": bad}})
    with pytest.raises(ConfigError, match=r"services\.other"):
        config_from_dict({"node": 2, "services": {"other": 1}})
    f = load_factory("examples.gossip_counter:factory")
    assert [s.service for s in f(1, 1)] == [20]
    with pytest.raises(ConfigError, match="cannot import"):
        load_factory("no_such_module_here:factory")
    with pytest.raises(ConfigError, match="no callable"):
        load_factory("examples.gossip_counter:SERVICE")


async def test_a_failing_factory_is_a_config_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def factory(node: int, incarnation: int) -> Sequence[Service]:
        raise RuntimeError("no")

    with pytest.raises(ConfigError, match="services: services= failed"):
        async with open_node(NodeConfig(node=1), services=factory):
            pass


async def test_credentials_come_from_the_key_store(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    from dcis.dtn.runtime.security import SecurityConfig
    from dcis.tools.testbed import make_keystores

    stores = make_keystores(tmp_path / "keys", [1, 2])
    with_keys, without = Ticker(), Ticker()
    cfg = NodeConfig(node=1, security=SecurityConfig(keystore=str(stores[1])))
    async with open_node(cfg, services=lambda n, i: [with_keys]):
        assert with_keys.ctx is not None
        creds = with_keys.ctx.credentials
        assert creds is not None
        assert creds.identity.node == 1
        assert creds.certificate.node == 1
        assert creds.certificate.sign_public == creds.identity.sign_public
        assert creds.revoked == frozenset()
    async with open_node(NodeConfig(node=1), services=lambda n, i: [without]):
        assert without.ctx is not None
        assert without.ctx.credentials is None


async def test_a_failing_service_is_logged_and_the_node_serves_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Ticker):
        def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
            raise RuntimeError("broken service")

    async with open_node(NodeConfig(node=1), services=lambda n, i: [Broken()]) as node:
        async with node.endpoint("ipn:1.1") as ch:
            await node.send("ipn:1.30", b"x", source="ipn:1.1")
            await node.send("ipn:1.7", b"still", source="ipn:1.1")
            with trio.fail_after(1):
                assert (await ch.receive()).payload == b"still"
        assert node.status()["stored"] == 0
    failed = [r for r in caplog.records if r.getMessage() == "service_failed"]
    assert failed
    assert failed[0].levelname == "WARNING"
