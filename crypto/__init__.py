"""crypto: identities, certificates, revocation, replay windows.

Imports nothing of ours (spec/design.md layers). Primitives: Ed25519 and X25519
(RFC 8032, RFC 7748) through PyNaCl/libsodium. The BPSec blocks that carry
these keys on bundles live in ``dcis.dtn.bpsec``; the key store's files are
read and written by the edge module ``dcis.dtn.storage.keystore``.
"""

from dcis.crypto.certificate import (
    NodeCertificate,
    decode_certificate_untrusted,
    encode_certificate,
    issue_certificate,
    verify_certificate,
)
from dcis.crypto.errors import (
    AuthenticationFailed,
    CertificateRejected,
    CryptoError,
    DecodeError,
    InvalidArgument,
    KeyStoreError,
)
from dcis.crypto.keys import NodeIdentity, OperatorKey, key_id, verify_signature
from dcis.crypto.replay import ReplayGuard, ReplayVerdict, ReplayWindow
from dcis.crypto.revocation import (
    RevocationList,
    RevocationState,
    decode_revocation_list_untrusted,
    encode_revocation_list,
    issue_revocation_list,
    verify_revocation_list,
)

__all__ = [
    "AuthenticationFailed",
    "CertificateRejected",
    "CryptoError",
    "DecodeError",
    "InvalidArgument",
    "KeyStoreError",
    "NodeCertificate",
    "NodeIdentity",
    "OperatorKey",
    "ReplayGuard",
    "ReplayVerdict",
    "ReplayWindow",
    "RevocationList",
    "RevocationState",
    "decode_certificate_untrusted",
    "decode_revocation_list_untrusted",
    "encode_certificate",
    "encode_revocation_list",
    "issue_certificate",
    "issue_revocation_list",
    "key_id",
    "verify_certificate",
    "verify_revocation_list",
    "verify_signature",
]
