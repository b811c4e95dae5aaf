"""``make demo``: shows what has landed. Grows with each layer.

For now: the BPv7 wire format -- build a bundle, encode it, decode it back,
fragment it, reassemble the fragments in a shuffled order, and reject a
corrupted copy with an error that says where.
"""

from __future__ import annotations

import random
import sys

from dtn.bpv7 import (
    BlockFlags,
    BundleFlags,
    CanonicalBlock,
    CrcType,
    decode_bundle_untrusted,
    encode_bundle,
    fragment_bundle,
    make_bundle,
    reassemble,
)
from dtn.errors import DecodeError
from tools.cmd_bundle import bundle_to_json


def main() -> int:
    """Run the demo; returns 0 when every step did what it should."""
    payload = b"Telemetry frame from sat-3: battery 87%, temp 21C. " * 3
    bundle = make_bundle(
        source="ipn:3.1",
        destination="dtn://ground-station/telemetry",
        report_to="ipn:3.0",
        payload=payload,
        creation_ms=785_000_000_000,
        sequence=42,
        lifetime_ms=3_600_000,
        flags=BundleFlags.REPORT_DELIVERY,
        previous_node="ipn:3.0",
        hop_limit=16,
        # an extension block we do not process: kept byte for byte
        extra_blocks=[
            CanonicalBlock(
                192, 5, BlockFlags.MUST_REPLICATE, CrcType.CRC16, b"\x01\x02"
            )
        ],
    )
    raw = encode_bundle(bundle)
    print(
        f"1. encoded a bundle: {len(raw)} bytes, {len(bundle.blocks)} canonical blocks, CRC-32C"
    )
    print(f"   first bytes: {raw[:24].hex()}...")

    back = decode_bundle_untrusted(raw)
    ok = back == bundle and encode_bundle(back) == raw
    print(
        f"2. decoded it: {back.primary.source} -> {back.primary.destination}, hop count {back.hop_count}, round trip {'exact' if ok else 'BROKEN'}"
    )
    j = bundle_to_json(back)
    print(f"   as JSON (dcis bundle decode): primary={j['primary']}")

    frags = fragment_bundle(back, 60)
    print(f"3. fragmented into {len(frags)} bundles of <= 60 payload bytes:")
    for f in frags:
        print(
            f"   offset {f.primary.fragment_offset:>3}, {len(f.payload):>2} bytes, blocks {[b.type_code for b in f.blocks]}"
        )
    wire = [decode_bundle_untrusted(encode_bundle(f)) for f in frags]
    random.Random(7).shuffle(wire)
    whole = reassemble(wire)
    ok_frag = whole == bundle
    print(
        f"4. reassembled from a shuffled order: {'identical to the original' if ok_frag else 'DIFFERENT'}"
    )

    corrupt = bytearray(raw)
    corrupt[raw.index(b"battery") + 2] ^= 0x20
    try:
        decode_bundle_untrusted(bytes(corrupt))
        print("5. a corrupted copy was accepted: BROKEN")
        ok_err = False
    except DecodeError as exc:
        print(f"5. a corrupted copy is rejected: {exc}")
        ok_err = True
    return 0 if ok and ok_frag and ok_err else 1


if __name__ == "__main__":
    sys.exit(main())
