"""The daemon's end-to-end security: ``[security]`` in node.toml and a key store.

Issue 6 item 6 ("the config keys the daemon needs"); the policy itself is
:class:`dcis.dtn.agent.security.SecurityPolicy` (spec/security.md section 8), this
module only configures it from files and runs it inside the trio node:

- :func:`parse_security` validates the ``[security]`` table (every error a
  one-line :class:`~dcis.dtn.runtime.config.ConfigError` naming ``security.<key>``).
- :class:`NodeSecurity` loads the key store (``dcis.dtn.storage.KeyStore``: this
  node's ``node.key``, ``operator.pub``, ``node.cert``, ``certs/*.cert``,
  ``revocations.cbor``), builds the policy, logs every rejection with its
  reason, and re-reads the revocation list and peer certificates when they
  change on disk (``dcis keys import`` while the daemon runs).

Keys (spec/security.md section 9)::

    [security]
    enabled = true                       # false: run as a keyless forwarder
    keystore = "keys/node3"              # required; relative to node.toml
    accepted_contexts = [-101, -102]     # -101 sealed, -102 signed, 1/2 RFC 9173
    replay_window_ms = 604800000         # >= the longest bundle lifetime in use
    replay_entries_per_source = 4096
    sign_only_destinations = ["ipn:9.1"] # signed (-102), not sealed, for these
    accept_unprotected_admin_records = true
    symmetric_key_files = []             # hex keys for contexts 1/2 (mode 0600)
    reload_interval_s = 5.0              # poll revocations.cbor and certs/
    hdtn_policy = "bpsec.json"           # HDTN's BPSec policy JSON, read as is
    [security.keys]                      # key ids -> HDTN-style hex key files
    hmac1 = "keys/hmac1.key"
    [[security.rules]]                   # RFC 9173 rules (issue 17; spec/security.md 10)
    role = "source"                      # source | acceptor | verifier
    context = "BIB-HMAC-SHA2"            # or "BCB-AES-GCM"
    destination = ["ipn:2.*"]            # bundle destination patterns (default "*")
    source = ["ipn:1.*"]                 # bundle source patterns (default "*")
    security_source = "ipn:1.0"          # block's source (pattern for acceptor/verifier)
    targets = [1]                        # block types (0 primary, 1 payload, 11 BIB)
    sha_variant = 384                    # 256 | 384 | 512 (aes_variant = 128 | 256)
    scope_flags = 7
    key_id = "hmac1"                     # or key_file = "..."; kek_id / kek_file: key wrap

A node with rules (or ``hdtn_policy``) and no ``keystore`` runs without a
DCiS key store: only RFC 9173 contexts, symmetric keys.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from dcis.crypto.errors import CryptoError, KeyStoreError
from dcis.dtn.agent.rfc9173_rules import (
    CONTEXT_NAMES,
    Rfc9173Policy,
    Role,
    SecurityRule,
    Service,
)
from dcis.dtn.agent.security import DEFAULT_ACCEPTED_CONTEXTS, SecurityPolicy
from dcis.dtn.bpsec import BCB_X25519_XCHACHA20POLY1305, BIB_ED25519
from dcis.dtn.bpv7.admin import StatusReason
from dcis.dtn.bpv7.bundle import Bundle
from dcis.dtn.bpv7.eid import parse_eid
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.node.service import NodeCredentials
from dcis.dtn.runtime.config import ConfigError
from dcis.dtn.runtime.watch import files_stamp
from dcis.dtn.storage.keystore import CERTS_DIR, NODE_CERT, REVOCATIONS, KeyStore

__all__ = ["SECURITY_KEYS", "NodeSecurity", "SecurityConfig", "parse_security"]

_KNOWN_CONTEXTS: Final = {
    BCB_X25519_XCHACHA20POLY1305: "BCB X25519/XChaCha20-Poly1305",
    BIB_ED25519: "BIB Ed25519",
    1: "RFC 9173 BIB-HMAC-SHA2",
    2: "RFC 9173 BCB-AES-GCM",
}
SECURITY_KEYS: Final = frozenset(
    {
        "enabled",
        "keystore",
        "accepted_contexts",
        "replay_window_ms",
        "replay_entries_per_source",
        "sign_only_destinations",
        "accept_unprotected_admin_records",
        "symmetric_key_files",
        "reload_interval_s",
        "rules",
        "keys",
        "hdtn_policy",
    }
)
"""Every key the ``[security]`` table accepts."""

_P = "security."


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityConfig:
    """The validated ``[security]`` table (paths already resolved)."""

    enabled: bool = True
    keystore: str
    accepted_contexts: tuple[int, ...] = tuple(sorted(DEFAULT_ACCEPTED_CONTEXTS))
    replay_window_ms: int = 7 * 86_400_000
    replay_entries_per_source: int = 4096
    sign_only_destinations: tuple[str, ...] = ()
    accept_unprotected_admin_records: bool = True
    symmetric_key_files: tuple[str, ...] = ()
    reload_interval_s: float = 5.0
    rules: tuple[SecurityRule, ...] = ()


def _typed(table: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    if key not in table:
        return default
    v = table[key]
    # bool is an int in Python; TOML `true` is never a number here.
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise ConfigError(f"{_P}{key}: expected {kind.__name__}, got {v!r}")
    return v


def _str_list(table: dict[str, Any], key: str) -> list[str]:
    v = _typed(table, key, list, [])
    for item in v:
        if not isinstance(item, str):
            raise ConfigError(f"{_P}{key}: expected a list of strings, got {item!r}")
    return list(v)


def parse_security(table: object, *, base_dir: Path) -> SecurityConfig:
    """Validate the ``[security]`` table; relative paths against ``base_dir``.

    Raises :class:`ConfigError` with a one-line message naming the key.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"security: expected a table, got {table!r}")
    for key in table:
        if key not in SECURITY_KEYS:
            raise ConfigError(
                f"{_P}{key}: unknown key (known: {', '.join(sorted(SECURITY_KEYS))})"
            )
    enabled = _typed(table, "enabled", bool, True)
    keystore = _typed(table, "keystore", str, None)
    rules = _parse_rules(table, base_dir) if enabled else []
    if rules and keystore is None:
        # RFC 9173 rules only: symmetric keys, no DCiS key store
        keystore = ""
    elif not enabled and keystore is None:
        # Switched off: a keyless forwarder; the rest need not be filled in.
        keystore = ""
    elif keystore is None or not keystore:
        raise ConfigError(
            f"{_P}keystore: missing (the key store directory made by 'dcis keys node-init')"
        )
    raw_ctx = _typed(table, "accepted_contexts", list, None)
    if raw_ctx is None:
        contexts = tuple(sorted(DEFAULT_ACCEPTED_CONTEXTS))
    else:
        if not raw_ctx:
            raise ConfigError(f"{_P}accepted_contexts: must name at least one context")
        for c in raw_ctx:
            if (
                isinstance(c, bool)
                or not isinstance(c, int)
                or c not in _KNOWN_CONTEXTS
            ):
                known = ", ".join(f"{k} ({v})" for k, v in _KNOWN_CONTEXTS.items())
                raise ConfigError(
                    f"{_P}accepted_contexts: unknown context {c!r}; known: {known}"
                )
        contexts = tuple(sorted(set(raw_ctx)))
    window = _typed(table, "replay_window_ms", int, 7 * 86_400_000)
    if window <= 0:
        raise ConfigError(f"{_P}replay_window_ms: must be > 0, got {window}")
    entries = _typed(table, "replay_entries_per_source", int, 4096)
    if entries < 1:
        raise ConfigError(f"{_P}replay_entries_per_source: must be >= 1, got {entries}")
    sign_only = _str_list(table, "sign_only_destinations")
    for text in sign_only:
        try:
            parse_eid(text)
        except InvalidArgument as exc:
            raise ConfigError(f"{_P}sign_only_destinations: {exc}") from None
    admin = _typed(table, "accept_unprotected_admin_records", bool, True)
    key_files = [str(base_dir / f) for f in _str_list(table, "symmetric_key_files")]
    if {1, 2} & set(contexts) and not key_files and keystore:
        raise ConfigError(
            f"{_P}symmetric_key_files: contexts 1/2 in accepted_contexts need shared keys"
        )
    reload_s = table.get("reload_interval_s", 5.0)
    if (
        isinstance(reload_s, bool)
        or not isinstance(reload_s, int | float)
        or not 0.05 <= float(reload_s) <= 86_400
    ):
        raise ConfigError(
            f"{_P}reload_interval_s: must be in 0.05..86400 s, got {reload_s!r}"
        )
    return SecurityConfig(
        enabled=enabled,
        keystore=str(base_dir / keystore) if keystore else "",
        accepted_contexts=contexts,
        replay_window_ms=window,
        replay_entries_per_source=entries,
        sign_only_destinations=tuple(sign_only),
        accept_unprotected_admin_records=admin,
        symmetric_key_files=tuple(key_files),
        reload_interval_s=float(reload_s),
        rules=tuple(rules),
    )


