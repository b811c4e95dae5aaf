"""Where BPSec's nonces and IVs come from (dtn/bpsec, dtn/agent/security.py).

The OS CSPRNG by default -- a regression to a fixed or seeded nonce in a real
node would be caught here -- and an injected ``random_bytes`` source only
when a caller (the simulator) asks for reproducible output.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable

import pytest

from dcis.crypto import NodeIdentity, OperatorKey
from dcis.dtn.agent.security import SecurityPolicy
from dcis.dtn.bpsec import (
    add_bcb_aes_gcm,
    add_bcb_x25519,
    decode_asb_untrusted,
    nacl_contexts,
    process,
    rfc9173,
)
from dcis.dtn.bpv7 import Bundle, encode_bundle, make_bundle
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.flags import BlockType
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.sim import sim_random_bytes
from tests.unit.bpsec.helpers import certify

OP = OperatorKey.generate(entropy=b"rand operator".ljust(32, b"."))
N1 = NodeIdentity.generate(1, entropy=b"rand node 1".ljust(32, b"."))
N2 = NodeIdentity.generate(2, entropy=b"rand node 2".ljust(32, b"."))
KEY = bytes(range(32))
NOW = 5_000_000


CERTS = [certify(OP, N1, not_after_ms=10**10), certify(OP, N2, not_after_ms=10**10)]


def policy(ident: NodeIdentity, **kw: object) -> SecurityPolicy:
    return SecurityPolicy(
        identity=ident,
        operator_public=OP.public_key,
        certificates=CERTS,
        **kw,  # type: ignore[arg-type]
    )


def bundle() -> Bundle:
    return make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"the same plaintext every time " * 4,
        creation_ms=NOW,
        sequence=1,
        lifetime_ms=60_000,
    )


def bcb_params(b: Bundle) -> list[dict[int, object]]:
    return [
        dict(decode_asb_untrusted(blk.data).parameters)
        for blk in b.blocks
        if blk.type_code == BlockType.BCB
    ]


@pytest.mark.parametrize(
    "fn",
    [
        SecurityPolicy.__init__,
        process.add_bcb_x25519,
        process.add_bcb_aes_gcm,
        nacl_contexts.seal_x25519_xchacha,
        nacl_contexts.seal_payload_x25519_xchacha,
        rfc9173.aes_gcm_encrypt,
    ],
)
def test_the_default_source_is_the_os_csprng(fn: Callable[..., object]) -> None:
    assert (
        inspect.signature(fn).parameters["random_bytes"].default is secrets.token_bytes
    )


def test_two_default_policies_seal_the_same_bundle_differently() -> None:
    # A fixed (or seed-derived) nonce prefix in production would make two
    # processes seal equal plaintexts under the same key with the same nonce.
    a = encode_bundle(policy(N1).protect(bundle()))
    b = encode_bundle(policy(N1).protect(bundle()))
    assert a != b
    (pa,) = bcb_params(policy(N1).protect(bundle()))
    (pb,) = bcb_params(policy(N1).protect(bundle()))
    assert pa[1] != pb[1]  # the base nonce


def test_default_bpsec_calls_draw_fresh_nonces_and_ivs() -> None:
    b = bundle()
    x1 = add_bcb_x25519(b, identity=N1, recipient_kx_public=N2.kx_public)
    x2 = add_bcb_x25519(b, identity=N1, recipient_kx_public=N2.kx_public)
    assert encode_bundle(x1) != encode_bundle(x2)
    src = IpnEid(1, 0)
    g1 = add_bcb_aes_gcm(b, key=KEY, source=src)
    g2 = add_bcb_aes_gcm(b, key=KEY, source=src)
    assert bcb_params(g1)[0][1] != bcb_params(g2)[0][1]  # the IV
    assert encode_bundle(g1) != encode_bundle(g2)


def test_an_injected_source_makes_sealing_reproducible() -> None:
    def sealed(seed: int) -> bytes:
        return encode_bundle(
            policy(N1, random_bytes=sim_random_bytes(seed, 1)).protect(bundle())
        )

    assert sealed(3) == sealed(3)
    assert sealed(3) != sealed(4)
    # The prefix is the source's first 16 bytes; the counter follows.
    p = policy(N1, random_bytes=sim_random_bytes(3, 1))
    (params,) = bcb_params(p.protect(bundle()))
    assert params[1] == sim_random_bytes(3, 1)(16) + (1).to_bytes(8, "big")
    # ... and the destination still opens it.
    plain, reason = policy(N2).check(p.protect(bundle()), NOW)
    assert reason is None
    assert plain is not None
    assert plain.payload == bundle().payload


def test_bpsec_functions_use_the_injected_source() -> None:
    b = bundle()
    x = add_bcb_x25519(
        b,
        identity=N1,
        recipient_kx_public=N2.kx_public,
        random_bytes=lambda n: b"\x07" * n,
    )
    assert bcb_params(x)[0][1] == b"\x07" * 24
    # The general path (an explicit block number) too.
    y = add_bcb_x25519(
        b,
        identity=N1,
        recipient_kx_public=N2.kx_public,
        block_number=9,
        random_bytes=lambda n: b"\x08" * n,
    )
    assert bcb_params(y)[0][1] == b"\x08" * 24
    # AES-GCM, one BCB per target: one draw each, distinct IVs.
    draws = iter([b"\x01" * 12, b"\x02" * 12])
    b2 = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"p" * 40,
        creation_ms=NOW,
        sequence=2,
        lifetime_ms=60_000,
        hop_limit=8,
    )
    targets = [blk.number for blk in b2.blocks]
    g = add_bcb_aes_gcm(
        b2,
        key=KEY,
        source=IpnEid(1, 0),
        targets=targets,
        random_bytes=lambda n: next(draws),
    )
    assert sorted(p[1] for p in bcb_params(g)) == [b"\x01" * 12, b"\x02" * 12]


def test_a_source_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        policy(N1, random_bytes=lambda n: b"short")
