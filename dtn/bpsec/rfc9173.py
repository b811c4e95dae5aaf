"""RFC 9173's default security contexts: BIB-HMAC-SHA2 and BCB-AES-GCM.

https://www.rfc-editor.org/rfc/rfc9173 -- sections 3 (BIB-HMAC-SHA2, context
id 1) and 4 (BCB-AES-GCM, context id 2), including AES key wrap (RFC 3394)
of the HMAC or content-encryption key. AES and AES-KW come from the
``cryptography`` package (OpenSSL): a well-kept implementation, not ours.

Each ``verify_*``/``decrypt_*`` function tries every key it is given (an HMAC
or AES key, or a key-encryption key when the block carries a wrapped key) and
returns ``"no key"`` when it was given none; it raises the opaque
:class:`crypto.AuthenticationFailed` when keys were given and none works.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from dcis.crypto.errors import AuthenticationFailed
from dcis.dtn.bpsec.asb import AbstractSecurityBlock, Item
from dcis.dtn.bpsec.scope import ScopeFlags, ippt, scope_prefix
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.eid import Eid
from dcis.dtn.errors import InvalidArgument

BIB_HMAC_SHA2: Final = 1
BCB_AES_GCM: Final = 2


class ShaVariant(IntEnum):
    """BIB-HMAC-SHA2 SHA variants (RFC 9173 3.3.1; COSE algorithm ids)."""

    HMAC_256 = 5
    HMAC_384 = 6
    HMAC_512 = 7


class AesVariant(IntEnum):
    """BCB-AES-GCM AES variants (RFC 9173 4.3.2; COSE algorithm ids)."""

    A128GCM = 1
    A256GCM = 3


class BibParam(IntEnum):
    """BIB-HMAC-SHA2 parameter ids (RFC 9173 3.3)."""

    SHA_VARIANT = 1
    WRAPPED_KEY = 2
    SCOPE_FLAGS = 3


class BcbParam(IntEnum):
    """BCB-AES-GCM parameter ids (RFC 9173 4.3)."""

    IV = 1
    AES_VARIANT = 2
    WRAPPED_KEY = 3
    SCOPE_FLAGS = 4


RESULT_ID: Final = 1  # expected HMAC (BIB, 3.4) / authentication tag (BCB, 4.4)
TAG_BYTES: Final = 16
_HASHES: Final[dict[int, str]] = {
    ShaVariant.HMAC_256: "sha256",
    ShaVariant.HMAC_384: "sha384",
    ShaVariant.HMAC_512: "sha512",
}
_AES_KEY_BYTES: Final = {AesVariant.A128GCM: 16, AesVariant.A256GCM: 32}
_KW_KEY_BYTES: Final = (16, 24, 32)


def _int_param(asb: AbstractSecurityBlock, pid: int, default: int) -> int:
    """An unsigned integer parameter (variant, scope flags); default when absent.

    Anything else -- text, a negative or a 65-bit number -- cannot be
    honoured, so the block cannot verify: AuthenticationFailed.
    """
    v = asb.parameter(pid)
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 64:
        raise AuthenticationFailed()
    return v


def _candidate_keys(keys: Sequence[bytes], wrapped: object) -> list[bytes]:
    """The keys to try: ``keys`` themselves, or what they unwrap (RFC 3394)."""
    if wrapped is None:
        return list(keys)
    if not isinstance(wrapped, bytes):
        raise AuthenticationFailed()
    out = []
    for kek in keys:
        if len(kek) not in _KW_KEY_BYTES:
            continue
        try:
            out.append(aes_key_unwrap(kek, wrapped))
        except (InvalidUnwrap, ValueError):
            continue
    return out


# -- BIB-HMAC-SHA2 ---------------------------------------------------------


def verify_hmac_sha2(
    primary_bytes: bytes,
    bib: CanonicalBlock,
    asb: AbstractSecurityBlock,
    targets: dict[int, CanonicalBlock | None],
    keys: Sequence[bytes],
) -> str | None:
    """Check every target's HMAC; None when all verify with one key, ``"no key"`` without keys.

    Raises :class:`AuthenticationFailed` when no key verifies every target.
    """
    if not keys:
        return "no key"
    variant = _int_param(asb, BibParam.SHA_VARIANT, ShaVariant.HMAC_384)
    scope = _int_param(asb, BibParam.SCOPE_FLAGS, ScopeFlags.ALL)
    digest = _HASHES.get(variant)
    if digest is None:
        raise AuthenticationFailed()
    expected: list[tuple[bytes, bytes]] = []
    for t in asb.targets:
        mac = asb.result(t, RESULT_ID)
        if not isinstance(mac, bytes):
            raise AuthenticationFailed()
        expected.append((ippt(scope, primary_bytes, targets[t], bib), mac))
    for key in _candidate_keys(keys, asb.parameter(BibParam.WRAPPED_KEY)):
        if all(
            hmac.compare_digest(hmac.new(key, msg, digest).digest(), mac)
            for msg, mac in expected
        ):
            return None
    raise AuthenticationFailed()


def hmac_sha2_asb(
    primary_bytes: bytes,
    bib: CanonicalBlock,
    targets: dict[int, CanonicalBlock | None],
    *,
    key: bytes,
    source: Eid,
    variant: ShaVariant = ShaVariant.HMAC_384,
    scope: ScopeFlags = ScopeFlags.ALL,
    kek: bytes | None = None,
) -> AbstractSecurityBlock:
    """Build the ASB of a BIB-HMAC-SHA2 block over ``targets``.

    ``bib`` is the BIB's header as it will be sent (its data is ignored).
    With ``kek``, ``key`` travels AES-wrapped in the block (RFC 9173 3.3.2).
    """
    if not key:
        raise InvalidArgument("HMAC key must not be empty")
    digest = _HASHES[variant]
    params: list[Item] = [(BibParam.SHA_VARIANT.value, int(variant))]
    if kek is not None:
        params.append((BibParam.WRAPPED_KEY.value, aes_key_wrap(kek, key)))
    params.append((BibParam.SCOPE_FLAGS.value, int(scope)))
    results = tuple(
        (
            (
                RESULT_ID,
                hmac.new(key, ippt(scope, primary_bytes, tb, bib), digest).digest(),
            ),
        )
        for tb in targets.values()
    )
    return AbstractSecurityBlock(
        targets=tuple(targets),
        context_id=BIB_HMAC_SHA2,
        source=source,
        parameters=tuple(params),
        results=results,
    )


# -- BCB-AES-GCM -----------------------------------------------------------


def decrypt_aes_gcm(
    primary_bytes: bytes,
    bcb: CanonicalBlock,
    asb: AbstractSecurityBlock,
    targets: dict[int, CanonicalBlock | None],
    keys: Sequence[bytes],
) -> dict[int, bytes] | str:
    """Decrypt every target; returns ``{target: plaintext}`` or ``"no key"``.

    Raises :class:`AuthenticationFailed` when no key decrypts every target.
    """
    if not keys:
        return "no key"
    iv = asb.parameter(BcbParam.IV)
    variant = _int_param(asb, BcbParam.AES_VARIANT, AesVariant.A256GCM)
    scope = _int_param(asb, BcbParam.SCOPE_FLAGS, ScopeFlags.ALL)
    key_len = _AES_KEY_BYTES.get(variant)  # type: ignore[call-overload]
    if not isinstance(iv, bytes) or len(iv) not in (12, 16) or key_len is None:
        raise AuthenticationFailed()
    work: list[tuple[int, bytes, bytes]] = []
    for t in asb.targets:
        tb = targets[t]
        if tb is None:  # RFC 9172 3.9: a BCB never targets the primary block
            raise AuthenticationFailed()
        tag = asb.result(t, RESULT_ID)
        # RFC 9173 4.4.1: the tag is a result, or else appended to the ciphertext.
        sealed = tb.data + tag if isinstance(tag, bytes) else tb.data
        work.append((t, sealed, scope_prefix(scope, primary_bytes, tb, bcb)))
    for key in _candidate_keys(keys, asb.parameter(BcbParam.WRAPPED_KEY)):
        if len(key) != key_len:
            continue
        aead = AESGCM(key)
        try:
            return {t: aead.decrypt(iv, sealed, aad) for t, sealed, aad in work}
        except InvalidTag:
            continue
    raise AuthenticationFailed()


def aes_gcm_encrypt(
    primary_bytes: bytes,
    bcb: CanonicalBlock,
    targets: dict[int, CanonicalBlock | None],
    *,
    key: bytes,
    source: Eid,
    variant: AesVariant = AesVariant.A256GCM,
    scope: ScopeFlags = ScopeFlags.ALL,
    iv: bytes | None = None,
    kek: bytes | None = None,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> tuple[AbstractSecurityBlock, dict[int, bytes]]:
    """Encrypt ``targets``; returns the BCB's ASB and ``{target: ciphertext}``.

    ``iv`` defaults to 12 bytes from ``random_bytes`` (RFC 9173 4.3.1), the
    OS CSPRNG unless a deterministic source is injected (the simulator does;
    such output is not secure). Every target shares the IV, as RFC 9173
    specifies: use one target per BCB, or a fresh key.
    """
    if len(key) != _AES_KEY_BYTES[variant]:
        raise InvalidArgument(
            f"{variant.name} needs a {_AES_KEY_BYTES[variant]}-byte key, got {len(key)}"
        )
    iv = random_bytes(12) if iv is None else iv
    if len(iv) not in (12, 16):
        raise InvalidArgument("IV must be 12 (recommended) or 16 bytes")
    aead = AESGCM(key)
    cipher: dict[int, bytes] = {}
    results = []
    for t, tb in targets.items():
        if tb is None:
            raise InvalidArgument(
                "a BCB must not target the primary block (RFC 9172 3.9)"
            )
        sealed = aead.encrypt(iv, tb.data, scope_prefix(scope, primary_bytes, tb, bcb))
        cipher[t] = sealed[:-TAG_BYTES]
        results.append(((RESULT_ID, sealed[-TAG_BYTES:]),))
    params: list[Item] = [
        (BcbParam.IV.value, iv),
        (BcbParam.AES_VARIANT.value, int(variant)),
    ]
    if kek is not None:
        params.append((BcbParam.WRAPPED_KEY.value, aes_key_wrap(kek, key)))
    params.append((BcbParam.SCOPE_FLAGS.value, int(scope)))
    asb = AbstractSecurityBlock(
        targets=tuple(targets),
        context_id=BCB_AES_GCM,
        source=source,
        parameters=tuple(params),
        results=tuple(results),
    )
    return asb, cipher
