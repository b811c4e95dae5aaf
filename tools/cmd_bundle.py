"""``dcis bundle decode|encode``: BPv7 bundles to JSON and back.

JSON form (keys fixed by issue 2)::

    {"primary": {"version": 7, "flags": 0, "crc_type": 2,
                 "destination": "ipn:2.1", "source": "ipn:1.1", "report_to": "dtn:none",
                 "creation_time": 1000, "sequence": 0, "lifetime": 86400000,
                 "fragment_offset": 0, "total_adu_length": 9},   # last two only for fragments
     "blocks": [{"type": 1, "number": 1, "flags": 0, "crc_type": 2, "data": "<hex>"}]}

``creation_time`` and ``lifetime`` are milliseconds; ``data`` is the hex of the
block-type-specific data (for the payload block, the payload bytes).

``decode --key HEX`` (repeatable; issue 6): BPSec blocks (RFC 9172) of the
RFC 9173 contexts are verified and decrypted with the keys given (HMAC keys,
AES keys, or key-encryption keys for wrapped content keys; every key is tried
on every block). The JSON then gains ``"security": [{"block": N, "context":
ID, "verified": true}, ...]`` (one entry per security block, BCBs first), the
processed security blocks are removed and the payload block's ``data`` is the
plaintext. A block that fails verification with every key exits 2 with
``error: authentication failed``; a block no key applies to (e.g. our node
contexts, which need node identities) is listed with ``"verified": false``
and left as it was.
"""

from __future__ import annotations

import argparse
import binascii
import json
import sys
from typing import Any

from dcis.crypto.errors import AuthenticationFailed
from dcis.dtn.bpsec import verify_and_decrypt
from dcis.dtn.bpv7 import (
    Bundle,
    CanonicalBlock,
    CreationTimestamp,
    PrimaryBlock,
    decode_bundle_untrusted,
    encode_bundle,
    parse_eid,
)
from dcis.dtn.bpv7.flags import BlockFlags, BundleFlags, CrcType
from dcis.dtn.errors import DecodeError, DtnError
from dcis.tools.cli import CommandError


def register(subparsers: Any) -> None:
    """Add ``bundle decode`` and ``bundle encode``."""
    p = subparsers.add_parser(
        "bundle",
        help="decode/encode BPv7 bundles (JSON)",
        description="BPv7 bundles to JSON and back.\n\nexamples:\n"
        "  dcis bundle decode examples/bundle.bin\n"
        "  dcis bundle decode examples/bundle.bin | dcis bundle encode -o copy.bin",
    )
    sub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    d = sub.add_parser(
        "decode",
        help="bundle bytes -> JSON on stdout",
        description="Print a BPv7 bundle as JSON.\n\nexample:\n  dcis bundle decode examples/bundle.bin",
    )
    d.add_argument(
        "file", nargs="?", default="-", help="input file, '-' for stdin (default)"
    )
    d.add_argument(
        "--hex", action="store_true", help="the input is hex text, not raw bytes"
    )
    d.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="HEX",
        help="verify/decrypt BPSec blocks with this key (HMAC, AES, or AES key "
        "wrap KEK); repeatable",
    )
    d.set_defaults(func=run_decode)
    e = sub.add_parser(
        "encode",
        help="JSON -> bundle bytes on stdout (or -o FILE)",
        description="Build a BPv7 bundle from its JSON (the form decode prints).\n\n"
        "example:\n  dcis bundle encode examples/bundle.json -o bundle.bin",
    )
    e.add_argument(
        "file", nargs="?", default="-", help="input file, '-' for stdin (default)"
    )
    e.add_argument(
        "--hex", action="store_true", help="write hex text instead of raw bytes"
    )
    e.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the bundle to FILE instead of stdout",
    )
    e.set_defaults(func=run_encode)


