"""RFC 9172 structural rules on received security blocks (3.2, 3.7, 3.8) and
on adding them (3.9, 5.2): a bundle that breaks them is malformed."""

from __future__ import annotations

import pytest

from dcis.dtn.bpsec import add_bcb_aes_gcm, add_bib_hmac_sha2, verify_and_decrypt
from dcis.dtn.bpsec.asb import AbstractSecurityBlock, encode_asb
from dcis.dtn.bpv7 import (
    BlockFlags,
    Bundle,
    CanonicalBlock,
    IpnEid,
    decode_bundle_untrusted,
    encode_bundle,
    fragment_bundle,
    make_bundle,
)
from dcis.dtn.errors import DecodeError, InvalidArgument

HMAC_KEY = bytes(range(16))
AES_KEY = bytes(range(32))
SRC = IpnEid(1, 0)


def _plain() -> Bundle:
    return make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"secret payload",
        creation_ms=1000,
        hop_limit=30,
    )


def _sec_block(
    kind: int, number: int, targets: tuple[int, ...], flags: BlockFlags, ctx: int = 1
) -> CanonicalBlock:
    asb = AbstractSecurityBlock(
        targets=targets,
        context_id=ctx,
        source=SRC,
        results=tuple(((1, bytes(16)),) for _ in targets),
    )
    return CanonicalBlock(kind, number, flags, data=encode_asb(asb))


def _with(b: Bundle, *extra: CanonicalBlock) -> Bundle:
    # Through the wire, as a peer would send it.
    return decode_bundle_untrusted(
        encode_bundle(Bundle(b.primary, (*extra, *b.blocks)))
    )


def test_two_bibs_over_one_target_are_malformed() -> None:
    # RFC 9172 3.2: the same service is applied to a target at most once.
    b = add_bib_hmac_sha2(_plain(), key=HMAC_KEY, source=SRC)
    b = _with(b, _sec_block(11, 20, (1,), BlockFlags.NONE))
    with pytest.raises(DecodeError, match="at most once"):
        verify_and_decrypt(b, [HMAC_KEY])


def test_two_bcbs_over_one_target_are_malformed() -> None:
    b = add_bcb_aes_gcm(_plain(), key=AES_KEY, source=SRC)
    b = _with(b, _sec_block(12, 20, (1,), BlockFlags.MUST_REPLICATE))
    with pytest.raises(DecodeError, match="at most once"):
        verify_and_decrypt(b, [AES_KEY])


def test_a_bib_over_another_bib_is_malformed() -> None:
    # RFC 9172 3.7: a BIB never targets a security block (BIB or BCB).
    b = add_bib_hmac_sha2(_plain(), key=HMAC_KEY, source=SRC)
    bib = next(x for x in b.blocks if x.type_code == 11)
    b = _with(b, _sec_block(11, 20, (bib.number,), BlockFlags.NONE))
    with pytest.raises(DecodeError, match="security block"):
        verify_and_decrypt(b, [HMAC_KEY])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # RFC 9172 3.8: else a fragment would carry ciphertext without its BCB.
        (BlockFlags.NONE, "MUST_REPLICATE"),
        # RFC 9172 3.8: discarding the BCB would leave undecryptable ciphertext.
        (BlockFlags.MUST_REPLICATE | BlockFlags.DISCARD_IF_UNPROCESSABLE, "discard"),
    ],
    ids=["without-must-replicate", "discard-if-unprocessable"],
)
def test_a_bcb_with_these_block_flags_is_malformed(
    flags: BlockFlags, message: str
) -> None:
    b = add_bcb_aes_gcm(_plain(), key=AES_KEY, source=SRC)
    blocks = tuple(
        CanonicalBlock(x.type_code, x.number, flags, x.crc_type, x.data)
        if x.type_code == 12
        else x
        for x in b.blocks
    )
    with pytest.raises(DecodeError, match=message):
        verify_and_decrypt(_with(Bundle(b.primary, blocks)), [AES_KEY])


