"""End-to-end security in the simulator (issue 6, "Done when").

Real agents on every node; nodes 1, 3, 4 and 5 are secure (a
``SecurityPolicy`` each), node 2 is a forwarder with no keys at all. Node 1
is certified; node 4 holds keys the operator never certified; node 5 is
certified but revoked. Bundles go 1/4/5 -> 2 -> 3 over contacts that never
coexist. A wrapper around each agent watches every ``Transmit`` (the bytes on
the links), every ``Deliver``, and lets a test tamper with what a node
receives.

Checked: payload bytes never appear in the clear on any link; the keyless
forwarder forwards; a bit flipped in transit (in the primary block, the BCB
or the payload) makes the destination drop the bundle as unauthenticated; a
replayed bundle is not delivered again; bundles from the uncertified and
the revoked node are dropped.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcis.crypto import NodeIdentity, OperatorKey, issue_revocation_list
from dcis.dtn.agent.actions import Action, Deliver, Event, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.security import SecurityPolicy
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted
from dcis.dtn.bpv7.canonical import encode_block
from dcis.dtn.bpv7.flags import BlockType, CrcType
from dcis.dtn.bpv7.primary import encode_primary
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import (
    SIM_EPOCH,
    Crash,
    SimConfig,
    Simulator,
    TrafficItem,
    sim_random_bytes,
)
from tests.unit.bpsec.helpers import certify

OP = OperatorKey.generate(entropy=b"sim operator".ljust(32, b"."))
IDS = {
    n: NodeIdentity.generate(n, entropy=f"sim node {n}".encode().ljust(32, b"."))
    for n in (1, 3, 4, 5)
}
SECURE = (1, 3, 4, 5)

# Node 4 is never certified: nobody holds a certificate for it.
CERTIFIED = [
    certify(OP, IDS[n], not_after_ms=SIM_EPOCH + 10**9, serial=100 + n)
    for n in (1, 3, 5)
]
REVOKE_5 = issue_revocation_list(OP, version=1, issued_ms=SIM_EPOCH, nodes=[5])
RATE = 200_000.0


def plan() -> ContactPlan:
    contacts = [
        Contact(1, 2, 10, 20, RATE),
        Contact(4, 2, 10, 20, RATE),
        Contact(5, 2, 10, 20, RATE),
        Contact(2, 3, 30, 40, RATE),
    ]
    return ContactPlan(contacts, [Range(c.frm, c.to, 0, 1000, 0.05) for c in contacts])


Mutator = Callable[[int, bytes], bytes]


class Spy:
    """Wraps one node's agent: records transmissions and deliveries, fills
    payloads with recognisable random bytes, optionally tampers with input."""

    def __init__(self, world: World, node: int, agent: Agent) -> None:
        self.world = world
        self.node = node
        self.agent = agent

    def _watch(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if isinstance(a, Transmit):
                self.world.transmitted.append((self.node, a.neighbor, a.data))
            elif isinstance(a, Deliver):
                self.world.delivered.append((self.node, a.source, a.payload))
            elif isinstance(a, Event):
                self.world.events.append((self.node, a.kind, a.detail))
        return actions

    def send(self, **kw: Any) -> tuple[str, list[Action]]:
        # The simulator sends zero bytes; zeros would prove nothing about
        # leaks, so each bundle carries fresh random bytes instead.
        payload = self.world.rng.randbytes(len(kw["payload"]))
        self.world.payloads.append(payload)
        kw["payload"] = payload
        key, actions = self.agent.send(**kw)
        return key, self._watch(actions)

    def on_receive(self, *, data: bytes, **kw: Any) -> list[Action]:
        if self.world.mutate is not None:
            data = self.world.mutate(self.node, data)
        self.world.received.append((self.node, data))
        return self._watch(self.agent.on_receive(data=data, **kw))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.agent, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            out = attr(*args, **kw)
            return self._watch(out) if isinstance(out, list) else out

        return call


class World:
    def __init__(
        self, *, crc_type: CrcType = CrcType.CRC32C, seed: int = 1, sim_seed: int = 7
    ) -> None:
        self.rng = random.Random(seed)
        self.sim_seed = sim_seed
        self.crc_type = crc_type
        self.transmitted: list[tuple[int, int, bytes]] = []
        self.received: list[tuple[int, bytes]] = []
        self.delivered: list[tuple[int, str, bytes]] = []
        self.events: list[tuple[int, str, str]] = []
        self.payloads: list[bytes] = []
        self.mutate: Mutator | None = None
        # One policy per node for the whole run (it outlives a crash: the
        # replay window is what a restarted node with an empty store keeps).
        self.policies = {
            n: SecurityPolicy(
                identity=IDS[n],
                operator_public=OP.public_key,
                certificates=CERTIFIED,
                revocations=REVOKE_5 if n == 3 else None,
                # Nonces from the run's seed: the run replays exactly.
                random_bytes=sim_random_bytes(sim_seed, n),
            )
            for n in SECURE
        }
        self.spies: dict[int, Spy] = {}

    def factory(
        self, *, node: int, store: Any, plan: Any, plan_epoch: Any, rng: Any
    ) -> Any:
        agent = Agent(
            node=node,
            store=store,
            plan=plan,
            plan_epoch=plan_epoch,
            rng=rng,
            config=AgentConfig(crc_type=self.crc_type),
            security=self.policies.get(node),
        )
        spy = self.spies[node] = Spy(self, node, agent)
        return spy

    def sim(self, traffic: list[TrafficItem], **kw: Any) -> Simulator:
        return Simulator(
            plan(),
            SimConfig(duration_s=kw.pop("duration_s", 60.0), seed=self.sim_seed),
            traffic=traffic,
            agent_factory=self.factory,
            **kw,
        )


def test_payload_never_in_the_clear_and_keyless_forwarder_forwards() -> None:
    w = World()
    s = w.sim([TrafficItem(at_s=1, src=1, dst=3, size_bytes=700, count=5)]).run()
    assert (s.sent, s.delivered, s.lost) == (5, 5, 0)
    # Delivered as sent: the destination decrypted them.
    assert sorted(p for n, _, p in w.delivered if n == 3) == sorted(w.payloads)
    # Both hops carried them, node 2 (no keys, no policy) included.
    hops = {(frm, to) for frm, to, _ in w.transmitted}
    assert hops == {(1, 2), (2, 3)}
    # No 16-byte window of any payload on any link (a leak of >= 31
    # contiguous bytes would contain one of these aligned windows).
    for payload in w.payloads:
        windows = [payload[i : i + 16] for i in range(0, len(payload) - 15, 16)]
        for _, _, data in w.transmitted:
            assert not any(win in data for win in windows)
    assert w.policies[3].counters["accepted"] == 5
    assert w.policies[1].counters["protected_sealed"] == 5


def _spans(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the primary block, the BCB and the payload block in ``data``."""
    b = decode_bundle_untrusted(data)
    primary = encode_primary(b.primary)
    spans = [(1, 1 + len(primary))]
    for blk in b.blocks:
        if blk.type_code in (BlockType.BCB, BlockType.PAYLOAD):
            enc = encode_block(blk)
            start = data.index(enc)
            spans.append((start, start + len(enc)))
    return spans


