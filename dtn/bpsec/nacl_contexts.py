"""DCiS security contexts built on NaCl primitives (ids from the experimental range).

RFC 9172 section 11.3 leaves negative security context ids to local and
experimental use; spec/security.md registers ours:

- ``BCB_X25519_XCHACHA20POLY1305`` (-101): confidentiality *and* source
  authentication. Each target is sealed with XChaCha20-Poly1305 under a key
  agreed (X25519, static-static) between the security source node and the
  bundle's destination node, with the primary block, the target's header,
  the BCB's header and the security source as associated data: source,
  destination, creation time and lifetime cannot be changed, and the block
  cannot be moved to another bundle.

  Parameters: 1 = base nonce (24 bytes). Results per target: 1 = Poly1305 tag
  (16 bytes). Each target's nonce is BLAKE2b-192(base nonce || target number),
  so several targets under one BCB never share a nonce.

- ``BIB_ED25519`` (-102): source authentication and integrity without
  confidentiality (e.g. a bundle many nodes may read). No parameters.
  Results per target: 1 = Ed25519 signature (64 bytes) over the label, the
  primary block, the target's header, the BIB's header, the security source
  and the target's data (always the full scope).

The security source must be an ``ipn`` EID: its node number names the
certificate (the peer's public keys) in the :class:`KeyRing`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Final

from dcis.crypto.errors import AuthenticationFailed
from dcis.crypto.keys import NodeIdentity, verify_signature
from dcis.dtn.bpsec._aead import AeadFailed, open_detached, seal_detached
from dcis.dtn.bpsec.asb import AbstractSecurityBlock, encode_bcb_template
from dcis.dtn.bpsec.results import KeyRing
from dcis.dtn.bpsec.scope import block_header, target_data
from dcis.dtn.bpv7 import cbor
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.eid import Eid, IpnEid, encode_eid
from dcis.dtn.errors import InvalidArgument

BCB_X25519_XCHACHA20POLY1305: Final = -101
BIB_ED25519: Final = -102

BCB_LABEL: Final = b"dcis bcb x25519-xchacha20poly1305 v1\0"
BIB_LABEL: Final = b"dcis bib ed25519 v1\0"
PARAM_NONCE: Final = 1
RESULT_ID: Final = 1
NONCE_BYTES: Final = 24
TAG_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64


_SMALL_UINTS: Final = tuple(cbor.uint(i) for i in range(24))


def _target_nonce(base: bytes, target: int) -> bytes:
    t = _SMALL_UINTS[target] if target < 24 else cbor.uint(target)
    return hashlib.blake2b(
        base + t, digest_size=NONCE_BYTES, person=b"dcis-bcb-nonce"
    ).digest()


def _bcb_aad(
    primary_bytes: bytes, target: CanonicalBlock, bcb: CanonicalBlock, source: Eid
) -> bytes:
    return b"".join(
        (
            BCB_LABEL,
            primary_bytes,
            block_header(target),
            block_header(bcb),
            _eid_bytes(source),
        )
    )


_EIDS: dict[Eid, bytes] = {}


def _eid_bytes(eid: Eid) -> bytes:
    # Security sources are few (one per node): cache their encoding.
    b = _EIDS.get(eid)
    if b is None:
        b = encode_eid(eid)
        if len(_EIDS) < 4096:
            _EIDS[eid] = b
    return b


def _bib_message(
    primary_bytes: bytes,
    target: CanonicalBlock | None,
    bib: CanonicalBlock,
    source: Eid,
) -> bytes:
    parts = [BIB_LABEL, primary_bytes]
    if target is not None:
        parts.append(block_header(target))
    parts += [
        block_header(bib),
        encode_eid(source),
        cbor.bstr(target_data(primary_bytes, target)),
    ]
    return b"".join(parts)


def _source_node(asb: AbstractSecurityBlock) -> int | None:
    return asb.source.node if isinstance(asb.source, IpnEid) else None


# -- BCB --------------------------------------------------------------------


def seal_x25519_xchacha(
    primary_bytes: bytes,
    bcb: CanonicalBlock,
    targets: dict[int, CanonicalBlock | None],
    *,
    identity: NodeIdentity,
    recipient_kx_public: bytes,
    nonce: bytes | None = None,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> tuple[AbstractSecurityBlock, dict[int, bytes]]:
    """Encrypt ``targets`` for the holder of ``recipient_kx_public``.

    Returns the BCB's ASB (security source ``ipn:<identity.node>.0``) and
    ``{target: ciphertext}``. ``nonce`` (24 bytes) defaults to
    ``random_bytes(24)``: the OS CSPRNG unless a deterministic source is
    injected (the simulator does; such output is not secure).
    """
    base = random_bytes(NONCE_BYTES) if nonce is None else nonce
    if len(base) != NONCE_BYTES:
        raise InvalidArgument(f"nonce must be {NONCE_BYTES} bytes")
    source = IpnEid(identity.node, 0)
    key = identity.agree(recipient_kx_public, label=BCB_LABEL)
    cipher: dict[int, bytes] = {}
    results = []
    for t, tb in targets.items():
        if tb is None:
            raise InvalidArgument(
                "a BCB must not target the primary block (RFC 9172 3.9)"
            )
        cipher[t], tag = seal_detached(
            tb.data,
            _bcb_aad(primary_bytes, tb, bcb, source),
            _target_nonce(base, t),
            key,
        )
        results.append(((RESULT_ID, tag),))
    asb = AbstractSecurityBlock(
        targets=tuple(targets),
        context_id=BCB_X25519_XCHACHA20POLY1305,
        source=source,
        parameters=((PARAM_NONCE, base),),
        results=tuple(results),
    )
    return asb, cipher


def seal_payload_x25519_xchacha(
    primary_bytes: bytes,
    bcb: CanonicalBlock,
    payload: CanonicalBlock,
    *,
    identity: NodeIdentity,
    recipient_kx_public: bytes,
    nonce: bytes | None = None,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> tuple[bytes, bytes]:
    """:func:`seal_x25519_xchacha` for the one-target case (the payload, block 1).

    Returns ``(BCB data, payload ciphertext)``: the encoded ASB directly,
    the same bytes ``encode_asb`` gives for the general path's ASB.
    """
    base = random_bytes(NONCE_BYTES) if nonce is None else nonce
    if len(base) != NONCE_BYTES:
        raise InvalidArgument(f"nonce must be {NONCE_BYTES} bytes")
    source = _SOURCES.get(identity.node)
    if source is None:
        source = _SOURCES[identity.node] = IpnEid(identity.node, 0)
    key = identity.agree(recipient_kx_public, label=BCB_LABEL)
    ciphertext, tag = seal_detached(
        payload.data,
        _bcb_aad(primary_bytes, payload, bcb, source),
        _target_nonce(base, 1),
        key,
    )
    return encode_bcb_template(1, source, base, tag), ciphertext


_SOURCES: dict[int, IpnEid] = {}


def open_x25519_xchacha(
    primary_bytes: bytes,
    bcb: CanonicalBlock,
    asb: AbstractSecurityBlock,
    targets: dict[int, CanonicalBlock | None],
    keyring: KeyRing,
) -> dict[int, bytes] | str:
    """Decrypt every target: ``{target: plaintext}``, or why it cannot try.

    Returns ``"no key"`` without an identity and ``"uncertified source"``
    when the security source has no certificate in ``keyring``. Raises
    :class:`AuthenticationFailed` when decryption fails.
    """
    if keyring.identity is None:
        return "no key"
    node = _source_node(asb)
    cert = None if node is None else keyring.certificates.get(node)
    if cert is None:
        return "uncertified source"
    base = asb.parameter(PARAM_NONCE)
    if not isinstance(base, bytes) or len(base) != NONCE_BYTES:
        raise AuthenticationFailed()
    key = keyring.identity.agree(cert.kx_public, label=BCB_LABEL)
    out: dict[int, bytes] = {}
    for t in asb.targets:
        tb = targets[t]
        tag = asb.result(t, RESULT_ID)
        if tb is None or not isinstance(tag, bytes) or len(tag) != TAG_BYTES:
            raise AuthenticationFailed()
        try:
            out[t] = open_detached(
                tb.data,
                tag,
                _bcb_aad(primary_bytes, tb, bcb, asb.source),
                _target_nonce(base, t),
                key,
            )
        except AeadFailed as exc:
            raise AuthenticationFailed() from exc
    return out


# -- BIB --------------------------------------------------------------------


def sign_ed25519(
    primary_bytes: bytes,
    bib: CanonicalBlock,
    targets: dict[int, CanonicalBlock | None],
    *,
    identity: NodeIdentity,
) -> AbstractSecurityBlock:
    """Sign ``targets`` with ``identity``'s Ed25519 key; returns the BIB's ASB."""
    source = IpnEid(identity.node, 0)
    results = tuple(
        ((RESULT_ID, identity.sign(_bib_message(primary_bytes, tb, bib, source))),)
        for tb in targets.values()
    )
    return AbstractSecurityBlock(
        targets=tuple(targets), context_id=BIB_ED25519, source=source, results=results
    )


def verify_ed25519(
    primary_bytes: bytes,
    bib: CanonicalBlock,
    asb: AbstractSecurityBlock,
    targets: dict[int, CanonicalBlock | None],
    keyring: KeyRing,
) -> str | None:
    """None when every signature verifies; ``"uncertified source"`` without a certificate.

    Raises :class:`AuthenticationFailed` for a bad signature.
    """
    node = _source_node(asb)
    cert = None if node is None else keyring.certificates.get(node)
    if cert is None:
        return "uncertified source"
    for t in asb.targets:
        sig = asb.result(t, RESULT_ID)
        if not isinstance(sig, bytes):
            raise AuthenticationFailed()
        verify_signature(
            cert.sign_public,
            _bib_message(primary_bytes, targets[t], bib, asb.source),
            sig,
        )
    return None