def _one_or_list(v: object, key: str) -> tuple[str, ...]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{key}: expected a pattern or a list of patterns, got {v!r}")
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(
                f"{key}: expected a pattern or a list of patterns, got {v!r}"
            )
    return tuple(items)


_RULE_KEYS: Final = frozenset(
    {
        "role",
        "context",
        "service",
        "destination",
        "source",
        "security_source",
        "targets",
        "sha_variant",
        "aes_variant",
        "scope_flags",
        "key_file",
        "key_id",
        "kek_file",
        "kek_id",
        "iv_bytes",
    }
)


def _rule_from(
    raw: dict[str, Any],
    p: str,
    key_of: Callable[[str, str], bytes],
) -> SecurityRule:
    """One rule from a TOML table (``p`` names it in errors)."""
    for k in raw:
        if k not in _RULE_KEYS:
            raise ConfigError(
                f"{p}{k}: unknown key (known: {', '.join(sorted(_RULE_KEYS))})"
            )
    role_s = raw.get("role")
    try:
        role = Role(str(role_s))
    except ValueError:
        raise ConfigError(
            f"{p}role: expected source, acceptor or verifier, got {role_s!r}"
        ) from None
    ctx = raw.get("context", raw.get("service"))
    service = CONTEXT_NAMES.get(ctx) if isinstance(ctx, str) else None
    if (
        service is None
        and isinstance(ctx, str)
        and ctx in ("integrity", "confidentiality")
    ):
        service = Service(ctx)
    if service is None:
        raise ConfigError(
            f"{p}context: expected BIB-HMAC-SHA2 or BCB-AES-GCM, got {ctx!r}"
        )
    key: bytes | None = None
    kek: bytes | None = None
    if "key_file" in raw and "key_id" in raw:
        raise ConfigError(f"{p}key_file: give key_file or key_id, not both")
    for name in ("key_file", "key_id", "kek_file", "kek_id"):
        if name in raw:
            v = raw[name]
            if not isinstance(v, str):
                raise ConfigError(f"{p}{name}: expected a string, got {v!r}")
            material = key_of(name, v)
            if name.startswith("key"):
                key = material
            else:
                kek = material
    ints: dict[str, Any] = {}
    for name in ("sha_variant", "aes_variant", "scope_flags", "iv_bytes"):
        if name in raw:
            v = raw[name]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{p}{name}: expected an integer, got {v!r}")
            ints[name] = v
    targets = raw.get("targets", [1])
    if (
        not isinstance(targets, list)
        or not targets
        or not all(isinstance(t, int) and not isinstance(t, bool) for t in targets)
    ):
        raise ConfigError(
            f"{p}targets: expected a list of block type codes, got {targets!r}"
        )
    sec_src = raw.get("security_source", "*")
    if not isinstance(sec_src, str):
        raise ConfigError(f"{p}security_source: expected a string, got {sec_src!r}")
    try:
        return SecurityRule(
            role=role,
            service=service,
            bundle_source=_one_or_list(raw.get("source", "*"), f"{p}source"),
            bundle_destination=_one_or_list(
                raw.get("destination", "*"), f"{p}destination"
            ),
            security_source=sec_src,
            targets=tuple(targets),
            key=key,
            kek=kek,
            **ints,
        )
    except InvalidArgument as exc:
        raise ConfigError(f"{p[:-1]}: {exc}") from None