def test_any_bit_flipped_in_transit_is_dropped_as_unauthenticated() -> None:
    # No CRCs: every flip that still decodes reaches the security check (with
    # CRCs most flips die earlier as undecodable, which proves less).
    w = World(crc_type=CrcType.NONE, seed=2)
    flips = random.Random(3)

    def flip(node: int, data: bytes) -> bytes:
        if node != 3:
            return data
        start, end = flips.choice(_spans(data))
        bit = flips.randrange(start * 8, end * 8)
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        return bytes(bad)

    w.mutate = flip
    s = w.sim([TrafficItem(at_s=1, src=1, dst=3, size_bytes=300, count=40)]).run()
    assert s.sent == 40
    assert s.delivered == 0
    assert not [p for n, _, p in w.delivered if n == 3]
    c = w.policies[3].counters
    earlier = sum(
        1
        for n, kind, d in w.events
        if n == 3 and (kind == "expired" or (kind == "dropped" and "undecodable" in d))
    )
    # Every flipped bundle was refused: by the security check, or earlier as
    # undecodable (a flip in a CBOR head) or expired (a flip in the lifetime).
    # Nothing got through.
    assert c["accepted"] == 0
    assert c["rejected"] + earlier >= 40
    assert c["rejected_authentication_failed"] >= 20
    refusals = [d for n, kind, d in w.events if n == 3 and kind == "deleted"]
    assert refusals
    assert all("security" in d for d in refusals)


