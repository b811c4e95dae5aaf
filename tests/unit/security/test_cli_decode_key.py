"""``dcis bundle decode --key HEX`` on RFC 9173 Appendix A (issue 6 item 4).

Vectors: tests/vectors/rfc9173_appendix_a.hex; keys as printed in RFC 9173
Appendix A (https://www.rfc-editor.org/rfc/rfc9173#appendix-A).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcis.tools.cli import main

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "rfc9173_appendix_a.hex"
PLAINTEXT = b"Ready to generate a 32-byte payload"
HMAC_KEY = "1a2b1a2b1a2b1a2b1a2b1a2b1a2b1a2b"
KEK = "6162636465666768696a6b6c6d6e6f70"
AES128 = "71776572747975696f70617364666768"
AES256 = AES128 * 2


def _vectors() -> dict[str, bytes]:
    out: dict[str, list[str]] = {}
    name = None
    for line in VECTORS.read_text().splitlines():
        if line.startswith("== "):
            name = line[3:].split(" ")[0]
            out[name] = []
        elif line.strip() and not line.startswith("#") and name is not None:
            out[name].append(line.strip())
    return {k: bytes.fromhex("".join(v)) for k, v in out.items()}


V = _vectors()

# case -> (vector, keys, expected "security" list)
CASES = {
    "A.1": ("A.1.4", [HMAC_KEY], [{"block": 2, "context": 1, "verified": True}]),
    "A.2": ("A.2.4", [KEK], [{"block": 2, "context": 2, "verified": True}]),
    "A.3": (
        "A.3.5",
        [HMAC_KEY, AES128],
        # BCBs first, then BIBs (RFC 9172 processing order).
        [
            {"block": 4, "context": 2, "verified": True},
            {"block": 3, "context": 1, "verified": True},
        ],
    ),
    "A.4": (
        "A.4.5",
        [AES256, HMAC_KEY],
        [
            {"block": 2, "context": 2, "verified": True},
            {"block": 3, "context": 1, "verified": True},
        ],
    ),
}


def _decode(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: bytes,
    keys: list[str],
) -> tuple[int, str, str]:
    f = tmp_path / "b.bin"
    f.write_bytes(data)
    argv = ["bundle", "decode", str(f)]
    for k in keys:
        argv += ["--key", k]
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("case", sorted(CASES))
def test_vectors_verify_and_payload_becomes_plaintext(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, keys, security = CASES[case]
    rc, out, err = _decode(tmp_path, capsys, V[name], keys)
    assert (rc, err) == (0, "")
    obj = json.loads(out)
    assert obj["security"] == security
    payload = [b for b in obj["blocks"] if b["type"] == 1]
    assert bytes.fromhex(payload[0]["data"]) == PLAINTEXT
    # Processed security blocks are gone: what is left is the RFC's original.
    assert all(b["type"] not in (11, 12) for b in obj["blocks"])


def test_key_order_does_not_matter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = _decode(tmp_path, capsys, V["A.3.5"], [AES128, "00" * 16, HMAC_KEY])
    assert rc == 0
    assert [s["verified"] for s in json.loads(out)["security"]] == [True, True]


def test_without_key_there_is_no_security_key_and_data_is_ciphertext(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = _decode(tmp_path, capsys, V["A.2.4"], [])
    assert rc == 0
    obj = json.loads(out)
    assert "security" not in obj
    payload = next(b for b in obj["blocks"] if b["type"] == 1)
    assert bytes.fromhex(payload["data"]) != PLAINTEXT
    assert [b["type"] for b in obj["blocks"]] == [12, 1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_key_exits_2_with_exactly_authentication_failed(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _, _ = CASES[case]
    rc, out, err = _decode(tmp_path, capsys, V[name], ["00" * 16, "11" * 32])
    assert (rc, out, err) == (2, "", "error: authentication failed\n")


@pytest.mark.parametrize("case", ["A.1", "A.2"])
def test_flipped_payload_bit_exits_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, keys, _ = CASES[case]
    data = bytearray(V[name])
    # The payload's data is the 35 bytes before the closing break; the
    # payload block has no CRC in these vectors, so only BPSec can notice.
    data[-10] ^= 0x04
    rc, out, err = _decode(tmp_path, capsys, bytes(data), keys)
    assert (rc, out, err) == (2, "", "error: authentication failed\n")


def test_bad_hex_key_is_a_one_line_error_that_does_not_echo_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _out, err = _decode(tmp_path, capsys, V["A.1.4"], ["secretzz"])
    assert rc == 2
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "secret" not in err