def _parse_rules(table: dict[str, Any], base_dir: Path) -> list[SecurityRule]:
    """``rules``, ``keys`` and ``hdtn_policy`` of ``[security]``, keys read from their files."""
    ids = _typed(table, "keys", dict, {})
    for k, v in ids.items():
        if not isinstance(v, str):
            raise ConfigError(f"{_P}keys.{k}: expected a key file path, got {v!r}")

    def key_of(name: str, value: str) -> bytes:
        if name.endswith("_id"):
            if value not in ids:
                raise ConfigError(
                    f"{_P}rules: {name} {value!r} is not in security.keys"
                )
            return _read_symmetric_key(str(base_dir / ids[value]), f"{_P}keys.{value}")
        return _read_symmetric_key(str(base_dir / value), f"{_P}rules")

    out: list[SecurityRule] = []
    raw_rules = _typed(table, "rules", list, [])
    for i, raw in enumerate(raw_rules):
        if not isinstance(raw, dict):
            raise ConfigError(f"{_P}rules[{i}]: expected a table")
        out.append(_rule_from(raw, f"{_P}rules[{i}].", key_of))
    policy = _typed(table, "hdtn_policy", str, None)
    if policy is not None:
        out.extend(_hdtn_policy(base_dir / policy, base_dir))
    return out


