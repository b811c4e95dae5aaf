"""originate_bundle (issue 18: the agent's bundles built without
re-validating each object) gives make_bundle's bundle, or its error, for
any arguments."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.bpv7 import encode_bundle, make_bundle
from dcis.dtn.bpv7.bundle import originate_bundle
from dcis.dtn.bpv7.eid import DTN_NONE, DtnEid, IpnEid
from dcis.dtn.bpv7.flags import BundleFlags, CrcType
from dcis.dtn.errors import DtnError

U64 = 2**64 - 1
_EIDS = st.sampled_from(
    [IpnEid(1, 1), IpnEid(2**40, 7), DtnEid("//a/b"), DTN_NONE, IpnEid(0, 0)]
)
_NUMBERS = st.one_of(st.integers(-3, 3), st.integers(0, U64), st.just(U64 + 1))


def _outcome(fn: object, kw: dict[str, object]) -> object:
    try:
        b = fn(**kw)  # type: ignore[operator]
    except (DtnError, ValueError, TypeError) as exc:
        return type(exc)
    return b, encode_bundle(b)


@given(
    source=_EIDS,
    destination=_EIDS,
    report_to=_EIDS,
    payload=st.binary(max_size=300),
    creation_ms=_NUMBERS,
    sequence=_NUMBERS,
    lifetime_ms=_NUMBERS,
    flags=st.sampled_from(
        [
            BundleFlags.NONE,
            BundleFlags.REPORT_DELIVERY | BundleFlags.MUST_NOT_FRAGMENT,
            BundleFlags.IS_FRAGMENT,
            BundleFlags(1 << 30),
        ]
    ),
    crc_type=st.sampled_from(list(CrcType)),
    hop_limit=st.one_of(st.none(), st.integers(-1, 256)),
)
def test_originate_bundle_is_make_bundle(
    source: object,
    destination: object,
    report_to: object,
    payload: bytes,
    creation_ms: int,
    sequence: int,
    lifetime_ms: int,
    flags: BundleFlags,
    crc_type: CrcType,
    hop_limit: int | None,
) -> None:
    kw: dict[str, object] = {
        "source": source,
        "destination": destination,
        "report_to": report_to,
        "payload": payload,
        "creation_ms": creation_ms,
        "sequence": sequence,
        "lifetime_ms": lifetime_ms,
        "flags": flags,
        "crc_type": crc_type,
        "hop_limit": hop_limit,
    }
    assert _outcome(originate_bundle, kw) == _outcome(make_bundle, kw)