def test_no_bib_added_over_an_encrypted_target() -> None:
    # RFC 9172 3.9: integrity over ciphertext is refused; sign, then encrypt.
    b = add_bcb_aes_gcm(_plain(), key=AES_KEY, source=SRC)
    with pytest.raises(InvalidArgument, match="BCB"):
        add_bib_hmac_sha2(b, key=HMAC_KEY, source=SRC)


def test_no_security_block_added_to_a_fragment() -> None:
    # RFC 9172 5.2: fragments get no new BIB or BCB.
    frag = fragment_bundle(_plain(), 5)[0]
    with pytest.raises(InvalidArgument, match="fragment"):
        add_bib_hmac_sha2(frag, key=HMAC_KEY, source=SRC)
    with pytest.raises(InvalidArgument, match="fragment"):
        add_bcb_aes_gcm(frag, key=AES_KEY, source=SRC)


def test_well_formed_bundles_still_verify() -> None:
    b = add_bib_hmac_sha2(_plain(), key=HMAC_KEY, source=SRC)
    b = add_bcb_aes_gcm(b, key=AES_KEY, source=SRC, targets=(1,))
    out, results = verify_and_decrypt(
        decode_bundle_untrusted(encode_bundle(b)), [HMAC_KEY, AES_KEY]
    )
    assert out.payload == b"secret payload"
    assert all(r.verified for r in results)


def test_x25519_fast_path_applies_the_same_adding_rules() -> None:
    from dcis.crypto.keys import NodeIdentity
    from dcis.dtn.bpsec import add_bcb_x25519

    me = NodeIdentity.generate(1, entropy=b"a" * 32)
    peer = NodeIdentity.generate(2, entropy=b"b" * 32)
    frag = fragment_bundle(_plain(), 5)[0]
    with pytest.raises(InvalidArgument, match="fragment"):
        add_bcb_x25519(frag, identity=me, recipient_kx_public=peer.kx_public)
    sealed = add_bcb_x25519(_plain(), identity=me, recipient_kx_public=peer.kx_public)
    with pytest.raises(InvalidArgument, match="BCB"):
        add_bcb_x25519(sealed, identity=me, recipient_kx_public=peer.kx_public)


@pytest.mark.parametrize("null", ["dtn:none", "ipn:0.0"])
def test_a_null_security_source_is_malformed(null: str) -> None:
    # RFC 9172 3.6: the security source is the node that added the block; the
    # null endpoint has no members, so no node can have added it (Hardy
    # refuses it too).
    from dcis.dtn.bpv7 import parse_eid

    b = _plain()
    asb = AbstractSecurityBlock(
        targets=(1,),
        context_id=1,
        source=parse_eid(null),
        results=(((1, bytes(48)),),),
    )
    b = _with(b, CanonicalBlock(11, 20, BlockFlags.NONE, data=encode_asb(asb)))
    with pytest.raises(DecodeError, match="null"):
        verify_and_decrypt(b, [HMAC_KEY])
    with pytest.raises(InvalidArgument, match="null"):
        add_bib_hmac_sha2(_plain(), key=HMAC_KEY, source=parse_eid(null))


def test_multi_target_aes_gcm_never_reuses_key_and_iv() -> None:
    # RFC 9173 4.3.1: the IV is unique per encryption under a key. A BCB has
    # one IV, so one BCB over two targets encrypts both under the same
    # (key, IV): GCM then leaks the XOR of the plaintexts and its
    # authentication key. Each target gets its own BCB and IV instead.
    from dcis.dtn.bpsec import decode_asb_untrusted

    b = _plain()
    hop = b.block_of_type(10)
    assert hop is not None
    for iv in (None, bytes(12)):
        sealed = add_bcb_aes_gcm(
            b, key=AES_KEY, source=SRC, targets=(hop.number, 1), iv=iv
        )
        bcbs = [x for x in sealed.blocks if x.type_code == 12]
        asbs = [decode_asb_untrusted(x.data) for x in bcbs]
        assert sorted(a.targets for a in asbs) == sorted([(hop.number,), (1,)])
        ivs = {a.parameter(1) for a in asbs}
        assert len(ivs) == 2
        plain, results = verify_and_decrypt(
            decode_bundle_untrusted(encode_bundle(sealed)), [AES_KEY]
        )
        assert plain == b
        assert [r.verified for r in results] == [True, True]