_HDTN_PARAMS: Final = {
    "shaVariant": "sha_variant",
    "aesVariant": "aes_variant",
    "scopeFlags": "scope_flags",
    "ivSizeBytes": "iv_bytes",
    "keyFile": "key_file",
    "keyEncryptionKeyFile": "kek_file",
}


def _hdtn_policy(path: Path, base_dir: Path) -> list[SecurityRule]:
    """The ``policyRules`` of an HDTN BPSec JSON file, as our rules.

    Key files named there are resolved against the directory of node.toml
    (HDTN resolves them against its working directory).
    """
    key = f"{_P}hdtn_policy"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{key}: {path} is not JSON: {exc}") from None
    rules = doc.get("policyRules") if isinstance(doc, dict) else None
    if not isinstance(rules, list):
        raise ConfigError(f'{key}: {path} has no "policyRules" array')

    def key_of(name: str, value: str) -> bytes:
        return _read_symmetric_key(str(base_dir / value), key)

    out = []
    for i, r in enumerate(rules):
        p = f"{key}: policyRules[{i}]."
        if not isinstance(r, dict):
            raise ConfigError(f"{p[:-1]}: expected an object")
        raw: dict[str, Any] = {
            "role": r.get("securityRole"),
            "context": r.get("securityContext", r.get("securityService")),
            "source": r.get("bundleSource", "*"),
            "destination": r.get("bundleFinalDestination", "*"),
            "security_source": r.get("securitySource", "*"),
        }
        if "securityTargetBlockTypes" in r:
            raw["targets"] = r["securityTargetBlockTypes"]
        for param in r.get("securityContextParams", []) or []:
            name = param.get("paramName") if isinstance(param, dict) else None
            if name in _HDTN_PARAMS:
                raw[_HDTN_PARAMS[name]] = param.get("value")
        out.append(_rule_from(raw, p, key_of))
    return out


def _read_symmetric_key(path: str, key: str = f"{_P}symmetric_key_files") -> bytes:
    """A hex key file (HDTN's format: hex digits, whitespace around them ignored;
    mode 0600 or stricter, like the key store's private files)."""
    try:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{key}: refusing to load {path}: mode {stat.S_IMODE(st.st_mode):04o} "
                f"lets group or others read it; run 'chmod 600 {path}'"
            )
        text = Path(path).read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not a hex key") from None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{key}: {path} is not a hex key") from None
    if len(raw) not in (16, 24, 32, 48, 64):
        raise ConfigError(f"{key}: {path}: key of {len(raw)} bytes (16..64 expected)")
    return raw


LogFn = Callable[..., None]


