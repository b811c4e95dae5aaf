"""The app API's ``service_request`` (issue 13, the bench's fast path):
a client reaches the node's log service without bundles, many appends in
one request and one store transaction, answered only once durable; bad
requests get a typed error and the node goes on. One node on a FakeNet
under MockClock, its log over the single member it is."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from dcis.consensus.log.api import Level, Put
from dcis.consensus.log.service import SERVICE_NUMBER, LogParams, LogService
from dcis.consensus.log.wire import (
    MAX_KEY_BYTES,
    ClientKind,
    ClientReply,
    ClientRequest,
    decode_message_untrusted,
    encode_message,
)
from dcis.consensus.logclient import LogClientError, TrioLogClient
from dcis.consensus.logfactory import FixedView
from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.node import Service
from dcis.dtn.node.service import MAX_LOCAL_REQUESTS
from dcis.dtn.runtime import NodeConfig, open_node
from dcis.dtn.runtime.node import Node
from tests.fakes.fakenet import FakeNet
from tests.runtime.conftest import write_plan

NODE = 1


def _log(node: int, incarnation: int) -> Sequence[Service]:
    return [LogService(FixedView([node]), LogParams())]


@contextlib.asynccontextmanager
async def one_node(tmp: Path, store: str) -> AsyncIterator[Node]:
    fakenet = FakeNet(seed=5)
    plan = write_plan(tmp / "plan.ionrc", [])
    cfg = NodeConfig(
        node=NODE,
        listen=("127.0.0.1", fakenet.free_port()),
        plan=str(plan),
        plan_epoch_unix_s=time.time() - 1.0,
        store_path=store,
        store_synchronous="FULL",
        app_socket=str(tmp / "n1.sock"),
    )
    async with open_node(cfg, udp_socket=fakenet.socket, services=_log) as node:
        yield node


async def _committed(log: TrioLogClient, key: str, want: bytes) -> None:
    with trio.fail_after(60):  # virtual seconds
        while True:
            if await log.get(key, Level.COMMITTED) == want:
                return
            await trio.sleep(0.05)


async def test_appends_reach_the_log_without_bundles_and_survive_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = str(tmp_path / "store.db")
    async with one_node(tmp_path, store) as node:
        assert node.status()["local_request_services"] == [SERVICE_NUMBER]
        async with open_trio_client(str(tmp_path / "n1.sock")) as c:
            log = TrioLogClient(c)
            await log.open()
            assert log.direct
            assert log.endpoint == ""
            ids = await log.append_many([Put(f"k{i}", b"v%d" % i) for i in range(5)])
            assert [(e.origin, e.seq) for e in ids] == [(NODE, s) for s in range(1, 6)]
            one = await log.append(Put("k0", b"again"))
            assert (one.origin, one.seq) == (NODE, 6)
            # Read-your-writes at once, commit soon after.
            assert await log.get("k3", Level.TENTATIVE) == b"v3"
            await _committed(log, "k0", b"again")
            st = await log.status()
            assert st["tentative_count"] == 0
            assert st["leader"] == NODE
        # No bundle made or delivered: the requests went straight to the log.
        counters = node.status()["counters"]
        assert (counters["sent"], counters["delivered"]) == (0, 0)
    # Every reply above came after its durable commit: a new node on the
    # same store has every entry.
    async with (
        one_node(tmp_path, store),
        open_trio_client(str(tmp_path / "n1.sock")) as c,
    ):
        log = TrioLogClient(c)
        await log.open()
        for i in range(1, 5):
            assert await log.get(f"k{i}", Level.COMMITTED) == b"v%d" % i
        (nxt,) = await log.append_many([Put("k9", b"x")])
        assert nxt.seq == 7


async def test_bad_service_requests_are_typed_errors_and_the_node_goes_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        one_node(tmp_path, ":memory:"),
        open_trio_client(str(tmp_path / "n1.sock")) as c,
    ):
        bad_calls: list[tuple[object, object]] = [
            (99, [b""]),  # no such service
            (0, [b""]),  # a service, but not one that answers
            (SERVICE_NUMBER, [b"ok", "text"]),  # not all byte strings
            (SERVICE_NUMBER, [b"\x00"] * (MAX_LOCAL_REQUESTS + 1)),
        ]
        for service, reqs in bad_calls:
            with pytest.raises(ClientError):
                await c.service_request(service, reqs)  # type: ignore[arg-type]
        # Garbage inside: one error reply per bad request, the good one served.
        good = ClientRequest(req_id=7, kind=ClientKind.APPEND, op=Put("a", b"1"))
        not_a_request = encode_message(ClientReply(req_id=3, ok=True))
        out = await c.service_request(
            SERVICE_NUMBER, [b"\xff\x00", not_a_request, encode_message(good)]
        )
        replies = [decode_message_untrusted(p) for p in out]
        typed = [r for r in replies if isinstance(r, ClientReply)]
        assert len(typed) == 3
        r2 = typed[2]
        assert [(r.ok, r.req_id) for r in typed] == [(False, 0), (False, 0), (True, 7)]
        assert r2.entry is not None
        assert r2.entry.seq == 1
        # A refused op in a batch: the others are accepted all the same.
        log = TrioLogClient(c)
        await log.open()
        with pytest.raises(LogClientError) as err:
            await log.append_many(
                [Put("b", b"2"), Put("k" * (MAX_KEY_BYTES + 1), b"bad key")]
            )
        assert [e is not None for e in err.value.entries] == [True, False]
        assert await log.get("b", Level.TENTATIVE) == b"2"
        assert await c.ping() >= 0.0


async def test_the_bundle_path_still_answers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with one_node(tmp_path, ":memory:") as node:
        async with open_trio_client(str(tmp_path / "n1.sock")) as c:
            log = TrioLogClient(c)
            await log.open()
            log.direct = False  # as against a node without service_request
            log.endpoint = await c.register(f"ipn:{NODE}.4321")
            (eid,) = await log.append_many([Put("z", b"1")])
            assert eid.seq == 1
            await _committed(log, "z", b"1")
        counters = node.status()["counters"]
        assert counters["sent"] >= 2
        assert counters["delivered"] >= 2
