"""SecurityPolicy (dtn/agent/security.py): what a secure node protects and accepts."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcis.crypto import (
    AuthenticationFailed,
    CertificateRejected,
    NodeIdentity,
    OperatorKey,
    issue_revocation_list,
)
from dcis.crypto.certificate import NodeCertificate
from dcis.dtn.agent.security import NoCertificate, SecurityPolicy
from dcis.dtn.bpsec import (
    BCB_AES_GCM,
    BCB_X25519_XCHACHA20POLY1305,
    BIB_ED25519,
    BIB_HMAC_SHA2,
    add_bcb_aes_gcm,
    add_bcb_x25519,
    add_bib_ed25519,
    add_bib_hmac_sha2,
    decode_asb_untrusted,
)
from dcis.dtn.bpv7 import Bundle, decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.bpv7.admin import StatusReason
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.flags import BlockType, BundleFlags, CrcType
from dcis.dtn.errors import InvalidArgument
from tests.unit.bpsec.helpers import certify

OP = OperatorKey.generate(entropy=b"operator".ljust(32, b"."))
ROGUE_OP = OperatorKey.generate(entropy=b"rogue operator".ljust(32, b"."))
N1 = NodeIdentity.generate(1, entropy=b"node 1".ljust(32, b"."))
N2 = NodeIdentity.generate(2, entropy=b"node 2".ljust(32, b"."))
N3 = NodeIdentity.generate(3, entropy=b"node 3".ljust(32, b"."))
T = 5_000_000  # DTN ms "now" of the tests
PAYLOAD = b"processed in orbit; never on a ground link in the clear " * 8


def cert(
    ident: NodeIdentity,
    *,
    op: OperatorKey = OP,
    serial: int | None = None,
    not_before_ms: int = 0,
    not_after_ms: int = 10**10,
) -> NodeCertificate:
    return certify(
        op,
        ident,
        not_before_ms=not_before_ms,
        not_after_ms=not_after_ms,
        serial=serial,
    )


CERTS = [cert(N1), cert(N2), cert(N3)]


def policy(ident: NodeIdentity, **kw: object) -> SecurityPolicy:
    kw.setdefault("certificates", CERTS)
    return SecurityPolicy(identity=ident, operator_public=OP.public_key, **kw)  # type: ignore[arg-type]


def bundle(
    *, src: str = "ipn:1.1", dst: str = "ipn:2.1", seq: int = 0, **kw: object
) -> Bundle:
    return make_bundle(
        source=src,
        destination=dst,
        payload=PAYLOAD,
        creation_ms=T,
        sequence=seq,
        lifetime_ms=3_600_000,
        **kw,  # type: ignore[arg-type]
    )


def wire(b: Bundle) -> Bundle:
    """Through the encoder and decoder, as the destination sees it."""
    return decode_bundle_untrusted(encode_bundle(b))


# -- protect ----------------------------------------------------------------


def test_protect_seals_the_payload_for_the_destination_node() -> None:
    b = bundle()
    p = policy(N1).protect(b)
    assert p.bundle_key == b.bundle_key
    assert p.primary == b.primary
    bcb = p.block_of_type(BlockType.BCB)
    assert bcb is not None
    asb = decode_asb_untrusted(bcb.data)
    assert asb.context_id == BCB_X25519_XCHACHA20POLY1305
    assert asb.targets == (1,)
    assert asb.source == IpnEid(1, 0)
    assert PAYLOAD[:32] not in encode_bundle(p)
    assert policy(N1).counters["protected_sealed"] == 0  # a fresh policy
    assert len(p.payload) == len(PAYLOAD)


def test_protect_uses_fresh_nonces() -> None:
    p = policy(N1)
    a, b = p.protect(bundle()), p.protect(bundle())
    assert a.payload != b.payload


def test_sign_only_destinations_and_dtn_destinations_get_an_ed25519_bib() -> None:
    p = policy(N1, sign_only_destinations={"ipn:2.7"})
    for dst in ("ipn:2.7", "dtn://everyone/news"):
        out = p.protect(bundle(dst=dst))
        bib = out.block_of_type(BlockType.BIB)
        assert bib is not None
        assert decode_asb_untrusted(bib.data).context_id == BIB_ED25519
        assert out.payload == PAYLOAD  # signed, not sealed
    assert p.counters["protected_signed"] == 2


def test_protect_without_a_valid_destination_certificate_raises() -> None:
    p = policy(N1, certificates=[cert(N1)])
    with pytest.raises(NoCertificate):
        p.protect(bundle())
    expired = policy(N1, certificates=[cert(N2, not_after_ms=T)])
    with pytest.raises(NoCertificate):
        expired.protect(bundle())
    revoked = policy(
        N1,
        revocations=issue_revocation_list(OP, version=1, issued_ms=1, nodes=[2]),
    )
    with pytest.raises(NoCertificate):
        revoked.protect(bundle())
    assert isinstance(NoCertificate("x"), InvalidArgument)


def test_protect_refuses_bundles_not_from_this_node() -> None:
    with pytest.raises(InvalidArgument):
        policy(N1).protect(bundle(src="ipn:3.1"))
    with pytest.raises(InvalidArgument):
        policy(N1).protect(bundle(src="dtn://n1/app"))
    with pytest.raises(InvalidArgument):
        policy(N1).protect(policy(N1).protect(bundle()))


def test_certificates_not_signed_by_the_operator_are_refused() -> None:
    with pytest.raises(CertificateRejected):
        policy(N1, certificates=[cert(N2, op=ROGUE_OP)])
    forged = dataclasses.replace(cert(N2), kx_public=N3.kx_public)
    with pytest.raises(AuthenticationFailed):
        policy(N1, certificates=[forged])


# -- check: acceptance ------------------------------------------------------


def test_sealed_bundle_is_accepted_once_and_decrypted() -> None:
    dst = policy(N2)
    sealed = wire(policy(N1).protect(bundle()))
    plain, reason = dst.check(sealed, T)
    assert reason is None
    assert plain is not None
    assert plain.payload == PAYLOAD
    assert plain.block_of_type(BlockType.BCB) is None
    assert dst.counters["accepted"] == 1


def test_signed_bundle_is_accepted() -> None:
    dst = policy(N2)
    signed = wire(policy(N1, sign_only_destinations={"ipn:2.1"}).protect(bundle()))
    plain, reason = dst.check(signed, T)
    assert reason is None
    assert plain is not None
    assert plain.payload == PAYLOAD


def test_replay_is_rejected_after_first_acceptance() -> None:
    dst = policy(N2)
    sealed = wire(policy(N1).protect(bundle(seq=4)))
    assert dst.check(sealed, T)[1] is None
    assert dst.check(sealed, T + 10) == (None, StatusReason.FAILED_SECURITY_OPERATION)
    assert dst.counters["rejected_replayed"] == 1
    assert dst.last_rejection == "replayed"
    # Another bundle of the same source is fine.
    assert dst.check(wire(policy(N1).protect(bundle(seq=5))), T)[1] is None


def test_forgeries_do_not_enter_the_replay_window() -> None:
    dst = policy(N2)
    sealed = policy(N1).protect(bundle(seq=9))
    pb = sealed.payload_block
    flipped = bytes([pb.data[0] ^ 1]) + pb.data[1:]
    forged = Bundle(
        sealed.primary, (*sealed.blocks[:-1], dataclasses.replace(pb, data=flipped))
    )
    assert dst.check(wire(forged), T)[1] is StatusReason.FAILED_SECURITY_OPERATION
    assert dst.counters["rejected_authentication_failed"] == 1
    # The genuine bundle with the same timestamp is still accepted.
    assert dst.check(wire(sealed), T)[1] is None


def test_every_bit_of_the_sealed_bundle_is_covered() -> None:
    """Any single bit flip is either undecodable or refused by the policy.

    No CRCs, so that every flip the decoder lets through reaches the policy.
    """
    sealed = encode_bundle(
        policy(N1).protect(bundle(hop_limit=None, crc_type=CrcType.NONE))
    )
    dst = policy(N2, replay_window_ms=10**12)
    refused = 0
    for i in range(
        0, len(sealed) * 8, 7
    ):  # every 7th bit: all bytes, all bit positions
        bad = bytearray(sealed)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            b = decode_bundle_untrusted(bytes(bad))
        except Exception:
            continue
        plain, reason = dst.check(b, T)
        assert plain is None, f"bit {i} flipped and still accepted"
        assert reason is not None
        refused += 1
    assert refused > 100


# -- check: rejections -------------------------------------------------------


def test_unprotected_bundle_is_missing_security() -> None:
    dst = policy(N2)
    assert dst.check(bundle(), T) == (None, StatusReason.MISSING_SECURITY_OPERATION)
    assert dst.counters["rejected_missing"] == 1
    assert dst.counters["rejected"] == 1


def test_unprotected_admin_records_are_a_choice() -> None:
    report = bundle(flags=BundleFlags.ADMIN_RECORD)
    lenient = policy(N2)
    assert lenient.check(report, T) == (report, None)
    assert lenient.counters["admin_unprotected"] == 1
    strict = policy(N2, accept_unprotected_admin_records=False)
    assert strict.check(report, T)[1] is StatusReason.MISSING_SECURITY_OPERATION


def test_uncertified_source_is_rejected() -> None:
    stranger = NodeIdentity.generate(7, entropy=b"node 7".ljust(32, b"."))
    sealed = add_bcb_x25519(
        bundle(src="ipn:7.1"), identity=stranger, recipient_kx_public=N2.kx_public
    )
    dst = policy(N2)
    assert dst.check(wire(sealed), T) == (None, StatusReason.FAILED_SECURITY_OPERATION)
    assert dst.last_rejection == "uncertified_source"


def test_expired_or_not_yet_valid_source_certificate_is_rejected() -> None:
    sealed = wire(policy(N1).protect(bundle()))
    for c in (cert(N1, not_after_ms=T), cert(N1, not_before_ms=T + 1)):
        dst = policy(N2, certificates=[c, cert(N2)])
        assert dst.check(sealed, T)[1] is StatusReason.FAILED_SECURITY_OPERATION
        assert dst.last_rejection == "uncertified_source"


def test_revoked_source_is_rejected_by_node_and_by_serial() -> None:
    sealed = wire(policy(N1).protect(bundle()))
    dst = policy(N2)
    assert dst.update_revocations(
        issue_revocation_list(OP, version=1, issued_ms=1, nodes=[1])
    )
    assert dst.check(sealed, T) == (None, StatusReason.FAILED_SECURITY_OPERATION)
    assert dst.last_rejection == "revoked_source"
    by_serial = policy(N2)
    by_serial.update_revocations(
        issue_revocation_list(OP, version=1, issued_ms=1, serials=[1])
    )
    assert by_serial.check(sealed, T)[1] is StatusReason.FAILED_SECURITY_OPERATION
    assert by_serial.last_rejection == "uncertified_source"


def test_old_revocation_list_cannot_unrevoke() -> None:
    dst = policy(N2)
    dst.update_revocations(issue_revocation_list(OP, version=2, issued_ms=2, nodes=[1]))
    assert not dst.update_revocations(issue_revocation_list(OP, version=1, issued_ms=1))
    assert dst.check(wire(policy(N1).protect(bundle())), T)[1] is not None
    with pytest.raises(AuthenticationFailed):
        dst.update_revocations(
            issue_revocation_list(ROGUE_OP, version=3, issued_ms=3, nodes=[])
        )


def test_a_certified_node_cannot_speak_for_another_source() -> None:
    # Node 3 seals a bundle that claims to come from node 1.
    lie = add_bcb_x25519(bundle(), identity=N3, recipient_kx_public=N2.kx_public)
    dst = policy(N2)
    assert dst.check(wire(lie), T) == (None, StatusReason.FAILED_SECURITY_OPERATION)
    assert dst.last_rejection == "wrong_security_source"


def test_sealed_for_another_node_fails_authentication() -> None:
    for_3 = add_bcb_x25519(
        bundle(dst="ipn:3.1"), identity=N1, recipient_kx_public=N3.kx_public
    )
    # Rewritten to look as if for node 2: the primary block is in the AAD.
    at_2 = Bundle(bundle().primary, for_3.blocks)
    dst = policy(N2)
    assert dst.check(wire(at_2), T)[1] is StatusReason.FAILED_SECURITY_OPERATION
    assert dst.last_rejection == "authentication_failed"


def test_rfc9173_contexts_need_to_be_accepted_and_keyed() -> None:
    key = bytes(range(32))
    hmac = add_bib_hmac_sha2(bundle(), key=key, source=IpnEid(1, 0))
    dst = policy(N2, symmetric_keys=[key])
    assert dst.check(wire(hmac), T) == (None, StatusReason.MISSING_SECURITY_OPERATION)
    assert dst.last_rejection == "context_not_accepted"
    ok = policy(
        N2, symmetric_keys=[key], accepted_contexts={BIB_HMAC_SHA2, BCB_AES_GCM}
    )
    plain, reason = ok.check(wire(hmac), T)
    assert reason is None
    assert plain is not None
    aes = add_bcb_aes_gcm(bundle(seq=1), key=key, source=IpnEid(1, 0))
    plain, reason = ok.check(wire(aes), T)
    assert reason is None
    assert plain is not None
    assert plain.payload == PAYLOAD


def test_unknown_context_is_reported_as_unknown_operation() -> None:
    from dcis.dtn.bpsec.asb import AbstractSecurityBlock, encode_asb
    from dcis.dtn.bpv7.canonical import CanonicalBlock

    b = bundle()
    odd = AbstractSecurityBlock(
        targets=(1,), context_id=-999, source=IpnEid(1, 0), results=(((1, b"x"),),)
    )
    blk = CanonicalBlock(BlockType.BIB, 2, crc_type=CrcType.NONE, data=encode_asb(odd))
    dst = policy(N2)
    assert dst.check(Bundle(b.primary, (blk, *b.blocks)), T) == (
        None,
        StatusReason.UNKNOWN_SECURITY_OPERATION,
    )
    assert dst.last_rejection == "unsupported_context"


def test_malformed_security_block_is_a_conflicting_operation() -> None:
    from dcis.dtn.bpv7.canonical import CanonicalBlock

    b = bundle()
    junk = CanonicalBlock(BlockType.BCB, 2, crc_type=CrcType.NONE, data=b"\x00\x01")
    dst = policy(N2)
    assert dst.check(Bundle(b.primary, (junk, *b.blocks)), T) == (
        None,
        StatusReason.CONFLICTING_SECURITY_OPERATION,
    )
    assert dst.last_rejection == "malformed"


def test_signed_bundle_with_a_bad_signature_fails() -> None:
    signed = add_bib_ed25519(bundle(), identity=N1)
    pb = signed.payload_block
    tampered = Bundle(
        signed.primary,
        (*signed.blocks[:-1], dataclasses.replace(pb, data=pb.data[:-1] + b"?")),
    )
    dst = policy(N2)
    assert dst.check(wire(tampered), T)[1] is StatusReason.FAILED_SECURITY_OPERATION
    assert dst.last_rejection == "authentication_failed"


def test_counters_total_equals_the_sum_of_reasons() -> None:
    dst = policy(N2)
    dst.check(bundle(), T)
    dst.check(
        add_bcb_x25519(bundle(), identity=N3, recipient_kx_public=N2.kx_public), T
    )
    reasons = sum(v for k, v in dst.counters.items() if k.startswith("rejected_"))
    assert dst.counters["rejected"] == reasons == 2


def test_policy_needs_an_accepted_context() -> None:
    with pytest.raises(InvalidArgument):
        policy(N2, accepted_contexts=())


# -- hostile input -------------------------------------------------------------


_SEALED = encode_bundle(policy(N1).protect(bundle(hop_limit=4, crc_type=CrcType.NONE)))


@settings(deadline=None)
@given(st.data())
def test_check_never_raises_and_never_accepts_altered_bytes(
    data: st.DataObject,
) -> None:
    raw = bytearray(_SEALED)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if bytes(raw) == _SEALED:
        return
    try:
        b = decode_bundle_untrusted(bytes(raw))
    except Exception:
        return
    dst = policy(N2)
    plain, reason = dst.check(b, T)
    if plain is None:
        assert reason is not None
        return
    # Accepted only if the change was outside what the BCB protects: the
    # hop count block, which forwarders rewrite by design (section 8.5).
    original = decode_bundle_untrusted(_SEALED)
    assert plain.primary == original.primary
    assert plain.payload == PAYLOAD
    assert b.block_of_type(BlockType.BCB) == original.block_of_type(BlockType.BCB)
    assert b.payload_block == original.payload_block