class NodeSecurity:
    """A :class:`SecurityPolicy` loaded from a key store, as the node's agent hook.

    Implements the agent's ``SecurityHook`` (``protect``/``check``) by
    delegating to :attr:`policy`, and logs each rejection (event
    ``security_rejected`` with the bundle, its source and the policy's
    reason). Raises :class:`ConfigError` naming ``security.keystore`` when a
    file is missing, unsafe (a private key others can read), malformed, or
    belongs to another node.
    """

    def __init__(self, config: SecurityConfig, *, node: int, log: LogFn) -> None:
        self.config = config
        self._log = log
        self.node = node
        self._cert_nodes: set[int] = set()
        self._stamp: tuple[tuple[str, int, int, int], ...] = ()
        self.policy: SecurityPolicy | None = None
        self.store: KeyStore | None = None
        if config.keystore:
            self._load_keystore(config, node)
        # RFC 9173 rules first; bundles they do not name go to the key store's policy
        self.rfc9173: Rfc9173Policy | None = (
            Rfc9173Policy(config.rules, node=node, fallback=self.policy)
            if config.rules
            else None
        )

    def _load_keystore(self, config: SecurityConfig, node: int) -> None:
        self.store = KeyStore(config.keystore)
        key = f"{_P}keystore"
        try:
            identity = self.store.read_identity()
            operator_public = self.store.read_operator_public()
            certs = self.store.certificates()
            revocations = self.store.read_revocations()
        except KeyStoreError as exc:
            raise ConfigError(
                f"{key}: {exc} (make the store with 'dcis keys node-init' and 'dcis keys issue --install')"
            ) from None
        if identity.node != node:
            raise ConfigError(
                f"{key}: {self.store.path / 'node.key'} belongs to node {identity.node}, this node is {node}"
            )
        own = certs.get(node)
        if own is None:
            raise ConfigError(
                f"{key}: {self.store.path / NODE_CERT} not found (install the operator's certificate: 'dcis keys issue --install')"
            )
        if (
            own.sign_public != identity.sign_public
            or own.kx_public != identity.kx_public
        ):
            raise ConfigError(
                f"{key}: {self.store.path / NODE_CERT} does not certify the keys in node.key"
            )
        symmetric = [_read_symmetric_key(p) for p in config.symmetric_key_files]
        try:
            self.policy = SecurityPolicy(
                identity=identity,
                operator_public=operator_public,
                revocations=revocations,
                accepted_contexts=config.accepted_contexts,
                symmetric_keys=symmetric,
                replay_window_ms=config.replay_window_ms,
                replay_entries_per_source=config.replay_entries_per_source,
                sign_only_destinations=config.sign_only_destinations,
                accept_unprotected_admin_records=config.accept_unprotected_admin_records,
            )
        except (CryptoError, InvalidArgument) as exc:
            raise ConfigError(f"{key}: {exc}") from None
        try:
            self.policy.add_certificate(own)
        except CryptoError as exc:
            raise ConfigError(
                f"{key}: {self.store.path / NODE_CERT} was not issued by the key in operator.pub ({exc})"
            ) from None
        self._identity = identity
        self._own_cert = own
        self._operator_public = operator_public
        self._node = node
        self._cert_nodes = {node}
        for cert in certs.values():
            self._add_cert(cert)
        self._stamp = self._files_stamp()

    @property
    def credentials(self) -> NodeCredentials | None:
        """The node's keys and trust anchor for its services
        (``ctx.credentials``), with the revocations now in force; None for a
        node without a DCiS key store (RFC 9173 rules only)."""
        if self.policy is None:
            return None
        rl = self.policy.revocations.current
        return NodeCredentials(
            identity=self._identity,
            certificate=self._own_cert,
            operator_public=self._operator_public,
            revoked=frozenset(rl.nodes) if rl is not None else frozenset(),
        )

    # ------------------------------------------------------------ agent hook

    def protect(self, bundle: Bundle, *, now: int | None = None) -> Bundle:
        """Protect a bundle this node originates: matching RFC 9173 source rules,
        else ``SecurityPolicy.protect`` (with a key store), else unchanged."""
        if self.rfc9173 is not None:
            return self.rfc9173.protect(bundle, now=now)
        if self.policy is not None:
            return self.policy.protect(bundle, now=now)
        return bundle

    def check(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]:
        """Check a bundle for this node; log a rejection with its reason."""
        if self.rfc9173 is not None:
            before = self.rfc9173.counters["rfc9173_rejected"]
            plain, reason = self.rfc9173.check(bundle, now)
            if self.rfc9173.counters["rfc9173_rejected"] != before:
                why = self.rfc9173.last_rejection
            else:  # the key store's policy (fallback) refused it
                why = self.policy.last_rejection if self.policy is not None else None
        elif self.policy is not None:
            plain, reason = self.policy.check(bundle, now)
            why = self.policy.last_rejection
        else:
            return bundle, None
        if plain is None:
            self._log(
                "warning",
                "security_rejected",
                bundle=bundle.bundle_key,
                source=str(bundle.primary.source),
                reason=why,
                status_reason=int(reason) if reason is not None else None,
            )
        return plain, reason

    def link_key(self, peer: int, now: int) -> bytes | None:
        """The 32-byte UDP CL link key shared with node ``peer`` (spec/udpcl.md
        "Threat model"): X25519 between this node's key and the one in
        ``peer``'s valid certificate, labelled with both node numbers. None
        when ``peer`` has no valid certificate here."""
        if self.policy is None or self._identity is None:
            return None
        cert = self.policy.certificate(peer, now)
        if cert is None:
            return None
        lo, hi = sorted((self._node, peer))
        try:
            return self._identity.agree(
                cert.kx_public, label=b"dcis-udpcl-link|%d|%d" % (lo, hi)
            )
        except CryptoError:
            return None

    def verify(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]:
        """Verifier rules for a bundle this node forwards; log a rejection."""
        if self.rfc9173 is None:
            return bundle, None
        got, reason = self.rfc9173.verify(bundle, now)
        if got is None:
            self._log(
                "warning",
                "security_rejected",
                bundle=bundle.bundle_key,
                source=str(bundle.primary.source),
                reason=self.rfc9173.last_rejection,
                status_reason=int(reason) if reason is not None else None,
            )
        return got, reason

    # ------------------------------------------------------------ status

    def counters(self) -> dict[str, int]:
        """The policy's counters, prefixed ``security_`` for the node's status."""
        out = {}
        if self.policy is not None:
            out.update(self.policy.counters)
        if self.rfc9173 is not None:
            out.update(self.rfc9173.counters)
        return {f"security_{k}": v for k, v in out.items()}

    def status(self) -> dict[str, Any]:
        """The ``security`` section of ``dcis status``."""
        p = self.policy
        out: dict[str, Any] = {"enabled": True}
        if p is not None and self.store is not None:
            out.update(
                keystore=str(self.store.path),
                accepted_contexts=sorted(p.accepted_contexts),
                certificates=len(self._cert_nodes),
                revocation_version=p.revocations.version,
                last_rejection=p.last_rejection,
            )
        else:
            out["keystore"] = None
        if self.rfc9173 is not None:
            out["rfc9173_rules"] = len(self.rfc9173.rules)
            out["rfc9173_last_rejection"] = self.rfc9173.last_rejection
        return out

    # ------------------------------------------------------------ reload

    def _add_cert(self, cert: Any) -> bool:
        assert self.policy is not None
        try:
            self.policy.add_certificate(cert)
        except CryptoError as exc:
            # A certificate the operator did not sign is ignored, not fatal:
            # the node keeps serving the peers it can authenticate.
            self._log(
                "warning", "certificate_rejected", node=cert.node, detail=str(exc)
            )
            return False
        self._cert_nodes.add(cert.node)
        return True

    def _files_stamp(self) -> tuple[tuple[str, int, int, int], ...]:
        if self.store is None:
            return ()
        base = self.store.path
        paths = [base / REVOCATIONS, base / NODE_CERT]
        d = base / CERTS_DIR
        if d.is_dir():
            paths += sorted(d.glob("*.cert"))
        # The key store replaces files atomically (new inode), so a
        # rewrite within the mtime granularity is still seen.
        return files_stamp(paths)

    def reload(self) -> bool:
        """Re-read the revocation list and certificates if their files changed.

        True when something was re-read. Never raises: a bad file is logged
        (``keystore_reload_failed``) and what the node holds stays in force.
        """
        if self.store is None or self.policy is None:
            return False
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            rl = self.store.read_revocations()
            certs = self.store.certificates()
        except KeyStoreError as exc:
            self._log("warning", "keystore_reload_failed", detail=str(exc))
            return True
        if rl is not None:
            try:
                if self.policy.update_revocations(rl):
                    self._log(
                        "info",
                        "revocations_updated",
                        version=rl.version,
                        nodes=list(rl.nodes),
                        serials=list(rl.serials),
                    )
            except CryptoError as exc:
                self._log("warning", "revocations_rejected", detail=str(exc))
        for cert in certs.values():
            self._add_cert(cert)
        return True

    async def watch(self) -> None:
        """Poll the key store every ``reload_interval_s`` (runs until cancelled)."""
        while True:
            await trio.sleep(self.config.reload_interval_s)
            # A stat per file: cheap enough off the hot path.
            self.reload()
