"""The agent's end-to-end security hook: protect at the source, check once at
the destination (after reassembly), reject with a reason."""

from __future__ import annotations

import dataclasses

from dcis.dtn.agent.actions import Ack, Deliver, Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.admin import StatusReason
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.flags import BlockType, CrcType
from dcis.dtn.bpv7.fragment import fragment_bundle
from tests.unit.agent.helpers import events, link, of

T0 = 1_000_000


class XorPolicy:
    """A stand-in policy: 'seals' by XOR and marks the bundle with a BCB-typed block."""

    def __init__(self) -> None:
        self.checked: list[str] = []
        self.protected: list[str] = []

    def protect(self, bundle: Bundle, *, now: int | None = None) -> Bundle:
        self.protected.append(bundle.bundle_key)
        pb = bundle.payload_block
        sealed = dataclasses.replace(pb, data=bytes(b ^ 0x5A for b in pb.data))
        marker = CanonicalBlock(
            BlockType.BCB,
            bundle.next_block_number(),
            data=b"sealed",
            crc_type=CrcType.NONE,
        )
        return Bundle(bundle.primary, (*bundle.blocks[:-1], marker, sealed))

    def check(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]:
        self.checked.append(bundle.bundle_key)
        marker = bundle.block_of_type(BlockType.BCB)
        if marker is None:
            return None, StatusReason.MISSING_SECURITY_OPERATION
        pb = bundle.payload_block
        plain = dataclasses.replace(pb, data=bytes(b ^ 0x5A for b in pb.data))
        return Bundle(
            bundle.primary, (*(b for b in bundle.blocks[:-1] if b is not marker), plain)
        ), None


def test_protected_at_source_and_opened_once_at_destination() -> None:
    pa, pb = XorPolicy(), XorPolicy()
    a = Agent(node=1, store=MemoryStore(), security=pa)
    b = Agent(node=2, store=MemoryStore(), security=pb)
    b.register("ipn:2.1")
    k, _ = a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"secret",
        lifetime_ms=60_000,
        now=T0,
    )
    assert pa.protected == [k]
    (tx,) = of(a.on_contact_start(link(1, 2), T0), Transmit)
    wire = decode_bundle_untrusted(tx.data)
    assert wire.payload != b"secret"
    assert wire.block_of_type(BlockType.BCB) is not None
    acts = b.on_receive(cla="t", neighbor=1, data=tx.data, now=T0 + 1, cl_token=1)
    (d,) = of(acts, Deliver)
    assert d.payload == b"secret"
    b.on_delivered(k, T0 + 2)
    b.on_receive(cla="t", neighbor=1, data=tx.data, now=T0 + 3, cl_token=2)  # a replay
    assert pb.checked == [k]  # duplicates never reach the policy


def test_local_bundles_are_neither_protected_nor_checked() -> None:
    p = XorPolicy()
    a = Agent(node=1, store=MemoryStore(), security=p)
    a.register("ipn:1.2")
    _, acts = a.send(
        source="ipn:1.1",
        destination="ipn:1.2",
        payload=b"self",
        lifetime_ms=60_000,
        now=T0,
    )
    (d,) = of(acts, Deliver)
    assert d.payload == b"self"
    assert p.protected == []
    assert p.checked == []


def test_rejected_bundle_is_deleted_acked_and_not_delivered() -> None:
    b = Agent(node=2, store=MemoryStore(), security=XorPolicy())
    b.register("ipn:2.1")
    plain = encode_bundle(
        make_bundle(
            source="ipn:1.1", destination="ipn:2.1", payload=b"forged", creation_ms=T0
        )
    )
    acts = b.on_receive(cla="t", neighbor=1, data=plain, now=T0, cl_token=1)
    assert of(acts, Deliver) == []
    assert of(acts, Ack) == [Ack(1, 1)]
    (ev,) = events(acts, "deleted")
    assert "missing_security_operation" in ev.detail
    assert len(b.store) == 0


def test_forwarding_nodes_do_not_check() -> None:
    p = XorPolicy()
    relay = Agent(node=2, store=MemoryStore(), security=p)
    data = encode_bundle(
        make_bundle(
            source="ipn:1.1", destination="ipn:3.1", payload=b"x", creation_ms=T0
        )
    )
    assert of(relay.on_receive(cla="t", neighbor=1, data=data, now=T0, cl_token=1), Ack)
    assert p.checked == []


def test_fragments_are_checked_once_after_reassembly() -> None:
    src = XorPolicy()
    whole = src.protect(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=bytes(range(100)),
            creation_ms=T0,
        )
    )
    p = XorPolicy()
    b = Agent(node=2, store=MemoryStore(), security=p)
    b.register("ipn:2.1")
    delivered = []
    for i, f in enumerate(fragment_bundle(whole, 30)):
        delivered += of(
            b.on_receive(
                cla="t", neighbor=1, data=encode_bundle(f), now=T0, cl_token=i
            ),
            Deliver,
        )
    assert [d.payload for d in delivered] == [bytes(range(100))]
    assert p.checked == [whole.bundle_key]


def test_store_full_refuses_before_the_policy_sees_it() -> None:
    p = XorPolicy()
    b = Agent(node=2, store=MemoryStore(limit_bytes=50), security=p)
    b.register("ipn:2.1")
    sealed = encode_bundle(
        XorPolicy().protect(
            make_bundle(
                source="ipn:1.1",
                destination="ipn:2.1",
                payload=b"y" * 100,
                creation_ms=T0,
            )
        )
    )
    acts = b.on_receive(cla="t", neighbor=1, data=sealed, now=T0, cl_token=1)
    assert events(acts, "refused")
    assert of(acts, Ack) == []
    assert p.checked == []
