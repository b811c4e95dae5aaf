"""Bytes that security operations bind: IPPT, AAD, block headers.

RFC 9173 section 3.7 (BIB-HMAC-SHA2 integrity-protected plaintext) and
section 4.7.1 (BCB-AES-GCM additional authenticated data). Both start with
the integrity/AAD scope flags as a CBOR unsigned integer, then optionally the
primary block, the target's header and the security block's header (each
header being block type code, block number and block processing control
flags as three CBOR unsigned integers). The IPPT ends with the target's
block-type-specific data as a CBOR byte string; for the primary block as
target, its encoding is that byte string's content.
"""

from __future__ import annotations

from enum import IntFlag

from dcis.dtn.bpv7 import cbor
from dcis.dtn.bpv7.canonical import CanonicalBlock


class ScopeFlags(IntFlag):
    """Integrity scope (RFC 9173 3.3.3) and AAD scope (RFC 9173 4.3.4) flags."""

    NONE = 0
    PRIMARY_BLOCK = 0x01
    TARGET_HEADER = 0x02
    SECURITY_HEADER = 0x04
    ALL = 0x07


_HEADERS: dict[tuple[int, int, int], bytes] = {}


def block_header(block: CanonicalBlock) -> bytes:
    """Type code, block number and flags as three CBOR unsigned integers."""
    # Cached: every bundle binds the same few headers (payload, BCB 2, ...).
    k = (block.type_code, block.number, int(block.flags))
    h = _HEADERS.get(k)
    if h is None:
        h = cbor.uint(k[0]) + cbor.uint(k[1]) + cbor.uint(k[2])
        if len(_HEADERS) < 4096:  # bounded: headers of hostile bundles vary
            _HEADERS[k] = h
    return h


def scope_prefix(
    scope: int,
    primary_bytes: bytes,
    target: CanonicalBlock | None,
    security_block: CanonicalBlock,
) -> bytes:
    """scope flags || [primary] || [target header] || [security header].

    ``target`` is None when the target is the primary block (it has no
    header to bind). This is the whole AAD of BCB-AES-GCM and the IPPT of
    BIB-HMAC-SHA2 without its final byte string.
    """
    parts = [cbor.uint(scope)]
    if scope & ScopeFlags.PRIMARY_BLOCK:
        parts.append(primary_bytes)
    if scope & ScopeFlags.TARGET_HEADER and target is not None:
        parts.append(block_header(target))
    if scope & ScopeFlags.SECURITY_HEADER:
        parts.append(block_header(security_block))
    return b"".join(parts)


def target_data(primary_bytes: bytes, target: CanonicalBlock | None) -> bytes:
    """The target's block-type-specific data (the primary block's encoding for target 0)."""
    return primary_bytes if target is None else target.data


def ippt(
    scope: int,
    primary_bytes: bytes,
    target: CanonicalBlock | None,
    security_block: CanonicalBlock,
) -> bytes:
    """Integrity-protected plaintext (RFC 9173 3.7)."""
    return scope_prefix(scope, primary_bytes, target, security_block) + cbor.bstr(
        target_data(primary_bytes, target)
    )
