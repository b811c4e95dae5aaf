"""RFC 9173 Appendix A: the four example bundles verify and decrypt.

Vectors: the final bundles of A.1.4, A.2.4, A.3.5 and A.4.5 in
tests/vectors/rfc9173_appendix_a.hex (shared with the bpv7 codec tests); the
keys below are the ones RFC 9173 prints next to them
(https://www.rfc-editor.org/rfc/rfc9173#appendix-A): A.1/A.3/A.4 HMAC key,
A.2 key-encryption key (the content key travels wrapped), A.3 AES-128 key,
A.4 AES-256 key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dcis.crypto import AuthenticationFailed
from dcis.dtn.bpsec import (
    BCB_AES_GCM,
    BIB_HMAC_SHA2,
    decode_asb_untrusted,
    encode_asb,
    verify_and_decrypt,
)
from dcis.dtn.bpv7 import BlockType, IpnEid, decode_bundle_untrusted, encode_bundle
from dcis.dtn.errors import DecodeError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "rfc9173_appendix_a.hex"
PLAINTEXT = b"Ready to generate a 32-byte payload"
HMAC_KEY = bytes.fromhex("1a2b1a2b1a2b1a2b1a2b1a2b1a2b1a2b")
KEK = bytes.fromhex("6162636465666768696a6b6c6d6e6f70")
AES128 = bytes.fromhex("71776572747975696f70617364666768")
AES256 = AES128 + AES128
# Bundle ages and plain payload of the original bundles (A.*.1).
ORIGINAL_HEX = (  # A.1.1.3, the same for A.2 and A.4
    "9f88070000820282010282028202018202820201820018281a000f424085010100"
    "005823526561647920746f2067656e657261746520612033322d6279746520706179"
    "6c6f6164ff"
)
ORIGINAL = bytes.fromhex(ORIGINAL_HEX)
ORIGINAL_A3 = bytes.fromhex(  # A.3.1.4
    "9f88070000820282010282028202018202820201820018281a000f424085070200"
    "004319012c85010100005823526561647920746f2067656e65726174652061203332"
    "2d62797465207061796c6f6164ff"
)


def _load_all() -> dict[str, bytes]:
    # Format of tests/vectors/*.hex: "== <name>" then hex lines; "#" comments.
    out: dict[str, list[str]] = {}
    name = None
    for line in VECTORS.read_text().splitlines():
        if line.startswith("== "):
            name = line[3:].split(" ")[0]  # "A.1.4"
            out[name] = []
        elif line.strip() and not line.startswith("#") and name is not None:
            out[name].append(line.strip())
    return {k: bytes.fromhex("".join(v)) for k, v in out.items()}


ALL = _load_all()


def load(name: str) -> bytes:
    return ALL[name]


CASES = {
    "a1": ("A.1.4", [HMAC_KEY], ORIGINAL),
    "a2": ("A.2.4", [KEK], ORIGINAL),
    "a3": ("A.3.5", [HMAC_KEY, AES128], ORIGINAL_A3),
    "a4": ("A.4.5", [AES256, HMAC_KEY], ORIGINAL),
}


def test_original_bundle_matches_the_shared_vector_file() -> None:
    assert load("A.1.1") == ORIGINAL


@pytest.mark.parametrize("case", sorted(CASES))
def test_vector_bundles_decode_and_reencode_byte_for_byte(case: str) -> None:
    data = load(CASES[case][0])
    bundle = decode_bundle_untrusted(data)
    assert encode_bundle(bundle) == data
    for block in bundle.blocks:
        if block.type_code in (11, 12) and not (case == "a4" and block.type_code == 11):
            # The A.4 BIB is encrypted; every other ASB round-trips exactly.
            assert encode_asb(decode_asb_untrusted(block.data)) == block.data


@pytest.mark.parametrize("case", sorted(CASES))
def test_vector_verifies_and_decrypts_to_the_original_bundle(case: str) -> None:
    name, keys, original = CASES[case]
    plain, results = verify_and_decrypt(decode_bundle_untrusted(load(name)), keys)
    assert plain.payload == PLAINTEXT
    assert all(r.verified for r in results)
    # Once every security block is processed and removed, what is left is the
    # RFC's original bundle, byte for byte.
    assert encode_bundle(plain) == original


def test_a1_reports_the_bib() -> None:
    _, results = verify_and_decrypt(decode_bundle_untrusted(load("A.1.4")), [HMAC_KEY])
    assert [r.as_json() for r in results] == [
        {"block": 2, "context": BIB_HMAC_SHA2, "verified": True}
    ]
    assert results[0].source == IpnEid(2, 1)


def test_a3_bib_from_a_waypoint_covers_primary_and_age_block() -> None:
    _, results = verify_and_decrypt(
        decode_bundle_untrusted(load("A.3.5")), [HMAC_KEY, AES128]
    )
    by_block = {r.block: r for r in results}
    assert by_block[3].context == BIB_HMAC_SHA2
    assert by_block[3].targets == (0, 2)
    assert by_block[3].source == IpnEid(3, 0)
    assert by_block[4].context == BCB_AES_GCM


def test_a4_bcb_reveals_the_bib_it_encrypted() -> None:
    _, results = verify_and_decrypt(
        decode_bundle_untrusted(load("A.4.5")), [AES256, HMAC_KEY]
    )
    assert [(r.block, r.block_type, r.verified) for r in results] == [
        (2, 12, True),
        (3, 11, True),
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_or_missing_key_fails_closed(case: str) -> None:
    name, _, _ = CASES[case]
    bundle = decode_bundle_untrusted(load(name))
    with pytest.raises(AuthenticationFailed):
        verify_and_decrypt(bundle, [bytes(16), bytes(32)])


def test_no_keys_leaves_blocks_unverified() -> None:
    bundle = decode_bundle_untrusted(load("A.2.4"))
    same, results = verify_and_decrypt(bundle, [])
    assert same == bundle
    assert [(r.verified, r.reason) for r in results] == [(False, "no key")]


def _protected_spans(case: str, data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the blocks a case protects, located in the encoded bundle."""
    bundle = decode_bundle_untrusted(data)
    spans = []
    primary = data[1 : data.index(bytes.fromhex("1a000f4240")) + 5]
    from dcis.dtn.bpv7.canonical import encode_block

    for b in bundle.blocks:
        enc = encode_block(b)
        start = data.index(enc)
        if case in ("a1", "a2") and b.type_code == BlockType.PAYLOAD:
            # Scope 0: the target's data is protected, not its header.
            spans.append((start + len(enc) - len(b.data), start + len(enc)))
        elif case == "a3" and b.type_code in (BlockType.PAYLOAD, BlockType.BUNDLE_AGE):
            spans.append((start + len(enc) - len(b.data), start + len(enc)))
        elif case == "a4" and b.type_code in (BlockType.PAYLOAD, 11):
            spans.append((start, start + len(enc)))  # full scope: header and data
    if case in ("a3", "a4"):
        spans.append((1, 1 + len(primary)))  # the primary block is a target / in scope
    return spans


