"""The daemon when its store fails under the node's timers or a service's
state commit (spec/node.md, "Failure containment"): logged, retried, and
the node serves on -- under trio's MockClock, no real time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dcis.dtn.agent.actions import Action
from dcis.dtn.agent.store import BundleStore, StoreError
from dcis.dtn.node import IdleService, Inbound, Send, ServiceContext, StateNotDurable
from dcis.dtn.runtime import Node, NodeConfig, open_node


class Ticking(IdleService):
    """Ticks every second and writes the time of its last tick to its state;
    keeps the payload of each bundle it gets."""

    service = 30

    def __init__(self) -> None:
        self.ctx: ServiceContext | None = None
        self.ticks: list[int] = []
        self.got: list[bytes] = []
        self._next: int | None = None

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self.ctx = ctx
        self._next = now_ms + 1_000
        return []

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        assert self.ctx is not None
        self.got.append(inbound.payload)
        self.ctx.state.put("got", b",".join(self.got))
        return [Send(inbound.source, b"re:" + inbound.payload)]

    def on_tick(self, now_ms: int) -> list[Send]:
        assert self.ctx is not None
        self.ticks.append(now_ms)
        self.ctx.state.put("tick", b"%d" % now_ms)
        self._next = now_ms + 1_000
        return []

    def next_deadline(self) -> int | None:
        return self._next

    def stop(self) -> None:
        self._next = None


@pytest.mark.parametrize("error", [StoreError, RuntimeError])
async def test_a_tick_that_raises_is_logged_retried_and_the_node_serves_on(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    error: type[Exception],
) -> None:
    svc = Ticking()
    async with open_node(NodeConfig(node=1), services=lambda n, i: [svc]) as node:
        agent = node.agent
        assert agent is not None
        real = agent.on_tick
        failed: list[int] = []

        def flaky(now: int) -> list[Action]:
            if len(failed) < 3:
                failed.append(now)
                raise error("disk I/O error")
            return real(now)

        agent.on_tick = flaky  # type: ignore[method-assign]
        await trio.sleep(5)
        # Three failed ticks, then the ticks resume; the node still
        # carries bundles.
        assert len(failed) == 3
        assert len(svc.ticks) >= 3
        if error is RuntimeError:
            # The service's deadline failed, is past, and the task waits
            # 0.1 s, 0.2 s, 0.4 s before trying again instead of spinning
            # on it. (After a StoreError the node recovers from its store,
            # which ticks the service: its next deadline comes first.)
            assert failed[2] - failed[1] == 200
            assert svc.ticks[0] == failed[2] + 400
        async with node.endpoint("ipn:1.1") as ch:
            await node.send("ipn:1.30", b"q", source="ipn:1.1")
            with trio.fail_after(1):
                assert (await ch.receive()).payload == b"re:q"
        assert node.status()["counters"]["handler_errors"] == 3
    logged = [r for r in caplog.records if r.getMessage() == "handler_error"]
    assert len(logged) == 3


def _broken_service_put(node: Node) -> tuple[BundleStore, list[bool]]:
    """Make the node store's service_put raise StoreError while the
    returned flag is set; returns the store and the flag."""
    store = node.agent.store if node.agent is not None else None
    assert store is not None
    real = store.service_put
    broken = [True]

    def put(service: int, key: str, value: bytes) -> None:
        if broken[0]:
            raise StoreError("disk I/O error")
        real(service, key, value)

    store.service_put = put  # type: ignore[method-assign]
    return store, broken


async def test_a_service_commit_that_fails_is_retried_and_its_bundle_kept(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    svc = Ticking()
    async with open_node(NodeConfig(node=1), services=lambda n, i: [svc]) as node:
        store, broken = _broken_service_put(node)
        async with node.endpoint("ipn:1.1") as ch:
            await node.send("ipn:1.30", b"q", source="ipn:1.1")
            await trio.sleep(10)
            # The service has the bundle; its reply waits for the commit,
            # and the bundle stays stored. The commit is retried with its
            # backoff only (0.1, 0.2, 0.4 ... s apart: 7 tries in 10 s), and
            # the failing service is not ticked meanwhile (a tick would
            # retry it before its time).
            assert svc.got == [b"q"]
            assert svc.ticks == []
            assert node.status()["stored"] == 1
            events = node.status()["events"]
            assert events["service_failed"] == 7
            broken[0] = False
            with trio.fail_after(60):
                assert (await ch.receive()).payload == b"re:q"
        assert store.service_get(30, "got") == b"q"
        assert svc.got == [b"q"]  # handed over once
        assert node.status()["stored"] == 0
        assert node.status()["counters"]["handler_errors"] == 0
    logged = [r for r in caplog.records if r.getMessage() == "service_failed"]
    assert logged
    assert logged[0].levelname == "WARNING"
    assert "state commit failed" in str(logged[0].__dict__)


class Answers(Ticking):
    """Answers local requests ("ok:" + request), writing each to its state."""

    def on_local_requests(
        self, requests: list[bytes], replies: list[bytes], now_ms: int
    ) -> list[Send]:
        assert self.ctx is not None
        for r in requests:
            self.ctx.state.put("k-" + r.decode(), r)
        replies.extend(b"ok:" + r for r in requests)
        return []


async def test_a_service_request_whose_state_commit_failed_is_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Its replies would promise writes staged in memory only (a kill -9
    # before the retried commit loses them): the app gets a typed error.
    svc = Answers()
    async with open_node(NodeConfig(node=1), services=lambda n, i: [svc]) as node:
        store, broken = _broken_service_put(node)
        with pytest.raises(StateNotDurable, match="state commit failed"):
            node._service_request(30, [b"x"])
        assert store.service_get(30, "k-x") is None
        assert node.status()["events"]["service_failed"] == 1
        # Retried, still failing: an error again.
        with pytest.raises(StateNotDurable):
            node._service_request(30, [b"y"])
        broken[0] = False
        replies, actions = node._service_request(30, [b"z"])
        assert replies == [b"ok:z"]
        node._apply(actions)
        # The commit that succeeded wrote the staged writes of all three.
        assert [store.service_get(30, f"k-{k}") for k in "xyz"] == [b"x", b"y", b"z"]
