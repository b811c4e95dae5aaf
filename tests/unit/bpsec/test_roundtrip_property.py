"""Property: whatever we add with the RFC 9173 contexts, unprotect takes off again."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.crypto import AuthenticationFailed
from dcis.dtn.bpsec import (
    AesVariant,
    ScopeFlags,
    ShaVariant,
    add_bcb_aes_gcm,
    add_bib_hmac_sha2,
    verify_and_decrypt,
)
from dcis.dtn.bpv7 import (
    Bundle,
    CanonicalBlock,
    CrcType,
    IpnEid,
    decode_bundle_untrusted,
    encode_bundle,
    make_bundle,
)


@st.composite
def bundles(draw: st.DrawFn) -> Bundle:
    base = make_bundle(
        source="ipn:2.1",
        destination="ipn:1.2",
        payload=draw(st.binary(max_size=300)),
        creation_ms=draw(st.integers(1, 2**40)),  # 0 would add a bundle age block
        sequence=draw(st.integers(0, 1000)),
        lifetime_ms=1_000_000,
        crc_type=draw(st.sampled_from(list(CrcType))),
    )
    extra = draw(st.lists(st.binary(max_size=20), max_size=2))
    # Extension blocks of types dcis.dtn.bpv7 does not parse: it checks the content
    # of types 6, 7 and 10 on decode, which a BCB's ciphertext would fail.
    first = base.next_block_number()
    blocks = tuple(
        CanonicalBlock(200 + i, first + i, data=d) for i, d in enumerate(extra)
    )
    return Bundle(base.primary, (*blocks, *base.blocks))


keys = st.binary(min_size=16, max_size=16) | st.binary(min_size=32, max_size=32)


@given(
    bundles(),
    st.data(),
    st.sampled_from(list(ShaVariant)),
    st.sampled_from(list(AesVariant)),
    st.sampled_from([ScopeFlags(s) for s in range(8)]),
    st.booleans(),
)
def test_add_then_unprotect_is_identity(
    bundle: Bundle,
    data: st.DataObject,
    sha: ShaVariant,
    aes: AesVariant,
    scope: ScopeFlags,
    wrap: bool,
) -> None:
    numbers = [b.number for b in bundle.blocks]
    bib_targets = data.draw(
        st.lists(st.sampled_from([0, *numbers]), min_size=1, unique=True)
    )
    bcb_targets = data.draw(st.lists(st.sampled_from(numbers), min_size=1, unique=True))
    hmac_key = data.draw(keys)
    aes_key = data.draw(
        st.binary(
            min_size=16 if aes is AesVariant.A128GCM else 32,
            max_size=16 if aes is AesVariant.A128GCM else 32,
        )
    )
    kek = data.draw(keys) if wrap else None
    src = IpnEid(2, 1)
    signed = add_bib_hmac_sha2(
        bundle,
        key=hmac_key,
        source=src,
        targets=bib_targets,
        variant=sha,
        scope=scope,
        kek=kek,
    )
    # RFC 9172 3.9: a BCB over a BIB's target must also cover the BIB.
    bib_number = signed.blocks[0].number
    targets = (
        sorted({*bcb_targets, bib_number})
        if set(bcb_targets) & set(bib_targets)
        else bcb_targets
    )
    sealed = add_bcb_aes_gcm(
        signed,
        key=aes_key,
        source=src,
        targets=targets,
        variant=aes,
        scope=scope,
        kek=kek,
    )
    wire = encode_bundle(sealed)
    key_list = [kek] if kek is not None else [aes_key, hmac_key]
    plain, results = verify_and_decrypt(decode_bundle_untrusted(wire), key_list)
    assert plain == bundle
    # One BIB, and one BCB per encrypted target (RFC 9173 4.3.1: an IV each).
    assert [r.verified for r in results] == [True] * (1 + len(targets))
    if bundle.payload and 1 in targets:
        with pytest.raises(AuthenticationFailed):
            # Keys that differ from the right ones in every byte.
            verify_and_decrypt(
                decode_bundle_untrusted(wire),
                [bytes(x ^ 0x5A for x in k) for k in key_list],
            )
