"""Shared test helpers for the BPSec and node-security tests."""

from __future__ import annotations

from dcis.crypto import NodeIdentity, OperatorKey, issue_certificate
from dcis.crypto.certificate import NodeCertificate


def certify(
    op: OperatorKey,
    ident: NodeIdentity,
    *,
    not_after_ms: int,
    not_before_ms: int = 0,
    serial: int | None = None,
) -> NodeCertificate:
    """``op``'s certificate for ``ident``'s own node and keys (serial: its node)."""
    return issue_certificate(
        op,
        node=ident.node,
        sign_public=ident.sign_public,
        kx_public=ident.kx_public,
        not_before_ms=not_before_ms,
        not_after_ms=not_after_ms,
        serial=ident.node if serial is None else serial,
    )
