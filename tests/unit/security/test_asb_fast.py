"""The ASB byte templates for our contexts agree with the general CBOR path.

dtn/bpsec/asb.py encodes and decodes the ASBs of our -101 BCB and -102 BIB
with byte templates (the per-bundle hot path); anything else goes through
cbor2. Both must give the same bytes and the same values.
"""

from __future__ import annotations

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.bpsec import asb as asb_mod
from dcis.dtn.bpsec.asb import AbstractSecurityBlock, decode_asb_untrusted, encode_asb
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.errors import DecodeError

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
# Values around every CBOR integer width boundary.
edgy = st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
uints = st.one_of(u64, edgy)


def _general_encode(a: AbstractSecurityBlock) -> bytes:
    # What encode_asb did before the templates: one cbor2 call.
    seq: list[object] = [
        a.targets,
        a.context_id,
        int(a.flags),
        asb_mod._eid_value(a.source),
    ]
    if a.parameters is not None:
        seq.append(a.parameters)
    seq.append(a.results)
    return cbor2.dumps(seq)[1:]


@st.composite
def ours(draw: st.DrawFn) -> AbstractSecurityBlock:
    bcb = draw(st.booleans())
    return AbstractSecurityBlock(
        targets=(draw(st.integers(0, 40)),),
        context_id=-101 if bcb else -102,
        source=IpnEid(draw(uints), draw(uints)),
        parameters=((1, draw(st.binary(min_size=24, max_size=24))),) if bcb else None,
        results=(
            (
                (
                    1,
                    draw(
                        st.binary(
                            min_size=16 if bcb else 64, max_size=16 if bcb else 64
                        )
                    ),
                ),
            ),
        ),
    )


@given(ours())
def test_template_encoding_is_the_cbor_encoding(a: AbstractSecurityBlock) -> None:
    data = encode_asb(a)
    assert data == _general_encode(a)
    assert decode_asb_untrusted(data) == a
    assert asb_mod._decode(data, "x") == a  # the general decoder agrees


@given(ours(), st.data())
def test_mutated_template_bytes_decode_like_the_general_path(
    a: AbstractSecurityBlock, data: st.DataObject
) -> None:
    raw = bytearray(encode_asb(a))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(raw) - 3, len(raw)))
    mutated = bytes(raw[:cut])
    try:
        general: AbstractSecurityBlock | None = asb_mod._decode(mutated, "x")
    except Exception:
        general = None
    try:
        got: AbstractSecurityBlock | None = decode_asb_untrusted(mutated)
    except DecodeError:
        got = None
    assert got == general


def test_non_shortest_integers_take_the_general_path() -> None:
    a = AbstractSecurityBlock(
        targets=(1,),
        context_id=-102,
        source=IpnEid(5, 0),
        results=(((1, bytes(64)),),),
    )
    raw = encode_asb(a)
    # ipn:5.0 with node 5 written as 0x18 0x05 (legal CBOR, not shortest form).
    widened = raw.replace(b"\x82\x02\x82\x05\x00", b"\x82\x02\x82\x18\x05\x00")
    assert widened != raw
    assert asb_mod._fast_decode(widened) is None
    assert decode_asb_untrusted(widened) == a


def test_other_shapes_are_not_templated() -> None:
    two_targets = AbstractSecurityBlock(
        targets=(1, 2),
        context_id=-102,
        source=IpnEid(5, 0),
        results=(((1, bytes(64)),), ((1, bytes(64)),)),
    )
    assert asb_mod._fast_encode(two_targets) is None
    assert decode_asb_untrusted(encode_asb(two_targets)) == two_targets


def test_fast_seal_gives_the_general_paths_bytes_and_opens_to_the_original() -> None:
    from dcis.crypto import NodeIdentity, OperatorKey
    from dcis.dtn.bpsec import KeyRing, add_bcb_x25519, unprotect
    from dcis.dtn.bpsec.process import _SECURITY_TYPES
    from dcis.dtn.bpv7 import encode_bundle, make_bundle
    from tests.unit.bpsec.helpers import certify

    op = OperatorKey.generate(entropy=b"op".ljust(32, b"."))
    src = NodeIdentity.generate(300, entropy=b"src".ljust(32, b"."))
    dst = NodeIdentity.generate(9, entropy=b"dst".ljust(32, b"."))
    b = make_bundle(
        source="ipn:300.1",
        destination="ipn:9.1",
        payload=b"p" * 77,
        creation_ms=5,
        hop_limit=9,
        bundle_age_ms=3,
    )
    nonce = bytes(range(24))
    fast = add_bcb_x25519(
        b, identity=src, recipient_kx_public=dst.kx_public, nonce=nonce
    )
    general = add_bcb_x25519(
        b,
        identity=src,
        recipient_kx_public=dst.kx_public,
        nonce=nonce,
        block_number=b.next_block_number(),  # forces the general path
    )
    assert encode_bundle(fast) == encode_bundle(general)
    assert fast == general
    cert = certify(op, src, not_after_ms=10, serial=1)
    plain, results = unprotect(fast, KeyRing(identity=dst, certificates={300: cert}))
    assert plain == b
    assert [(r.block, r.verified) for r in results] == [(4, True)]
    assert all(blk.type_code not in _SECURITY_TYPES for blk in plain.blocks)
    # Without the source's certificate: reported, left sealed (general semantics).
    same, results = unprotect(fast, KeyRing(identity=dst))
    assert same == fast
    assert [(r.verified, r.reason) for r in results] == [(False, "uncertified source")]
