"""encode_bundle_parts joins to encode_bundle's bytes for any valid bundle
(issue 18: the MTCP and UDP senders gather the parts, so the wire must not
change by a byte), and hands a large payload over as the block's own object."""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.bpv7 import Bundle, encode_bundle
from dcis.dtn.bpv7.bundle import (
    GATHER_PAYLOAD_BYTES,
    encode_bundle_parts,
    stored_payload_crc,
)
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.processing import update_for_forwarding
from dcis.dtn.errors import DtnError
from tests.property.bundle_strategies import bundles

# Around the threshold, and well above it (a few are enough: the CBOR heads
# of a payload change at 256 and 65,536 bytes).
_LENGTHS = st.one_of(
    st.integers(0, 300),
    st.integers(GATHER_PAYLOAD_BYTES - 2, GATHER_PAYLOAD_BYTES + 2),
    st.integers(65_530, 65_540),
    st.integers(GATHER_PAYLOAD_BYTES, 200_000),
)


@given(b=bundles(fragment=False), length=_LENGTHS, seed=st.integers(0, 2**32))
def test_parts_join_to_the_encoding(b: Bundle, length: int, seed: int) -> None:
    payload = random.Random(seed).randbytes(length)
    big = Bundle(b.primary, (*b.blocks[:-1], replace(b.blocks[-1], data=payload)))
    forwarded: list[Bundle] = [big]
    # A hop count past 2**64 cannot be forwarded; the bundle still encodes.
    with contextlib.suppress(DtnError):
        forwarded.append(update_for_forwarding(big, node=IpnEid(5, 0), dwell_ms=9))
    # The payload's CRC field as the stored bytes carry it serves every hop.
    crc = stored_payload_crc(big.blocks[-1], encode_bundle(big))
    for bundle in forwarded:
        parts = encode_bundle_parts(bundle)
        assert b"".join(parts) == encode_bundle(bundle)
        reused = encode_bundle_parts(bundle, payload_crc=crc)
        assert b"".join(reused) == encode_bundle(bundle)
        if length >= GATHER_PAYLOAD_BYTES:
            assert len(parts) == 3
            assert parts[1] is bundle.payload
        else:
            assert len(parts) == 1
