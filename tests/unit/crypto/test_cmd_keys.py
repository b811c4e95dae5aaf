"""``dcis keys`` end to end: operator, node keys, issue, import, revoke, show."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dcis.crypto import verify_certificate
from dcis.dtn.storage import KeyStore
from dcis.tools.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["keys", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ground, n5, n7 = (str(tmp_path / d) for d in ("ground", "n5", "n7"))
    assert run(capsys, "operator-init", "--store", ground)[0] == 0
    req = str(tmp_path / "n5.json")
    rc, out, _ = run(
        capsys, "node-init", "--store", n5, "--node", "5", "--request", req
    )
    assert rc == 0
    assert json.loads(out)["node"] == 5
    assert "kx_public" in json.loads(Path(req).read_text())
    assert run(capsys, "node-init", "--store", n7, "--node", "7")[0] == 0

    rc, out, _ = run(
        capsys,
        "issue",
        "--store",
        ground,
        "--request",
        req,
        "--not-before",
        "2026-01-01T00:00:00Z",
        "--days",
        "30",
        "--install",
        n5,
    )
    assert rc == 0
    assert "serial 1 for node 5" in out
    assert (
        run(
            capsys,
            "issue",
            "--store",
            ground,
            "--node-store",
            n7,
            "--not-before",
            "2026-01-01T00:00:00Z",
            "--install",
            n7,
        )[0]
        == 0
    )

    # Node 5's store verifies: its certificate is valid under the installed operator key.
    ks5 = KeyStore(n5)
    verify_certificate(
        ks5.read_own_certificate(),
        ks5.read_operator_public(),
        now_ms=ks5.read_own_certificate().not_before_ms + 1,
        node=5,
    )

    # Node 5 learns node 7's certificate, then node 7 is revoked.
    assert (
        run(
            capsys,
            "import",
            "--store",
            n5,
            str(tmp_path / "ground" / "certs" / "7.cert"),
        )[0]
        == 0
    )
    rc, out, _ = run(capsys, "revoke", "--store", ground, "--node", "7")
    assert rc == 0
    assert "version 1" in out
    assert (
        run(
            capsys,
            "import",
            "--store",
            n5,
            str(tmp_path / "ground" / "revocations.cbor"),
        )[0]
        == 0
    )

    rc, out, _ = run(
        capsys, "show", "--store", n5, "--json", "--at", "2026-01-10T00:00:00Z"
    )
    assert rc == 0
    shown = json.loads(out)
    assert shown["node"]["certificate"]["status"] == "valid"
    status = {c["node"]: c["status"] for c in shown["certificates"]}
    assert status == {5: "valid", 7: "revoked"}
    assert shown["revocations"]["nodes"] == [7]
    assert "kx_secret" not in out
    assert KeyStore(n5).read_identity().kx_secret.hex() not in out
    rc, out, _ = run(capsys, "show", "--store", ground, "--json")
    assert rc == 0
    assert json.loads(out)["operator_key"]["key_id"]
    assert KeyStore(ground).read_operator_key().seed.hex() not in out
    # 30 days later node 5's certificate has expired.
    rc, out, _ = run(capsys, "show", "--store", n5, "--at", "2026-03-01T00:00:00Z")
    assert "own certificate serial 1" in out
    assert "expired" in out

    # A second revocation builds on the first (monotonic versions).
    rc, out, _ = run(capsys, "revoke", "--store", ground, "--serial", "1")
    assert "version 2" in out
    assert "nodes [7]" in out


def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ground = str(tmp_path / "g")
    assert run(capsys, "operator-init", "--store", ground)[0] == 0
    rc, _, err = run(capsys, "operator-init", "--store", ground)
    assert rc == 2
    assert err.startswith("error:")
    assert "already exists" in err
    assert len(err.strip().splitlines()) == 1
    os.chmod(tmp_path / "g" / "operator.key", 0o644)
    rc, _, err = run(capsys, "revoke", "--store", ground, "--node", "3")
    assert rc == 2
    assert "chmod 600" in err
    rc, _, err = run(
        capsys,
        "issue",
        "--store",
        ground,
        "--node",
        "3",
        "--sign-key",
        "zz",
        "--kx-key",
        "00",
    )
    assert rc == 2
    assert "not hex" in err


def test_import_refuses_a_certificate_from_another_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, n = (str(tmp_path / d) for d in ("a", "b", "n"))
    run(capsys, "operator-init", "--store", a)
    run(capsys, "operator-init", "--store", b)
    run(capsys, "node-init", "--store", n, "--node", "4")
    run(capsys, "issue", "--store", a, "--node-store", n, "--install", n)
    run(capsys, "issue", "--store", b, "--node-store", n)
    rc, _, err = run(
        capsys, "import", "--store", n, str(tmp_path / "b" / "certs" / "4.cert")
    )
    assert rc == 2
    assert "error:" in err