def _read(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        # Never echo the value: it is a secret.
        raise CommandError("--key: not a hex string") from None
    if len(key) not in (16, 24, 32, 48, 64):
        # AES-128/192/256 and key-wrap KEKs are 16, 24 or 32 bytes; HMAC-SHA2
        # keys here are 32, 48 or 64. A short key is a typo, never a real key.
        raise CommandError(
            f"--key must be 16, 24, 32, 48 or 64 bytes (32..128 hex digits), got {len(key)} bytes"
        )
    return key


def bundle_to_json(b: Bundle) -> dict[str, Any]:
    """The JSON object for ``b`` (keys as in the module docstring)."""
    p = b.primary
    primary: dict[str, Any] = {
        "version": p.version,
        "flags": int(p.flags),
        "crc_type": int(p.crc_type),
        "destination": str(p.destination),
        "source": str(p.source),
        "report_to": str(p.report_to),
        "creation_time": p.creation.time_ms,
        "sequence": p.creation.sequence,
        "lifetime": p.lifetime_ms,
    }
    if p.fragment_offset is not None:
        primary["fragment_offset"] = p.fragment_offset
        primary["total_adu_length"] = p.total_adu_length
    blocks = [
        {
            "type": blk.type_code,
            "number": blk.number,
            "flags": int(blk.flags),
            "crc_type": int(blk.crc_type),
            "data": blk.data.hex(),
        }
        for blk in b.blocks
    ]
    return {"primary": primary, "blocks": blocks}


def _field(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict):
        raise CommandError(f"{where}: expected a JSON object")
    if key not in obj:
        raise CommandError(f"{where}: missing key {key!r}")
    v = obj[key]
    if kind is int and (not isinstance(v, int) or isinstance(v, bool)):
        raise CommandError(
            f"{where}.{key}: expected an integer, got {json.dumps(v)[:40]}"
        )
    if kind is str and not isinstance(v, str):
        raise CommandError(
            f"{where}.{key}: expected a string, got {json.dumps(v)[:40]}"
        )
    return v


PRIMARY_KEYS = frozenset(
    {
        "version",
        "flags",
        "crc_type",
        "destination",
        "source",
        "report_to",
        "creation_time",
        "sequence",
        "lifetime",
        "fragment_offset",
        "total_adu_length",
    }
)
BLOCK_KEYS = frozenset({"type", "number", "flags", "crc_type", "data"})
BUNDLE_KEYS = frozenset({"primary", "blocks", "security"})
"""``security`` is what ``decode --key`` adds; encode ignores it."""


def _no_unknown(obj: dict[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise CommandError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )


def bundle_from_json(obj: Any) -> Bundle:
    """Build a bundle from its JSON object; raises CommandError naming the bad key."""
    p = _field(obj, "primary", dict, "bundle")
    _no_unknown(obj, BUNDLE_KEYS, "bundle")
    blocks_json = _field(obj, "blocks", list, "bundle")
    if not isinstance(p, dict):
        raise CommandError("bundle.primary: expected a JSON object")
    _no_unknown(p, PRIMARY_KEYS, "primary")
    if not isinstance(blocks_json, list):
        raise CommandError("bundle.blocks: expected a list")
    try:
        eids = {
            k: parse_eid(_field(p, k, str, "primary"))
            for k in ("destination", "source", "report_to")
        }
    except DtnError as exc:
        raise CommandError(f"primary: {exc}") from exc
    try:
        primary = PrimaryBlock(
            version=_field(p, "version", int, "primary"),
            flags=BundleFlags(_field(p, "flags", int, "primary")),
            crc_type=CrcType(_field(p, "crc_type", int, "primary")),
            destination=eids["destination"],
            source=eids["source"],
            report_to=eids["report_to"],
            creation=CreationTimestamp(
                _field(p, "creation_time", int, "primary"),
                _field(p, "sequence", int, "primary"),
            ),
            lifetime_ms=_field(p, "lifetime", int, "primary"),
            fragment_offset=_field(p, "fragment_offset", int, "primary")
            if "fragment_offset" in p
            else None,
            total_adu_length=_field(p, "total_adu_length", int, "primary")
            if "total_adu_length" in p
            else None,
        )
    except ValueError as exc:  # InvalidArgument, or an unknown CRC type
        raise CommandError(f"primary: {exc}") from exc
    blocks = []
    for i, bj in enumerate(blocks_json):
        where = f"blocks[{i}]"
        data_hex = _field(bj, "data", str, where)
        _no_unknown(bj, BLOCK_KEYS, where)
        try:
            data = bytes.fromhex(data_hex)
        except ValueError as exc:
            raise CommandError(f"{where}.data: not hex ({exc})") from exc
        try:
            blocks.append(
                CanonicalBlock(
                    _field(bj, "type", int, where),
                    _field(bj, "number", int, where),
                    BlockFlags(_field(bj, "flags", int, where)),
                    CrcType(_field(bj, "crc_type", int, where)),
                    data,
                )
            )
        except ValueError as exc:
            raise CommandError(f"{where}: {exc}") from exc
    try:
        return Bundle(primary, tuple(blocks))
    except ValueError as exc:
        raise CommandError(f"bundle: {exc}") from exc


def run_decode(args: argparse.Namespace) -> int:
    """``dcis bundle decode``: exit 0 and JSON, or exit 2 and one ``error:`` line."""
    raw = _read(args.file)
    if args.hex:
        try:
            raw = binascii.unhexlify(b"".join(raw.split()))
        except (binascii.Error, ValueError) as exc:
            raise CommandError(f"input is not hex: {exc}") from exc
    keys = [_key(k) for k in args.key]
    try:
        b = decode_bundle_untrusted(raw)
    except DecodeError as exc:
        raise CommandError(f"not a valid bundle: {exc}") from exc
    out = bundle_to_json(b)
    if keys:
        try:
            plain, results = verify_and_decrypt(b, keys)
        except AuthenticationFailed as exc:
            # One opaque message whichever block, key or byte failed.
            raise CommandError("authentication failed") from exc
        except DecodeError as exc:
            raise CommandError(f"malformed security block: {exc}") from exc
        out = bundle_to_json(plain)
        out["security"] = [r.as_json() for r in results]
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    """``dcis bundle encode``: JSON in, bundle bytes (or hex with ``--hex``) out."""
    text = _read(args.file)
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CommandError(f"input is not JSON: {exc}") from exc
    b = bundle_from_json(obj)
    raw = encode_bundle(b)
    try:
        # Block data of the types we process (e.g. hop count) must be well formed:
        # refuse to write a bundle that a receiver would reject.
        decode_bundle_untrusted(raw)
    except DecodeError as exc:
        raise CommandError(f"the bundle would not be valid: {exc}") from exc
    out = (raw.hex() + "\n").encode() if args.hex else raw
    if args.output is not None:
        try:
            with open(args.output, "wb") as f:
                f.write(out)
        except OSError as exc:
            raise CommandError(
                f"cannot write {args.output}: {exc.strerror or exc}"
            ) from None
        return 0
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return 0