def test_replayed_bundle_is_not_delivered_again() -> None:
    w = World(seed=4)
    # Node 3 crashes after the delivery and restarts with an empty memory
    # store: its delivered-bundle records are gone, the replay window is not.
    sim = w.sim(
        [TrafficItem(at_s=1, src=1, dst=3, size_bytes=200)],
        crashes=[Crash(node=3, at_s=45, restart_at_s=46)],
    )
    sim.run_until(41)
    (captured,) = [d for n, d in w.received if n == 3]
    assert len(w.delivered) == 1
    # Replayed while node 3 still remembers delivering it: a duplicate.
    spy = w.spies[3]
    acts = spy.on_receive(cla="sim", neighbor=2, data=captured, now=sim.now)
    assert not [a for a in acts if isinstance(a, Deliver)]
    assert [a for a in acts if isinstance(a, Event) and a.kind == "duplicate"]
    sim.run_until(50)
    spy = w.spies[3]  # the restarted node's agent
    acts = spy.on_receive(cla="sim", neighbor=2, data=captured, now=sim.now)
    assert not [a for a in acts if isinstance(a, Deliver)]
    assert w.policies[3].counters["rejected_replayed"] == 1
    assert len(w.delivered) == 1


def test_bundles_from_uncertified_or_revoked_nodes_are_dropped() -> None:
    w = World(seed=5)
    s = w.sim(
        [
            TrafficItem(at_s=1, src=1, dst=3, size_bytes=100, count=2),
            TrafficItem(at_s=1, src=4, dst=3, size_bytes=100, count=3),
            TrafficItem(at_s=1, src=5, dst=3, size_bytes=100, count=4),
        ]
    ).run()
    assert s.sent == 9
    sources = sorted(src for n, src, _ in w.delivered if n == 3)
    assert sources == ["ipn:1.1", "ipn:1.1"]
    # The 7 rejected bundles were deleted on purpose, not lost.
    assert (s.delivered, s.deleted, s.pending, s.lost) == (2, 7, 0, 0)
    assert dict(s.deleted_reasons) == {"security": 7}
    c = w.policies[3].counters
    assert c["rejected_uncertified_source"] == 3
    assert c["rejected_revoked_source"] == 4
    # The forwarder carried all of them: it does not (cannot) judge.
    assert sum(1 for frm, to, _ in w.transmitted if (frm, to) == (2, 3)) == 9


def test_security_run_replays_exactly_from_its_seed() -> None:
    # Nonces come from a source derived from the run's seed, not the OS:
    # two runs with the same seed move the same bytes, so the trace (which
    # hashes every transmitted byte) is identical.
    def digest(sim_seed: int) -> str:
        w = World(seed=6, sim_seed=sim_seed)
        traffic = [
            TrafficItem(at_s=1, src=1, dst=3, size_bytes=400, count=6),
            TrafficItem(at_s=2, src=4, dst=3, size_bytes=100, count=2),
        ]
        s = w.sim(traffic).run()
        assert (s.delivered, s.deleted) == (6, 2)
        assert w.policies[1].counters["protected_sealed"] == 6
        return s.trace_sha256

    assert digest(7) == digest(7)
    # Same traffic and payloads, another seed: other nonces, other bytes.
    assert digest(7) != digest(8)


_DIGEST_SCRIPT = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from test_security_sim import World
from dcis.dtn.sim import TrafficItem
w = World(seed=6)
t = [TrafficItem(at_s=1, src=1, dst=3, size_bytes=400, count=6)]
print(w.sim(t).run().trace_sha256)
"""


def test_security_run_replays_across_processes_and_hash_seeds() -> None:
    here = Path(__file__).resolve().parent
    root = here.parents[1]
    outs = []
    for hash_seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT, str(here), str(root)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            cwd=root,
            timeout=120,
            check=True,
        )
        outs.append(proc.stdout.strip())
    assert len(outs[0]) == 64
    assert outs[0] == outs[1]
