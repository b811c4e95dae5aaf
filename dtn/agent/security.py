"""End-to-end security policy of a secure node (issue 6 item 5; RFC 9172 section 5).

A sans-I/O object the agent consults at the two ends of a bundle's path and
nowhere else (RFC 9172 section 5: security sources and acceptors; forwarding
nodes neither need nor get keys):

- :meth:`SecurityPolicy.protect` -- at the source, every bundle the node
  originates for another node is protected: sealed with the
  X25519/XChaCha20-Poly1305 BCB context (-101) for the destination node, or,
  where confidentiality is not wanted (destinations named in
  ``sign_only_destinations``, and ``dtn:`` destinations, which name no node
  key to agree with), signed with the Ed25519 BIB context (-102).
- :meth:`SecurityPolicy.check` -- at the destination, a bundle is accepted
  only if its payload is protected by an accepted context, by the bundle's
  own source node, that node holding a certificate from the operator that is
  valid now and not revoked, and the bundle was not seen before (replay
  window per source node, recorded only after the bundle authenticated).
  Otherwise it returns the RFC 9172 section 11.2 reason code the agent puts
  in a deletion status report, and counts the rejection by a finer reason.

Certificates are checked once, when added (operator signature and issuer);
validity window and revocation are checked per bundle against ``now``, which
costs two comparisons and a set lookup. The X25519 agreement with each peer
is computed once and cached (``crypto.NodeIdentity.agree``), so protecting or
checking a bundle costs one AEAD (or one signature) and no scalar
multiplication. spec/security.md section 8 describes the policy.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Final

from dcis.crypto.certificate import NodeCertificate, verify_certificate
from dcis.crypto.errors import AuthenticationFailed
from dcis.crypto.keys import NodeIdentity
from dcis.crypto.replay import ReplayGuard, ReplayVerdict
from dcis.crypto.revocation import RevocationList, RevocationState
from dcis.dtn.bpsec import (
    BCB_X25519_XCHACHA20POLY1305,
    BIB_ED25519,
    KeyRing,
    SecurityResult,
    add_bcb_x25519,
    add_bib_ed25519,
    payload_verdict,
    unprotect,
)
from dcis.dtn.bpv7.admin import StatusReason
from dcis.dtn.bpv7.bundle import Bundle
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.flags import BlockType
from dcis.dtn.errors import DecodeError, InvalidArgument

__all__ = [
    "DEFAULT_ACCEPTED_CONTEXTS",
    "REJECTION_REASONS",
    "NoCertificate",
    "SecurityPolicy",
]

DEFAULT_ACCEPTED_CONTEXTS: Final = frozenset(
    {BCB_X25519_XCHACHA20POLY1305, BIB_ED25519}
)
"""Our two contexts: sealed traffic (-101) and signed broadcasts (-102)."""

REJECTION_REASONS: Final[Mapping[str, StatusReason]] = {
    # Nothing covers the payload: RFC 9172 11.2 "missing security operation".
    "missing": StatusReason.MISSING_SECURITY_OPERATION,
    # A block covering the payload uses a context we do not implement.
    "unsupported_context": StatusReason.UNKNOWN_SECURITY_OPERATION,
    # A context we implement but local policy does not accept (e.g. an RFC
    # 9173 HMAC where we require -101): not the protection policy requires.
    "context_not_accepted": StatusReason.MISSING_SECURITY_OPERATION,
    # A MAC, tag or signature did not verify (tampering, wrong key).
    "authentication_failed": StatusReason.FAILED_SECURITY_OPERATION,
    # The security source has no certificate valid now (unknown, expired,
    # not yet valid), or we hold no key for the block.
    "uncertified_source": StatusReason.FAILED_SECURITY_OPERATION,
    # The bundle's source node is on the operator's revocation list.
    "revoked_source": StatusReason.FAILED_SECURITY_OPERATION,
    # Verified, but protected by a node other than the bundle's source.
    "wrong_security_source": StatusReason.FAILED_SECURITY_OPERATION,
    # Authentic, but seen before (or older than the replay window).
    "replayed": StatusReason.FAILED_SECURITY_OPERATION,
    # A security block breaks RFC 9172's rules (unknown target, BCB over a BCB).
    "malformed": StatusReason.CONFLICTING_SECURITY_OPERATION,
}
"""Rejection counter names and the status report reason code each maps to."""

_SECURITY_BLOCKS: Final = (int(BlockType.BIB), int(BlockType.BCB))
_PAYLOAD: Final = 1


class NoCertificate(InvalidArgument):
    """``protect`` was asked to seal a bundle for a node without a valid certificate."""


class _ValidCertificates(Mapping[int, NodeCertificate]):
    """Certificates by node that are valid at ``now`` and not revoked.

    A live view (``now`` set per bundle) handed to ``dcis.dtn.bpsec`` in a
    :class:`KeyRing`, which uses only the public keys inside.
    """

    __slots__ = ("_certs", "_revocations", "now")

    def __init__(
        self, certs: dict[int, NodeCertificate], revocations: RevocationState
    ) -> None:
        self._certs = certs
        self._revocations = revocations
        self.now = 0

    def get(  # type: ignore[override]
        self, node: int, default: NodeCertificate | None = None
    ) -> NodeCertificate | None:
        cert = self._certs.get(node)
        if (
            cert is None
            or not cert.not_before_ms <= self.now < cert.not_after_ms
            or self._revocations.is_revoked(node, cert.serial)
        ):
            return default
        return cert

    def __getitem__(self, node: int) -> NodeCertificate:
        cert = self.get(node)
        if cert is None:
            raise KeyError(node)
        return cert

    def __iter__(self) -> Iterator[int]:
        return (n for n in list(self._certs) if self.get(n) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class SecurityPolicy:
    """What a secure node protects and accepts. Sans-I/O: ``now`` is a parameter.

    - ``identity``: this node's private keys (its node number must be the
      agent's).
    - ``operator_public``: the operator's Ed25519 public key; certificates and
      revocation lists must be signed by it.
    - ``certificates``: peers' certificates (this node's own may be among
      them); each is verified against ``operator_public`` here
      (:class:`crypto.AuthenticationFailed` /
      :class:`crypto.CertificateRejected` ``"wrong issuer"`` otherwise).
    - ``revocations``: the newest revocation list known (or None).
    - ``accepted_contexts``: security context ids whose protection of the
      payload is accepted (default -101 and -102). Adding RFC 9173's 1 or 2
      together with ``symmetric_keys`` accepts bundles from peers that share
      those keys; such keys prove membership of the key's group, not which
      node sent the bundle.
    - ``replay_window_ms``: span of the replay window per source node; set it
      to at least the longest bundle lifetime in use.
    - ``replay_entries_per_source``: bound on remembered timestamps per source.
    - ``sign_only_destinations``: destination EIDs (text) whose bundles are
      signed (-102) instead of sealed (-101), e.g. endpoints many nodes read.
    - ``accept_unprotected_admin_records``: status reports are produced by
      agents, not applications, and are not protected by ours; accept them
      unprotected (default) or require protection like any bundle.
    - ``random_bytes``: the source of the BCB nonce prefix, ``secrets.token_bytes``
      (the OS CSPRNG) by default, as every real node must use. The
      simulator injects a deterministic source derived from its seed
      (``dcis.dtn.sim.sim_random_bytes``) so a secure run replays exactly; such a
      policy's nonces are predictable and repeat from run to run: it is
      not secure (spec/security.md section 8).

    ``counters`` counts ``protected_sealed``, ``protected_signed``,
    ``accepted``, ``admin_unprotected`` and every rejection reason of
    :data:`REJECTION_REASONS` as ``rejected_<reason>``; ``rejected`` is
    their total. ``last_rejection`` names the reason of the latest rejection
    (for the agent's log line).
    """

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        operator_public: bytes,
        certificates: Iterable[NodeCertificate] = (),
        revocations: RevocationList | None = None,
        accepted_contexts: Collection[int] = DEFAULT_ACCEPTED_CONTEXTS,
        symmetric_keys: Iterable[bytes] = (),
        replay_window_ms: int = 7 * 86_400_000,
        replay_entries_per_source: int = 4096,
        sign_only_destinations: Collection[str] = (),
        accept_unprotected_admin_records: bool = True,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not accepted_contexts:
            raise InvalidArgument("a secure node must accept at least one context")
        self.identity = identity
        # BCB nonces: 16 random bytes per policy, then a counter (XChaCha's
        # 24-byte nonce leaves room for both). Unique per bundle without a
        # system call each; another process or restart draws another prefix
        # (from the OS CSPRNG unless a simulator injected its seeded source).
        self._nonce_prefix = random_bytes(16)
        if len(self._nonce_prefix) != 16:
            raise InvalidArgument("random_bytes(16) must return 16 bytes")
        self._nonce_count = 0
        self.node = identity.node
        self.operator_public = bytes(operator_public)
        self.accepted_contexts = frozenset(accepted_contexts)
        self.sign_only_destinations = frozenset(sign_only_destinations)
        self.accept_unprotected_admin_records = accept_unprotected_admin_records
        self.revocations = RevocationState(self.operator_public)
        if revocations is not None:
            self.revocations.update(revocations)
        self.replay = ReplayGuard(
            window_ms=replay_window_ms,
            max_entries_per_source=replay_entries_per_source,
        )
        self._certs: dict[int, NodeCertificate] = {}
        self._valid = _ValidCertificates(self._certs, self.revocations)
        self._keyring = KeyRing(
            keys=tuple(bytes(k) for k in symmetric_keys),
            identity=identity,
            certificates=self._valid,
        )
        # Replay windows are keyed by node number; dtn-scheme sources (RFC
        # 9173 contexts only) get negative ids, allocated on first acceptance.
        self._dtn_ids: dict[str, int] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "protected_sealed",
                "protected_signed",
                "accepted",
                "admin_unprotected",
                "rejected",
                *(f"rejected_{r}" for r in REJECTION_REASONS),
            ),
            0,
        )
        self.last_rejection: str | None = None
        for cert in certificates:
            self.add_certificate(cert)

    # ------------------------------------------------------------ key material

    def add_certificate(self, cert: NodeCertificate) -> None:
        """Trust ``cert`` after checking the operator's signature on it.

        A newer certificate (higher serial) for a node replaces the one held;
        an older one is ignored. Validity window and revocation are checked
        per bundle. Raises :class:`crypto.AuthenticationFailed` (bad
        signature) or :class:`crypto.CertificateRejected` (``"wrong issuer"``).
        """
        # Time and revocation are policy at use, not at import: check the
        # signature with a "now" the certificate itself declares valid.
        verify_certificate(cert, self.operator_public, now_ms=cert.not_before_ms)
        held = self._certs.get(cert.node)
        if held is None or cert.serial > held.serial:
            self._certs[cert.node] = cert

    def update_revocations(self, rl: RevocationList) -> bool:
        """Adopt a newer signed revocation list (True if adopted; False if stale).

        Raises :class:`crypto.AuthenticationFailed` if the operator did not sign it.
        """
        # Replay windows of revoked nodes are kept: a later list might
        # reinstate a node, and its old bundles must still count as seen.
        return self.revocations.update(rl)

    def certificate(self, node: int, now: int) -> NodeCertificate | None:
        """The certificate of ``node`` valid at ``now`` and not revoked, or None."""
        self._valid.now = now
        return self._valid.get(node)

    # ------------------------------------------------------------ source side

    def protect(self, bundle: Bundle, *, now: int | None = None) -> Bundle:
        """Protect a bundle this node originates for another node.

        Sealed (-101) for an ``ipn`` destination node, unless the destination
        is in ``sign_only_destinations`` or is a ``dtn:`` EID: then signed
        (-102). ``now`` (DTN ms) checks the destination's certificate; it
        defaults to the bundle's creation time. The primary block is
        unchanged, so the bundle keeps its key.

        Raises :class:`NoCertificate` when the destination node has no valid
        certificate, :class:`InvalidArgument` when the bundle's source is not
        an ``ipn`` endpoint of this node (its receiver could not tell that
        this node is its source) or it is already protected.
        """
        p = bundle.primary
        src = p.source
        if type(src) is not IpnEid or src.node != self.node:
            raise InvalidArgument(
                f"a secure node protects only bundles from its ipn:{self.node}.* "
                f"endpoints, not from {src}"
            )
        for b in bundle.blocks:
            if b.type_code in _SECURITY_BLOCKS:
                raise InvalidArgument("the bundle already carries security blocks")
        dst = p.destination
        if type(dst) is IpnEid and (
            not self.sign_only_destinations
            or str(dst) not in self.sign_only_destinations
        ):
            at = p.creation.time_ms if now is None else now
            if at:
                cert = self.certificate(dst.node, at)
            else:
                # No clock (creation time 0): the validity window cannot be
                # checked; revocation still can.
                cert = self._certs.get(dst.node)
                if cert is not None and self.revocations.is_revoked(
                    dst.node, cert.serial
                ):
                    cert = None
            if cert is None:
                raise NoCertificate(
                    f"no valid certificate for destination node {dst.node}: "
                    "cannot seal the bundle for it"
                )
            self.counters["protected_sealed"] += 1
            self._nonce_count += 1
            return add_bcb_x25519(
                bundle,
                identity=self.identity,
                recipient_kx_public=cert.kx_public,
                nonce=self._nonce_prefix + self._nonce_count.to_bytes(8, "big"),
            )
        self.counters["protected_signed"] += 1
        return add_bib_ed25519(bundle, identity=self.identity)

    # ------------------------------------------------------------ destination

    def check(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]:
        """Accept or reject a bundle that reached its destination (this node).

        Returns ``(plaintext bundle, None)`` on acceptance -- processed
        security blocks removed, the payload decrypted -- else
        ``(None, reason)`` with the RFC 9172 11.2 status report reason code;
        ``last_rejection`` and ``counters`` say which rule refused it.
        Never raises for hostile input.
        """
        blocks = bundle.blocks
        protected = False
        for b in blocks:
            if b.type_code in _SECURITY_BLOCKS:
                protected = True
                break
        if not protected:
            if bundle.is_admin_record and self.accept_unprotected_admin_records:
                self.counters["admin_unprotected"] += 1
                return bundle, None
            return self._reject("missing")
        p = bundle.primary
        src = p.source
        src_node = src.node if type(src) is IpnEid else None
        if src_node is not None and self.revocations.is_revoked(src_node):
            return self._reject("revoked_source")
        # Cheap replay pre-check (no recording): a replay costs no AEAD.
        stamp = p.creation
        rid = (
            src_node
            if src_node is not None
            else self._replay_id(None, src.node_id, create=False)
        )
        if (
            rid is not None
            and self.replay.check(rid, stamp.time_ms, stamp.sequence)
            is not ReplayVerdict.NEW
        ):
            return self._reject("replayed")
        self._valid.now = now
        try:
            plain, results = unprotect(bundle, self._keyring)
        except AuthenticationFailed:
            return self._reject("authentication_failed")
        except DecodeError:
            return self._reject("malformed")
        verdict = payload_verdict(bundle, results, self.accepted_contexts)
        if verdict is not None:
            return self._reject(self._why(bundle, results, verdict))
        # Authenticated: only now may the timestamp enter the replay window.
        rid = self._replay_id(src_node, src.node_id, create=True)
        assert rid is not None
        if (
            self.replay.record(rid, stamp.time_ms, stamp.sequence)
            is not ReplayVerdict.NEW
        ):
            return self._reject("replayed")
        self.counters["accepted"] += 1
        return plain, None

    # ------------------------------------------------------------ internals

    def _replay_id(self, node: int | None, name: object, *, create: bool) -> int | None:
        if node is not None:
            return node
        key = str(name)
        rid = self._dtn_ids.get(key)
        if rid is None and create:
            rid = self._dtn_ids[key] = -1 - len(self._dtn_ids)
        return rid

    def _why(
        self, bundle: Bundle, results: list[SecurityResult], verdict: StatusReason
    ) -> str:
        """The counter name for a ``payload_verdict`` refusal (finer than its code)."""
        if verdict is StatusReason.MISSING_SECURITY_OPERATION:
            return "missing"
        if verdict is StatusReason.UNKNOWN_SECURITY_OPERATION:
            return "unsupported_context"
        verified = [r for r in results if _PAYLOAD in r.targets and r.verified]
        if not verified:
            return "uncertified_source"  # no key, or no valid certificate
        if all(r.context not in self.accepted_contexts for r in verified):
            return "context_not_accepted"
        return "wrong_security_source"

    def _reject(self, why: str) -> tuple[None, StatusReason]:
        self.counters["rejected"] += 1
        self.counters[f"rejected_{why}"] += 1
        self.last_rejection = why
        return None, REJECTION_REASONS[why]
