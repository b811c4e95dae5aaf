"""A tiny stand-in agent and plan for testing the simulator engine alone.

The fake keeps the agent contract's shape (``send``/``on_receive``/... return
action lists; ``Ack`` once stored; ``Deliver`` then ``on_delivered``) with
static next-hop routing and a dict store, so engine tests do not depend on
the real agent's routing or encoding. Its bundles are ``b"key|dst|expiry_ms|"
+ payload``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcis.dtn.agent.actions import Ack, Action, Deliver, Event, Transmit
from dcis.dtn.errors import DtnError
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.sim import NodeSpec
from dcis.dtn.time import DtnTime


class FakeStoreFull(DtnError):
    """The fake store's limit (in bundles) is reached."""


@dataclass
class _Rec:
    key: str
    frag_group: str | None = None


@dataclass
class FakeStore:
    """Bundles by key; ``limit`` counts bundles. Durable ones live in DISKS."""

    limit: int = 1 << 30
    bundles: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)
    delivered: set[str] = field(default_factory=set)

    def records(self) -> list[_Rec]:
        return [_Rec(k) for k in self.bundles]

    def __len__(self) -> int:
        return len(self.bundles)


DISKS: dict[Path, FakeStore] = {}


def fake_store_factory(node: int, spec: NodeSpec, path: Path | None) -> FakeStore:
    limit = spec.store_limit_bytes if spec.store_limit_bytes is not None else 1 << 30
    if path is None:
        return FakeStore(limit)
    return DISKS.setdefault(path, FakeStore(limit))


@dataclass
class FakePlan:
    contacts: list[Contact]
    ranges: list[Range] = field(default_factory=list)

    def owlt_s(self, frm: int, to: int, at_s: float) -> float:
        for r in self.ranges:
            if {r.frm, r.to} == {frm, to} and r.start_s <= at_s <= r.end_s:
                return r.owlt_s
        return 0.0


class FakeAgent:
    """Static next-hop store-and-forward. ``routes[(node, dst)] = next_hop``."""

    def __init__(
        self,
        *,
        node: int,
        store: Any,
        routes: dict[tuple[int, int], int],
        rng: random.Random,
    ) -> None:
        self.node = node
        self.store: FakeStore = store
        self.routes = routes
        self.rng = rng
        self.seq = 0
        self.open: set[int] = set()
        self.inflight: dict[int, str] = {}  # tx_id -> key
        self.busy: set[str] = set()
        self.next_tx = 0
        self.endpoints: set[str] = set()

    def register(self, endpoint: str, *, now: int | None = None) -> None:
        self.endpoints.add(endpoint)

    def _forward(self, now: DtnTime) -> list[Action]:
        out: list[Action] = []
        for key, (dst, _exp, data) in sorted(self.store.bundles.items()):
            if key in self.busy or dst == self.node:
                continue
            hop = self.routes.get((self.node, dst))
            if hop in self.open:
                self.next_tx += 1
                self.inflight[self.next_tx] = key
                self.busy.add(key)
                assert hop is not None
                out.append(Transmit(hop, (data,), self.next_tx))
        return out

    def send(
        self,
        *,
        source: str,
        destination: str,
        payload: bytes,
        lifetime_ms: int,
        now: DtnTime,
        created: tuple[int, int] | None = None,
    ) -> tuple[str, list[Action]]:
        if len(self.store.bundles) >= self.store.limit:
            raise FakeStoreFull("store full")
        if created is None:  # else the same bundle again, as Agent.send's
            self.seq += 1
            created = (now, self.seq)
        key = f"{source}|{created[0]}|{created[1]}"
        expiry = created[0] + lifetime_ms
        dst = int(destination[4:].split(".")[0])
        # 0x9F first, as a BPv7 bundle starts: the UDP CL carries only those.
        data = b"\x9f" + f"{key}#{dst}#{expiry}#".encode() + payload
        self.store.bundles[key] = (dst, expiry, data)
        return key, self._forward(now)

    def on_receive(
        self,
        *,
        cla: str,
        neighbor: int | None,
        data: bytes,
        now: DtnTime,
        cl_token: int | None = None,
    ) -> list[Action]:
        key, dst_s, exp_s, payload = data[1:].split(b"#", 3)
        k, dst, exp = key.decode(), int(dst_s), int(exp_s)
        acks: list[Action] = (
            [] if cl_token is None or neighbor is None else [Ack(neighbor, cl_token)]
        )
        if k in self.store.bundles or k in self.store.delivered:
            return acks
        if len(self.store.bundles) >= self.store.limit:
            return [Event("refused", k, "store full")]
        self.store.bundles[k] = (dst, exp, data)
        out = acks
        if dst == self.node:
            out.append(Deliver(f"ipn:{dst}.1", "src", payload, 0, 0, k))
        return out + self._forward(now)

    def on_delivered(self, bundle_key: str, now: DtnTime) -> list[Action]:
        self.store.bundles.pop(bundle_key, None)
        self.store.delivered.add(bundle_key)
        return []

    def on_contact_start(self, contact: Contact, now: DtnTime) -> list[Action]:
        self.open.add(contact.to)
        return self._forward(now)

    def on_contact_end(self, contact: Contact, now: DtnTime) -> list[Action]:
        self.open.discard(contact.to)
        return []

    def on_transmit_done(self, tx_id: int, ok: bool, now: DtnTime) -> list[Action]:
        key = self.inflight.pop(tx_id)
        self.busy.discard(key)
        if ok:
            self.store.bundles.pop(key, None)
        return self._forward(now)

    def on_tick(self, now: DtnTime) -> list[Action]:
        out: list[Action] = []
        for key, (_dst, exp, _data) in sorted(self.store.bundles.items()):
            if exp <= now and key not in self.busy:
                del self.store.bundles[key]
                out.append(Event("expired", key))
        return out

    def next_deadline(self) -> DtnTime | None:
        exps = [
            exp for k, (_d, exp, _x) in self.store.bundles.items() if k not in self.busy
        ]
        return DtnTime(min(exps)) if exps else None

    def recover(self, now: DtnTime) -> list[Action]:
        out: list[Action] = []
        for key, (dst, _exp, data) in sorted(self.store.bundles.items()):
            if dst == self.node:
                payload = data.split(b"#", 3)[3]
                out.append(Deliver(f"ipn:{dst}.1", "src", payload, 0, 0, key))
        return out + self.on_tick(now)


def fake_factory(routes: dict[tuple[int, int], int]) -> Any:
    def make(
        *, node: int, store: Any, plan: Any, plan_epoch: DtnTime, rng: random.Random
    ) -> FakeAgent:
        return FakeAgent(node=node, store=store, routes=routes, rng=rng)

    return make
