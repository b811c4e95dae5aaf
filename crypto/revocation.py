"""Signed, monotonically versioned revocation lists.

The operator revokes a node (every certificate for that node number) or one
certificate (by serial, e.g. after a key rotation). Lists travel by gossip and
in the replicated log, in any order and more than once; a node keeps the
highest version it has verified, so an old list replayed by an attacker can
never un-revoke anyone (:class:`RevocationState`).

Wire format (CBOR; CDDL in spec/security.md)::

    revocation-list = [
      version: 1,                 ; format version
      list-version: uint,         ; strictly increases with every list issued
      issued-ms: uint,            ; DTN time the operator signed it
      nodes: [* uint],            ; revoked node numbers, ascending, unique
      serials: [* uint],          ; revoked certificate serials, ascending, unique
      issuer: bstr .size 8,       ; operator key id
      signature: bstr .size 64,   ; Ed25519 over REVOCATION_LABEL || CBOR(first 6 fields)
    ]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import cbor2

from dcis.crypto._cbor import expect_array, expect_bytes, expect_uint, loads_untrusted
from dcis.crypto.errors import AuthenticationFailed, DecodeError, InvalidArgument
from dcis.crypto.keys import (
    KEY_ID_BYTES,
    SIGNATURE_BYTES,
    OperatorKey,
    key_id,
    verify_signature,
)

REVOCATION_VERSION = 1
REVOCATION_LABEL = b"dcis revocation list v1\0"
MAX_ENTRIES = 1 << 20  # bounds decoding work on hostile input
_U64 = 1 << 64


def _sorted_unique(name: str, values: Iterable[object]) -> None:
    out: list[int] = []
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < _U64:
            raise InvalidArgument(
                f"{name} entries must be unsigned 64-bit integers, got {v!r}"
            )
        out.append(v)
    if out != sorted(set(out)):
        raise InvalidArgument(f"{name} must be ascending and unique")


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationList:
    """Revoked node numbers and certificate serials, signed by the operator."""

    version: int
    issued_ms: int
    nodes: tuple[int, ...]
    serials: tuple[int, ...]
    issuer: bytes
    signature: bytes

    def __post_init__(self) -> None:
        for name in ("version", "issued_ms"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < _U64:
                raise InvalidArgument(
                    f"{name} must be an unsigned 64-bit integer, got {v!r}"
                )
        _sorted_unique("nodes", self.nodes)
        _sorted_unique("serials", self.serials)
        if len(self.issuer) != KEY_ID_BYTES or len(self.signature) != SIGNATURE_BYTES:
            raise InvalidArgument("issuer must be 8 bytes and signature 64 bytes")

    def is_revoked(self, node: int, serial: int | None = None) -> bool:
        """Whether ``node`` (or the certificate ``serial``) is revoked."""
        return node in self.nodes or (serial is not None and serial in self.serials)

    def _fields(self) -> list[object]:
        return [
            REVOCATION_VERSION,
            self.version,
            self.issued_ms,
            list(self.nodes),
            list(self.serials),
            self.issuer,
        ]

    def signed_bytes(self) -> bytes:
        """The exact bytes the operator signs."""
        return REVOCATION_LABEL + cbor2.dumps(self._fields())


def issue_revocation_list(
    operator: OperatorKey,
    *,
    version: int,
    issued_ms: int,
    nodes: Iterable[int] = (),
    serials: Iterable[int] = (),
) -> RevocationList:
    """Sign a list revoking ``nodes`` and ``serials`` (sorted and de-duplicated here)."""
    unsigned = RevocationList(
        version=version,
        issued_ms=issued_ms,
        nodes=tuple(sorted(set(nodes))),
        serials=tuple(sorted(set(serials))),
        issuer=operator.key_id,
        signature=bytes(SIGNATURE_BYTES),
    )
    return replace(unsigned, signature=operator.sign(unsigned.signed_bytes()))


def encode_revocation_list(rl: RevocationList) -> bytes:
    """CBOR encoding of ``rl``."""
    return cbor2.dumps([*rl._fields(), rl.signature])


def _uint_list(item: object, *, what: str) -> tuple[int, ...]:
    if not isinstance(item, list):
        raise DecodeError("expected an array", where=what)
    if len(item) > MAX_ENTRIES:
        raise DecodeError(f"more than {MAX_ENTRIES} entries", where=what)
    return tuple(expect_uint(v, what=what) for v in item)


def decode_revocation_list_untrusted(
    data: bytes | bytearray | memoryview,
) -> RevocationList:
    """Parse a revocation list from untrusted bytes. Raises only DecodeError.

    Parsing does not verify: call :func:`verify_revocation_list`.
    """
    what = "revocation list"
    f = expect_array(loads_untrusted(data, what=what), 7, what=what)
    if expect_uint(f[0], what=f"{what}, field version") != REVOCATION_VERSION:
        raise DecodeError("unsupported version", where=what)
    try:
        return RevocationList(
            version=expect_uint(f[1], what=f"{what}, field list-version"),
            issued_ms=expect_uint(f[2], what=f"{what}, field issued-ms"),
            nodes=_uint_list(f[3], what=f"{what}, field nodes"),
            serials=_uint_list(f[4], what=f"{what}, field serials"),
            issuer=expect_bytes(
                f[5], what=f"{what}, field issuer", length=KEY_ID_BYTES
            ),
            signature=expect_bytes(
                f[6], what=f"{what}, field signature", length=SIGNATURE_BYTES
            ),
        )
    except InvalidArgument as exc:
        raise DecodeError(str(exc), where=what) from exc


def verify_revocation_list(rl: RevocationList, operator_public: bytes) -> None:
    """Raise :class:`AuthenticationFailed` unless ``operator_public`` signed ``rl``."""
    if rl.issuer != key_id(operator_public):
        raise AuthenticationFailed()
    verify_signature(operator_public, rl.signed_bytes(), rl.signature)


class RevocationState:
    """The newest verified revocation list a node knows (monotonic).

    ``update`` accepts a list only if the operator signed it and its version is
    higher than the current one; an older or equal version is ignored (it is
    normal for gossip to deliver stale lists), so revocations never roll back.
    """

    def __init__(
        self, operator_public: bytes, current: RevocationList | None = None
    ) -> None:
        self._operator_public = operator_public
        self._current: RevocationList | None = None
        if current is not None:
            self.update(current)

    @property
    def current(self) -> RevocationList | None:
        """The newest verified list, or None before the first one."""
        return self._current

    @property
    def version(self) -> int:
        """Version of the current list (0 before the first one)."""
        return 0 if self._current is None else self._current.version

    def update(self, rl: RevocationList) -> bool:
        """Adopt ``rl`` if newer; True when adopted, False when stale.

        Raises :class:`AuthenticationFailed` if ``rl`` is not validly signed.
        """
        verify_revocation_list(rl, self._operator_public)
        if rl.version <= self.version:
            return False
        self._current = rl
        return True

    def is_revoked(self, node: int, serial: int | None = None) -> bool:
        """Whether the current list revokes ``node`` or ``serial``."""
        return self._current is not None and self._current.is_revoked(node, serial)
