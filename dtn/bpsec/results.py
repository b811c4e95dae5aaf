"""What processing a bundle's security blocks found, and the keys it used."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dcis.crypto.certificate import NodeCertificate
from dcis.crypto.keys import NodeIdentity
from dcis.dtn.bpv7.eid import Eid


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityResult:
    """The outcome for one security block (BIB or BCB).

    ``verified`` is True when every target verified (BIB) or decrypted and
    authenticated (BCB). When False, ``reason`` says why the block was left
    as it was: ``"unsupported context"``, ``"no key"``,
    ``"uncertified source"`` or ``"target still encrypted"``. A block whose
    check *failed* never yields a result: processing raises
    :class:`crypto.AuthenticationFailed` instead.
    """

    block: int
    block_type: int
    context: int
    targets: tuple[int, ...]
    source: Eid
    verified: bool
    reason: str | None = None

    def as_json(self) -> dict[str, object]:
        """The ``dcis bundle decode`` JSON form: block, context, verified."""
        return {"block": self.block, "context": self.context, "verified": self.verified}


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRing:
    """Key material a node may use to process security blocks.

    - ``keys``: symmetric keys for the RFC 9173 contexts -- HMAC keys, AES
      keys, or key-encryption keys when the block carries a wrapped key. Each
      block is tried with each key.
    - ``identity``: this node's private keys (for our X25519 BCB context).
    - ``certificates``: certificates of *trusted* peers by node number. The
      caller has already checked them (operator signature, validity window,
      revocation): this module only uses the public keys inside.
    """

    keys: tuple[bytes, ...] = ()
    identity: NodeIdentity | None = None
    certificates: Mapping[int, NodeCertificate] = field(default_factory=dict)
