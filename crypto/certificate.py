"""Node certificates: the operator vouches for a node's public keys.

Wire format (CBOR, RFC 8949; CDDL in spec/security.md)::

    node-certificate = [
      version: 1,
      node: uint,                 ; node number (ipn:N.*)
      sign-key: bstr .size 32,    ; Ed25519 public key
      kx-key: bstr .size 32,      ; X25519 public key
      not-before-ms: uint,        ; DTN time, ms since 2000-01-01T00:00:00Z
      not-after-ms: uint,         ; DTN time; valid while not-before <= now < not-after
      serial: uint,               ; unique per issuer, names the certificate in revocations
      issuer: bstr .size 8,       ; key id of the operator key that signed it
      signature: bstr .size 64,   ; Ed25519 over CERT_LABEL || CBOR(first 8 fields)
    ]

Times are DTN milliseconds (RFC 9171 4.2.6) passed in by the caller: this
package never reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cbor2

from dcis.crypto._cbor import expect_array, expect_bytes, expect_uint, loads_untrusted
from dcis.crypto.errors import CertificateRejected, DecodeError, InvalidArgument
from dcis.crypto.keys import (
    KEY_ID_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    OperatorKey,
    key_id,
    verify_signature,
)
from dcis.crypto.revocation import RevocationList

CERT_VERSION = 1
# Domain separation: a certificate signature can never be replayed as a
# revocation list or bundle signature (their labels differ).
CERT_LABEL = b"dcis node certificate v1\0"
_U64 = 1 << 64


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCertificate:
    """The operator's signed statement binding ``node`` to two public keys."""

    node: int
    sign_public: bytes
    kx_public: bytes
    not_before_ms: int
    not_after_ms: int
    serial: int
    issuer: bytes
    signature: bytes

    def __post_init__(self) -> None:
        for name in ("node", "not_before_ms", "not_after_ms", "serial"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < _U64:
                raise InvalidArgument(
                    f"{name} must be an unsigned 64-bit integer, got {v!r}"
                )
        if self.node == 0:
            raise InvalidArgument(
                "node 0 is not a node number (ipn:0 is the null endpoint)"
            )
        if self.not_after_ms <= self.not_before_ms:
            raise InvalidArgument("not_after_ms must be later than not_before_ms")
        for name, n in (
            ("sign_public", PUBLIC_KEY_BYTES),
            ("kx_public", PUBLIC_KEY_BYTES),
            ("issuer", KEY_ID_BYTES),
            ("signature", SIGNATURE_BYTES),
        ):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != n:
                raise InvalidArgument(f"{name} must be {n} bytes")

    def signed_bytes(self) -> bytes:
        """The exact bytes the operator signs (label + CBOR of the unsigned fields)."""
        return CERT_LABEL + cbor2.dumps(self._fields())

    def _fields(self) -> list[object]:
        return [
            CERT_VERSION,
            self.node,
            self.sign_public,
            self.kx_public,
            self.not_before_ms,
            self.not_after_ms,
            self.serial,
            self.issuer,
        ]

    def valid_at(self, now_ms: int) -> bool:
        """Whether ``now_ms`` lies in the validity window [not_before, not_after)."""
        return self.not_before_ms <= now_ms < self.not_after_ms


def issue_certificate(
    operator: OperatorKey,
    *,
    node: int,
    sign_public: bytes,
    kx_public: bytes,
    not_before_ms: int,
    not_after_ms: int,
    serial: int,
) -> NodeCertificate:
    """Sign a certificate for ``node``'s public keys. Raises InvalidArgument."""
    unsigned = NodeCertificate(
        node=node,
        sign_public=sign_public,
        kx_public=kx_public,
        not_before_ms=not_before_ms,
        not_after_ms=not_after_ms,
        serial=serial,
        issuer=operator.key_id,
        signature=bytes(SIGNATURE_BYTES),
    )
    # The signature covers every other field (signed_bytes), so it is made
    # over the certificate with a placeholder and then put in its place.
    return replace(unsigned, signature=operator.sign(unsigned.signed_bytes()))


def encode_certificate(cert: NodeCertificate) -> bytes:
    """CBOR encoding of ``cert`` (see the module docstring)."""
    return cbor2.dumps([*cert._fields(), cert.signature])


def decode_certificate_untrusted(
    data: bytes | bytearray | memoryview,
) -> NodeCertificate:
    """Parse a certificate from untrusted bytes. Raises only DecodeError.

    Parsing does not verify: call :func:`verify_certificate` before trusting it.
    """
    what = "certificate"
    item = loads_untrusted(data, what=what)
    f = expect_array(item, 9, what=what)
    version = expect_uint(f[0], what=f"{what}, field version")
    if version != CERT_VERSION:
        raise DecodeError(f"unsupported version {version}", where=what)
    try:
        return NodeCertificate(
            node=expect_uint(f[1], what=f"{what}, field node"),
            sign_public=expect_bytes(
                f[2], what=f"{what}, field sign-key", length=PUBLIC_KEY_BYTES
            ),
            kx_public=expect_bytes(
                f[3], what=f"{what}, field kx-key", length=PUBLIC_KEY_BYTES
            ),
            not_before_ms=expect_uint(f[4], what=f"{what}, field not-before-ms"),
            not_after_ms=expect_uint(f[5], what=f"{what}, field not-after-ms"),
            serial=expect_uint(f[6], what=f"{what}, field serial"),
            issuer=expect_bytes(
                f[7], what=f"{what}, field issuer", length=KEY_ID_BYTES
            ),
            signature=expect_bytes(
                f[8], what=f"{what}, field signature", length=SIGNATURE_BYTES
            ),
        )
    except InvalidArgument as exc:
        raise DecodeError(str(exc), where=what) from exc


def verify_certificate(
    cert: NodeCertificate,
    operator_public: bytes,
    *,
    now_ms: int,
    revocations: RevocationList | None = None,
    node: int | None = None,
) -> None:
    """Accept ``cert`` or raise.

    Checks, in order: issued by ``operator_public`` and its signature verifies
    (:class:`~dcis.crypto.errors.AuthenticationFailed`, opaque); then policy, which
    raises :class:`~dcis.crypto.errors.CertificateRejected` with a loggable reason:
    ``"wrong node"`` (when ``node`` is given and differs), ``"revoked"``,
    ``"not yet valid"``, ``"expired"``.
    """
    if cert.issuer != key_id(operator_public):
        raise CertificateRejected("wrong issuer")
    verify_signature(operator_public, cert.signed_bytes(), cert.signature)
    if node is not None and cert.node != node:
        raise CertificateRejected("wrong node")
    if revocations is not None and revocations.is_revoked(cert.node, cert.serial):
        raise CertificateRejected("revoked")
    if now_ms < cert.not_before_ms:
        raise CertificateRejected("not yet valid")
    if now_ms >= cert.not_after_ms:
        raise CertificateRejected("expired")
