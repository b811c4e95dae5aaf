"""A live HDTN against a live ``dtn-node`` on loopback (skipped without HDTN).

Set ``DCIS_HDTN_BUILD`` to an HDTN build directory (the one holding
``common/bpcodec/apps/bpgen-async`` and ``bpsink-async``; HDTN built with
BPSec, its default) to run it. The HDTN-side JSON files are written here from
the field names HDTN's config parser reads; the same runs, recorded once,
are replayed without HDTN by tests/interop/test_hdtn_*.py.

What must hold, over the UDP CL with ``ack = "none"`` (HDTN's bpgen sends
from an ephemeral port):

- HDTN's bpgen, with a BPSec policy that signs (BIB-HMAC-SHA2) and encrypts
  (BCB-AES-GCM, also over the BIB) the payload, reaches our app endpoint:
  our ``[[security.rules]]`` acceptors verify and decrypt with HDTN's hex key
  files;
- our node, with a BCB-AES-GCM source rule over the payload, sends to HDTN's
  bpsink, whose acceptor policy (the same key file) takes the bundle: bpsink
  counts it and logs no BPSec error. (A BIB plus a BCB over payload and BIB
  is refused by HDTN: we write one BCB per target, HDTN wants one BCB over
  both; spec/interop.md section 6.)

Real processes and sockets, no timing assertions.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from dcis.dtn.client import open_trio_client
from dcis.dtn.client.common import ClientError, ReceivedBundle
from tests.runtime.conftest import free_udp_ports

pytestmark = [pytest.mark.interop, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
HDTN_BUILD = os.environ.get("DCIS_HDTN_BUILD", "")
APPS = Path(HDTN_BUILD) / "common" / "bpcodec" / "apps"

if not HDTN_BUILD or not (APPS / "bpgen-async").exists():
    pytest.skip(
        "set DCIS_HDTN_BUILD to an HDTN build directory to run the live HDTN tests",
        allow_module_level=True,
    )


def _keyfile(path: Path) -> Path:
    # HDTN's key file format: hex digits, nothing else
    path.write_text(os.urandom(32).hex())
    path.chmod(0o600)
    return path


def _rule(role: str, service: str, key: Path, **kw: Any) -> dict[str, Any]:
    ctx = "hmacSha" if service == "integrity" else "aesGcm"
    params: list[dict[str, Any]] = [{"paramName": "keyFile", "value": str(key)}]
    for name in ("shaVariant", "aesVariant", "scopeFlags"):
        if name in kw:
            params.append({"paramName": name, "value": kw[name]})
    r: dict[str, Any] = {
        "description": f"{role} {service}",
        "securityPolicyRuleId": 1,
        "securityRole": role,
        "securitySource": kw["ssrc"],
        "bundleSource": [kw["src"]],
        "bundleFinalDestination": [kw["dst"]],
        "securityService": service,
        "securityContext": ctx,
        "securityFailureEventSetReference": "drop",
        "securityContextParams": params,
    }
    r["securityTargetBlockTypes"] = kw["targets"]  # HDTN's acceptors need it too
    return r


def _policy(path: Path, rules: list[dict[str, Any]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "bpsecConfigName": path.stem,
                "policyRules": rules,
                "securityFailureEventSets": [
                    {
                        "name": "drop",
                        "description": "drop",
                        "securityOperationEvents": [
                            {
                                "eventId": "sopCorruptedAtAcceptor",
                                "actions": ["removeSecurityOperationTargetBlock"],
                            }
                        ],
                    }
                ],
            }
        )
    )
    return path


def _write(tmp: Path) -> dict[str, Any]:
    ours, hdtns = free_udp_ports(2)
    hmac = _keyfile(tmp / "hmac.key")
    aes = _keyfile(tmp / "aes.key")
    (tmp / "out.json").write_text(
        json.dumps(
            {
                "outductConfigName": "to dcis",
                "outductVector": [
                    {
                        "name": "to dcis",
                        "convergenceLayer": "udp",
                        "nextHopNodeId": 1,
                        "remoteHostname": "127.0.0.1",
                        "remotePort": ours,
                        "maxNumberOfBundlesInPipeline": 5,
                        "maxSumOfBundleBytesInPipeline": 50_000_000,
                    }
                ],
            }
        )
    )
    (tmp / "in.json").write_text(
        json.dumps(
            {
                "inductConfigName": "from dcis",
                "inductVector": [
                    {
                        "name": "from dcis",
                        "convergenceLayer": "udp",
                        "boundPort": hdtns,
                        "numRxCircularBufferElements": 100,
                        "numRxCircularBufferBytesPerElement": 65535,
                    }
                ],
            }
        )
    )
    h2d = {"ssrc": "ipn:2.1", "src": "ipn:2.1", "dst": "ipn:1.*"}
    _policy(
        tmp / "src.json",
        [
            _rule(
                "source",
                "integrity",
                hmac,
                shaVariant=384,
                scopeFlags=7,
                targets=[1],
                **h2d,
            ),
            _rule(
                "source",
                "confidentiality",
                aes,
                aesVariant=256,
                scopeFlags=7,
                targets=[1, 11],
                **h2d,
            ),
        ],
    )
    d2h = {"ssrc": "ipn:1.1", "src": "ipn:1.*", "dst": "ipn:2.*"}
    _policy(
        tmp / "acc.json",
        [
            _rule("acceptor", "confidentiality", aes, targets=[1], **d2h),
        ],
    )
    (tmp / "node.toml").write_text(
        f"""node = 1
