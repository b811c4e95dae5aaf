"""Key store on disk (dtn/storage/keystore.py): modes, refusals, round trips."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dcis.crypto import (
    KeyStoreError,
    NodeIdentity,
    OperatorKey,
    issue_certificate,
    issue_revocation_list,
)
from dcis.dtn.storage import KeyStore

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_operator_and_identity_round_trip_with_private_modes(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "ks")
    op = OperatorKey.generate()
    ident = NodeIdentity.generate(12)
    old = os.umask(0)  # even a permissive umask must not loosen private files
    try:
        ks.write_operator_key(op)
        ks.write_identity(ident)
    finally:
        os.umask(old)
    assert mode(tmp_path / "ks" / "operator.key") == 0o600
    assert mode(tmp_path / "ks" / "node.key") == 0o600
    assert mode(tmp_path / "ks") == 0o700
    assert ks.read_operator_key() == op
    assert ks.read_operator_public() == op.public_key
    assert ks.read_identity() == ident


@pytest.mark.parametrize("name", ["operator.key", "node.key"])
@pytest.mark.parametrize("loose", [0o640, 0o604, 0o644])
def test_refuses_private_key_readable_by_others(
    tmp_path: Path, name: str, loose: int
) -> None:
    ks = KeyStore(tmp_path)
    ks.write_operator_key(OperatorKey.generate())
    ks.write_identity(NodeIdentity.generate(3))
    os.chmod(tmp_path / name, loose)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        ks.read_operator_key() if name == "operator.key" else ks.read_identity()


def test_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path)
    ks.write_identity(NodeIdentity.generate(3))
    with pytest.raises(KeyStoreError, match="already exists"):
        ks.write_identity(NodeIdentity.generate(3))


def test_missing_and_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path)
    with pytest.raises(KeyStoreError, match="not found"):
        ks.read_identity()
    (tmp_path / "node.key").write_bytes(b"\xff garbage")
    os.chmod(tmp_path / "node.key", 0o600)
    with pytest.raises(KeyStoreError):
        ks.read_identity()
    (tmp_path / "operator.pub").write_bytes(b"")
    with pytest.raises(KeyStoreError):
        ks.read_operator_public()


def test_certificates_and_revocations(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path)
    op = OperatorKey.generate()
    me, peer = NodeIdentity.generate(1), NodeIdentity.generate(2)
    certs = [
        issue_certificate(
            op,
            node=i.node,
            sign_public=i.sign_public,
            kx_public=i.kx_public,
            not_before_ms=0,
            not_after_ms=10,
            serial=i.node,
        )
        for i in (me, peer)
    ]
    ks.write_certificate(certs[0], own=True)
    ks.write_certificate(certs[1])
    assert ks.read_own_certificate() == certs[0]
    assert ks.read_certificate(2) == certs[1]
    assert ks.certificates() == {1: certs[0], 2: certs[1]}
    assert ks.read_revocations() is None
    rl = issue_revocation_list(op, version=1, issued_ms=5, nodes=[2])
    ks.write_revocations(rl)
    assert ks.read_revocations() == rl
