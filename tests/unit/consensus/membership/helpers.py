"""Helpers for the membership tests: a fake ServiceContext and signed updates."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from dcis.consensus.membership.service import (
    MembershipConfig,
    MembershipService,
    Verifier,
)
from dcis.consensus.membership.sim import DictState, SimContext, credentials_for
from dcis.consensus.membership.view import Resources
from dcis.consensus.membership.wire import (
    Kind,
    Message,
    Status,
    Update,
    decode_message_untrusted,
    encode_message,
    signed_bytes,
)
from dcis.crypto.certificate import encode_certificate
from dcis.dtn.node.service import Inbound, NodeCredentials, Send
from dcis.dtn.routing.plan import ContactPlan

T0 = 820_540_800_000
CREDS = credentials_for(range(1, 9), seed=42)


def sign(
    subject: int,
    inc: int,
    status: Status,
    *,
    signer: int | None = None,
    resources: Resources | None = None,
    creds: dict[int, NodeCredentials] = CREDS,
) -> Update:
    """An update about ``subject`` signed by ``signer`` (default: the subject)."""
    by = subject if signer is None else signer
    c = creds[by]
    u = Update(
        subject=subject,
        incarnation=inc,
        status=status,
        signer=by,
        resources=(resources or Resources()) if status == Status.ALIVE else None,
        cert=encode_certificate(c.certificate) if status == Status.ALIVE else None,
    )
    return replace(u, signature=c.identity.sign(signed_bytes(u)))


def arrival_mesh(owlt_ms: int = 10) -> Callable[[int, int, int, int], int | None]:
    """Every pair in contact, ``owlt_ms`` apart."""
    return lambda src, dst, at, size: at + owlt_ms


@dataclass
class Harness:
    """One service under test with a fake context."""

    svc: MembershipService
    ctx: SimContext
    now: int = T0

    def bundle(self, sender: int, msg: Message, *, service: int = 16) -> list[Send]:
        return self.svc.on_bundle(
            Inbound(
                endpoint="ipn:1.16",
                source=f"ipn:{sender}.{service}",
                payload=encode_message(msg),
                creation_ms=self.now,
                sequence=0,
                bundle_key="k",
            ),
            self.now,
        )

    def push(self, sender: int, *updates: Update) -> list[Send]:
        return self.bundle(sender, Message(kind=Kind.PUSH, updates=updates))

    def advance(self, ms: int) -> list[Send]:
        """Run every timer up to ``now + ms``, in order."""
        end = self.now + ms
        out: list[Send] = []
        while True:
            d = self.svc.next_deadline()
            if d is None or d > end:
                break
            self.now = max(self.now, d)
            out += self.svc.on_tick(self.now)
        self.now = end
        return out


def make(
    *,
    node: int = 1,
    config: MembershipConfig | None = None,
    arrival: Callable[[int, int, int, int], int | None] | None = None,
    revoked: frozenset[int] = frozenset(),
    state: DictState | None = None,
    incarnation: int = 1,
    verifier: Verifier | None = None,
) -> Harness:
    """A started service on ``node`` (seeds: none, so it starts alone)."""
    cred = CREDS[node]
    if revoked:
        cred = replace(cred, revoked=revoked)
    ctx = SimContext(
        node=node,
        incarnation=incarnation,
        rng=random.Random(7),
        plan=ContactPlan([], []),
        state=state or DictState(),
        credentials=cred,
        arrival=arrival or arrival_mesh(),
    )
    svc = MembershipService(config or MembershipConfig(seeds=()), verifier=verifier)
    svc.start(ctx, T0)
    return Harness(svc, ctx)


def decode(s: Send) -> Message:
    return decode_message_untrusted(s.payload)
