"""``dcis bundle decode|encode``: JSON keys, round trip, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dcis.dtn.bpv7 import (
    BundleFlags,
    decode_bundle_untrusted,
    encode_bundle,
    fragment_bundle,
    make_bundle,
)
from dcis.tools.cli import main

ROOT = Path(__file__).resolve().parents[3]
# The installed console script when present (what users run), else the same entry point.
_DCIS = Path(sys.executable).parent / "dcis"
DCIS = (
    [str(_DCIS)]
    if _DCIS.exists()
    else [
        sys.executable,
        "-c",
        "import sys; from dcis.tools.cli import main; sys.exit(main())",
    ]
)


def sample_bytes() -> bytes:
    b = make_bundle(
        source="ipn:1.1",
        destination="dtn://g/in",
        payload=b"hello",
        creation_ms=1000,
        sequence=2,
        hop_limit=5,
    )
    return encode_bundle(fragment_bundle(b, 3)[1])


def test_decode_prints_the_issue_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "b.bin"
    f.write_bytes(sample_bytes())
    assert main(["bundle", "decode", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["primary"] == {
        "version": 7,
        "flags": int(BundleFlags.IS_FRAGMENT),
        "crc_type": 2,
        "destination": "dtn://g/in",
        "source": "ipn:1.1",
        "report_to": "dtn:none",
        "creation_time": 1000,
        "sequence": 2,
        "lifetime": 86_400_000,
        "fragment_offset": 3,
        "total_adu_length": 5,
    }
    assert out["blocks"] == [
        {"type": 1, "number": 1, "flags": 0, "crc_type": 2, "data": b"lo".hex()}
    ]


def test_encode_inverts_decode_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"x" * 40,
            creation_ms=7,
            previous_node="ipn:3.0",
            hop_limit=4,
        )
    )
    (tmp_path / "b.hex").write_text(raw.hex() + "\n")
    assert main(["bundle", "decode", "--hex", str(tmp_path / "b.hex")]) == 0
    (tmp_path / "b.json").write_text(capsys.readouterr().out)
    assert main(["bundle", "encode", "--hex", str(tmp_path / "b.json")]) == 0
    assert bytes.fromhex(capsys.readouterr().out) == raw


def test_stdin_and_raw_stdout_via_subprocess() -> None:
    raw = sample_bytes()
    dec = subprocess.run(
        [*DCIS, "bundle", "decode", "-"],
        input=raw,
        capture_output=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    enc = subprocess.run(
        [*DCIS, "bundle", "encode"],
        input=dec.stdout,
        capture_output=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    assert enc.stdout == raw
    assert decode_bundle_untrusted(enc.stdout).payload == b"lo"


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (
            ["decode"],
            b"\x9f\x00",
            "error: not a valid bundle: primary block, field array: expected an array",
        ),
        (["decode", "--hex"], b"zz", "error: input is not hex"),
        (["decode", "/nonexistent/x"], b"", "error: cannot read /nonexistent/x"),
        (["encode"], b"{", "error: input is not JSON"),
        (["encode"], b"{}", "error: bundle: missing key 'primary'"),
        (
            ["encode"],
            b'{"primary": {}, "blocks": []}',
            "error: primary: missing key 'destination'",
        ),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    argv: list[str], stdin: bytes, message: str
) -> None:
    r = subprocess.run(
        [*DCIS, "bundle", *argv],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 2
    err = r.stderr.decode()
    assert err.count("\n") == 1
    assert err.startswith(message), err
    assert "Traceback" not in err


def _json_for(**changes: object) -> str:
    obj = {
        "primary": {
            "version": 7,
            "flags": 0,
            "crc_type": 1,
            "destination": "ipn:2.1",
            "source": "ipn:1.1",
            "report_to": "dtn:none",
            "creation_time": 5,
            "sequence": 0,
            "lifetime": 1000,
        },
        "blocks": [{"type": 1, "number": 1, "flags": 0, "crc_type": 0, "data": "6869"}],
    }
    obj["primary"].update(changes)  # type: ignore[union-attr]
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 6}, "version must be 7"),
        ({"source": "ipn:x"}, "ipn EID must be"),
        ({"crc_type": 9}, "primary: 9 is not a valid CrcType"),
        ({"lifetime": "long"}, "primary.lifetime: expected an integer"),
        ({"flags": 1}, "IS_FRAGMENT set"),
    ],
)
def test_bad_json_fields_named(
    changes: dict[str, object],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    f = tmp_path / "b.json"
    f.write_text(_json_for(**changes))
    assert main(["bundle", "encode", str(f)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("error: ")


def test_encode_refuses_malformed_hop_count_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = json.loads(_json_for())
    obj["blocks"].insert(
        0, {"type": 10, "number": 2, "flags": 0, "crc_type": 0, "data": "ff"}
    )
    (tmp_path / "b.json").write_text(json.dumps(obj))
    assert main(["bundle", "encode", str(tmp_path / "b.json")]) == 2
    assert "block 2 (type 10), field data" in capsys.readouterr().err
