"""RFC 9173 bundles recorded from a live HDTN, both ways (tests/vectors/hdtn_bpsec.hex).

HDTN's bpgen signed (BIB-HMAC-SHA2 256/384/512, scope 7 and 0) and
encrypted (BCB-AES-GCM 256, over the payload and over its own BIB) under
BPSec JSON policies; our node took them with ``[[security.rules]]``
acceptors reading the same hex key files. What must hold without HDTN:

- our acceptor rules, built from node.toml tables and from an HDTN policy
  JSON with HDTN's key files, verify and decrypt every HDTN bundle to
  bpgen's 64-byte payload (its sequence numbers consecutive);
- one flipped byte, or another key, and the bundle is refused;
- the bundles we sent that HDTN's bpsink accepted (a BIB; a BCB over the
  payload) are what our source rules make, and our own acceptor takes them;
  the one bpsink refused (one BCB per target) is recorded as such.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.agent.rfc9173_rules import Rfc9173Policy
from dcis.dtn.bpsec.asb import decode_asb_untrusted
from dcis.dtn.bpv7 import StatusReason, decode_bundle_untrusted, encode_bundle
from dcis.dtn.bpv7.flags import BlockType
from dcis.dtn.runtime.security import parse_security
from tests.interop.ion_vectors import load

pytestmark = pytest.mark.interop

V = load("hdtn_bpsec.hex")
# the run's keys, from the vector file's header (HDTN's key-file format)
HMAC_HEX = "cd08da29276d183b321a173bee3cefad5dcf27cd90e9b7251ec96b4fec563b43"
AES_HEX = "f86e589cd628eb879f31aca2852a024732d7d9181881acc20e10f71bbaa5a935"
RUNS = {
    "g_int256": ["int"],
    "g_int512": ["int"],
    "g_con256": ["con"],
    "g_conint": ["con", "int"],
}


def _run(tag: str) -> list[bytes]:
    return [v for k, v in V.items() if k.split()[0].rsplit("-", 1)[0] == tag]


def _keys(d: Path, hmac: str = HMAC_HEX, aes: str = AES_HEX) -> None:
    for name, hexkey in (("hmac.key", hmac), ("aes.key", aes)):
        (d / name).write_text(hexkey)  # as HDTN writes them: hex, no newline
        os.chmod(d / name, 0o600)


def _acceptors(
    d: Path,
    kinds: list[str],
    src: str = "ipn:2.*",
    hmac: str = HMAC_HEX,
    aes: str = AES_HEX,
) -> Rfc9173Policy:
    _keys(d, hmac, aes)
    rules: list[dict[str, Any]] = []
    for k in kinds:
        rules.append(
            {
                "role": "acceptor",
                "context": "BIB-HMAC-SHA2" if k == "int" else "BCB-AES-GCM",
                "source": src,
                "security_source": src,
                "key_file": "hmac.key" if k == "int" else "aes.key",
            }
        )
    cfg = parse_security({"rules": rules}, base_dir=d)
    return Rfc9173Policy(cfg.rules, node=1)


def test_the_header_keys_are_the_files_the_run_used() -> None:
    text = (Path(__file__).parent.parent / "vectors" / "hdtn_bpsec.hex").read_text()
    assert f"hmac.key = {HMAC_HEX}" in text
    assert f"aes.key  = {AES_HEX}" in text


@pytest.mark.parametrize("tag", list(RUNS))
def test_every_hdtn_bundle_reencodes_byte_for_byte(tag: str) -> None:
    for data in _run(tag):
        assert encode_bundle(decode_bundle_untrusted(data)) == data


@pytest.mark.parametrize("tag", list(RUNS))
def test_our_acceptor_rules_verify_and_decrypt_hdtns_bundles(
    tag: str, tmp_path: Path
) -> None:
    policy = _acceptors(tmp_path, RUNS[tag])
    seqs = []
    for data in _run(tag):
        b = decode_bundle_untrusted(data)
        plain, reason = policy.check(b, now=b.primary.creation.time_ms + 10)
        assert reason is None, policy.last_rejection
        assert plain is not None
        assert not any(
            c.type_code in (BlockType.BIB, BlockType.BCB) for c in plain.blocks
        )
        assert len(plain.payload) == 64
        if "con" in RUNS[tag]:
            assert plain.payload != b.payload  # it was encrypted
        seqs.append(struct.unpack_from("<Q", plain.payload)[0])
    assert len(seqs) == 3
    assert seqs == [seqs[0] + i for i in range(3)]


def test_hdtn_encrypts_its_bib_and_payload_in_one_bcb() -> None:
    for data in _run("g_conint"):
        b = decode_bundle_untrusted(data)
        bcbs = [c for c in b.blocks if c.type_code == BlockType.BCB]
        assert len(bcbs) == 1
        asb = decode_asb_untrusted(bcbs[0].data)
        bib = next(c.number for c in b.blocks if c.type_code == BlockType.BIB)
        # one BCB, one IV, over the BIB and the payload (RFC 9173 A.4's shape)
        assert asb.targets == (1, bib)


def test_an_hdtn_policy_json_reads_the_same_way(tmp_path: Path) -> None:
    _keys(tmp_path)

    def rule(service: str, key: str) -> dict[str, Any]:
        return {
            "securityRole": "acceptor",
            "securitySource": "ipn:2.1",
            "bundleSource": ["ipn:2.*"],
            "bundleFinalDestination": ["ipn:1.*"],
            "securityTargetBlockTypes": [1],
            "securityService": service,
            "securityContext": "hmacSha" if service == "integrity" else "aesGcm",
            "securityContextParams": [{"paramName": "keyFile", "value": key}],
        }

    (tmp_path / "acc.json").write_text(
        json.dumps(
            {
                "policyRules": [
                    rule("confidentiality", "aes.key"),
                    rule("integrity", "hmac.key"),
                ]
            }
        )
    )
    cfg = parse_security({"hdtn_policy": "acc.json"}, base_dir=tmp_path)
    policy = Rfc9173Policy(cfg.rules, node=1)
    for data in _run("g_conint"):
        b = decode_bundle_untrusted(data)
        plain, reason = policy.check(b, now=b.primary.creation.time_ms)
        assert reason is None, policy.last_rejection
        assert plain is not None
        assert len(plain.payload) == 64


@pytest.mark.parametrize("tag", list(RUNS))
def test_a_flipped_byte_or_another_key_is_refused(tag: str, tmp_path: Path) -> None:
    b = decode_bundle_untrusted(_run(tag)[0])
    # flip the last bit of the payload (ciphertext or plaintext); the block CRC
    # is recomputed, as a corrupting relay would
    bad = dataclasses.replace(
        b,
        blocks=tuple(
            dataclasses.replace(c, data=c.data[:-1] + bytes([c.data[-1] ^ 1]))
            if c.type_code == BlockType.PAYLOAD
            else c
            for c in b.blocks
        ),
    )
    bad = decode_bundle_untrusted(encode_bundle(bad))
    policy = _acceptors(tmp_path, RUNS[tag])
    got, reason = policy.check(bad, now=0)
    assert got is None
    assert reason is StatusReason.FAILED_SECURITY_OPERATION
    other = tmp_path / "other"
    other.mkdir()
    wrong = _acceptors(other, RUNS[tag], hmac="11" * 32, aes="22" * 32)
    got, reason = wrong.check(b, now=0)
    assert got is None
    assert reason is StatusReason.FAILED_SECURITY_OPERATION


@pytest.mark.parametrize(
    ("tag", "kinds"),
    [("s_int", ["int"]), ("s_neg", ["int"]), ("s_con", ["con"])],
)
def test_what_hdtn_accepted_from_us_our_acceptor_takes_too(
    tag: str, kinds: list[str], tmp_path: Path
) -> None:
    (data,) = _run(tag)
    assert encode_bundle(decode_bundle_untrusted(data)) == data
    b = decode_bundle_untrusted(data)
    policy = _acceptors(tmp_path, kinds, src="ipn:1.*")
    plain, reason = policy.check(b, now=b.primary.creation.time_ms)
    assert reason is None, policy.last_rejection
    assert plain is not None
    assert plain.payload.startswith(b"DCiS node 1 to HDTN bpsink")
    bcbs = [c for c in b.blocks if c.type_code == BlockType.BCB]
    assert len(bcbs) == (1 if kinds == ["con"] else 0)


def test_what_hdtn_refused_one_bcb_per_target() -> None:
    """bpsink wanted one BCB over payload and BIB ("missing_mask=2048d"): we
    write one BCB per target, each with its own IV (dcis.dtn.bpsec.process,
    never one AES-GCM IV for two plaintexts). Recorded so a change to either
    side shows here; spec/interop.md section 6 says how to configure around it."""
    (data,) = _run("s_conint")
    b = decode_bundle_untrusted(data)
    bcbs = [c for c in b.blocks if c.type_code == BlockType.BCB]
    assert len(bcbs) == 2
    assert sorted(len(decode_asb_untrusted(c.data).targets) for c in bcbs) == [1, 1]
