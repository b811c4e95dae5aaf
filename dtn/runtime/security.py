"""The daemon's end-to-end security: ``[security]`` in node.toml and a key store.

Issue 6 item 6 ("the config keys the daemon needs"); the policy itself is
:class:`dtn.agent.security.SecurityPolicy` (spec/security.md section 8), this
module only configures it from files and runs it inside the trio node:

- :func:`parse_security` validates the ``[security]`` table (every error a
  one-line :class:`~dtn.runtime.config.ConfigError` naming ``security.<key>``).
- :class:`NodeSecurity` loads the key store (``crypto.KeyStore``: this
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
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from crypto.errors import CryptoError, KeyStoreError
from crypto.keystore import CERTS_DIR, NODE_CERT, REVOCATIONS, KeyStore
from dtn.agent.security import DEFAULT_ACCEPTED_CONTEXTS, SecurityPolicy
from dtn.bpsec import BCB_X25519_XCHACHA20POLY1305, BIB_ED25519
from dtn.bpv7.admin import StatusReason
from dtn.bpv7.bundle import Bundle
from dtn.bpv7.eid import parse_eid
from dtn.errors import InvalidArgument
from dtn.node.service import NodeCredentials
from dtn.runtime.config import ConfigError
from dtn.runtime.watch import files_stamp

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
    if not enabled and keystore is None:
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
    if {1, 2} & set(contexts) and not key_files:
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
    )


def _read_symmetric_key(path: str) -> bytes:
    """A hex key file (mode 0600 or stricter, like the key store's private files)."""
    key = f"{_P}symmetric_key_files"
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
        self._cert_nodes = {node}
        for cert in certs.values():
            self._add_cert(cert)
        self._stamp = self._files_stamp()

    @property
    def credentials(self) -> NodeCredentials:
        """The node's keys and trust anchor for its services
        (``ctx.credentials``), with the revocations now in force."""
        rl = self.policy.revocations.current
        return NodeCredentials(
            identity=self._identity,
            certificate=self._own_cert,
            operator_public=self._operator_public,
            revoked=frozenset(rl.nodes) if rl is not None else frozenset(),
        )

    # ------------------------------------------------------------ agent hook

    def protect(self, bundle: Bundle, *, now: int | None = None) -> Bundle:
        """Protect a bundle this node originates (see ``SecurityPolicy.protect``)."""
        return self.policy.protect(bundle, now=now)

    def check(
        self, bundle: Bundle, now: int
    ) -> tuple[Bundle | None, StatusReason | None]:
        """Check a bundle for this node; log a rejection with its reason."""
        plain, reason = self.policy.check(bundle, now)
        if plain is None:
            self._log(
                "warning",
                "security_rejected",
                bundle=bundle.bundle_key,
                source=str(bundle.primary.source),
                reason=self.policy.last_rejection,
                status_reason=int(reason) if reason is not None else None,
            )
        return plain, reason

    # ------------------------------------------------------------ status

    def counters(self) -> dict[str, int]:
        """The policy's counters, prefixed ``security_`` for the node's status."""
        return {f"security_{k}": v for k, v in self.policy.counters.items()}

    def status(self) -> dict[str, Any]:
        """The ``security`` section of ``dcis status``."""
        p = self.policy
        return {
            "enabled": True,
            "keystore": str(self.store.path),
            "accepted_contexts": sorted(p.accepted_contexts),
            "certificates": len(self._cert_nodes),
            "revocation_version": p.revocations.version,
            "last_rejection": p.last_rejection,
        }

    # ------------------------------------------------------------ reload

    def _add_cert(self, cert: Any) -> bool:
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
