"""Every rule by which the agent deletes a bundle on purpose names itself in
its ``Deletion`` event's ``cause``; the simulator counts by that cause, and the
testbed (which has only the daemon's logged detail text) classifies the
same event by wording into the same category."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dcis.dtn.agent.actions import DELETION_CAUSES, Action, Deletion
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.admin import StatusReason
from dcis.dtn.bpv7.bundle import Bundle, encode_bundle, make_bundle
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.flags import BlockFlags, CrcType
from dcis.dtn.bpv7.primary import CreationTimestamp
from dcis.dtn.sim import DELETION_REASONS, deletion_reason
from tests.unit.agent.helpers import events, link

T0 = 1_000_000


def bundle(dst: str, **fields: Any) -> Bundle:
    """A one-byte bundle ipn:1.1 -> ``dst`` created at T0."""
    return make_bundle(
        **{
            "source": "ipn:1.1",
            "destination": dst,
            "payload": b"x",
            "creation_ms": T0,
            **fields,
        }
    )


def to(dst: str, **fields: Any) -> bytes:
    return encode_bundle(bundle(dst, **fields))


def receive(b: Agent, data: bytes) -> list[Action]:
    return b.on_receive(cla="t", neighbor=1, data=data, now=T0, cl_token=1)


class Refuses:
    """A security hook that refuses everything with ``reason``."""

    def __init__(self, reason: StatusReason | None) -> None:
        self.reason = reason

    def protect(self, bundle: Bundle, *, now: int | None = None) -> Bundle:
        return bundle

    def check(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]:
        return None, self.reason


def no_age() -> list[Action]:
    # make_bundle adds an age block to a clockless bundle: clear the time after.
    b = bundle("ipn:3.1")
    p = dataclasses.replace(b.primary, creation=CreationTimestamp(0, 0))
    data = encode_bundle(Bundle(p, b.blocks))
    return receive(Agent(node=2, store=MemoryStore()), data)


def hop_limit_on_arrival() -> list[Action]:
    data = to("ipn:3.1", hop_limit=2, hop_count=3)
    return receive(Agent(node=2, store=MemoryStore()), data)


def hop_limit_on_forwarding() -> list[Action]:
    b = Agent(node=2, store=MemoryStore())
    receive(b, to("ipn:3.1", hop_limit=2, hop_count=2))
    return b.on_contact_start(link(2, 3), T0 + 1)


def unprocessable_block() -> list[Action]:
    flags = BlockFlags.DELETE_BUNDLE_IF_UNPROCESSABLE
    extra = CanonicalBlock(200, 5, flags, CrcType.NONE, b"opaque")
    data = to("ipn:3.1", extra_blocks=[extra])
    return receive(Agent(node=2, store=MemoryStore()), data)


def security(reason: StatusReason | None) -> list[Action]:
    b = Agent(node=2, store=MemoryStore(), security=Refuses(reason))
    b.register("ipn:2.1")
    return receive(b, to("ipn:2.1"))


CASES = {
    "no_age": (no_age, "no_age"),
    "hop_limit_on_arrival": (hop_limit_on_arrival, "hop_limit"),
    "hop_limit_on_forwarding": (hop_limit_on_forwarding, "hop_limit"),
    "unprocessable_block": (unprocessable_block, "unprocessable_block"),
    "security": (lambda: security(StatusReason.FAILED_SECURITY_OPERATION), "security"),
    # A hook may give no reason (reported as NO_INFO, like no_age's report)
    # or a non-security one: the cause still says the policy refused it.
    "security_no_reason": (lambda: security(None), "security"),
    "security_hop_limit_reason": (
        lambda: security(StatusReason.HOP_LIMIT_EXCEEDED),
        "security",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_deletion_names_its_category(case: str) -> None:
    make, category = CASES[case]
    (ev,) = events(make(), "deleted")
    assert isinstance(ev, Deletion)
    assert ev.cause == category
    assert ev.cause in DELETION_CAUSES
    assert category in DELETION_REASONS
    # The testbed's wording-based classification agrees with the cause.
    assert deletion_reason(ev.detail) == category, ev.detail


def test_every_cause_is_covered() -> None:
    assert {c for _, c in CASES.values()} == set(DELETION_CAUSES)
    assert (*DELETION_CAUSES, "other") == DELETION_REASONS
