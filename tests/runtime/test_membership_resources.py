"""Resources fed by the embedding program (``Node.set_resources``) and the
app API (``set_resources``, ``TrioClient.set_resources``) reach another
node's membership view, as ``dcis members --json`` prints it; bad values are
refused with a typed error and change nothing. Three nodes with security on
a FakeNet under MockClock (issue 12, item 1)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcis.consensus.membership.service import MembershipConfig, MembershipService
from dcis.consensus.membership.wire import (
    Kind,
    Message,
    decode_message_untrusted,
    encode_message,
)
from dcis.dtn.cl.udp import AckMode
from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.node import Service
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime.node import Node
from dcis.dtn.runtime.security import SecurityConfig
from dcis.tools.cmd_members import row_json
from dcis.tools.testbed import make_keystores
from tests.fakes.fakenet import FakeNet
from tests.runtime.conftest import write_plan

NODES = (1, 2, 3)
INTERVAL_MS = 2_000  # resources_min_interval_ms


def _membership(node: int, incarnation: int) -> Sequence[Service]:
    return [MembershipService(MembershipConfig(resources_min_interval_ms=INTERVAL_MS))]


@contextlib.asynccontextmanager
async def mesh(
    tmp: Path, *, with_membership: bool = True
) -> AsyncIterator[dict[int, Node]]:
    fakenet = FakeNet(seed=3)
    addrs = {n: ("127.0.0.1", fakenet.free_port()) for n in NODES}
    lines = [
        f"a contact +0 +3600 {a} {b} 100000000" for a in NODES for b in NODES if a != b
    ]
    plan = write_plan(tmp / "plan.ionrc", lines)
    stores = make_keystores(tmp / "keys", list(NODES))
    epoch = time.time() - 1.0
    # One DTN clock for the three nodes: each fixes its offset from trio's
    # (virtual) clock with this at start. The wall clock read node by node
    # would skew them by the real seconds their starts take on a loaded
    # machine (virtual time stands still meanwhile), and a node that far
    # behind sees its peers' short-lived membership bundles as expired.
    start = trio.current_time()

    def clock() -> float:
        return epoch + 1.0 + (trio.current_time() - start)

    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for n in NODES:
            cfg = NodeConfig(
                node=n,
                listen=addrs[n],
                plan=str(plan),
                plan_epoch_unix_s=epoch,
                store_path=":memory:",
                store_synchronous="NORMAL",
                app_socket=str(tmp / f"n{n}.sock"),
                neighbours=tuple(
                    NeighbourConfig(node=m, address=addrs[m], ack=AckMode.ON)
                    for m in NODES
                    if m != n
                ),
                security=SecurityConfig(keystore=str(stores[n])),
            )
            nodes[n] = await stack.enter_async_context(
                open_node(
                    cfg,
                    udp_socket=fakenet.socket,
                    services=_membership if with_membership else None,
                    clock=clock,
                )
            )
        yield nodes


async def members_json(node: Node) -> dict[str, Any]:
    """What ``dcis members --json`` prints for ``node``: the same query
    bundle from an endpoint of the node, the same rows, the same JSON."""
    me = node.config.node
    async with node.endpoint(f"ipn:{me}.4242") as inbox:
        await node.send(
            f"ipn:{me}.16",
            encode_message(Message(kind=Kind.QUERY, seq=77)),
            source=f"ipn:{me}.4242",
        )
        while True:
            b = await inbox.receive()
            msg = decode_message_untrusted(b.payload)
            if msg.kind == Kind.ANSWER and msg.seq == 77:
                return {"members": [row_json(r) for r in msg.members]}


async def resources_of(viewer: Node, subject: int) -> dict[str, Any] | None:
    """The subject's advertised resources in the viewer's view, or None while
    the viewer has not heard of the subject yet."""
    doc = await members_json(viewer)
    rows = [m for m in doc["members"] if m["node"] == subject]
    assert len(rows) <= 1, rows
    if not rows:
        return None
    res: dict[str, Any] = rows[0]["resources"]
    return res


async def wait_for(viewer: Node, subject: int, want: dict[str, Any]) -> None:
    with trio.fail_after(600):  # virtual seconds
        while True:
            got = await resources_of(viewer, subject)
            if got is not None and all(got[k] == v for k, v in want.items()):
                return
            await trio.sleep(1.0)


async def test_node_set_resources_reaches_another_nodes_members_view(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with mesh(tmp_path) as nodes:
        await trio.sleep(5.0)  # joined
        want = {
            "store_free_bytes": 6_000,
            "store_total_bytes": 10_000,
            "cpu_load": 0.25,
            "battery_pct": 81.5,
            "sunlit": False,
            "temperature_c": -12.5,
        }
        got = nodes[1].set_resources(**want)
        assert got == want
        await wait_for(nodes[2], 1, want)
        await wait_for(nodes[3], 1, want)
        # A partial update keeps the other fields; a change within the
        # re-advertisement interval is not lost, it goes out at its turn.
        assert nodes[1].set_resources(cpu_load=0.5)["store_free_bytes"] == 6_000
        nodes[1].set_resources(battery_pct=None, sunlit=True)
        await wait_for(
            nodes[2], 1, {**want, "cpu_load": 0.5, "battery_pct": None, "sunlit": True}
        )
        own = await resources_of(nodes[1], 1)
        assert own is not None
        assert own["cpu_load"] == 0.5


@pytest.mark.parametrize(
    "bad",
    [
        {"cpu_load": -1.0},
        {"cpu_load": float("nan")},
        {"battery_pct": 100.5},
        {"battery_pct": True},
        {"sunlit": 1},
        {"temperature_c": -300.0},
        {"temperature_c": float("inf")},
        {"store_free_bytes": -1},
        {"store_total_bytes": 1.5},
        {"store_free_bytes": 11, "store_total_bytes": 10},
        {"colour": "blue"},
    ],
)
async def test_bad_values_are_refused_and_change_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, bad: dict[str, Any]
) -> None:
    async with mesh(tmp_path) as nodes:
        await trio.sleep(3.0)
        svc = nodes[1].core.services[16]  # type: ignore[union-attr]
        assert isinstance(svc, MembershipService)
        before, inc = svc.advertised_resources(), svc.incarnation
        with pytest.raises(InvalidArgument):
            nodes[1].set_resources(**bad)
        async with open_trio_client(str(tmp_path / "n1.sock")) as app:
            with pytest.raises(ClientError):
                await app.set_resources(**bad)
        assert svc.advertised_resources() == before
        assert svc.incarnation == inc


async def test_app_api_set_resources_reaches_another_nodes_members_view(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with mesh(tmp_path) as nodes:
        await trio.sleep(5.0)
        async with open_trio_client(str(tmp_path / "n3.sock")) as app:
            got = await app.set_resources(
                store_total_bytes=1 << 40, store_free_bytes=1 << 39, temperature_c=41
            )
        assert got["store_free_bytes"] == 1 << 39
        assert got["temperature_c"] == 41.0
        await wait_for(
            nodes[1],
            3,
            {
                "store_total_bytes": 1 << 40,
                "store_free_bytes": 1 << 39,
                "temperature_c": 41.0,
            },
        )


async def test_without_membership_set_resources_is_a_typed_error(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with mesh(tmp_path, with_membership=False) as nodes:
        with pytest.raises(InvalidArgument, match="membership"):
            nodes[1].set_resources(cpu_load=0.1)
        async with open_trio_client(str(tmp_path / "n1.sock")) as app:
            with pytest.raises(ClientError, match="membership"):
                await app.set_resources(cpu_load=0.1)


def test_dcis_members_set_parses_values() -> None:
    import argparse

    from dcis.tools.cmd_members import resource_setting

    assert resource_setting("cpu_load=0.4") == ("cpu_load", 0.4)
    assert resource_setting("store_free_bytes=123") == ("store_free_bytes", 123)
    assert resource_setting("sunlit=false") == ("sunlit", False)
    assert resource_setting("battery_pct=null") == ("battery_pct", None)
    for bad in ("colour=1", "cpu_load", "cpu_load=high"):
        with pytest.raises(argparse.ArgumentTypeError):
            resource_setting(bad)