@pytest.mark.parametrize("case", sorted(CASES))
def test_flipping_any_bit_of_a_protected_block_fails(case: str) -> None:
    name, keys, _ = CASES[case]
    data = load(name)
    spans = _protected_spans(case, data)
    assert spans
    flips = 0
    for start, end in spans:
        for i in range(start * 8, end * 8):
            bad = bytearray(data)
            bad[i // 8] ^= 1 << (i % 8)
            flips += 1
            try:
                bundle = decode_bundle_untrusted(bytes(bad))
            except DecodeError:
                continue  # dropped before any security processing
            with pytest.raises((AuthenticationFailed, DecodeError)):
                verify_and_decrypt(bundle, keys)
    assert flips >= 35 * 8


@pytest.mark.parametrize("case", ["a1", "a2"])
def test_flipping_the_security_result_fails_authentication(case: str) -> None:
    name, keys, _ = CASES[case]
    data = load(name)
    bundle = decode_bundle_untrusted(data)
    sec = bundle.blocks[0]
    # The MAC / tag is the last bytes of the ASB (the final result's byte string).
    n = 64 if case == "a1" else 16
    tail = data.index(sec.data) + len(sec.data)
    for i in range((tail - n) * 8, tail * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(AuthenticationFailed):
            verify_and_decrypt(decode_bundle_untrusted(bytes(bad)), keys)
