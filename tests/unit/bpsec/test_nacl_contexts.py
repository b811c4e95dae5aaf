"""Our contexts: X25519/XChaCha20-Poly1305 BCB and Ed25519 BIB (dtn/bpsec/nacl_contexts.py)."""

from __future__ import annotations

import dataclasses

import pytest

from dcis.crypto import AuthenticationFailed, NodeIdentity, OperatorKey
from dcis.dtn.bpsec import (
    BCB_X25519_XCHACHA20POLY1305,
    BIB_ED25519,
    KeyRing,
    add_bcb_x25519,
    add_bib_ed25519,
    unprotect,
)
from dcis.dtn.bpv7 import Bundle, decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.bpv7.primary import encode_primary
from dcis.dtn.errors import DecodeError
from tests.unit.bpsec.helpers import certify

OP = OperatorKey.generate(entropy=b"o" * 32)
SRC = NodeIdentity.generate(5, entropy=b"s" * 32)
DST = NodeIdentity.generate(9, entropy=b"d" * 32)
EVE = NodeIdentity.generate(5, entropy=b"e" * 32)  # claims to be node 5
PAYLOAD = b"orbit-processed imagery, not for the ground link in the clear " * 4


def cert(ident: NodeIdentity):
    return certify(OP, ident, not_after_ms=10**12)


AT_DST = KeyRing(identity=DST, certificates={5: cert(SRC), 9: cert(DST)})


def plain_bundle() -> Bundle:
    return make_bundle(
        source="ipn:5.1",
        destination="ipn:9.1",
        payload=PAYLOAD,
        creation_ms=1_000,
        sequence=3,
        lifetime_ms=60_000,
    )


def sealed() -> bytes:
    return encode_bundle(
        add_bcb_x25519(plain_bundle(), identity=SRC, recipient_kx_public=DST.kx_public)
    )


def test_bcb_round_trip_and_payload_not_in_clear() -> None:
    wire = sealed()
    assert PAYLOAD[:16] not in wire
    opened, results = unprotect(decode_bundle_untrusted(wire), AT_DST)
    assert opened.payload == PAYLOAD
    assert opened == plain_bundle()
    assert [(r.context, r.verified, r.targets) for r in results] == [
        (BCB_X25519_XCHACHA20POLY1305, True, (1,))
    ]


def test_two_seals_of_one_bundle_differ() -> None:
    assert sealed() != sealed()  # fresh nonce each time


def test_every_bit_flip_is_refused() -> None:
    wire = sealed()
    accepted = []
    for i in range(len(wire) * 8):
        bad = bytearray(wire)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            b = decode_bundle_untrusted(bytes(bad))
            opened, results = unprotect(b, AT_DST)
        except (DecodeError, AuthenticationFailed):
            continue
        # Not refused outright: then the payload must not pass as verified plaintext.
        if opened.payload == PAYLOAD and any(
            r.verified and 1 in r.targets for r in results
        ):
            accepted.append(i)
    assert accepted == []


def test_primary_block_fields_are_bound() -> None:
    b = decode_bundle_untrusted(sealed())
    p = b.primary
    for changed in (
        dataclasses.replace(p, lifetime_ms=p.lifetime_ms * 10),
        dataclasses.replace(
            p, destination=dataclasses.replace(p.destination, service=2)
        ),
        dataclasses.replace(p, creation=dataclasses.replace(p.creation, sequence=4)),
    ):
        with pytest.raises(AuthenticationFailed):
            unprotect(Bundle(changed, b.blocks), AT_DST)


def test_wrong_recipient_or_forged_sender_fails() -> None:
    b = decode_bundle_untrusted(sealed())
    other = NodeIdentity.generate(9, entropy=b"x" * 32)
    with pytest.raises(AuthenticationFailed):
        unprotect(b, KeyRing(identity=other, certificates={5: cert(SRC)}))
    # Eve, with her own keys but node 5's number, cannot pass as node 5.
    forged = add_bcb_x25519(
        plain_bundle(), identity=EVE, recipient_kx_public=DST.kx_public
    )
    with pytest.raises(AuthenticationFailed):
        unprotect(forged, AT_DST)


def test_forwarding_node_without_keys_leaves_bundle_intact() -> None:
    b = decode_bundle_untrusted(sealed())
    same, results = unprotect(b, KeyRing())
    assert same == b
    assert [(r.verified, r.reason) for r in results] == [(False, "no key")]
    same, results = unprotect(b, KeyRing(identity=DST))
    assert [r.reason for r in results] == ["uncertified source"]


def test_bcb_can_seal_several_targets() -> None:
    from dcis.dtn.bpv7 import CanonicalBlock

    base = plain_bundle()
    # An extension block of a type dcis.dtn.bpv7 does not parse (it validates the
    # content of types 6, 7 and 10 on decode, which ciphertext would fail).
    with_age = Bundle(
        base.primary, (CanonicalBlock(192, 2, data=b"telemetry"), *base.blocks)
    )
    sealed_two = add_bcb_x25519(
        with_age, identity=SRC, recipient_kx_public=DST.kx_public, targets=(1, 2)
    )
    opened, results = unprotect(
        decode_bundle_untrusted(encode_bundle(sealed_two)), AT_DST
    )
    assert opened == with_age
    assert results[0].targets == (1, 2)


def test_ed25519_bib_round_trip_and_tamper() -> None:
    signed = add_bib_ed25519(plain_bundle(), identity=SRC, targets=(0, 1))
    wire = encode_bundle(signed)
    assert PAYLOAD in wire  # integrity only: the payload stays readable
    opened, results = unprotect(
        decode_bundle_untrusted(wire), KeyRing(certificates={5: cert(SRC)})
    )
    assert opened == plain_bundle()
    assert [(r.context, r.verified) for r in results] == [(BIB_ED25519, True)]
    start = wire.index(PAYLOAD)
    primary_len = len(encode_primary(signed.primary))
    for i in [*range(start * 8, (start + 8) * 8), *range(8, (1 + primary_len) * 8, 7)]:
        bad = bytearray(wire)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            b = decode_bundle_untrusted(bytes(bad))
        except DecodeError:
            continue
        with pytest.raises(AuthenticationFailed):
            unprotect(b, KeyRing(certificates={5: cert(SRC)}))
    # A signature by someone else under node 5's number fails.
    forged = add_bib_ed25519(plain_bundle(), identity=EVE)
    with pytest.raises(AuthenticationFailed):
        unprotect(forged, KeyRing(certificates={5: cert(SRC)}))
