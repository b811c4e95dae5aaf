"""A service's bundle sent after a state write leaves only once the
group-commit sync covering that write is over (spec/node.md, "Sends wait
for the state they follow"): with a FULL store a commit is durable only at
the sync after the input, and a bundle out before it could acknowledge
writes a power cut then loses (a log follower's append reply). A send made
while every state commit is durable goes at once. One node with a FULL
store on a FakeNet under MockClock; node 2 is an address nobody answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.dtn.node import IdleService, Send, Service, ServiceContext
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime import node as node_module
from tests.fakes.fakenet import FakeNet

SLOW_SYNC_S = 0.5
"""Virtual time each sync waits before its fsync: a slow disk, during which
a bundle sent at once would long have left."""


class Syncs:
    """Counts the syncs begun and over (wrapping ``sync_in_thread``)."""

    def __init__(self, inner: Callable[[Callable[[], None]], object]) -> None:
        self.inner = inner
        self.begun = 0
        self.over = 0

    async def __call__(self, fn: Callable[[], None]) -> None:
        self.begun += 1
        await trio.sleep(SLOW_SYNC_S)
        await self.inner(fn)  # type: ignore[misc]
        self.over += 1


class WriteThenSend(IdleService):
    """5 s after its start: writes ``ctx.state`` and sends a bundle to node
    2 in the same call; 3 s later sends one without a write. Notes the
    syncs begun and over at each call."""

    service = 40

    def __init__(self, syncs: Syncs) -> None:
        self.syncs = syncs
        self.ctx: ServiceContext | None = None
        self.plan: list[tuple[int, bool]] = []  # (at_ms, write), in order
        self.calls: list[tuple[int, int]] = []  # (syncs begun, syncs over)

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self.ctx = ctx
        self.plan = [(now_ms + 5_000, True), (now_ms + 8_000, False)]
        return []

    def on_tick(self, now_ms: int) -> list[Send]:
        assert self.ctx is not None
        _, write = self.plan.pop(0)
        n = len(self.calls)
        if write:
            self.ctx.state.put(f"entry/{n}", b"x" * 64)
        self.calls.append((self.syncs.begun, self.syncs.over))
        return [Send("ipn:2.40", b"reply %d" % n)]

    def next_deadline(self) -> int | None:
        return self.plan[0][0] if self.plan else None

    def stop(self) -> None:
        self.plan = []


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Syncs:
    # Over conftest's (autojump_clock) wrapper: the fsync takes no
    # virtual time, the wait before it does.
    s = Syncs(node_module.sync_in_thread)
    monkeypatch.setattr(node_module, "sync_in_thread", s)
    return s


async def test_a_service_send_leaves_after_the_sync_of_its_write(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, syncs: Syncs
) -> None:
    net = FakeNet(seed=1)
    peer = ("127.0.0.1", net.free_port())
    seen: list[tuple[int, int, bytes]] = []  # (syncs begun, over, datagram)

    def hook(data: bytes, src: object, dst: object) -> bytes:
        if dst == peer:
            seen.append((syncs.begun, syncs.over, data))
        return data

    net.hook = hook
    svc = WriteThenSend(syncs)

    def factory(node: int, incarnation: int) -> Sequence[Service]:
        return [svc]

    cfg = NodeConfig(
        node=1,
        listen=("127.0.0.1", net.free_port()),
        store_path=str(tmp_path / "n1.db"),
        store_synchronous="FULL",
        neighbours=(NeighbourConfig(node=2, address=peer),),
    )
    async with open_node(cfg, udp_socket=net.socket, services=factory) as node:
        await trio.sleep(10.0)
        assert len(svc.calls) == 2, svc.calls
        firsts = {}
        for begun, over, data in seen:
            for n in range(2):
                if b"reply %d" % n in data:
                    firsts.setdefault(n, (begun, over))
        assert set(firsts) == {0, 1}, seen
        # The first: not before a sync begun after its write was over.
        begun_at_write, _ = svc.calls[0]
        assert firsts[0][1] > begun_at_write, (svc.calls, firsts)
        # The second: every state commit was durable -- at once, no sync
        # between its call and its transmission.
        assert firsts[1][1] == svc.calls[1][1], (svc.calls, firsts)
        assert node.counters["service_sends_held"] == 1
