"""``[security]`` RFC 9173 rules in node.toml and HDTN's BPSec JSON policy (issue 17):
a symmetric-only node runs without a DCiS key store; two such daemons talk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from dcis.dtn.agent.rfc9173_rules import Role, Service
from dcis.dtn.cl.udp import AckMode
from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node
from dcis.dtn.runtime.config import ConfigError, config_from_dict
from dcis.dtn.runtime.security import NodeSecurity
from tests.runtime.conftest import free_udp_ports

HMAC = "1a2b1a2b1a2b1a2b1a2b1a2b1a2b1a2b"
AES = "71776572747975696f70617364666768" * 2


def keyfile(d: Path, name: str, hexkey: str, mode: int = 0o600) -> str:
    # HDTN's format: the hex digits, no newline
    p = d / name
    p.write_text(hexkey)
    os.chmod(p, mode)
    return name


def test_rules_with_key_ids_and_files_and_no_keystore(tmp_path: Path) -> None:
    keyfile(tmp_path, "hmac.key", HMAC)
    keyfile(tmp_path, "aes.key", AES)
    cfg = config_from_dict(
        {
            "node": 1,
            "security": {
                "keys": {"h": "hmac.key"},
                "rules": [
                    {"role": "source", "context": "BIB-HMAC-SHA2", "destination": "ipn:2.*",
                     "key_id": "h", "sha_variant": 256, "scope_flags": 3},
                    {"role": "source", "context": "BCB-AES-GCM", "destination": ["ipn:2.*"],
                     "key_file": "aes.key", "aes_variant": 256, "targets": [1, 11]},
                ],
            },
        },
        base_dir=tmp_path,
    )  # fmt: skip
    sec = cfg.security
    assert sec is not None
    assert sec.keystore == ""
    r0, r1 = sec.rules
    assert (r0.role, r0.service, r0.sha_variant, r0.scope_flags) == (
        Role.SOURCE,
        Service.INTEGRITY,
        256,
        3,
    )
    assert r0.key == bytes.fromhex(HMAC)
    assert r1.bundle_destination == ("ipn:2.*",)
    assert r1.targets == (1, 11)
    logged: list[Any] = []
    ns = NodeSecurity(sec, node=1, log=lambda *a, **k: logged.append((a, k)))
    assert ns.policy is None
    assert ns.rfc9173 is not None
    assert ns.status()["keystore"] is None


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ({"role": "boss", "context": "BIB-HMAC-SHA2", "key_file": "k"}, "role"),
        ({"role": "source", "context": "ROT13", "key_file": "k"}, "context"),
        ({"role": "source", "context": "BIB-HMAC-SHA2", "key_id": "nope"}, "key_id"),
        ({"role": "source", "context": "BIB-HMAC-SHA2"}, "needs a key"),
        ({"role": "source", "context": "BIB-HMAC-SHA2", "key_file": "k", "sha": 1}, "sha: unknown"),
        ({"role": "source", "context": "BIB-HMAC-SHA2", "key_file": "k", "targets": "1"}, "targets"),
        ({"role": "source", "context": "BCB-AES-GCM", "key_file": "k", "aes_variant": 128}, "16-byte"),
    ],
)  # fmt: skip
def test_bad_rules_name_the_key(
    tmp_path: Path, rule: dict[str, Any], match: str
) -> None:
    keyfile(tmp_path, "k", AES)
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"node": 1, "security": {"rules": [rule]}}, base_dir=tmp_path)


def test_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    keyfile(tmp_path, "k", HMAC, mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        config_from_dict(
            {"node": 1, "security": {"rules": [
                {"role": "acceptor", "context": "BIB-HMAC-SHA2", "key_file": "k"}]}},
            base_dir=tmp_path,
        )  # fmt: skip


def hdtn_policy(tmp: Path) -> str:
    """A policy in HDTN's BPSec JSON layout (written here from its documented keys)."""
    keyfile(tmp, "ipn1.1_integrity.key", HMAC)
    keyfile(tmp, "ipn1.1_confidentiality.key", AES)
    doc = {
        "bpsecConfigName": "test",
        "policyRules": [
            {
                "description": "source integrity",
                "securityPolicyRuleId": 1,
                "securityRole": "source",
                "securitySource": "ipn:1.1",
                "bundleSource": ["ipn:1.1"],
                "bundleFinalDestination": ["ipn:2.1"],
                "securityTargetBlockTypes": [1],
                "securityService": "integrity",
                "securityContext": "hmacSha",
                "securityFailureEventSetReference": "default_integrity",
                "securityContextParams": [
                    {"paramName": "shaVariant", "value": 384},
                    {"paramName": "keyFile", "value": "ipn1.1_integrity.key"},
                    {"paramName": "securityBlockCrc", "value": 0},
                    {"paramName": "scopeFlags", "value": 7},
                ],
            },
            {
                "description": "acceptor confidentiality",
                "securityPolicyRuleId": 2,
                "securityRole": "acceptor",
                "securitySource": "ipn:*.*",
                "bundleSource": ["ipn:*.*"],
                "bundleFinalDestination": ["ipn:*.*"],
                "securityTargetBlockTypes": [1],
                "securityService": "confidentiality",
                "securityContext": "aesGcm",
                "securityContextParams": [
                    {"paramName": "keyFile", "value": "ipn1.1_confidentiality.key"}
                ],
            },
        ],
        "securityFailureEventSets": [],
    }
    (tmp / "bpsec.json").write_text(json.dumps(doc, indent=4))
    return "bpsec.json"