listen = "127.0.0.1:{ours}"
app_socket = "{tmp}/n1.sock"
log_level = "debug"
[store]
path = ":memory:"
[security]
[[security.rules]]
role = "acceptor"
context = "BIB-HMAC-SHA2"
source = "ipn:2.*"
security_source = "ipn:2.1"
key_file = "hmac.key"
[[security.rules]]
role = "acceptor"
context = "BCB-AES-GCM"
source = "ipn:2.*"
security_source = "ipn:2.1"
key_file = "aes.key"
[[security.rules]]
role = "source"
context = "BCB-AES-GCM"
destination = "ipn:2.*"
security_source = "ipn:1.1"
targets = [1]
key_file = "aes.key"
[[neighbours]]
node = 2
address = "127.0.0.1:{hdtns}"
cla = "udp"
ack = "none"
"""
    )
    return {"ours": ours, "hdtns": hdtns}


async def _start_node(tmp: Path) -> trio.Process:
    with (tmp / "n1.log").open("ab") as log:
        proc = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "dcis.tools.dtn_node",
                "--config",
                str(tmp / "node.toml"),
            ],
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
    with trio.move_on_after(30):
        while proc.poll() is None:
            try:
                async with open_trio_client(str(tmp / "n1.sock")) as c:
                    await c.ping()
                return proc
            except ClientError:
                await trio.sleep(0.05)
    proc.kill()
    raise RuntimeError("dtn-node did not start")


async def test_live_hdtn_bpsec_both_ways_over_udp(tmp_path: Path) -> None:
    _write(tmp_path)
    node = await _start_node(tmp_path)
    try:
        async with open_trio_client(str(tmp_path / "n1.sock")) as c:
            await c.register("ipn:1.5")
            # HDTN -> us: two signed and encrypted bundles from bpgen
            with trio.fail_after(60):
                gen = await trio.run_process(
                    [
                        str(APPS / "bpgen-async"),
                        "--use-bp-version-7",
                        "--my-uri-eid=ipn:2.1",
                        "--dest-uri-eid=ipn:1.5",
                        "--bundle-size=64",
                        "--bundle-rate=1",
                        "--duration=2",
                        f"--outducts-config-file={tmp_path / 'out.json'}",
                        f"--bpsec-config-file={tmp_path / 'src.json'}",
                    ],
                    cwd=tmp_path,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            got: list[ReceivedBundle] = []
            with trio.fail_after(60):
                while len(got) < 2:
                    got.append(await c.receive())
            assert gen.returncode == 0, gen.stdout[-2000:]
            for b in got:
                assert b.source == "ipn:2.1"
                assert len(b.payload) == 64  # decrypted: bpgen's plain payload
            # us -> HDTN: bpsink's acceptor policy takes our bundle
            sink_log = tmp_path / "bpsink.log"
            with sink_log.open("wb") as f:
                sink = await trio.lowlevel.open_process(
                    [
                        str(APPS / "bpsink-async"),
                        "--my-uri-eid=ipn:2.1",
                        f"--inducts-config-file={tmp_path / 'in.json'}",
                        f"--bpsec-config-file={tmp_path / 'acc.json'}",
                    ],
                    cwd=tmp_path,
                    stdout=f,
                    stderr=f,
                )
            try:
                await trio.sleep(2)  # bpsink binds its induct
                await c.send(
                    "ipn:2.1",
                    b"DCiS to HDTN, encrypted by a source rule: 0123456789",
                    source="ipn:1.1",
                )
                await trio.sleep(3)
            finally:
                sink.send_signal(signal.SIGINT)
                with trio.fail_after(30):
                    await sink.wait()
    finally:
        node.terminate()
        with trio.move_on_after(10):
            await node.wait()
        if node.poll() is None:
            node.kill()
    text = sink_log.read_text(errors="replace")
    m = re.search(r"m_totalBundlesVersion7Rx: (\d+)", text)
    assert m is not None, text[-3000:]
    assert int(m.group(1)) == 1, text[-3000:]
    assert "bpsec error" not in text, text[-3000:]
