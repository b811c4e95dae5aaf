"""Identities, certificates and revocation lists (crypto/keys.py, certificate.py, revocation.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.crypto import (
    AuthenticationFailed,
    CertificateRejected,
    DecodeError,
    InvalidArgument,
    NodeIdentity,
    OperatorKey,
    RevocationState,
    decode_certificate_untrusted,
    decode_revocation_list_untrusted,
    encode_certificate,
    encode_revocation_list,
    issue_certificate,
    issue_revocation_list,
    verify_certificate,
    verify_revocation_list,
    verify_signature,
)

OP = OperatorKey.generate(entropy=b"o" * 32)
A = NodeIdentity.generate(5, entropy=b"a" * 32)
B = NodeIdentity.generate(7, entropy=b"b" * 32)


def cert_for(ident: NodeIdentity, *, serial: int = 1, op: OperatorKey = OP):
    return issue_certificate(
        op,
        node=ident.node,
        sign_public=ident.sign_public,
        kx_public=ident.kx_public,
        not_before_ms=1_000,
        not_after_ms=2_000,
        serial=serial,
    )


def test_signature_verifies_and_any_flip_fails() -> None:
    msg = b"bundle bytes"
    sig = A.sign(msg)
    verify_signature(A.sign_public, msg, sig)
    for i in range(len(sig) * 8):
        bad = bytearray(sig)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(AuthenticationFailed):
            verify_signature(A.sign_public, msg, bytes(bad))
    with pytest.raises(AuthenticationFailed):
        verify_signature(B.sign_public, msg, sig)
    with pytest.raises(AuthenticationFailed):
        verify_signature(A.sign_public, msg, sig[:10])


def test_key_agreement_is_symmetric_and_label_separated() -> None:
    k_ab = A.agree(B.kx_public, label=b"x")
    assert k_ab == B.agree(A.kx_public, label=b"x")
    assert len(k_ab) == 32
    assert A.agree(B.kx_public, label=b"y") != k_ab
    c = NodeIdentity.generate(9, entropy=b"c" * 32)
    assert A.agree(c.kx_public, label=b"x") != k_ab


def test_low_order_peer_key_is_rejected() -> None:
    # The all-zero point gives an all-zero shared secret: a key an attacker knows.
    with pytest.raises(AuthenticationFailed):
        A.agree(bytes(32), label=b"x")


def test_secrets_stay_out_of_repr() -> None:
    assert A.signing_seed.hex() not in repr(A)
    assert A.kx_secret.hex() not in repr(A)
    assert OP.seed.hex() not in repr(OP)


def test_identity_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        NodeIdentity(node=0, signing_seed=bytes(32), kx_secret=bytes(32))
    with pytest.raises(InvalidArgument):
        NodeIdentity(node=1, signing_seed=bytes(31), kx_secret=bytes(32))
    with pytest.raises(InvalidArgument):
        NodeIdentity.generate(3, entropy=b"short")


def test_certificate_round_trip_and_verify() -> None:
    cert = cert_for(A)
    data = encode_certificate(cert)
    back = decode_certificate_untrusted(data)
    assert back == cert
    verify_certificate(back, OP.public_key, now_ms=1_500, node=5)


@pytest.mark.parametrize(
    ("now_ms", "node", "reason"),
    [(999, None, "not yet valid"), (2_000, None, "expired"), (1_500, 6, "wrong node")],
)
def test_certificate_policy_reasons(now_ms: int, node: int | None, reason: str) -> None:
    with pytest.raises(CertificateRejected) as info:
        verify_certificate(cert_for(A), OP.public_key, now_ms=now_ms, node=node)
    assert info.value.reason == reason


def test_certificate_from_another_operator_is_rejected() -> None:
    other = OperatorKey.generate(entropy=b"z" * 32)
    with pytest.raises(AuthenticationFailed):
        verify_certificate(cert_for(A, op=other), OP.public_key, now_ms=1_500)


def test_every_bit_flip_of_a_certificate_is_caught() -> None:
    data = encode_certificate(cert_for(A))
    accepted = 0
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            cert = decode_certificate_untrusted(bytes(bad))
            verify_certificate(cert, OP.public_key, now_ms=1_500, node=5)
        except (DecodeError, AuthenticationFailed):
            continue
        accepted += 1
    assert accepted == 0


def test_revocation_list_revokes_node_and_serial() -> None:
    rl = issue_revocation_list(OP, version=1, issued_ms=1_600, nodes=[7], serials=[42])
    back = decode_revocation_list_untrusted(encode_revocation_list(rl))
    assert back == rl
    verify_revocation_list(back, OP.public_key)
    assert rl.is_revoked(7)
    assert rl.is_revoked(5, 42)
    assert not rl.is_revoked(5, 1)
    with pytest.raises(CertificateRejected) as info:
        verify_certificate(cert_for(B), OP.public_key, now_ms=1_500, revocations=rl)
    assert info.value.reason == "revoked"
    with pytest.raises(CertificateRejected):
        verify_certificate(
            cert_for(A, serial=42), OP.public_key, now_ms=1_500, revocations=rl
        )


def test_revocation_state_is_monotonic_and_checks_signatures() -> None:
    state = RevocationState(OP.public_key)
    v1 = issue_revocation_list(OP, version=1, issued_ms=10, nodes=[7])
    v2 = issue_revocation_list(OP, version=2, issued_ms=20, nodes=[7, 9])
    old_empty = issue_revocation_list(OP, version=1, issued_ms=5)
    assert state.update(v2)
    # A replayed older list (which would un-revoke node 9) is ignored.
    assert not state.update(v1)
    assert not state.update(old_empty)
    assert state.is_revoked(9)
    assert state.version == 2
    forged = issue_revocation_list(
        OperatorKey.generate(entropy=b"q" * 32), version=3, issued_ms=30
    )
    with pytest.raises(AuthenticationFailed):
        state.update(forged)
    assert state.version == 2


@given(st.binary(max_size=300))
def test_certificate_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_certificate_untrusted(data)


@given(st.binary(max_size=300))
def test_revocation_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_revocation_list_untrusted(data)


_cbor_items = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=70)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=10),
    max_leaves=20,
)


@given(st.lists(_cbor_items, min_size=9, max_size=9))
def test_certificate_decoder_on_structured_garbage(fields: list[object]) -> None:
    # Random bytes rarely reach the field checks; nine-element arrays do.
    import cbor2

    with contextlib.suppress(DecodeError):
        decode_certificate_untrusted(cbor2.dumps([1, *fields[1:]]))


def test_trailing_bytes_after_a_certificate_are_refused() -> None:
    data = encode_certificate(cert_for(A))
    with pytest.raises(DecodeError, match="trailing"):
        decode_certificate_untrusted(data + b"\x00")
    with pytest.raises(DecodeError, match="trailing"):
        decode_revocation_list_untrusted(
            encode_revocation_list(issue_revocation_list(OP, version=1, issued_ms=1))
            + b"\x01"
        )
