"""dcis keys: operator key, node keys, certificates, revocation, key stores.

Workflow (spec/security.md, "Key management")::

    dcis keys operator-init --store ground/            # once, on the ground
    dcis keys node-init --store n5/ --node 5 --request n5.json   # on node 5
    dcis keys issue --store ground/ --request n5.json --days 365 --install n5/
    dcis keys import --store n5/ ground/certs/*.cert   # peers' certificates
    dcis keys revoke --store ground/ --node 7          # -> ground/revocations.cbor
    dcis keys import --store n5/ ground/revocations.cbor
    dcis keys show --store n5/ [--json]

Private keys are written 0600 and never printed. A store directory holds
operator.key/operator.pub (ground), node.key/node.cert (node),
certs/<N>.cert and revocations.cbor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from dcis.crypto import (
    AuthenticationFailed,
    CertificateRejected,
    CryptoError,
    NodeCertificate,
    NodeIdentity,
    OperatorKey,
    RevocationList,
    decode_certificate_untrusted,
    decode_revocation_list_untrusted,
    issue_certificate,
    issue_revocation_list,
    key_id,
    verify_certificate,
    verify_revocation_list,
)
from dcis.dtn.storage import KeyStore
from dcis.dtn.storage.keystore import OPERATOR_PUB, parse_operator_public
from dcis.dtn.time import DTN_EPOCH_UNIX_S
from dcis.tools.cli import CommandError

MS_PER_DAY = 86_400_000


def register(subparsers: Any) -> None:
    """Add ``keys`` and its actions."""
    p = subparsers.add_parser(
        "keys",
        help="operator key, node keys, certificates, revocation, key stores",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Private keys are created mode 0600 and never printed; a store whose private key is readable by group or others is refused.",
    )
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    a = sub.add_parser(
        "operator-init",
        help="create the operator key (signs certificates and revocation lists)",
        description="Create the operator key (operator.key, 0600) and operator.pub.\n\n"
        "example:\n  dcis keys operator-init --store ground/",
    )
    a.add_argument("--store", required=True, help="key store directory (created 0700)")
    a.add_argument(
        "--force",
        action="store_true",
        help="replace an existing operator key (invalidates every certificate)",
    )
    a.set_defaults(func=run_operator_init)

    a = sub.add_parser(
        "node-init",
        help="create a node's Ed25519 + X25519 keys",
        description="Create a node's keys in its key store.\n\n"
        "example:\n  dcis keys node-init --store n5/ --node 5 --request n5.json",
    )
    a.add_argument("--store", required=True, help="the node's key store directory")
    a.add_argument(
        "--node", required=True, type=int, help="node number (the N of ipn:N.S)"
    )
    a.add_argument(
        "--request",
        metavar="FILE",
        help="also write the public keys (JSON) for the operator to certify",
    )
    a.add_argument("--force", action="store_true", help="replace existing node keys")
    a.set_defaults(func=run_node_init)

    a = sub.add_parser(
        "issue",
        help="certify a node's public keys with the operator key",
        description="Certify a node's public keys with the operator key.\n\n"
        "example:\n  dcis keys issue --store ground/ --request n5.json --days 365 --install n5/",
    )
    a.add_argument(
        "--store", required=True, help="the operator's key store (holds operator.key)"
    )
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--request", metavar="FILE", help="JSON written by 'keys node-init --request'"
    )
    src.add_argument(
        "--node-store",
        metavar="DIR",
        help="read the public keys from a node's store directly",
    )
    src.add_argument(
        "--node", type=int, help="node number (with --sign-key and --kx-key)"
    )
    a.add_argument("--sign-key", metavar="HEX", help="Ed25519 public key (with --node)")
    a.add_argument("--kx-key", metavar="HEX", help="X25519 public key (with --node)")
    a.add_argument(
        "--not-before",
        default="now",
        help="start of validity: 'now', ISO 8601 UTC (2026-11-24T00:00:00Z) or DTN ms (default: now)",
    )
    a.add_argument(
        "--days", type=float, default=365.0, help="validity in days (default 365)"
    )
    a.add_argument(
        "--serial",
        type=int,
        help="certificate serial (default: one above every serial this store issued)",
    )
    a.add_argument("--out", metavar="FILE", help="also write the certificate to FILE")
    a.add_argument(
        "--install",
        metavar="DIR",
        help="install it as DIR/node.cert, with the operator public key",
    )
    a.set_defaults(func=run_issue)

    a = sub.add_parser(
        "revoke",
        help="revoke a node (or one certificate) in a new signed revocation list",
        description="Revoke a node, or one certificate, in a new signed revocation list.\n\n"
        "example:\n  dcis keys revoke --store ground/ --node 5 --out revocations.cbor",
    )
    a.add_argument("--store", required=True, help="the operator's key store")
    a.add_argument(
        "--node",
        type=int,
        action="append",
        default=[],
        help="node number to revoke (repeatable)",
    )
    a.add_argument(
        "--serial",
        type=int,
        action="append",
        default=[],
        help="certificate serial to revoke (repeatable)",
    )
    a.add_argument("--out", metavar="FILE", help="also write the list to FILE")
    a.set_defaults(func=run_revoke)

    a = sub.add_parser(
        "import",
        help="add certificates, a revocation list or the operator public key to a store",
        description="Add certificates, a revocation list or the operator public key to a key store.\n\n"
        "example:\n  dcis keys import --store n3/ revocations.cbor",
    )
    a.add_argument("--store", required=True, help="the receiving key store")
    a.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="*.cert, revocations.cbor or operator.pub files",
    )
    a.set_defaults(func=run_import)

    a = sub.add_parser(
        "show",
        help="what a key store holds, and whether it checks out (no secrets)",
        description="What a key store holds, and whether it checks out (no secrets).\n\n"
        "example:\n  dcis keys show --store n5/ --json",
    )
    a.add_argument("--store", required=True, help="key store directory")
    a.add_argument("--json", action="store_true", help="print JSON instead of text")
    a.add_argument(
        "--at",
        default="now",
        help="judge validity at this time ('now', ISO 8601 UTC or DTN ms)",
    )
    a.set_defaults(func=run_show)


# -- helpers ------------------------------------------------------------------

MAX_DAYS = 36_525
"""Longest certificate validity ``keys issue`` writes: a century."""


def parse_time_ms(text: str) -> int:
    """'now', an ISO 8601 UTC time, or DTN milliseconds -> DTN ms."""
    if text == "now":
        return int((time.time() - DTN_EPOCH_UNIX_S) * 1000)
    if text.isascii() and text.isdigit():
        value = int(text)
        if value >= 2**63:
            raise CommandError(f"time {text} ms is past what a certificate can hold")
        return value
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommandError(
            f"bad time {text!r}: use 'now', ISO 8601 (2026-11-24T00:00:00Z) or DTN milliseconds"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    ms = int((when.timestamp() - DTN_EPOCH_UNIX_S) * 1000)
    if ms < 0:
        raise CommandError(f"{text!r} is before the DTN epoch (2000-01-01T00:00:00Z)")
    return ms


def format_time(ms: int) -> str:
    """DTN ms -> ISO 8601 UTC (a time past year 9999, which a certificate
    from another tool may hold, prints as DTN milliseconds)."""
    try:
        when = dt.datetime.fromtimestamp(DTN_EPOCH_UNIX_S + ms / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"DTN {ms} ms"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hex32(name: str, text: str | None) -> bytes:
    if text is None:
        raise CommandError(f"--node needs {name}")
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise CommandError(f"{name} is not hex") from exc
    if len(raw) != 32:
        raise CommandError(f"{name} must be 32 bytes (64 hex digits), got {len(raw)}")
    return raw


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from exc


def _write_file(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}") from exc


def _store(path: str) -> KeyStore:
    return KeyStore(path)


# -- actions ------------------------------------------------------------------


def run_operator_init(args: argparse.Namespace) -> int:
    """Create operator.key (0600) and operator.pub."""
    ks = _store(args.store)
    try:
        op = OperatorKey.generate()
        ks.write_operator_key(op, overwrite=args.force)
    except CryptoError as exc:
        raise CommandError(str(exc)) from exc
    print(
        f"operator key {op.key_id.hex()} written to {ks.path}/operator.key (0600) and operator.pub"
    )
    return 0


def _public_json(ident: NodeIdentity) -> dict[str, Any]:
    """A node's public keys: the node-init request, and the node entry of ``show``."""
    return {
        "node": ident.node,
        "sign_public": ident.sign_public.hex(),
        "kx_public": ident.kx_public.hex(),
    }