def test_hdtn_policy_json_is_read_as_is(tmp_path: Path) -> None:
    name = hdtn_policy(tmp_path)
    cfg = config_from_dict(
        {"node": 1, "security": {"hdtn_policy": name}}, base_dir=tmp_path
    )
    assert cfg.security is not None
    src, acc = cfg.security.rules
    assert (src.role, src.service, src.security_source) == (
        Role.SOURCE,
        Service.INTEGRITY,
        "ipn:1.1",
    )
    assert src.bundle_destination == ("ipn:2.1",)
    assert acc.role is Role.ACCEPTOR
    assert acc.key == bytes.fromhex(AES)
    (tmp_path / "bad.json").write_text('{"policyRules": [{"securityRole": "source"}]}')
    with pytest.raises(ConfigError, match=r"hdtn_policy: policyRules\[0\]"):
        config_from_dict(
            {"node": 1, "security": {"hdtn_policy": "bad.json"}}, base_dir=tmp_path
        )


async def test_two_symmetric_only_daemons_exchange_protected_bundles(
    tmp_path: Path,
) -> None:
    keyfile(tmp_path, "hmac.key", HMAC)
    keyfile(tmp_path, "aes.key", AES)
    p1, p2 = free_udp_ports(2)
    sec1 = {"rules": [
        {"role": "source", "context": "BIB-HMAC-SHA2", "destination": "ipn:2.*", "key_file": "hmac.key"},
        {"role": "source", "context": "BCB-AES-GCM", "destination": "ipn:2.*", "key_file": "aes.key"},
    ]}  # fmt: skip
    sec2 = {"rules": [
        {"role": "acceptor", "context": "BIB-HMAC-SHA2", "source": "ipn:1.*", "key_file": "hmac.key"},
        {"role": "acceptor", "context": "BCB-AES-GCM", "source": "ipn:1.*", "key_file": "aes.key"},
    ]}  # fmt: skip
    c1 = config_from_dict(
        {
            "node": 1,
            "listen": f"127.0.0.1:{p1}",
            "security": sec1,
            "store": {"path": "n1.db"},
        },
        base_dir=tmp_path,
    )
    c2 = config_from_dict(
        {
            "node": 2,
            "listen": f"127.0.0.1:{p2}",
            "security": sec2,
            "store": {"path": "n2.db"},
        },
        base_dir=tmp_path,
    )
    c1 = NodeConfig(
        **{
            **_fields(c1),
            "neighbours": (
                NeighbourConfig(node=2, address=("127.0.0.1", p2), ack=AckMode.ON),
            ),
        }
    )
    c2 = NodeConfig(
        **{
            **_fields(c2),
            "neighbours": (
                NeighbourConfig(node=1, address=("127.0.0.1", p1), ack=AckMode.ON),
            ),
        }
    )
    async with open_node(c1) as n1, open_node(c2) as n2:
        async with n2.endpoint("ipn:2.5") as inbox:
            with trio.fail_after(30):
                await n1.send("ipn:2.5", b"secret", source="ipn:1.1")
                got = await inbox.receive()
        assert got.payload == b"secret"
        st = n2.status()
        assert st["counters"]["security_rfc9173_accepted"] == 1
        assert n1.status()["counters"]["security_rfc9173_protected"] == 1


def _fields(c: NodeConfig) -> dict[str, Any]:
    return {f: getattr(c, f) for f in c.__dataclass_fields__}
