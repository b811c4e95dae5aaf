"""RFC 9173 Appendix A example bundles: decode to the right fields, re-encode byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcis.dtn.bpv7 import (
    BlockType,
    BundleFlags,
    CrcType,
    IpnEid,
    apply_unprocessable_blocks,
    decode_bundle_untrusted,
    encode_bundle,
)

VECTORS = Path(__file__).with_name("rfc9173_appendix_a.hex")
PAYLOAD_PLAIN = b"Ready to generate a 32-byte payload"


def load_vectors(path: Path) -> dict[str, bytes]:
    """Parse the "== name" / hex-lines format of tests/vectors/*.hex."""
    out: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("== "):
            name = line[3:].strip()
            out[name] = []
        elif line.strip() and name is not None:
            out[name].append(line.strip())
    return {k: bytes.fromhex("".join(v)) for k, v in out.items()}


ALL = load_vectors(VECTORS)
# (block type codes in wire order, payload is plaintext?)
EXPECTED_BLOCKS = {
    "A.1.1": ([1], True),
    "A.1.4": ([11, 1], True),
    "A.2.4": ([12, 1], False),
    "A.3.5": ([11, 12, 7, 1], False),
    "A.4.5": ([11, 12, 1], False),
}


def test_all_five_examples_present() -> None:
    assert [k.split()[0] for k in ALL] == list(EXPECTED_BLOCKS)


@pytest.mark.parametrize("name", list(ALL))
def test_decodes_with_rfc_primary_fields_and_reencodes_byte_for_byte(name: str) -> None:
    raw = ALL[name]
    b = decode_bundle_untrusted(raw)
    p = b.primary
    assert p.version == 7
    assert p.flags == BundleFlags.NONE
    assert p.crc_type == CrcType.NONE
    assert p.destination == IpnEid(1, 2)
    assert p.source == IpnEid(2, 1)
    assert p.report_to == IpnEid(2, 1)
    assert (p.creation.time_ms, p.creation.sequence) == (0, 40)
    assert p.lifetime_ms == 1_000_000
    assert p.fragment_offset is None
    types, plain = EXPECTED_BLOCKS[name.split()[0]]
    assert [blk.type_code for blk in b.blocks] == types
    assert len(b.payload) == len(PAYLOAD_PLAIN)
    assert (b.payload == PAYLOAD_PLAIN) is plain
    assert encode_bundle(b) == raw


def test_bpsec_blocks_are_kept_when_not_processed() -> None:
    b = decode_bundle_untrusted(
        ALL[
            "A.3.5 final bundle (BIB over primary and bundle age, BCB over the payload)"
        ]
    )
    assert b.bundle_age_ms == 300
    bcb = b.block_of_type(BlockType.BCB)
    assert bcb is not None
    assert bcb.number == 4
    v = apply_unprocessable_blocks(b)
    # BCB flag 0x01 (must replicate) only: kept and forwarded unchanged.
    assert v.bundle == b
    assert v.unprocessable == (3, 4)
