"""payload_verdict: the acceptance rule a secure node applies after unprotect."""

from __future__ import annotations

from dcis.crypto import NodeIdentity, OperatorKey
from dcis.dtn.bpsec import (
    BCB_X25519_XCHACHA20POLY1305,
    BIB_ED25519,
    KeyRing,
    add_bcb_x25519,
    add_bib_ed25519,
    payload_verdict,
    unprotect,
)
from dcis.dtn.bpv7 import make_bundle
from dcis.dtn.bpv7.admin import StatusReason
from tests.unit.bpsec.helpers import certify

OP = OperatorKey.generate(entropy=b"o" * 32)
S = NodeIdentity.generate(5, entropy=b"s" * 32)
X = NodeIdentity.generate(6, entropy=b"x" * 32)
D = NodeIdentity.generate(9, entropy=b"d" * 32)
ACCEPT = {BCB_X25519_XCHACHA20POLY1305}


RING = KeyRing(
    identity=D,
    certificates={5: certify(OP, S, not_after_ms=1), 6: certify(OP, X, not_after_ms=1)},
)
PLAIN = make_bundle(
    source="ipn:5.1", destination="ipn:9.1", payload=b"data", creation_ms=7
)


def verdict(bundle, ring=RING, accept=ACCEPT):
    _, results = unprotect(bundle, ring)
    return payload_verdict(bundle, results, accept)


def test_sealed_by_the_source_is_accepted() -> None:
    assert (
        verdict(add_bcb_x25519(PLAIN, identity=S, recipient_kx_public=D.kx_public))
        is None
    )


def test_plain_bundle_is_missing_security() -> None:
    assert verdict(PLAIN) is StatusReason.MISSING_SECURITY_OPERATION


def test_sealed_by_another_certified_node_fails() -> None:
    # X is certified, and its seal verifies -- but the bundle claims source 5.
    assert (
        verdict(add_bcb_x25519(PLAIN, identity=X, recipient_kx_public=D.kx_public))
        is StatusReason.FAILED_SECURITY_OPERATION
    )


def test_uncertified_source_or_unaccepted_context_fails() -> None:
    sealed = add_bcb_x25519(PLAIN, identity=S, recipient_kx_public=D.kx_public)
    assert (
        verdict(sealed, ring=KeyRing(identity=D))
        is StatusReason.FAILED_SECURITY_OPERATION
    )
    signed = add_bib_ed25519(PLAIN, identity=S)
    assert (
        verdict(signed) is StatusReason.FAILED_SECURITY_OPERATION
    )  # BIB not in ACCEPT
    assert verdict(signed, accept={BIB_ED25519}) is None
