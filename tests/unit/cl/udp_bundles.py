"""A real encoded bundle for the UDP CL tests, as ``encode_bundle_parts``
gives it: one buffer, or three from ``GATHER_PAYLOAD_BYTES`` of payload on
(the payload block's data not copied)."""

from __future__ import annotations

import random

from dcis.dtn.bpv7.bundle import encode_bundle_parts, make_bundle


def bundle_parts(size: int) -> tuple[bytes, ...]:
    """The buffers of a bundle with a ``size``-byte payload (random bytes
    seeded by ``size``: the same bundle every time)."""
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=random.Random(size).randbytes(size),
        creation_ms=1_000,
        hop_limit=9,
    )
    return encode_bundle_parts(b)
