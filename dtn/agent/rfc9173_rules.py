"""RFC 9173 security by rules: source, acceptor and verifier roles (issue 17 item 2).

Theory of operation
-------------------
A :class:`SecurityRule` says, for bundles whose source and destination match
EID patterns, which RFC 9173 context (BIB-HMAC-SHA2 or BCB-AES-GCM) protects
which block types, with which key, variant and scope flags. The model is
HDTN's BPSec JSON policy (``policyRules``): a rule has a *role*:

- ``source``: this node adds the block to the bundles it originates
  (:meth:`Rfc9173Policy.protect`). Integrity rules run first, then
  confidentiality rules; a BCB over a block that one of our BIBs signs also
  encrypts that BIB (RFC 9172 3.9; HDTN lists block type 11 for this).
- ``acceptor``: at the bundle's destination the block must be there, verify
  (or decrypt) with the rule's key, and is removed before delivery
  (:meth:`Rfc9173Policy.check`).
- ``verifier``: the block must verify, and stays in the bundle. Checked at the
  destination and, for bundles this node forwards, by
  :meth:`Rfc9173Policy.verify`.

Patterns are ``fnmatch`` patterns over EID text: ``ipn:2.*``, ``ipn:*.*``,
``dtn://ground/*`` or ``*``. Keys are bytes the edge read from files (HDTN's
hex key files) -- this module does no I/O. With ``kek`` (key wrap, RFC 9173
3.3.2/4.3.2) a source rule without its own key draws a fresh content key per
bundle and sends it wrapped; an acceptor tries its key and its KEK (which
unwraps a wrapped key).

A bundle no rule names goes to ``fallback`` (the DCiS key store policy, our
contexts -101/-102) when there is one; a node without a key store accepts it
unless its payload is encrypted with nothing here to decrypt it. So a
receive-only or symmetric-only node needs no DCiS key store.

Sans-I/O: ``now`` is a parameter and random bytes come from an injectable
source (the OS CSPRNG by default).
"""

from __future__ import annotations

import fnmatch
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from dcis.crypto.errors import AuthenticationFailed
from dcis.dtn.bpsec import (
    BCB_AES_GCM,
    BIB_HMAC_SHA2,
    AesVariant,
    KeyRing,
    ScopeFlags,
    SecurityResult,
    ShaVariant,
    add_bcb_aes_gcm,
    add_bib_hmac_sha2,
    unprotect,
)
from dcis.dtn.bpv7.admin import StatusReason
from dcis.dtn.bpv7.bundle import Bundle
from dcis.dtn.bpv7.eid import Eid, IpnEid, parse_eid
from dcis.dtn.bpv7.flags import BlockType
from dcis.dtn.errors import DecodeError, InvalidArgument

__all__ = [
    "CONTEXT_NAMES",
    "Rfc9173Policy",
    "Role",
    "SecurityRule",
    "Service",
]


class Role(StrEnum):
    """A rule's role (RFC 9172 section 5; HDTN's ``securityRole``)."""

    SOURCE = "source"
    ACCEPTOR = "acceptor"
    VERIFIER = "verifier"


class Service(StrEnum):
    """What a rule protects with: integrity (a BIB) or confidentiality (a BCB)."""

    INTEGRITY = "integrity"
    CONFIDENTIALITY = "confidentiality"


CONTEXT_NAMES: Final = {
    "BIB-HMAC-SHA2": Service.INTEGRITY,
    "BCB-AES-GCM": Service.CONFIDENTIALITY,
    # HDTN's names for the same contexts
    "hmacSha": Service.INTEGRITY,
    "aesGcm": Service.CONFIDENTIALITY,
}
"""Context names a rule may give, and the service each one is."""

