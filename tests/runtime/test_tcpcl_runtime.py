"""TCPCLv4 between two in-process nodes over loopback TCP, with and without TLS
(real sockets; no timing assertions)."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
import trio

from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime.config import ConfigError, config_from_dict
from dcis.dtn.runtime.tcpcl import TcpclSettings
from tests.runtime.conftest import poll_until
from tests.runtime.tls_certs import make_ca_and_nodes


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pair(
    tmp: Path, tls: TcpclSettings | None = None, tls2: TcpclSettings | None = None
) -> tuple[NodeConfig, NodeConfig]:
    p1, p2 = free_tcp_port(), free_tcp_port()
    c1 = NodeConfig(
        node=1,
        store_path=str(tmp / "n1.db"),
        tcpcl_listen=("127.0.0.1", p1),
        tcpcl=tls or TcpclSettings(),
        neighbours=(NeighbourConfig(node=2, address=("127.0.0.1", p2), cla="tcpcl"),),
    )
    c2 = NodeConfig(
        node=2,
        store_path=str(tmp / "n2.db"),
        tcpcl_listen=("127.0.0.1", p2),
        tcpcl=tls2 or tls or TcpclSettings(),
        neighbours=(NeighbourConfig(node=1, address=("127.0.0.1", p1), cla="tcpcl"),),
    )
    return c1, c2


def tls_settings(d: Path, n: int, **kw: object) -> TcpclSettings:
    return TcpclSettings(
        tls_cert=str(d / f"node{n}.pem"),
        tls_key=str(d / f"node{n}.key"),
        tls_ca=str(d / "ca.pem"),
        **kw,  # type: ignore[arg-type]
    )


async def exchange(c1: NodeConfig, c2: NodeConfig, n: int = 20) -> dict[str, object]:
    async with open_node(c1) as n1, open_node(c2) as n2:
        async with n2.endpoint("ipn:2.5") as inbox, n1.endpoint("ipn:1.5") as back:
            with trio.fail_after(60):
                for i in range(n):
                    await n1.send(
                        "ipn:2.5", b"b%d" % i + bytes(i * 100), source="ipn:1.1"
                    )
                got = {(await inbox.receive()).payload for _ in range(n)}
                await n2.send("ipn:1.5", b"reply", source="ipn:2.1")
                assert (await back.receive()).payload == b"reply"
        assert got == {b"b%d" % i + bytes(i * 100) for i in range(n)}
        a1 = n1.agent
        assert a1 is not None
        await poll_until(lambda: a1.stored == 0, timeout_s=30)
        st = n1.status()
        nb = st["neighbours"]["2"]
        assert nb["cla"] == "tcpcl"
        assert nb["session"] == "established"
        assert nb["tls"] is (c1.tcpcl.tls_cert is not None)
        return dict(st["counters"])


async def test_two_nodes_exchange_bundles_over_tcpcl(tmp_path: Path) -> None:
    c1, c2 = pair(tmp_path)
    counters = await exchange(c1, c2)
    assert counters["tcpcl_bundles_out"] == 20
    assert counters["tcpcl_bundles_in"] == 1


async def test_two_nodes_exchange_bundles_over_tcpcl_with_tls(tmp_path: Path) -> None:
    d = make_ca_and_nodes(tmp_path / "pki", [1, 2])
    c1, c2 = pair(
        tmp_path,
        tls_settings(d, 1, require_tls=True),
        tls_settings(d, 2, require_tls=True),
    )
    counters = await exchange(c1, c2)
    assert counters["tcpcl_bundles_out"] == 20


async def test_a_certificate_naming_another_node_ends_the_session(
    tmp_path: Path,
) -> None:
    d = make_ca_and_nodes(tmp_path / "pki", [1, 2], uri_of={2: "ipn:7.0"})
    c1, c2 = pair(tmp_path, tls_settings(d, 1), tls_settings(d, 2))
    c1 = dataclasses.replace(
        c1, neighbours=(dataclasses.replace(c1.neighbours[0], always_on=True),)
    )
    async with open_node(c1) as n1, open_node(c2):
        await n1.send("ipn:2.5", b"x", source="ipn:1.1")
        await poll_until(
            lambda: n1.status()["counters"]["tcpcl_failed"] >= 1, timeout_s=30
        )
        assert n1.status()["stored"] == 1  # not acknowledged: still held


async def test_a_dead_peer_fails_the_transmission_and_the_bundle_stays(
    tmp_path: Path,
) -> None:
    c1, _ = pair(tmp_path)
    async with open_node(c1) as n1:
        await n1.send("ipn:2.5", b"x", source="ipn:1.1")
        await poll_until(
            lambda: n1.status()["counters"]["transmit_failed"] >= 1, timeout_s=30
        )
        assert n1.status()["stored"] == 1


def test_tcpcl_config_keys(tmp_path: Path) -> None:
    make_ca_and_nodes(tmp_path, [3])
    cfg = config_from_dict(
        {
            "node": 3,
            "tcpcl_listen": "127.0.0.1:4556",
            "tcpcl": {"keepalive_s": 10, "tls_cert": "node3.pem", "tls_key": "node3.key",
                      "tls_ca": "ca.pem", "require_tls": True},
            "neighbours": [{"node": 4, "address": "127.0.0.1:4557", "cla": "tcpcl"}],
        },
        base_dir=tmp_path,
    )  # fmt: skip
    assert cfg.tcpcl_listen == ("127.0.0.1", 4556)
    assert cfg.tcpcl.keepalive_s == 10
    assert cfg.tcpcl.tls_ca == str(tmp_path / "ca.pem")
    assert cfg.neighbours[0].cla == "tcpcl"
    for bad, match in (
        ({"keepalive_s": 70000}, "keepalive_s"),
        ({"tls_cert": "node3.pem"}, "tls_key go together"),
        ({"require_tls": True}, "require_tls"),
        ({"tls_ca": "nope.pem"}, "no such file"),
        ({"mru": 1}, "unknown key"),
    ):
        with pytest.raises(ConfigError, match=match):
            config_from_dict({"node": 3, "tcpcl": bad}, base_dir=tmp_path)


async def closed_by_peer(stream: trio.SocketStream) -> bool:
    """True when the peer closed (EOF or reset) without sending anything."""
    try:
        return await stream.receive_some(100) == b""
    except trio.BrokenResourceError:
        return True


async def test_passive_sessions_are_bounded_and_junk_is_closed(tmp_path: Path) -> None:
    port = free_tcp_port()
    cfg = NodeConfig(
        node=4,
        store_path=":memory:",
        tcpcl_listen=("127.0.0.1", port),
        tcpcl=TcpclSettings(max_sessions=1),
    )
    async with open_node(cfg) as n4:
        with trio.fail_after(30):
            first = await trio.open_tcp_stream("127.0.0.1", port)
            await first.send_all(b"dtn!\x04\x00")
            assert await first.receive_some(6) == b"dtn!\x04\x00"
            second = await trio.open_tcp_stream("127.0.0.1", port)
            assert await closed_by_peer(second)  # over the bound: closed
            await second.aclose()
            junk = await trio.open_tcp_stream("127.0.0.1", port)
            await first.aclose()  # frees the slot
            await poll_until(
                lambda: n4.tcpcl is not None and n4.tcpcl._passive_count == 0,
                timeout_s=10,
            )
            junk2 = await trio.open_tcp_stream("127.0.0.1", port)
            await junk2.send_all(b"GET / HTTP/1.1\r\n\r\n")
            assert await closed_by_peer(junk2)  # not TCPCL: closed, no answer
            await junk.aclose()
            await junk2.aclose()


async def test_dcis_status_shows_a_tcpcl_neighbour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # found against a live HDTN: "dcis status" died with KeyError 'in_contact'
    # for a cla = "tcpcl" neighbour (it has a session, not a contact)
    import argparse

    from dcis.tools import cmd_status

    c1, _ = pair(tmp_path)
    sock = str(tmp_path / "n1.sock")
    c1 = dataclasses.replace(c1, app_socket=sock)
    async with open_node(c1):
        args = argparse.Namespace(socket=sock, config=None, node=None, json=False)
        assert await trio.to_thread.run_sync(cmd_status.run, args) == 0
    out = capsys.readouterr().out
    assert "neighbour 2: tcpcl 127.0.0.1:" in out
    assert "no session tls=no in_flight=0 queued=0" in out
