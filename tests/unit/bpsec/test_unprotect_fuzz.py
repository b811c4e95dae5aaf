"""Hostile security blocks: unprotect returns, or raises AuthenticationFailed / DecodeError."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from dcis.crypto import AuthenticationFailed, NodeIdentity, OperatorKey
from dcis.dtn.bpsec import AbstractSecurityBlock, KeyRing, encode_asb, unprotect
from dcis.dtn.bpv7 import BlockFlags, Bundle, CanonicalBlock, IpnEid, make_bundle
from dcis.dtn.errors import DecodeError
from tests.unit.bpsec.helpers import certify

ME = NodeIdentity.generate(9, entropy=b"m" * 32)
PEER = NodeIdentity.generate(5, entropy=b"p" * 32)
OP = OperatorKey.generate(entropy=b"o" * 32)
CERT = certify(OP, PEER, not_after_ms=1, serial=1)
RING = KeyRing(keys=(bytes(16), bytes(range(32))), identity=ME, certificates={5: CERT})

values = (
    st.integers(min_value=-(2**64), max_value=2**70)
    | st.binary(max_size=40)
    | st.sampled_from(
        [b"\0" * 12, b"\0" * 16, b"\0" * 24, b"\0" * 64, 2**64, 2**70, -1, 5, 7]
    )
    | st.text(max_size=4)
    | st.none()
    | st.booleans()
)
items = st.lists(st.tuples(st.integers(0, 5), values), min_size=1, max_size=5).map(
    tuple
)


@given(
    st.sampled_from([11, 12]),
    st.sampled_from([1, 2, -101, -102, 7]),
    st.lists(st.sampled_from([0, 1, 2, 3]), min_size=1, max_size=3, unique=True),
    st.none() | items,
    st.data(),
    st.sampled_from([IpnEid(5, 0), IpnEid(6, 0), IpnEid(9, 1)]),
)
def test_hostile_security_blocks(
    kind: int,
    ctx: int,
    targets: list[int],
    params: tuple | None,
    data: st.DataObject,
    source: IpnEid,
) -> None:
    base = make_bundle(
        source="ipn:5.1", destination="ipn:9.1", payload=b"x" * 40, creation_ms=5
    )
    asb = AbstractSecurityBlock(
        targets=tuple(targets),
        context_id=ctx,
        source=source,
        parameters=params,
        results=tuple(data.draw(items) for _ in targets),
    )
    sec = CanonicalBlock(kind, 3, data=encode_asb(asb))
    other = CanonicalBlock(200, 2, data=b"ext")
    bundle = Bundle(base.primary, (sec, other, *base.blocks))
    with contextlib.suppress(AuthenticationFailed, DecodeError):
        unprotect(bundle, RING)


def test_out_of_range_integer_parameters_fail_closed() -> None:
    # Regression: a 70-bit scope value once escaped as OverflowError.
    import pytest

    from dcis.dtn.bpsec import verify_and_decrypt

    base = make_bundle(
        source="ipn:5.1", destination="ipn:9.1", payload=b"x", creation_ms=5
    )
    for ctx, pid in ((1, 1), (1, 3), (2, 2), (2, 4)):
        for value in (2**70, 2**64, -1, "7"):
            asb = AbstractSecurityBlock(
                targets=(1,),
                context_id=ctx,
                source=IpnEid(5, 0),
                parameters=((pid, value), (1, bytes(12)))
                if ctx == 2 and pid != 1
                else ((pid, value),),
                results=(((1, b"t" * 16),),),
            )
            bundle = Bundle(
                base.primary,
                (
                    CanonicalBlock(
                        10 + ctx,
                        3,
                        # RFC 9172 3.8: a BCB over the payload is replicated.
                        BlockFlags.MUST_REPLICATE if ctx == 2 else BlockFlags.NONE,
                        data=encode_asb(asb),
                    ),
                    *base.blocks,
                ),
            )
            with pytest.raises(AuthenticationFailed):
                verify_and_decrypt(bundle, [bytes(16)])
