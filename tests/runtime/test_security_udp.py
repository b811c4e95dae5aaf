"""End-to-end security between daemons over real UDP on loopback (issue 6, "Done when").

Nodes 1, 3 and 4 run with ``[security]``; node 2 is a forwarder with no keys
at all. Node 4 holds keys and node 3's certificate, but node 3 holds no
certificate for node 4 (uncertified). Every link goes through a relay the
test runs (like the testbed's link emulator), which records every datagram
and can tamper with or replay them:

    1 --relay-- 2 --relay-- 3
    4 --relay--/

Checked: payload bytes never appear in the clear on any link; the keyless
forwarder forwards; a bit flipped in transit (primary block field, BCB or
payload, CRCs recomputed so the damage reaches the security check) makes
node 3 drop the bundle as unauthenticated; a replayed datagram is not
delivered again (also after a restart); bundles from the uncertified node
and, after a revocation list reaches node 3's key store while it runs, from
the revoked node are dropped. Rejections are counted in the node's status
and logged with their reason. And the ``[security]`` table's errors name the
key, like the rest of node.toml.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dcis.crypto import issue_revocation_list
from dcis.dtn.agent.security import NoCertificate
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.flags import BlockType
from dcis.dtn.cl.udp import (
    AckMode,
    DataSegment,
    decode_datagram_untrusted,
    encode_data_segment,
)
from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime.config import ConfigError, Limits, load_config
from dcis.dtn.runtime.node import Node
from dcis.dtn.runtime.security import SecurityConfig
from dcis.dtn.storage import KeyStore
from dcis.dtn.time import dtn_time_from_unix
from dcis.tools.dtn_node import main as dtn_node_main
from dcis.tools.testbed import make_keystores
from tests.fakes.fakenet import FakeNet
from tests.runtime.conftest import poll_until, write_plan

LINKS = ((1, 2), (2, 3), (2, 4))
Mutate = Callable[[int, int, bytes], bytes | None]


class Relay:
    """Watches and tampers with every datagram between the nodes on a
    :class:`FakeNet` (its ``hook``).

    ``seen`` records every datagram as it left its sender; ``mutate`` may
    replace one (or drop it: None) before it goes on; ``inject`` delivers a
    datagram as if a node had sent it (a replay).
    """

    def __init__(self, fakenet: FakeNet, addrs: dict[int, tuple[str, int]]) -> None:
        self.fakenet = fakenet
        self.addrs = addrs
        self._node_at = {a[1]: n for n, a in addrs.items()}
        self.seen: list[tuple[int, int, bytes]] = []
        self.mutate: Mutate | None = None
        fakenet.hook = self._hook

    def _hook(
        self, data: bytes, src: tuple[str, int], dst: tuple[str, int]
    ) -> bytes | None:
        frm, to = self._node_at.get(src[1]), self._node_at.get(dst[1])
        if frm is None or to is None:
            return data
        self.seen.append((frm, to, data))
        return data if self.mutate is None else self.mutate(frm, to, data)

    async def inject(self, frm: int, to: int, data: bytes) -> None:
        """Send ``data`` to ``to`` as if ``frm`` had sent it (a replay)."""
        self.fakenet.inject(data, self.addrs[frm], self.addrs[to])


@dataclasses.dataclass
class Net:
    nodes: dict[int, Node]
    relay: Relay
    configs: dict[int, NodeConfig]
    keys: Path
    clock: Callable[[], float]


@contextlib.asynccontextmanager
async def network(
    tmp: Path,
    *,
    sqlite_at_3: bool = False,
    mtu_bytes: int = 65_000,
    limits: Limits | None = None,
) -> AsyncIterator[Net]:
    """Nodes 1-4 (links 1-2, 2-3, 2-4) on a FakeNet: run under MockClock."""
    fakenet = FakeNet(seed=0)
    addrs = {n: ("127.0.0.1", fakenet.free_port()) for n in (1, 2, 3, 4)}
    relay = Relay(fakenet, addrs)
    lines = []
    for a, b in LINKS:
        lines += [
            f"a contact +0 +3600 {a} {b} 100000000",
            f"a contact +0 +3600 {b} {a} 100000000",
        ]
    plan = write_plan(tmp / "plan.ionrc", lines)
    # Node 2 gets no key store at all; node 3 gets no certificate of node 4.
    keys = tmp / "keys"
    stores = make_keystores(keys, [1, 3, 4], certified=[1, 3])
    neighbours: dict[int, list[int]] = {n: [] for n in addrs}
    for a, b in LINKS:
        neighbours[a].append(b)
        neighbours[b].append(a)
    epoch = time.time() - 1.0
    # One DTN clock for the four nodes (and a restarted one): each fixes its
    # offset from trio's (virtual) clock with this at start. The wall clock
    # read node by node would skew them by the real seconds their starts
    # take on a loaded machine (virtual time stands still meanwhile), as in
    # tests/runtime/test_membership_resources.py.
    start = trio.current_time()

    def clock() -> float:
        return epoch + 1.0 + (trio.current_time() - start)

    configs: dict[int, NodeConfig] = {}
    for n in addrs:
        configs[n] = NodeConfig(
            node=n,
            listen=addrs[n],
            plan=str(plan),
            plan_epoch_unix_s=epoch,
            mtu_bytes=mtu_bytes,
            limits=limits or Limits(),
            store_path=str(tmp / f"n{n}.db")
            if (n == 3 and sqlite_at_3)
            else ":memory:",
            # Virtual time: no fsync thread (see tests/fakes/fakenet.py).
            store_synchronous="NORMAL",
            neighbours=tuple(
                NeighbourConfig(node=m, address=addrs[m], ack=AckMode.ON)
                for m in neighbours[n]
            ),
            security=SecurityConfig(keystore=str(stores[n]), reload_interval_s=0.1)
            if n in stores
            else None,
        )
    async with contextlib.AsyncExitStack() as stack:
        nodes = {
            n: await stack.enter_async_context(
                open_node(c, udp_socket=fakenet.socket, clock=clock)
            )
            for n, c in configs.items()
        }
        # At one virtual instant every node reads the same DTN time.
        assert len({node.now_ms() for node in nodes.values()}) == 1
        yield Net(nodes, relay, configs, keys, clock)


def _windows(payload: bytes) -> list[bytes]:
    # A leak of >= 31 contiguous bytes contains one of these aligned windows.
    return [payload[i : i + 16] for i in range(0, len(payload) - 15, 16)]


def _counters(node: Node) -> dict[str, int]:
    c: dict[str, int] = node.status()["counters"]
    return c


async def _nothing_more(inbox: Any, wait_s: float = 0.5) -> None:
    with trio.move_on_after(wait_s):
        got = await inbox.receive()
        raise AssertionError(f"unexpected delivery: {got}")


def _security_log(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        getattr(r, "fields", {})
        for r in caplog.records
        if r.getMessage() == "security_rejected"
    ]


async def test_payload_is_sealed_on_every_link_and_the_keyless_forwarder_forwards(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(11)
    payloads = [rng.randbytes(700) for _ in range(5)]
    async with network(tmp_path) as net:
        n1, n2, n3 = net.nodes[1], net.nodes[2], net.nodes[3]
        async with n3.endpoint("ipn:3.1") as inbox:
            with trio.fail_after(20):
                for p in payloads:
                    await n1.send("ipn:3.1", p, source="ipn:1.1")
                got = [await inbox.receive() for _ in payloads]
        assert sorted(g.payload for g in got) == sorted(payloads)
        assert {g.source for g in got} == {"ipn:1.1"}
        # Counted when node 3 acknowledged it: wait for the last ACK.
        await poll_until(lambda: _counters(n2)["forwarded"] >= 5, timeout_s=10)
        st1, st2, st3 = n1.status(), n2.status(), n3.status()
    # Both hops carried them; nothing on any link holds a window of a payload.
    data_links = {
        (frm, to)
        for frm, to, d in net.relay.seen
        if isinstance(decode_datagram_untrusted(d), DataSegment)
    }
    assert {(1, 2), (2, 3)} <= data_links
    for p in payloads:
        for _, _, d in net.relay.seen:
            assert not any(w in d for w in _windows(p))
    # The forwarder has no keys and no policy, and forwarded every bundle.
    assert st2["security"] == {"enabled": False}
    assert st2["counters"]["forwarded"] >= 5
    assert st1["counters"]["security_protected_sealed"] == 5
    assert st3["counters"]["security_accepted"] == 5
    assert st3["counters"]["security_rejected"] == 0
    assert st3["security"]["enabled"] is True
    assert st3["security"]["accepted_contexts"] == [-102, -101]


@pytest.mark.parametrize("whole", [False, True], ids=["fragments", "parts"])
async def test_a_sealed_bundle_fragmented_on_the_way_is_reassembled_and_opened(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, whole: bool
) -> None:
    # Over the MTU: fragments (UDP transfers off), or whole in PART segments.
    payload = random.Random(3).randbytes(6000)
    limits = Limits() if whole else Limits(udp_max_transfer_bytes=0)
    async with network(tmp_path, mtu_bytes=1000, limits=limits) as net:
        n1, n3 = net.nodes[1], net.nodes[3]
        async with n3.endpoint("ipn:3.1") as inbox:
            with trio.fail_after(20):
                await n1.send("ipn:3.1", payload, source="ipn:1.1")
                got = await inbox.receive()
        assert got.payload == payload
        c1, c3 = _counters(n1), _counters(n3)
    if whole:
        assert c1["fragmented"] == c3["reassembled"] == 0
        assert c1["udp_parts_completed"] == 0 < c3["udp_parts_completed"]
    else:
        assert c1["fragmented"] >= 1
        assert c3["reassembled"] == 1
    assert c3["security_accepted"] == 1
    for _, _, d in net.relay.seen:
        assert not any(w in d for w in _windows(payload))


def _flip(rng: random.Random, data: bytes) -> bytes:
    """Flip one bit of a protected part of the bundle in a DATA datagram and
    recompute the CRCs, as an attacker who knows the format would."""
    seg = decode_datagram_untrusted(data)
    assert isinstance(seg, DataSegment)
    b = decode_bundle_untrusted(seg.bundle)
    where = rng.choice(("primary", "bcb", "payload"))
    if where == "primary":
        p = b.primary
        field = rng.choice(("lifetime", "sequence", "service", "report_to"))
        if field == "lifetime":
            p = dataclasses.replace(
                p, lifetime_ms=p.lifetime_ms ^ (1 << rng.randrange(20))
            )
        elif field == "sequence":
            c = p.creation
            p = dataclasses.replace(
                p,
                creation=dataclasses.replace(
                    c, sequence=c.sequence ^ (1 << rng.randrange(8))
                ),
            )
        else:
            if not isinstance(p.report_to, IpnEid):
                field = "service"
            eid = p.destination if field == "service" else p.report_to
            assert isinstance(eid, IpnEid)
            bad = IpnEid(eid.node, eid.service ^ (1 << rng.randrange(1, 8)))
            if field == "service":
                p = dataclasses.replace(p, destination=bad)
            else:
                p = dataclasses.replace(p, report_to=bad)
        b = dataclasses.replace(b, primary=p)
    else:
        code = BlockType.BCB if where == "bcb" else BlockType.PAYLOAD
        blocks: list[CanonicalBlock] = []
        for blk in b.blocks:
            if blk.type_code == code:
                raw = bytearray(blk.data)
                bit = rng.randrange(len(raw) * 8)
                raw[bit // 8] ^= 1 << (bit % 8)
                blk = dataclasses.replace(blk, data=bytes(raw))
            blocks.append(blk)
        b = dataclasses.replace(b, blocks=tuple(blocks))
    return encode_data_segment(
        sender=seg.sender, token=seg.token, bundle=encode_bundle(b)
    )


async def test_any_bit_flipped_in_transit_is_dropped_as_unauthenticated(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(5)
    flipped = 0

    def tamper(frm: int, to: int, data: bytes) -> bytes:
        nonlocal flipped
        if (frm, to) != (2, 3) or not isinstance(
            decode_datagram_untrusted(data), DataSegment
        ):
            return data
        flipped += 1
        return _flip(rng, data)

    count = 12
    async with network(tmp_path) as net:
        net.relay.mutate = tamper
        n1, n3 = net.nodes[1], net.nodes[3]
        async with n3.endpoint("ipn:3.1") as inbox:
            for i in range(count):
                await n1.send("ipn:3.1", b"secret %d " % i * 20, source="ipn:1.1")
            await poll_until(
                lambda: (
                    _counters(n3)["security_rejected_authentication_failed"] >= count
                ),
                timeout_s=30,
            )
            await _nothing_more(inbox)
        c3 = _counters(n3)
    assert flipped >= count
    assert c3["security_accepted"] == 0
    assert c3["delivered"] == 0
    # Each rejection is logged with the policy's reason and the bundle.
    logged = _security_log(caplog)
    assert len(logged) >= count
    assert {f["reason"] for f in logged} == {"authentication_failed"}
    assert all(f["source"] == "ipn:1.1" and f["bundle"] for f in logged)


async def test_a_replayed_bundle_is_not_delivered_again_even_after_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with network(tmp_path, sqlite_at_3=True) as net:
        n1, n3 = net.nodes[1], net.nodes[3]
        async with n3.endpoint("ipn:3.1") as inbox:
            with trio.fail_after(20):
                await n1.send("ipn:3.1", b"pay me once", source="ipn:1.1")
                got = await inbox.receive()
            assert got.payload == b"pay me once"
            captured = [
                d
                for frm, to, d in net.relay.seen
                if (frm, to) == (2, 3)
                and isinstance(decode_datagram_untrusted(d), DataSegment)
            ]
            assert captured
            for _ in range(3):
                await net.relay.inject(2, 3, captured[0])
            await poll_until(lambda: _counters(n3)["duplicates"] >= 1, timeout_s=10)
            await _nothing_more(inbox)
        assert _counters(n3)["delivered"] == 1
    # A restarted node 3 (same store) still refuses it, replayed from the
    # address node 3 knows as node 2's.
    async with (
        open_node(
            net.configs[3], udp_socket=net.relay.fakenet.socket, clock=net.clock
        ) as n3b,
        n3b.endpoint("ipn:3.1") as inbox2,
    ):
        before = _counters(n3b)["datagrams_in"]
        await net.relay.inject(2, 3, captured[0])
        await poll_until(lambda: _counters(n3b)["datagrams_in"] > before, timeout_s=10)
        await _nothing_more(inbox2)
        c = _counters(n3b)
        assert c["delivered"] == 0
        assert c["security_accepted"] == 0
        # Recognised: by the store's record of delivered bundles, or by
        # the policy's replay window.
        assert c["duplicates"] + c["security_rejected_replayed"] >= 1


async def test_bundles_from_uncertified_or_revoked_nodes_are_dropped(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    caplog.set_level(logging.WARNING)
    async with network(tmp_path) as net:
        n1, n2, n3, n4 = (net.nodes[n] for n in (1, 2, 3, 4))
        async with n3.endpoint("ipn:3.1") as inbox:
            # Node 4 can seal for node 3, but node 3 has no certificate of 4.
            for i in range(3):
                await n4.send("ipn:3.1", b"from four %d" % i, source="ipn:4.1")
            with trio.fail_after(20):
                await n1.send("ipn:3.1", b"from one", source="ipn:1.1")
                assert (await inbox.receive()).source == "ipn:1.1"
            await poll_until(
                lambda: _counters(n3)["security_rejected_uncertified_source"] >= 3,
                timeout_s=20,
            )
            # The operator revokes node 1; the list reaches node 3's key store
            # (as `dcis keys import` would put it) while node 3 runs.
            op = KeyStore(net.keys / "operator").read_operator_key()
            rl = issue_revocation_list(
                op, version=1, issued_ms=int(dtn_time_from_unix(net.clock())), nodes=[1]
            )
            KeyStore(net.keys / "node3").write_revocations(rl)
            await poll_until(
                lambda: n3.status()["security"]["revocation_version"] == 1,
                timeout_s=10,
            )
            for i in range(2):
                await n1.send("ipn:3.1", b"revoked %d" % i, source="ipn:1.1")
            await poll_until(
                lambda: _counters(n3)["security_rejected_revoked_source"] >= 2,
                timeout_s=20,
            )
            await _nothing_more(inbox)
        c3, c2 = _counters(n3), _counters(n2)
    assert c3["security_accepted"] == 1
    assert c3["delivered"] == 1
    # The keyless forwarder carried all six: it does not (cannot) judge.
    assert c2["forwarded"] >= 6
    reasons = [f["reason"] for f in _security_log(caplog)]
    assert reasons.count("uncertified_source") >= 3
    assert reasons.count("revoked_source") >= 2


# ------------------------------------------------------------------ config


def _store(tmp: Path, node: int = 1) -> Path:
    return make_keystores(tmp / "keys", [node])[node]


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("enabled = true", "security.keystore: missing"),
        ('keystore = "k"\ncolour = 1', "security.colour: unknown key"),
        ('keystore = "k"\naccepted_contexts = [7]', "security.accepted_contexts: "),
        ('keystore = "k"\naccepted_contexts = []', "security.accepted_contexts: "),
        ('keystore = "k"\naccepted_contexts = [1]', "security.symmetric_key_files: "),
        ('keystore = "k"\nreplay_window_ms = 0', "security.replay_window_ms: "),
        ('keystore = "k"\nreplay_window_ms = true', "security.replay_window_ms: "),
        (
            'keystore = "k"\nsign_only_destinations = ["x"]',
            "security.sign_only_destinations: ",
        ),
        ('keystore = "k"\nenabled = "yes"', "security.enabled: "),
        ('keystore = "k"\nreload_interval_s = 0', "security.reload_interval_s: "),
    ],
)
def test_bad_security_keys_are_named(tmp_path: Path, table: str, key: str) -> None:
    p = tmp_path / "node.toml"
    p.write_text(f"node = 1\n[security]\n{table}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(key), str(e.value)
    assert "\n" not in str(e.value)


def test_good_security_table_loads_with_the_keystore_relative_to_the_file(
    tmp_path: Path,
) -> None:
    p = tmp_path / "node.toml"
    p.write_text(
        "node = 1\n[security]\n"
        'keystore = "keys/node1"\naccepted_contexts = [-101]\n'
        'sign_only_destinations = ["ipn:9.1"]\nreplay_window_ms = 1000\n'
    )
    s = load_config(p).security
    assert s is not None
    assert s.keystore == str(tmp_path / "keys/node1")
    assert s.accepted_contexts == (-101,)
    assert s.sign_only_destinations == ("ipn:9.1",)
    assert s.replay_window_ms == 1000
    p.write_text("node = 1\n[security]\nenabled = false\n")
    off = load_config(p).security
    assert off is not None
    assert not off.enabled


def _run_daemon(
    tmp: Path, capsys: pytest.CaptureFixture[str], store: Path, node: int = 1
) -> str:
    p = tmp / "node.toml"
    p.write_text(
        f'node = {node}\nlisten = "127.0.0.1:0"\napp_socket = "{tmp}/n.sock"\n'
        f'[security]\nkeystore = "{store}"\n'
    )
    assert dtn_node_main(["--config", str(p)]) == 2
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if not line.startswith("{")
    ]
    assert len(err) == 1, err
    return err[0]


def test_key_store_problems_stop_the_daemon_with_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = _run_daemon(tmp_path, capsys, tmp_path / "nowhere")
    assert missing.startswith("error: security.keystore: ")
    assert "node.key not found" in missing
    store = _store(tmp_path)
    # Someone else's key store.
    wrong = _run_daemon(tmp_path, capsys, store, node=2)
    assert wrong.startswith("error: security.keystore: ")
    assert "belongs to node 1" in wrong
    # A private key others could read is refused, like ssh does.
    os.chmod(store / "node.key", 0o644)
    loose = _run_daemon(tmp_path, capsys, store)
    assert loose.startswith("error: security.keystore: refusing to load private key")
    os.chmod(store / "node.key", 0o600)
    # A certificate from another operator.
    other = make_keystores(tmp_path / "other", [1])[1]
    (store / "node.cert").write_bytes((other / "node.cert").read_bytes())
    forged = _run_daemon(tmp_path, capsys, store)
    assert forged.startswith("error: security.keystore: ")


async def test_a_secure_node_refuses_to_send_to_an_uncertified_destination(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    sock = str(tmp_path / "n1.sock")
    cfg = NodeConfig(
        node=1, app_socket=sock, security=SecurityConfig(keystore=str(store))
    )
    async with open_node(cfg) as n1:
        with pytest.raises(NoCertificate):
            await n1.send("ipn:9.1", b"x", source="ipn:1.1")
        # An application hears why, in one line.
        async with open_trio_client(sock) as c:
            with pytest.raises(
                ClientError, match="no valid certificate for destination node 9"
            ):
                await c.send("ipn:9.1", b"x", source="ipn:1.1")
        # Its own endpoints need no protection.
        async with n1.endpoint("ipn:1.5") as inbox:
            await n1.send("ipn:1.5", b"local", source="ipn:1.1")
            with trio.fail_after(10):
                assert (await inbox.receive()).payload == b"local"
        assert n1.status()["counters"]["security_protected_sealed"] == 0


# ------------------------------------------------------------------ daemons


async def test_secure_testbed_daemons_seal_and_deliver_and_dcis_status_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dcis.tools.cli import main as dcis
    from dcis.tools.testbed import Testbed, TestbedOptions

    plan = write_plan(
        tmp_path / "line.ionrc",
        [
            f"a contact +0 +60 {a} {b} 10000000"
            for a, b in ((1, 2), (2, 1), (2, 3), (3, 2))
        ],
    )
    tb = Testbed(
        TestbedOptions(
            plan_path=plan,
            workdir=tmp_path / "tb",
            start_margin_s=1.0,
            log_level="warning",
            secure=True,
        )
    )
    async with tb.running():
        # Sent directly (no plan-time deadline to miss on a loaded machine).
        for src, dst, size, count in ((1, 3, 400, 5), (3, 1, 300, 2)):
            for _ in range(count):
                assert await tb.send(None, src, dst, size) is not None
        await poll_until(lambda: len(tb.ledger.arrivals) >= 7, timeout_s=30)
        out = await trio.to_thread.run_sync(
            lambda: dcis(["status", "--socket", tb.socket_of(3)])
        )
        assert out == 0
        text = capsys.readouterr().out
        js = await trio.to_thread.run_sync(
            lambda: dcis(["status", "--socket", tb.socket_of(1), "--json"])
        )
        assert js == 0
        st1 = json.loads(capsys.readouterr().out)
    assert set(tb.ledger.arrivals) == set(tb.ledger.sent)
    assert "security_accepted=5" in text
    assert "security_protected_sealed=2" in text
    assert st1["counters"]["security_protected_sealed"] == 5
    assert st1["counters"]["security_accepted"] == 2
    assert st1["security"]["enabled"] is True


def test_key_store_changes_are_picked_up_and_bad_ones_do_not_weaken_the_node(
    tmp_path: Path,
) -> None:
    from dcis.crypto import OperatorKey
    from dcis.dtn.runtime.security import NodeSecurity

    stores = make_keystores(tmp_path / "keys", [1, 2], certified=[1])
    events: list[tuple[str, dict[str, Any]]] = []

    def log(level: str, event: str, **fields: Any) -> None:
        events.append((event, fields))

    sec = NodeSecurity(SecurityConfig(keystore=str(stores[1])), node=1, log=log)
    assert sec.status()["certificates"] == 1
    assert not sec.reload()  # nothing changed
    ks1 = KeyStore(stores[1])
    now = int(dtn_time_from_unix(time.time()))
    # A list signed by someone else is refused; the node keeps its state.
    forged = issue_revocation_list(
        OperatorKey.generate(), version=5, issued_ms=now, nodes=[2]
    )
    ks1.write_revocations(forged)
    assert sec.reload()
    assert events[-1][0] == "revocations_rejected"
    assert sec.status()["revocation_version"] == 0
    # The operator's list is adopted.
    op = KeyStore(tmp_path / "keys" / "operator").read_operator_key()
    ks1.write_revocations(
        issue_revocation_list(op, version=1, issued_ms=now, nodes=[2])
    )
    assert sec.reload()
    assert events[-1][0] == "revocations_updated"
    assert sec.status()["revocation_version"] == 1
    assert sec.policy.revocations.is_revoked(2)
    # A peer's certificate imported while running is trusted from then on.
    ks1.write_certificate(KeyStore(stores[2]).read_own_certificate())
    assert sec.reload()
    assert sec.status()["certificates"] == 2
    # A corrupt file is logged, not fatal.
    (stores[1] / "revocations.cbor").write_bytes(b"\xff junk")
    assert sec.reload()
    assert events[-1][0] == "keystore_reload_failed"
    assert sec.policy.revocations.is_revoked(2)
