"""A key store on disk: one directory, one file per key or certificate.

Layout (every file CBOR; see spec/security.md)::

    <dir>/                 mode 0700
      operator.key         operator private key       (0600; on the ground only)
      operator.pub         operator public key        (0644; on every node)
      node.key             this node's private keys   (0600)
      node.cert            this node's certificate
      certs/<N>.cert       certificates of other nodes, by node number
      revocations.cbor     newest revocation list

Private key files are written with mode 0600 from the start (never chmod
after writing, which leaves a window) and atomically (temp file, fsync,
rename). Loading a private key that group or others can read is refused with
:class:`KeyStoreError` naming the file and the fix, the way ssh refuses an
unprotected identity file: a key that others could read must be presumed
copied.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cbor2

from dcis.crypto._cbor import (
    expect_array,
    expect_bytes,
    expect_text,
    expect_uint,
    loads_untrusted,
)
from dcis.crypto.certificate import (
    NodeCertificate,
    decode_certificate_untrusted,
    encode_certificate,
)
from dcis.crypto.errors import DecodeError, InvalidArgument, KeyStoreError
from dcis.crypto.keys import (
    PUBLIC_KEY_BYTES,
    SECRET_KEY_BYTES,
    NodeIdentity,
    OperatorKey,
)
from dcis.crypto.revocation import (
    RevocationList,
    decode_revocation_list_untrusted,
    encode_revocation_list,
)

OPERATOR_KEY = "operator.key"
OPERATOR_PUB = "operator.pub"
NODE_KEY = "node.key"
NODE_CERT = "node.cert"
CERTS_DIR = "certs"
REVOCATIONS = "revocations.cbor"
_FILE_VERSION = 1
_MAX_FILE_BYTES = 1 << 24


class KeyStore:
    """Read and write keys, certificates and the revocation list under ``path``.

    Every method raises :class:`KeyStoreError` for a missing, unreadable,
    malformed or unsafe file; nothing else escapes for file problems.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- plumbing -----------------------------------------------------------

    def init(self) -> None:
        """Create the directory (mode 0700) and ``certs/`` if missing."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.path / CERTS_DIR).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise KeyStoreError(
                f"cannot create key store {self.path}: {exc.strerror}"
            ) from exc

    def _write(self, name: str, data: bytes, *, private: bool, overwrite: bool) -> Path:
        self.init()
        target = self.path / name
        if target.exists() and not overwrite:
            raise KeyStoreError(
                f"{target} already exists (refusing to overwrite a key)"
            )
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        mode = 0o600 if private else 0o644
        # O_EXCL|O_NOFOLLOW: never write a secret through a planted symlink or
        # into a file someone else opened first; a stale temp file is removed.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, flags, mode)
            try:
                # O_CREAT's mode is filtered by the umask; fchmod is not.
                os.fchmod(fd, mode)
                view = memoryview(data)
                while view:  # os.write may write less than asked
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KeyStoreError(f"cannot write {target}: {exc.strerror}") from exc
        return target

    def _read(self, name: str, *, private: bool) -> bytes:
        target = self.path / name
        try:
            st = target.stat()
        except FileNotFoundError as exc:
            raise KeyStoreError(f"{target} not found") from exc
        except OSError as exc:
            raise KeyStoreError(f"cannot read {target}: {exc.strerror}") from exc
        if private and st.st_mode & 0o077:
            raise KeyStoreError(
                f"refusing to load private key {target}: mode {stat.S_IMODE(st.st_mode):04o} lets group or others read it; "
                f"run 'chmod 600 {target}' (and consider the key compromised if others could read it)"
            )
        if st.st_size > _MAX_FILE_BYTES:
            raise KeyStoreError(f"{target} is too large ({st.st_size} bytes)")
        try:
            return target.read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"cannot read {target}: {exc.strerror}") from exc

    @staticmethod
    def _tagged(kind: str, data: bytes, n: int, *, name: Path) -> list[object]:
        try:
            f = loads_untrusted(data, what=str(name))
            if not isinstance(f, list) or len(f) < 2:
                raise DecodeError("expected a tagged array", where=str(name))
            if expect_text(f[0], what=str(name)) != kind:
                raise DecodeError(f"not a {kind} file", where=str(name))
            if expect_uint(f[1], what=str(name)) != _FILE_VERSION:
                raise DecodeError("unsupported file version", where=str(name))
            return expect_array(f, n, what=str(name))
        except DecodeError as exc:
            raise KeyStoreError(str(exc)) from exc

    # -- operator -----------------------------------------------------------

    def write_operator_key(self, key: OperatorKey, *, overwrite: bool = False) -> Path:
        """Store the operator private key (0600) and its public half (0644)."""
        path = self._write(
            OPERATOR_KEY,
            cbor2.dumps(["dcis-operator-key", _FILE_VERSION, key.seed]),
            private=True,
            overwrite=overwrite,
        )
        self.write_operator_public(key.public_key, overwrite=overwrite)
        return path

    def read_operator_key(self) -> OperatorKey:
        """Load the operator private key (refused if group/others can read it)."""
        name = self.path / OPERATOR_KEY
        f = self._tagged(
            "dcis-operator-key", self._read(OPERATOR_KEY, private=True), 3, name=name
        )
        try:
            return OperatorKey(
                seed=expect_bytes(f[2], what=str(name), length=SECRET_KEY_BYTES)
            )
        except (DecodeError, InvalidArgument) as exc:
            raise KeyStoreError(str(exc)) from exc

    def write_operator_public(
        self, public_key: bytes, *, overwrite: bool = False
    ) -> Path:
        """Store the operator public key (what nodes need to check certificates)."""
        if len(public_key) != PUBLIC_KEY_BYTES:
            raise InvalidArgument("operator public key must be 32 bytes")
        return self._write(
            OPERATOR_PUB,
            cbor2.dumps(["dcis-operator-pub", _FILE_VERSION, public_key]),
            private=False,
            overwrite=overwrite,
        )

    def read_operator_public(self) -> bytes:
        """Load the operator public key."""
        return parse_operator_public(
            self._read(OPERATOR_PUB, private=False), name=self.path / OPERATOR_PUB
        )

    # -- this node ----------------------------------------------------------

    def write_identity(
        self, identity: NodeIdentity, *, overwrite: bool = False
    ) -> Path:
        """Store this node's private keys (0600)."""
        data = cbor2.dumps(
            [
                "dcis-node-key",
                _FILE_VERSION,
                identity.node,
                identity.signing_seed,
                identity.kx_secret,
            ]
        )
        return self._write(NODE_KEY, data, private=True, overwrite=overwrite)

    def read_identity(self) -> NodeIdentity:
        """Load this node's private keys (refused if group/others can read them)."""
        name = self.path / NODE_KEY
        f = self._tagged(
            "dcis-node-key", self._read(NODE_KEY, private=True), 5, name=name
        )
        try:
            return NodeIdentity(
                node=expect_uint(f[2], what=str(name)),
                signing_seed=expect_bytes(
                    f[3], what=str(name), length=SECRET_KEY_BYTES
                ),
                kx_secret=expect_bytes(f[4], what=str(name), length=SECRET_KEY_BYTES),
            )
        except (DecodeError, InvalidArgument) as exc:
            raise KeyStoreError(str(exc)) from exc

    def has(self, name: str) -> bool:
        """Whether the file ``name`` (e.g. ``"node.key"``) exists in the store."""
        return (self.path / name).is_file()

    # -- certificates -------------------------------------------------------

    def write_certificate(self, cert: NodeCertificate, *, own: bool = False) -> Path:
        """Store ``cert`` as this node's (``own``) or under ``certs/<node>.cert``."""
        name = NODE_CERT if own else f"{CERTS_DIR}/{cert.node}.cert"
        return self._write(
            name, encode_certificate(cert), private=False, overwrite=True
        )

    def _read_cert(self, name: str) -> NodeCertificate:
        try:
            return decode_certificate_untrusted(self._read(name, private=False))
        except DecodeError as exc:
            raise KeyStoreError(f"{self.path / name}: {exc}") from exc

    def read_own_certificate(self) -> NodeCertificate:
        """This node's certificate."""
        return self._read_cert(NODE_CERT)

    def read_certificate(self, node: int) -> NodeCertificate:
        """The stored certificate of ``node``."""
        return self._read_cert(f"{CERTS_DIR}/{node}.cert")

    def certificates(self) -> dict[int, NodeCertificate]:
        """Every certificate under ``certs/`` (plus this node's own), by node number."""
        out: dict[int, NodeCertificate] = {}
        d = self.path / CERTS_DIR
        if d.is_dir():
            for p in sorted(d.glob("*.cert")):
                cert = self._read_cert(f"{CERTS_DIR}/{p.name}")
                out[cert.node] = cert
        if self.has(NODE_CERT):
            own = self.read_own_certificate()
            out[own.node] = own
        return out

    # -- revocations --------------------------------------------------------

    def write_revocations(self, rl: RevocationList) -> Path:
        """Store the revocation list (callers keep versions monotonic)."""
        return self._write(
            REVOCATIONS, encode_revocation_list(rl), private=False, overwrite=True
        )

    def read_revocations(self) -> RevocationList | None:
        """The stored revocation list, or None when there is none yet."""
        if not self.has(REVOCATIONS):
            return None
        try:
            return decode_revocation_list_untrusted(
                self._read(REVOCATIONS, private=False)
            )
        except DecodeError as exc:
            raise KeyStoreError(f"{self.path / REVOCATIONS}: {exc}") from exc


def parse_operator_public(
    data: bytes, *, name: str | os.PathLike[str] = OPERATOR_PUB
) -> bytes:
    """The 32-byte key in an ``operator.pub`` file's bytes. Raises KeyStoreError."""
    f = KeyStore._tagged("dcis-operator-pub", data, 3, name=Path(name))
    try:
        return expect_bytes(f[2], what=str(name), length=PUBLIC_KEY_BYTES)
    except DecodeError as exc:
        raise KeyStoreError(str(exc)) from exc
