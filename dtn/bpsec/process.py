"""Adding and processing BPSec blocks on whole bundles (RFC 9172 sections 3 and 5).

Processing order (RFC 9172 3.9-3.10, 5.1): every BCB is processed first --
its targets decrypted in place, which may reveal a BIB it had encrypted (as
in RFC 9173 Appendix A.4) -- then every BIB is verified over the plaintext.
Processed security blocks are removed from the bundle handed back, as a
security acceptor does; blocks that could not be processed (unknown context,
no key) are left as they were and reported with ``verified=False``.

Security blocks that break RFC 9172's rules (a target that is not in the
bundle, a BCB over the primary block or over another BCB, a BIB over a BCB)
make the bundle malformed: :class:`dcis.dtn.errors.DecodeError`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from dcis.crypto.keys import NodeIdentity
from dcis.dtn.bpsec import nacl_contexts, rfc9173
from dcis.dtn.bpsec.asb import (
    AbstractSecurityBlock,
    SecurityBlockType,
    decode_asb_untrusted,
    encode_asb,
)
from dcis.dtn.bpsec.results import KeyRing, SecurityResult
from dcis.dtn.bpsec.scope import ScopeFlags
from dcis.dtn.bpv7.bundle import Bundle
from dcis.dtn.bpv7.canonical import CanonicalBlock
from dcis.dtn.bpv7.eid import Eid, IpnEid, is_null_eid
from dcis.dtn.bpv7.flags import BlockFlags, BlockType, CrcType
from dcis.dtn.bpv7.primary import encode_primary
from dcis.dtn.errors import DecodeError, InvalidArgument

BIB = SecurityBlockType.BIB
BCB = SecurityBlockType.BCB
_SECURITY_TYPES = (int(BIB), int(BCB))

# Trusted construction for the per-bundle fast paths below: every field is
# already known valid there, and the dataclass checks cost ~1.5 us a block.
_set_type = CanonicalBlock.__dict__["type_code"].__set__
_set_number = CanonicalBlock.__dict__["number"].__set__
_set_flags = CanonicalBlock.__dict__["flags"].__set__
_set_crc = CanonicalBlock.__dict__["crc_type"].__set__
_set_data = CanonicalBlock.__dict__["data"].__set__
_set_bundle_primary = Bundle.__dict__["primary"].__set__
_set_bundle_blocks = Bundle.__dict__["blocks"].__set__


def _block(
    type_code: int, number: int, flags: BlockFlags, crc_type: CrcType, data: bytes
) -> CanonicalBlock:
    b = object.__new__(CanonicalBlock)
    _set_type(b, type_code)
    _set_number(b, number)
    _set_flags(b, flags)
    _set_crc(b, crc_type)
    _set_data(b, data)
    return b


def _bundle(bundle: Bundle, blocks: tuple[CanonicalBlock, ...]) -> Bundle:
    # Same primary, blocks that keep Bundle's invariants (payload last, numbers unique).
    out = object.__new__(Bundle)
    _set_bundle_primary(out, bundle.primary)
    _set_bundle_blocks(out, blocks)
    return out


Targets = dict[int, CanonicalBlock | None]
BcbHandler = Callable[
    [bytes, CanonicalBlock, AbstractSecurityBlock, Targets, KeyRing],
    "dict[int, bytes] | str",
]
BibHandler = Callable[
    [bytes, CanonicalBlock, AbstractSecurityBlock, Targets, KeyRing], "str | None"
]

BCB_HANDLERS: dict[int, BcbHandler] = {
    rfc9173.BCB_AES_GCM: lambda p, b, a, t, k: rfc9173.decrypt_aes_gcm(
        p, b, a, t, k.keys
    ),
    nacl_contexts.BCB_X25519_XCHACHA20POLY1305: nacl_contexts.open_x25519_xchacha,
}
BIB_HANDLERS: dict[int, BibHandler] = {
    rfc9173.BIB_HMAC_SHA2: lambda p, b, a, t, k: rfc9173.verify_hmac_sha2(
        p, b, a, t, k.keys
    ),
    nacl_contexts.BIB_ED25519: nacl_contexts.verify_ed25519,
}


def _targets(
    asb: AbstractSecurityBlock, blocks: dict[int, CanonicalBlock], sec: CanonicalBlock
) -> Targets:
    where = f"block {sec.number} (type {sec.type_code})"
    out: Targets = {}
    for t in asb.targets:
        if t == 0:
            if sec.type_code == BCB:
                raise DecodeError(
                    "a BCB must not target the primary block (RFC 9172 3.9)",
                    where=where,
                )
            out[t] = None
            continue
        tb = blocks.get(t)
        if tb is None:
            raise DecodeError(f"security target {t} is not in the bundle", where=where)
        if tb.type_code == BCB or t == sec.number:
            raise DecodeError(
                f"security target {t} is a BCB or the block itself (RFC 9172 3.9)",
                where=where,
            )
        if tb.type_code == BIB and sec.type_code == BIB:
            raise DecodeError(
                f"security target {t} is a BIB: a BIB never targets a security block "
                "(RFC 9172 3.7)",
                where=where,
            )
        out[t] = tb
    return out


def _check_source(sec: CanonicalBlock, asb: AbstractSecurityBlock) -> None:
    """RFC 9172 3.6: the security source is the node that added the block;
    a null endpoint (``dtn:none``, ``ipn:0.0``) has no members, so no node
    can have. Raises DecodeError."""
    if is_null_eid(asb.source):
        raise DecodeError(
            f"the security source is a null endpoint ({asb.source}) (RFC 9172 3.6)",
            where=f"block {sec.number} (type {sec.type_code})",
        )


def _check_bcb_flags(sec: CanonicalBlock, asb: AbstractSecurityBlock) -> None:
    """RFC 9172 3.8: a BCB is never discarded alone (its targets would stay
    ciphertext for good), and one over the payload is in every fragment."""
    where = f"block {sec.number} (BCB)"
    if sec.flags & BlockFlags.DISCARD_IF_UNPROCESSABLE:
        raise DecodeError(
            "a BCB must not be flagged 'discard block if unprocessable' (RFC 9172 3.8)",
            where=where,
        )
    if BlockType.PAYLOAD in asb.targets and not sec.flags & BlockFlags.MUST_REPLICATE:
        raise DecodeError(
            "a BCB over the payload must be flagged MUST_REPLICATE (RFC 9172 3.8)",
            where=where,
        )


def _checked(
    candidates: Iterable[CanonicalBlock],
    kind: int,
    blocks: dict[int, CanonicalBlock],
) -> list[tuple[CanonicalBlock, AbstractSecurityBlock, Targets]]:
    """Decode the ASB of every ``kind`` block among ``candidates`` and check
    RFC 9172's rules on it: targets (3.7, 3.8), BCB flags (3.8), and each
    target protected by at most one block of this kind (3.2).
    Raises :class:`DecodeError`."""
    label = "BCB" if kind == BCB else "BIB"
    out = []
    seen: dict[int, int] = {}
    for sec in candidates:
        if sec.type_code != kind:
            continue
        asb = decode_asb_untrusted(sec.data, where=f"block {sec.number} ({label})")
        _check_source(sec, asb)
        targets = _targets(asb, blocks, sec)
        if kind == BCB:
            _check_bcb_flags(sec, asb)
        for t in asb.targets:
            other = seen.setdefault(t, sec.number)
            if other != sec.number:
                raise DecodeError(
                    f"target {t} is protected by {label}s {other} and {sec.number}: "
                    "a security service applies to a target at most once "
                    "(RFC 9172 3.2)",
                    where=f"block {sec.number} ({label})",
                )
        out.append((sec, asb, targets))
    return out


def unprotect(bundle: Bundle, keyring: KeyRing) -> tuple[Bundle, list[SecurityResult]]:
    """Decrypt and verify every security block that ``keyring`` can process.

    Returns the bundle with processed security blocks removed and their
    targets in plaintext, and one :class:`SecurityResult` per security block
    (BCBs first, then BIBs, each in wire order).

    Raises :class:`crypto.AuthenticationFailed` when a block's check fails with
    the keys given (tampering or a wrong key; deliberately not saying which),
    and :class:`dcis.dtn.errors.DecodeError` for malformed security blocks.
    """
    sec_count = 0
    only: CanonicalBlock | None = None
    for b in bundle.blocks:
        if b.type_code in _SECURITY_TYPES:
            sec_count += 1
            only = b
    if only is None:
        return bundle, []
    if sec_count == 1 and only.type_code == BCB:
        fast = _unprotect_sealed_payload(bundle, only, keyring)
        if fast is not None:
            return fast
    blocks = {b.number: b for b in bundle.blocks}
    primary_bytes = encode_primary(bundle.primary)
    results: list[SecurityResult] = []
    removed: set[int] = set()
    still_encrypted: set[int] = set()
    # Every structural rule is checked before any cryptography runs, so a
    # malformed bundle is a DecodeError whatever keys we hold.
    bcbs = _checked(bundle.blocks, BCB, blocks)
    for sec, asb, targets in bcbs:
        handler = BCB_HANDLERS.get(asb.context_id)
        outcome = (
            "unsupported context"
            if handler is None
            else handler(primary_bytes, sec, asb, targets, keyring)
        )
        if isinstance(outcome, str):
            still_encrypted.update(asb.targets)
            results.append(_result(sec, asb, outcome))
            continue
        for t, plain in outcome.items():
            blocks[t] = _with_data(blocks[t], plain)
        removed.add(sec.number)
        results.append(_result(sec, asb, None))
    # A BIB still encrypted is ciphertext: we cannot even say what context
    # it uses, so it is neither checked nor verified.
    readable = [
        blocks[b.number]
        for b in bundle.blocks
        if b.type_code == BIB and b.number not in still_encrypted
    ]
    for sec, asb, targets in _checked(readable, BIB, blocks):
        reason: str | None
        bib_handler = BIB_HANDLERS.get(asb.context_id)
        if bib_handler is None:
            reason = "unsupported context"
        elif still_encrypted.intersection(asb.targets):
            reason = "target still encrypted"
        else:
            reason = bib_handler(primary_bytes, sec, asb, targets, keyring)
        if reason is None:
            removed.add(sec.number)
        results.append(_result(sec, asb, reason))
    kept = tuple(blocks[b.number] for b in bundle.blocks if b.number not in removed)
    return Bundle(bundle.primary, kept), results


def _unprotect_sealed_payload(
    bundle: Bundle, bcb: CanonicalBlock, keyring: KeyRing
) -> tuple[Bundle, list[SecurityResult]] | None:
    """Fast path of :func:`unprotect` for what every DCiS bundle carries: one
    BCB of our X25519 context over the payload and no other security block.

    None when the bundle has another shape (the general path then runs); the
    same outcome as the general path otherwise.
    """
    asb = decode_asb_untrusted(bcb.data, where=f"block {bcb.number} (BCB)")
    if asb.context_id != nacl_contexts.BCB_X25519_XCHACHA20POLY1305 or asb.targets != (
        1,
    ):
        return None
    _check_source(bcb, asb)
    _check_bcb_flags(bcb, asb)
    payload = bundle.blocks[-1]
    outcome = nacl_contexts.open_x25519_xchacha(
        encode_primary(bundle.primary), bcb, asb, {1: payload}, keyring
    )
    if isinstance(outcome, str):
        return bundle, [_result(bcb, asb, outcome)]
    plain = _block(payload.type_code, 1, payload.flags, payload.crc_type, outcome[1])
    kept = tuple(b for b in bundle.blocks[:-1] if b is not bcb)
    return _bundle(bundle, (*kept, plain)), [_result(bcb, asb, None)]


def _with_data(b: CanonicalBlock, data: bytes) -> CanonicalBlock:
    # dataclasses.replace costs several microseconds of introspection per call.
    return CanonicalBlock(b.type_code, b.number, b.flags, b.crc_type, data)


_RESULT_SETTERS = tuple(
    SecurityResult.__dict__[name].__set__
    for name in (
        "block",
        "block_type",
        "context",
        "targets",
        "source",
        "verified",
        "reason",
    )
)


def _result(
    sec: CanonicalBlock, asb: AbstractSecurityBlock, reason: str | None
) -> SecurityResult:
    # Built without the frozen dataclass __init__ (object.__setattr__ per
    # field): one result per security block per bundle.
    r = object.__new__(SecurityResult)
    s_block, s_type, s_ctx, s_targets, s_source, s_verified, s_reason = _RESULT_SETTERS
    s_block(r, sec.number)
    s_type(r, sec.type_code)
    s_ctx(r, asb.context_id)
    s_targets(r, asb.targets)
    s_source(r, asb.source)
    s_verified(r, reason is None)
    s_reason(r, reason)
    return r


def verify_and_decrypt(
    bundle: Bundle, keys: Iterable[bytes]
) -> tuple[Bundle, list[SecurityResult]]:
    """``dcis bundle decode --key``: process RFC 9173 blocks with symmetric ``keys``.

    Each security block is tried with each key (HMAC keys, AES keys, or
    key-encryption keys for wrapped content keys). Returns the bundle with
    verified/decrypted blocks removed and plaintext targets, plus one result
    per security block; blocks of contexts that need node identities (ours)
    come back ``verified=False``.

    Raises :class:`crypto.AuthenticationFailed` ("authentication failed")
    when any block fails with every key, :class:`dcis.dtn.errors.DecodeError` for a
    malformed security block.
    """
    return unprotect(bundle, KeyRing(keys=tuple(keys)))


# -- adding security blocks ----------------------------------------------


def _check_addable(bundle: Bundle, target: int, kind: int) -> None:
    """Refuse a new security operation on a fragment (RFC 9172 5.2) or over
    a target a BCB already encrypts (3.2, 3.9). Raises InvalidArgument."""
    if bundle.is_fragment:
        raise InvalidArgument("no security block is added to a fragment (RFC 9172 5.2)")
    if target and bundle.is_encrypted(target):
        raise InvalidArgument(
            f"block {target} is already the target of a BCB: add the "
            f"{'BIB' if kind == BIB else 'BCB'} before encrypting (RFC 9172 3.2, 3.9)"
        )


def _resolve(bundle: Bundle, targets: Sequence[int], kind: int) -> Targets:
    _check_addable(bundle, 0, kind)
    if not targets:
        raise InvalidArgument("at least one security target is required")
    if len(set(targets)) != len(targets):
        raise InvalidArgument("security targets must be unique")
    out: Targets = {}
    for t in targets:
        if t == 0:
            if kind == BCB:
                raise InvalidArgument(
                    "a BCB must not target the primary block (RFC 9172 3.9)"
                )
            out[t] = None
            continue
        tb = bundle.block_by_number(t)
        if tb is None:
            raise InvalidArgument(f"block {t} is not in the bundle")
        if tb.type_code == BCB:
            raise InvalidArgument(
                f"block {t} is a BCB, which no security block may target (RFC 9172 3.9)"
            )
        if kind == BIB and tb.type_code == BIB:
            raise InvalidArgument(
                f"block {t} is a BIB, which no BIB may target (RFC 9172 3.7)"
            )
        _check_addable(bundle, t, kind)
        out[t] = tb
    return out


def _header(
    bundle: Bundle, kind: int, targets: Targets, number: int | None, crc_type: CrcType
) -> CanonicalBlock:
    flags = BlockFlags.NONE
    if kind == BCB and BlockType.PAYLOAD in targets:
        # RFC 9172 3.9: a BCB over the payload goes into every fragment.
        flags = BlockFlags.MUST_REPLICATE
    n = bundle.next_block_number() if number is None else number
    if bundle.block_by_number(n) is not None:
        raise InvalidArgument(f"block number {n} is taken")
    return CanonicalBlock(type_code=kind, number=n, flags=flags, crc_type=crc_type)


def _refuse_null_source(source: Eid) -> None:
    if is_null_eid(source):
        raise InvalidArgument(
            f"the security source must be a node, not the null endpoint {source} "
            "(RFC 9172 3.6)"
        )


def _attach(
    bundle: Bundle,
    header: CanonicalBlock,
    asb: AbstractSecurityBlock,
    cipher: dict[int, bytes] | None = None,
) -> Bundle:
    _refuse_null_source(asb.source)
    sec = _with_data(header, encode_asb(asb))
    rest = tuple(
        _with_data(b, cipher[b.number]) if cipher and b.number in cipher else b
        for b in bundle.blocks
    )
    # First after the primary block, as RFC 9173's examples place them.
    return Bundle(bundle.primary, (sec, *rest))


# A context's builder with its keys bound: (primary bytes, the new block's
# header, its targets) -> the ASB, and for a BCB also {target: ciphertext}.
_Build = Callable[
    [bytes, CanonicalBlock, Targets],
    AbstractSecurityBlock | tuple[AbstractSecurityBlock, dict[int, bytes]],
]


def _add(
    bundle: Bundle,
    kind: int,
    targets: Sequence[int],
    block_number: int | None,
    crc_type: CrcType,
    build: _Build,
) -> Bundle:
    """The steps every ``add_*`` shares: check the targets, make the new
    block's header, run the context's ``build`` and attach its block."""
    t = _resolve(bundle, targets, kind)
    header = _header(bundle, kind, t, block_number, crc_type)
    built = build(encode_primary(bundle.primary), header, t)
    if isinstance(built, tuple):
        return _attach(bundle, header, *built)
    return _attach(bundle, header, built)


def add_bib_hmac_sha2(
    bundle: Bundle,
    *,
    key: bytes,
    source: Eid,
    targets: Sequence[int] = (1,),
    variant: rfc9173.ShaVariant = rfc9173.ShaVariant.HMAC_384,
    scope: ScopeFlags = ScopeFlags.ALL,
    kek: bytes | None = None,
    block_number: int | None = None,
    crc_type: CrcType = CrcType.NONE,
) -> Bundle:
    """Add a BIB-HMAC-SHA2 block (RFC 9173 3) over ``targets``. Raises InvalidArgument."""
    build = partial(
        rfc9173.hmac_sha2_asb,
        key=key,
        source=source,
        variant=variant,
        scope=scope,
        kek=kek,
    )
    return _add(bundle, BIB, targets, block_number, crc_type, build)


def _nth_iv(iv: bytes, i: int) -> bytes:
    # Distinct for distinct i (and iv itself for i == 0).
    return (int.from_bytes(iv, "big") ^ i).to_bytes(len(iv), "big")


def add_bcb_aes_gcm(
    bundle: Bundle,
    *,
    key: bytes,
    source: Eid,
    targets: Sequence[int] = (1,),
    variant: rfc9173.AesVariant = rfc9173.AesVariant.A256GCM,
    scope: ScopeFlags = ScopeFlags.ALL,
    iv: bytes | None = None,
    kek: bytes | None = None,
    block_number: int | None = None,
    crc_type: CrcType = CrcType.NONE,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> Bundle:
    """Add BCB-AES-GCM (RFC 9173 4), encrypting ``targets`` in place.

    One BCB per target, each with its own IV: a BCB carries one IV, and RFC
    9173 4.3.1 requires it unique per encryption under a key (one BCB over
    two targets would encrypt both under the same key and IV, and GCM then
    leaks the XOR of the plaintexts and its authentication key). A given
    ``iv`` is used for the first target and varied for the others; a given
    ``block_number`` numbers the first BCB. Without ``iv``, each IV comes
    from ``random_bytes`` (default the OS CSPRNG; inject a deterministic
    source only for reproducible simulation, never for real traffic).
    """
    if len(targets) > 1:
        _resolve(bundle, targets, BCB)  # every target valid before any is sealed
        out = bundle
        for i, target in enumerate(targets):
            out = add_bcb_aes_gcm(
                out,
                key=key,
                source=source,
                targets=(target,),
                variant=variant,
                scope=scope,
                iv=None if iv is None else _nth_iv(iv, i),
                kek=kek,
                block_number=block_number if i == 0 else None,
                crc_type=crc_type,
                random_bytes=random_bytes,
            )
        return out
    build = partial(
        rfc9173.aes_gcm_encrypt,
        key=key,
        source=source,
        variant=variant,
        scope=scope,
        iv=iv,
        kek=kek,
        random_bytes=random_bytes,
    )
    return _add(bundle, BCB, targets, block_number, crc_type, build)


def add_bcb_x25519(
    bundle: Bundle,
    *,
    identity: NodeIdentity,
    recipient_kx_public: bytes,
    targets: Sequence[int] = (1,),
    nonce: bytes | None = None,
    block_number: int | None = None,
    crc_type: CrcType = CrcType.NONE,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> Bundle:
    """Seal ``targets`` for the recipient node with our X25519/XChaCha20-Poly1305 context.

    ``recipient_kx_public`` is the X25519 key from the destination node's
    (verified) certificate. Without ``nonce``, the base nonce comes from
    ``random_bytes`` (default the OS CSPRNG; inject a deterministic source
    only for reproducible simulation, never for real traffic). Raises
    InvalidArgument; AuthenticationFailed for a low-order recipient key.
    """
    if block_number is None and tuple(targets) == (1,):
        # The per-bundle case (every bundle a DCiS node originates): one
        # target, the payload; same bytes as the general path below.
        _check_addable(bundle, 1, BCB)
        if identity.node == 0:  # the source would be ipn:0.0 (RFC 9172 3.6)
            _refuse_null_source(IpnEid(0, 0))
        blocks = bundle.blocks
        number = max(b.number for b in blocks) + 1
        flags = BlockFlags.MUST_REPLICATE  # RFC 9172 3.9, as _header sets it
        header = _block(BCB, number, flags, crc_type, b"")
        payload = blocks[-1]
        data, ciphertext = nacl_contexts.seal_payload_x25519_xchacha(
            encode_primary(bundle.primary),
            header,
            payload,
            identity=identity,
            recipient_kx_public=recipient_kx_public,
            nonce=nonce,
            random_bytes=random_bytes,
        )
        sealed = _block(
            payload.type_code, 1, payload.flags, payload.crc_type, ciphertext
        )
        return _bundle(
            bundle, (_block(BCB, number, flags, crc_type, data), *blocks[:-1], sealed)
        )
    build = partial(
        nacl_contexts.seal_x25519_xchacha,
        identity=identity,
        recipient_kx_public=recipient_kx_public,
        nonce=nonce,
        random_bytes=random_bytes,
    )
    return _add(bundle, BCB, targets, block_number, crc_type, build)


def add_bib_ed25519(
    bundle: Bundle,
    *,
    identity: NodeIdentity,
    targets: Sequence[int] = (1,),
    block_number: int | None = None,
    crc_type: CrcType = CrcType.NONE,
) -> Bundle:
    """Sign ``targets`` with our Ed25519 BIB context (source authentication, no secrecy)."""
    build = partial(nacl_contexts.sign_ed25519, identity=identity)
    return _add(bundle, BIB, targets, block_number, crc_type, build)