_BIB: Final = int(BlockType.BIB)
_BCB: Final = int(BlockType.BCB)
_PAYLOAD: Final = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityRule:
    """One policy rule (see the module docstring). Raises InvalidArgument when inconsistent.

    - ``bundle_source`` / ``bundle_destination``: EID patterns the bundle's
      source and destination must match (any of each list).
    - ``security_source``: pattern the security block's source must match
      (acceptor, verifier); for a source rule, a concrete EID to name as the
      security source (default ``ipn:N.0`` of this node).
    - ``targets``: block type codes (1 payload, 0 the primary block for a BIB,
      11 a BIB for a BCB); for acceptor and verifier, those that must be
      covered when present in the bundle.
    - ``sha_variant``: 256, 384 or 512; ``aes_variant``: 128 or 256.
    - ``scope_flags``: RFC 9173 integrity/AAD scope flags, 0..7.
    - ``key``: the HMAC or AES key; ``kek``: a key-encryption key (key wrap).
    """

    role: Role
    service: Service
    bundle_source: tuple[str, ...] = ("*",)
    bundle_destination: tuple[str, ...] = ("*",)
    security_source: str = "*"
    targets: tuple[int, ...] = (_PAYLOAD,)
    sha_variant: int = 384
    aes_variant: int = 256
    scope_flags: int = int(ScopeFlags.ALL)
    key: bytes | None = None
    kek: bytes | None = None
    iv_bytes: int = 12

    def __post_init__(self) -> None:
        if self.sha_variant not in (256, 384, 512):
            raise InvalidArgument(
                f"sha_variant must be 256, 384 or 512, got {self.sha_variant}"
            )
        if self.aes_variant not in (128, 256):
            raise InvalidArgument(
                f"aes_variant must be 128 or 256, got {self.aes_variant}"
            )
        if not 0 <= self.scope_flags <= 7:
            raise InvalidArgument(
                f"scope_flags must be in 0..7, got {self.scope_flags}"
            )
        if self.iv_bytes not in (12, 16):
            raise InvalidArgument(f"iv_bytes must be 12 or 16, got {self.iv_bytes}")
        if not self.targets:
            raise InvalidArgument("a rule needs at least one target block type")
        for t in self.targets:
            if type(t) is not int or not 0 <= t <= 255:
                raise InvalidArgument(f"bad target block type {t!r}")
        if self.service is Service.CONFIDENTIALITY and 0 in self.targets:
            raise InvalidArgument(
                "a BCB cannot target the primary block (RFC 9172 3.9)"
            )
        if self.key is None and self.kek is None:
            raise InvalidArgument("a rule needs a key (or a key-encryption key)")
        for k in (self.key, self.kek):
            if k is not None and len(k) not in (16, 24, 32, 48, 64):
                raise InvalidArgument(f"key of {len(k)} bytes (16..64 expected)")
        aes_len = self.aes_variant // 8
        if (
            self.service is Service.CONFIDENTIALITY
            and self.key is not None
            and self.role is Role.SOURCE
            and len(self.key) != aes_len
        ):
            raise InvalidArgument(
                f"BCB-AES-GCM {self.aes_variant} needs a {aes_len}-byte key, got {len(self.key)}"
            )
        if self.kek is not None and len(self.kek) not in (16, 24, 32):
            raise InvalidArgument("a key-encryption key is 16, 24 or 32 bytes (AES-KW)")

    @property
    def context(self) -> int:
        """The RFC 9173 context id: 1 (BIB-HMAC-SHA2) or 2 (BCB-AES-GCM)."""
        return BIB_HMAC_SHA2 if self.service is Service.INTEGRITY else BCB_AES_GCM

    def matches(self, bundle: Bundle) -> bool:
        """Whether the bundle's source and destination match the rule's patterns."""
        p = bundle.primary
        return _any(self.bundle_source, str(p.source)) and _any(
            self.bundle_destination, str(p.destination)
        )


def _any(patterns: Sequence[str], text: str) -> bool:
    return any(pat == "*" or fnmatch.fnmatchcase(text, pat) for pat in patterns)


class _Fallback(Protocol):
    def protect(self, bundle: Bundle, *, now: int | None = None) -> Bundle: ...

    def check(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]: ...