def run_node_init(args: argparse.Namespace) -> int:
    """Create node.key (0600); print (and optionally write) the public keys."""
    ks = _store(args.store)
    try:
        ident = NodeIdentity.generate(args.node)
        ks.write_identity(ident, overwrite=args.force)
    except CryptoError as exc:
        raise CommandError(str(exc)) from exc
    text = json.dumps(_public_json(ident), indent=2) + "\n"
    if args.request:
        _write_file(args.request, text.encode())
    sys.stdout.write(text)
    return 0


def _public_keys(args: argparse.Namespace) -> tuple[int, bytes, bytes]:
    if args.request:
        try:
            req = json.loads(_read_file(args.request))
            node, sign, kx = int(req["node"]), req["sign_public"], req["kx_public"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CommandError(
                f"{args.request}: not a node-init request (need node, sign_public, kx_public)"
            ) from exc
        return node, _hex32("sign_public", sign), _hex32("kx_public", kx)
    if args.node_store:
        try:
            ident = _store(args.node_store).read_identity()
        except CryptoError as exc:
            raise CommandError(str(exc)) from exc
        return ident.node, ident.sign_public, ident.kx_public
    return (
        args.node,
        _hex32("--sign-key", args.sign_key),
        _hex32("--kx-key", args.kx_key),
    )


def run_issue(args: argparse.Namespace) -> int:
    """Sign a certificate; keep it in the operator store's certs/ (the issuer's record)."""
    ks = _store(args.store)
    node, sign, kx = _public_keys(args)
    if not 0 < args.days <= MAX_DAYS:
        raise CommandError(f"--days must be in (0, {MAX_DAYS}], got {args.days:g}")
    not_before = parse_time_ms(args.not_before)
    try:
        op = ks.read_operator_key()
        issued = ks.certificates()
        serial = (
            args.serial
            if args.serial is not None
            else 1 + max((c.serial for c in issued.values()), default=0)
        )
        if any(c.serial == serial and c.node != node for c in issued.values()):
            raise CommandError(
                f"serial {serial} is already used by another certificate of this operator"
            )
        cert = issue_certificate(
            op,
            node=node,
            sign_public=sign,
            kx_public=kx,
            not_before_ms=not_before,
            not_after_ms=not_before + int(args.days * MS_PER_DAY),
            serial=serial,
        )
        path = ks.write_certificate(cert)
        if args.install:
            target = _store(args.install)
            if target.has("node.key") and target.read_identity().node != node:
                raise CommandError(
                    f"{args.install} holds the keys of another node; not installing"
                )
            target.write_certificate(cert, own=True)
            target.write_operator_public(op.public_key, overwrite=True)
    except (CryptoError, ValueError) as exc:  # ValueError: the certificate's checks
        raise CommandError(str(exc)) from exc
    if args.out:
        _write_file(args.out, path.read_bytes())
    print(
        f"certificate serial {cert.serial} for node {node}: valid {format_time(cert.not_before_ms)} .. {format_time(cert.not_after_ms)}, written to {path}"
    )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Issue revocation list version N+1 = the current one plus the new entries."""
    if not args.node and not args.serial:
        raise CommandError("give --node and/or --serial")
    ks = _store(args.store)
    try:
        op = ks.read_operator_key()
        current = ks.read_revocations()
        if current is not None:
            verify_revocation_list(current, op.public_key)
        rl = issue_revocation_list(
            op,
            version=1 if current is None else current.version + 1,
            issued_ms=parse_time_ms("now"),
            nodes=[*(current.nodes if current else ()), *args.node],
            serials=[*(current.serials if current else ()), *args.serial],
        )
        path = ks.write_revocations(rl)
    except AuthenticationFailed as exc:
        raise CommandError(
            f"{ks.path}/revocations.cbor is not signed by this operator key"
        ) from exc
    except (CryptoError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    if args.out:
        _write_file(args.out, path.read_bytes())
    print(
        f"revocation list version {rl.version}: nodes {list(rl.nodes)}, serials {list(rl.serials)}, written to {path}"
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Add files to a store, verifying certificates and lists against its operator key."""
    ks = _store(args.store)
    for name in args.files:
        data = _read_file(name)
        try:
            if name.endswith(".pub") or Path(name).name == OPERATOR_PUB:
                ks.write_operator_public(
                    parse_operator_public(data, name=name), overwrite=True
                )
                print(f"{name}: operator public key installed")
                continue
            op_pub = ks.read_operator_public()
            if name.endswith(".cert"):
                cert = decode_certificate_untrusted(data)
                verify_certificate(
                    cert, op_pub, now_ms=cert.not_before_ms
                )  # signature and issuer; validity is judged at use
                ks.write_certificate(cert)
                print(
                    f"{name}: certificate of node {cert.node} (serial {cert.serial}) imported"
                )
            else:
                rl = decode_revocation_list_untrusted(data)
                verify_revocation_list(rl, op_pub)
                current = ks.read_revocations()
                if current is not None and rl.version <= current.version:
                    print(
                        f"{name}: revocation list version {rl.version} is not newer than version {current.version}; kept the current one"
                    )
                    continue
                ks.write_revocations(rl)
                print(f"{name}: revocation list version {rl.version} imported")
        except CertificateRejected as exc:
            raise CommandError(f"{name}: {exc}") from exc
        except AuthenticationFailed as exc:
            raise CommandError(
                f"{name}: not signed by this store's operator key"
            ) from exc
        except CryptoError as exc:
            raise CommandError(f"{name}: {exc}") from exc
    return 0


def _cert_status(
    cert: NodeCertificate, op_pub: bytes | None, now_ms: int, rl: RevocationList | None
) -> str:
    if op_pub is None:
        return "unchecked (no operator.pub)"
    try:
        verify_certificate(cert, op_pub, now_ms=now_ms, revocations=rl)
    except CertificateRejected as exc:
        return exc.reason
    except AuthenticationFailed:
        return "bad signature"
    return "valid"


def _cert_json(cert: NodeCertificate, status: str) -> dict[str, object]:
    return {
        "node": cert.node,
        "serial": cert.serial,
        "sign_public": cert.sign_public.hex(),
        "kx_public": cert.kx_public.hex(),
        "not_before": format_time(cert.not_before_ms),
        "not_after": format_time(cert.not_after_ms),
        "issuer": cert.issuer.hex(),
        "status": status,
    }


def run_show(args: argparse.Namespace) -> int:
    """Describe a store: which keys, certificates and list it holds, and their status."""
    ks = _store(args.store)
    if not ks.path.is_dir():
        raise CommandError(f"{ks.path} is not a directory")
    now_ms = parse_time_ms(args.at)
    out: dict[str, Any] = {"store": str(ks.path), "at": format_time(now_ms)}
    try:
        op_pub = ks.read_operator_public() if ks.has(OPERATOR_PUB) else None
        if ks.has("operator.key"):
            op = ks.read_operator_key()  # checks the file mode
            out["operator_key"] = {"key_id": op.key_id.hex()}
        out["operator_public"] = (
            None
            if op_pub is None
            else {"key_id": key_id(op_pub).hex(), "public": op_pub.hex()}
        )
        rl = ks.read_revocations()
        if rl is not None and op_pub is not None:
            verify_revocation_list(rl, op_pub)
        out["revocations"] = (
            None
            if rl is None
            else {
                "version": rl.version,
                "issued": format_time(rl.issued_ms),
                "nodes": list(rl.nodes),
                "serials": list(rl.serials),
            }
        )
        if ks.has("node.key"):
            ident = ks.read_identity()
            out["node"] = _public_json(ident)
            if ks.has("node.cert"):
                own = ks.read_own_certificate()
                status = _cert_status(own, op_pub, now_ms, rl)
                if (own.node, own.sign_public, own.kx_public) != (
                    ident.node,
                    ident.sign_public,
                    ident.kx_public,
                ):
                    status = "does not match node.key"
                out["node"]["certificate"] = _cert_json(own, status)
        peers = ks.certificates()
        out["certificates"] = [
            _cert_json(c, _cert_status(c, op_pub, now_ms, rl))
            for _, c in sorted(peers.items())
        ]
    except AuthenticationFailed as exc:
        raise CommandError(
            f"{ks.path}/revocations.cbor is not signed by the operator key"
        ) from exc
    except CryptoError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"key store {out['store']} (at {out['at']})")
    if "operator_key" in out:
        print(f"  operator key        {out['operator_key']['key_id']} (private, 0600)")
    if out["operator_public"]:
        print(f"  operator public key {out['operator_public']['key_id']}")
    if "node" in out:
        n = out["node"]
        print(
            f"  node {n['node']}: sign {n['sign_public'][:16]}.. kx {n['kx_public'][:16]}.."
        )
        if "certificate" in n:
            c = n["certificate"]
            print(
                f"    own certificate serial {c['serial']}, {c['not_before']} .. {c['not_after']}: {c['status']}"
            )
    for c in out["certificates"]:
        print(
            f"  certificate node {c['node']} serial {c['serial']}, {c['not_before']} .. {c['not_after']}: {c['status']}"
        )
    r = out["revocations"]
    print(
        "  revocation list: none"
        if r is None
        else f"  revocation list version {r['version']} ({r['issued']}): nodes {r['nodes']}, serials {r['serials']}"
    )
    return 0
