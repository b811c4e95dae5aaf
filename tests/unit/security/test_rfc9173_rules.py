"""RFC 9173 on the sending side by rules (issue 17 item 2): source rules make
exactly the RFC 9173 Appendix A bundles (the ones HDTN's own tests accept),
acceptor and verifier rules check them, no DCiS key store needed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.rfc9173_rules import Rfc9173Policy, Role, SecurityRule, Service
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpsec import verify_and_decrypt
from dcis.dtn.bpv7 import decode_bundle_untrusted, encode_bundle
from dcis.dtn.bpv7.admin import StatusReason
from dcis.dtn.bpv7.bundle import make_bundle
from dcis.dtn.errors import InvalidArgument
from tests.unit.agent.helpers import Deliver, Transmit, events, link, of
from tests.unit.bpsec.test_rfc9173_vectors import (
    AES128,
    AES256,
    HMAC_KEY,
    KEK,
    ORIGINAL,
    PLAINTEXT,
    load,
)

IV_A2 = bytes.fromhex("5477656c7665313231323132")
IV_A4 = IV_A2


def fixed(*chunks: bytes) -> Callable[[int], bytes]:
    """A deterministic random source handing out ``chunks`` in order (tests only)."""
    left = list(chunks)

    def take(n: int) -> bytes:
        c = left.pop(0)
        assert len(c) == n
        return c

    return take


def rule(role: Role, service: Service, **kw: object) -> SecurityRule:
    return SecurityRule(role=role, service=service, **kw)  # type: ignore[arg-type]


def test_source_rule_makes_rfc9173_a1_byte_for_byte() -> None:
    r = rule(
        Role.SOURCE,
        Service.INTEGRITY,
        bundle_destination=("ipn:1.*",),
        security_source="ipn:2.1",
        sha_variant=512,
        scope_flags=0,
        key=HMAC_KEY,
    )
    pol = Rfc9173Policy([r], node=2)
    out = pol.protect(decode_bundle_untrusted(ORIGINAL))
    assert encode_bundle(out) == load("A.1.4")
    assert pol.counters["rfc9173_protected"] == 1


def test_source_rule_with_key_wrap_makes_rfc9173_a2_byte_for_byte() -> None:
    r = rule(
        Role.SOURCE,
        Service.CONFIDENTIALITY,
        security_source="ipn:2.1",
        aes_variant=128,
        scope_flags=0,
        key=AES128,
        kek=KEK,
    )
    pol = Rfc9173Policy([r], node=2, random_bytes=fixed(IV_A2))
    out = pol.protect(decode_bundle_untrusted(ORIGINAL))
    assert encode_bundle(out) == load("A.2.4")


def test_acceptor_rules_take_the_rfc_bundles_and_remove_the_blocks() -> None:
    acc_int = rule(
        Role.ACCEPTOR, Service.INTEGRITY, security_source="ipn:2.*", key=HMAC_KEY
    )
    acc_conf = rule(Role.ACCEPTOR, Service.CONFIDENTIALITY, kek=KEK)
    for name, rules in (("A.1.4", [acc_int]), ("A.2.4", [acc_conf])):
        pol = Rfc9173Policy(rules, node=1)
        plain, reason = pol.check(decode_bundle_untrusted(load(name)), 0)
        assert reason is None
        assert plain is not None
        assert plain.payload == PLAINTEXT
        assert [b.type_code for b in plain.blocks] == [1]


def test_acceptor_rejects_missing_wrong_key_and_wrong_source() -> None:
    a1 = decode_bundle_untrusted(load("A.1.4"))
    bad_key = Rfc9173Policy(
        [rule(Role.ACCEPTOR, Service.INTEGRITY, key=bytes(16))], node=1
    )
    assert bad_key.check(a1, 0) == (None, StatusReason.FAILED_SECURITY_OPERATION)
    assert bad_key.last_rejection == "authentication failed"
    wants_bcb = Rfc9173Policy(
        [rule(Role.ACCEPTOR, Service.CONFIDENTIALITY, key=AES256)], node=1
    )
    # every key held is tried on every block: the BIB fails with the AES key
    assert wants_bcb.check(a1, 0) == (None, StatusReason.FAILED_SECURITY_OPERATION)
    plain_a2 = Rfc9173Policy(
        [
            rule(Role.ACCEPTOR, Service.CONFIDENTIALITY, kek=KEK),
            rule(Role.ACCEPTOR, Service.INTEGRITY, key=HMAC_KEY),
        ],
        node=1,
    )
    assert plain_a2.check(decode_bundle_untrusted(load("A.2.4")), 0) == (
        None,
        StatusReason.MISSING_SECURITY_OPERATION,
    )
    assert "no verified integrity block" in (plain_a2.last_rejection or "")
    other_src = Rfc9173Policy(
        [
            rule(
                Role.ACCEPTOR,
                Service.INTEGRITY,
                security_source="ipn:9.*",
                key=HMAC_KEY,
            )
        ],
        node=1,
    )
    assert other_src.check(a1, 0)[0] is None
    # an unprotected bundle a rule names is refused
    plain = decode_bundle_untrusted(ORIGINAL)
    assert bad_key.check(plain, 0) == (None, StatusReason.MISSING_SECURITY_OPERATION)


def test_no_rule_and_no_key_store_accepts_plain_refuses_ciphertext() -> None:
    pol = Rfc9173Policy(
        [
            rule(
                Role.ACCEPTOR,
                Service.INTEGRITY,
                bundle_source=("ipn:7.*",),
                key=HMAC_KEY,
            )
        ],
        node=1,
    )
    plain = decode_bundle_untrusted(ORIGINAL)
    assert pol.check(plain, 0) == (plain, None)
    sealed = decode_bundle_untrusted(load("A.2.4"))
    assert pol.check(sealed, 0)[0] is None


def test_verifier_keeps_the_blocks() -> None:
    pol = Rfc9173Policy([rule(Role.VERIFIER, Service.INTEGRITY, key=HMAC_KEY)], node=5)
    a1 = decode_bundle_untrusted(load("A.1.4"))
    assert pol.verify(a1, 0) == (a1, None)
    assert pol.check(a1, 0) == (a1, None)
    tampered = load("A.1.4").replace(b"Ready", b"Steady"[:5])
    assert pol.verify(decode_bundle_untrusted(tampered), 0)[0] is None


def test_bib_and_bcb_together_bcb_also_covers_the_bib() -> None:
    src = [
        rule(Role.SOURCE, Service.INTEGRITY, sha_variant=256, key=HMAC_KEY),
        rule(Role.SOURCE, Service.CONFIDENTIALITY, aes_variant=256, key=AES256),
    ]
    out = Rfc9173Policy(src, node=2).protect(decode_bundle_untrusted(ORIGINAL))
    types = [b.type_code for b in out.blocks]
    assert sorted(types) == [1, 11, 12, 12]  # one BCB per target: payload and the BIB
    assert out.payload != PLAINTEXT
    # the library (the same code path that reads HDTN's bundles) opens it
    plain, results = verify_and_decrypt(out, [HMAC_KEY, AES256])
    assert plain.payload == PLAINTEXT
    assert all(r.verified for r in results)
    acc = Rfc9173Policy(
        [
            rule(Role.ACCEPTOR, Service.INTEGRITY, key=HMAC_KEY),
            rule(Role.ACCEPTOR, Service.CONFIDENTIALITY, key=AES256),
        ],
        node=1,
    )
    got, reason = acc.check(out, 0)
    assert reason is None
    assert got is not None
    assert got.payload == PLAINTEXT


def test_fresh_content_key_per_bundle_with_key_wrap_only() -> None:
    r = rule(Role.SOURCE, Service.CONFIDENTIALITY, aes_variant=128, kek=KEK)
    pol = Rfc9173Policy([r], node=2)
    a = pol.protect(decode_bundle_untrusted(ORIGINAL))
    b = pol.protect(decode_bundle_untrusted(ORIGINAL))
    assert a.blocks[0].data != b.blocks[0].data  # another IV and wrapped key
    acc = Rfc9173Policy([rule(Role.ACCEPTOR, Service.CONFIDENTIALITY, kek=KEK)], node=1)
    for x in (a, b):
        got, _ = acc.check(x, 0)
        assert got is not None
        assert got.payload == PLAINTEXT


def test_bad_rules_are_refused() -> None:
    for kw in (
        {"sha_variant": 128},
        {"aes_variant": 192},
        {"scope_flags": 8},
        {"targets": ()},
        {"key": None},
        {"key": b"short"},
    ):
        args: dict[str, object] = {"key": HMAC_KEY, **kw}
        with pytest.raises(InvalidArgument):
            rule(Role.SOURCE, Service.INTEGRITY, **args)
    with pytest.raises(InvalidArgument, match="primary block"):
        rule(Role.SOURCE, Service.CONFIDENTIALITY, targets=(0, 1), key=AES256)
    with pytest.raises(InvalidArgument, match="16-byte key"):
        rule(Role.SOURCE, Service.CONFIDENTIALITY, aes_variant=128, key=AES256)


@given(st.binary(max_size=300))
def test_hostile_bytes_never_raise_in_check(data: bytes) -> None:
    pol = Rfc9173Policy(
        [
            rule(Role.ACCEPTOR, Service.INTEGRITY, key=HMAC_KEY),
            rule(Role.VERIFIER, Service.CONFIDENTIALITY, key=AES256),
        ],
        node=1,
    )
    raw = load("A.1.4")
    mutated = raw[: len(data) % len(raw)] + data
    try:
        b = decode_bundle_untrusted(mutated)
    except Exception:
        return
    got, reason = pol.check(b, 0)
    assert (got is None) == (reason is not None)
    pol.verify(b, 0)


def test_agent_originates_with_rules_and_the_far_end_accepts() -> None:
    src = Rfc9173Policy(
        [
            rule(
                Role.SOURCE,
                Service.INTEGRITY,
                bundle_destination=("ipn:2.*",),
                key=HMAC_KEY,
            )
        ],
        node=1,
    )
    dst = Rfc9173Policy([rule(Role.ACCEPTOR, Service.INTEGRITY, key=HMAC_KEY)], node=2)
    a = Agent(node=1, store=MemoryStore(), security=src)
    b = Agent(node=2, store=MemoryStore(), security=dst)
    a.register("ipn:1.1")
    b.register("ipn:2.1")
    a.on_contact_start(link(1, 2), 0)
    _, acts = a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"hi",
        lifetime_ms=10_000,
        now=0,
    )
    (tx,) = of(acts, Transmit)
    assert decode_bundle_untrusted(tx.data).blocks[0].type_code == 11
    got = b.on_receive(cla="test", neighbor=1, data=tx.data, now=1)
    (d,) = of(got, Deliver)
    assert d.payload == b"hi"
    # a forged copy (another key) is deleted with a security reason
    forged = Rfc9173Policy(
        [rule(Role.SOURCE, Service.INTEGRITY, key=bytes(range(16)))], node=1
    ).protect(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"evil",
            creation_ms=5,
            sequence=1,
            lifetime_ms=10_000,
        )
    )
    got = b.on_receive(cla="test", neighbor=1, data=encode_bundle(forged), now=2)
    assert of(got, Deliver) == []
    assert events(got, "deleted")


def test_forwarding_node_with_a_verifier_rule_drops_a_bad_bundle() -> None:
    mid = Agent(
        node=3,
        store=MemoryStore(),
        security=Rfc9173Policy(
            [rule(Role.VERIFIER, Service.INTEGRITY, key=HMAC_KEY)], node=3
        ),
    )
    good = Rfc9173Policy(
        [rule(Role.SOURCE, Service.INTEGRITY, key=HMAC_KEY)], node=2
    ).protect(
        make_bundle(
            source="ipn:2.1",
            destination="ipn:1.2",
            payload=b"ok",
            creation_ms=9,
            sequence=1,
            lifetime_ms=10_000,
        )
    )
    acts = mid.on_receive(cla="test", neighbor=2, data=encode_bundle(good), now=1)
    assert not events(acts, "deleted")
    assert mid.stored == 1
    bad = Rfc9173Policy(
        [rule(Role.SOURCE, Service.INTEGRITY, key=bytes(16))], node=2
    ).protect(
        make_bundle(
            source="ipn:2.1",
            destination="ipn:1.2",
            payload=b"x",
            creation_ms=9,
            sequence=2,
            lifetime_ms=10_000,
        )
    )
    acts = mid.on_receive(cla="test", neighbor=2, data=encode_bundle(bad), now=1)
    assert events(acts, "deleted")
    assert mid.stored == 1