class Rfc9173Policy:
    """RFC 9173 rules as the agent's security hook (``protect``, ``check``, ``verify``).

    ``node`` is this node's ipn number (the default security source
    ``ipn:N.0``); ``fallback`` handles bundles no rule names (None: accept
    them as they are, leave originated ones unprotected). ``counters``
    counts ``rfc9173_protected``, ``rfc9173_accepted``, ``rfc9173_verified``
    and ``rfc9173_rejected``; ``last_rejection`` says why the latest bundle
    was refused.
    """

    def __init__(
        self,
        rules: Iterable[SecurityRule],
        *,
        node: int,
        fallback: _Fallback | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.rules = tuple(rules)
        self.node = node
        self.fallback = fallback
        self._random = random_bytes
        self._own = IpnEid(node, 0)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "rfc9173_protected",
                "rfc9173_accepted",
                "rfc9173_verified",
                "rfc9173_rejected",
            ),
            0,
        )
        self.last_rejection: str | None = None

    # ------------------------------------------------------------ source

    def protect(self, bundle: Bundle, *, now: int | None = None) -> Bundle:
        """Apply every matching source rule (integrity first); else the fallback.

        Raises InvalidArgument when a rule cannot be applied (e.g. it targets
        a block type the bundle lacks only through the primary block rules).
        """
        mine = [r for r in self.rules if r.role is Role.SOURCE and r.matches(bundle)]
        if not mine:
            if self.fallback is not None:
                return self.fallback.protect(bundle, now=now)
            return bundle
        out = bundle
        added_bibs: dict[int, set[int]] = {}  # BIB number -> block numbers it signs
        for rule in sorted(mine, key=lambda r: r.service is Service.CONFIDENTIALITY):
            src = self._source_of(rule)
            if rule.service is Service.INTEGRITY:
                targets = _numbers(out, rule.targets)
                if not targets:
                    continue
                before = {b.number for b in out.blocks}
                key, kek = self._keys(rule, 0)
                out = add_bib_hmac_sha2(
                    out,
                    key=key,
                    source=src,
                    targets=targets,
                    variant=_sha(rule.sha_variant),
                    scope=ScopeFlags(rule.scope_flags),
                    kek=kek,
                )
                new = {b.number for b in out.blocks} - before
                for n in new:
                    added_bibs[n] = set(targets)
            else:
                targets = [t for t in _numbers(out, rule.targets) if t != 0]
                # RFC 9172 3.9: a BCB over a block a BIB signs also covers that BIB
                for bib, signed in added_bibs.items():
                    if signed & set(targets) and bib not in targets:
                        targets.append(bib)
                if not targets:
                    continue
                key, kek = self._keys(rule, rule.aes_variant // 8)
                out = add_bcb_aes_gcm(
                    out,
                    key=key,
                    source=src,
                    targets=targets,
                    variant=_aes(rule.aes_variant),
                    scope=ScopeFlags(rule.scope_flags),
                    iv=self._random(rule.iv_bytes),
                    kek=kek,
                    random_bytes=self._random,
                )
        self.counters["rfc9173_protected"] += 1
        return out

    def _source_of(self, rule: SecurityRule) -> Eid:
        s = rule.security_source
        if s == "*" or any(ch in s for ch in "*?["):
            return self._own
        return parse_eid(s)

    def _keys(self, rule: SecurityRule, aes_len: int) -> tuple[bytes, bytes | None]:
        if rule.key is not None:
            return rule.key, rule.kek
        # key wrap without a fixed key: a fresh content key per bundle
        assert rule.kek is not None
        return self._random(aes_len or 32), rule.kek

    # ------------------------------------------------------------ destination

    def check(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]:
        """Check a bundle for this node: ``(bundle to deliver, None)`` or ``(None, reason)``.

        Never raises for hostile input.
        """
        rules = [
            r
            for r in self.rules
            if r.role in (Role.ACCEPTOR, Role.VERIFIER) and r.matches(bundle)
        ]
        if not rules:
            if self.fallback is not None:
                return self.fallback.check(bundle, now)
            return self._no_rule(bundle)
        got = self._run(bundle, rules)
        if isinstance(got, str):
            return self._reject(got)
        plain, results = got
        if any(r.role is Role.VERIFIER for r in rules) and not any(
            r.role is Role.ACCEPTOR for r in rules
        ):
            # verifiers leave the blocks in place; the payload must be readable
            if _still_encrypted(bundle, results):
                return self._reject("payload encrypted, no acceptor rule")
            self.counters["rfc9173_verified"] += 1
            return bundle, None
        if _still_encrypted(plain, []):
            return self._reject("payload still encrypted")
        self.counters["rfc9173_accepted"] += 1
        return plain, None

    def verify(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]:
        """At a node that forwards the bundle: run matching verifier rules; blocks stay."""
        rules = [r for r in self.rules if r.role is Role.VERIFIER and r.matches(bundle)]
        if not rules:
            return bundle, None
        got = self._run(bundle, rules)
        if isinstance(got, str):
            return self._reject(got)
        self.counters["rfc9173_verified"] += 1
        return bundle, None

    def _run(
        self, bundle: Bundle, rules: list[SecurityRule]
    ) -> tuple[Bundle, list[SecurityResult]] | str:
        keys: list[bytes] = []
        for r in rules:
            for k in (r.key, r.kek):
                if k is not None and k not in keys:
                    keys.append(k)
        try:
            plain, results = unprotect(bundle, KeyRing(keys=tuple(keys)))
        except AuthenticationFailed:
            return "authentication failed"
        except DecodeError as exc:
            return f"malformed security block: {exc}"
        types = {b.number: b.type_code for b in bundle.blocks}
        types[0] = 0
        for r in rules:
            need = {n for n, t in types.items() if t in r.targets}
            covered: set[int] = set()
            for res in results:
                if (
                    res.verified
                    and res.context == r.context
                    and _any((r.security_source,), str(res.source))
                ):
                    covered.update(res.targets)
            missing = need - covered
            if missing:
                kinds = sorted({types[n] for n in missing})
                return (
                    f"{r.role.value} rule: no verified {r.service.value} block "
                    f"(context {r.context}) over block type(s) {kinds}"
                )
        return plain, results

    def _no_rule(self, bundle: Bundle) -> tuple[Bundle | None, StatusReason | None]:
        if _still_encrypted(bundle, []):
            return self._reject("payload encrypted and no rule names this bundle")
        return bundle, None

    def _reject(self, why: str) -> tuple[None, StatusReason]:
        self.counters["rfc9173_rejected"] += 1
        self.last_rejection = why
        if why.startswith(("authentication", "payload")):
            return None, StatusReason.FAILED_SECURITY_OPERATION
        if why.startswith("malformed"):
            return None, StatusReason.CONFLICTING_SECURITY_OPERATION
        return None, StatusReason.MISSING_SECURITY_OPERATION


def _numbers(bundle: Bundle, types: Sequence[int]) -> list[int]:
    """Block numbers of the blocks of ``types`` (0 is the primary block)."""
    out = [0] if 0 in types else []
    out += [
        b.number for b in bundle.blocks if b.type_code in types and b.type_code != _BCB
    ]
    return out


def _still_encrypted(bundle: Bundle, results: Sequence[SecurityResult]) -> bool:
    """Whether a BCB is left that ``results`` did not process (ciphertext would be delivered)."""
    for b in bundle.blocks:
        if b.type_code == _BCB:
            done = any(r.block == b.number and r.verified for r in results)
            if not done:
                return True
    return False


def _sha(bits: int) -> ShaVariant:
    return {
        256: ShaVariant.HMAC_256,
        384: ShaVariant.HMAC_384,
        512: ShaVariant.HMAC_512,
    }[bits]


def _aes(bits: int) -> AesVariant:
    return {128: AesVariant.A128GCM, 256: AesVariant.A256GCM}[bits]
