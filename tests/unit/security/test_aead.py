"""dtn/bpsec/_aead.py: the direct libsodium calls equal PyNaCl's public API."""

from __future__ import annotations

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.bpsec import _aead

KEY = bytes(range(32))
NONCE = bytes(range(100, 124))


@given(st.binary(max_size=3000), st.binary(max_size=200))
def test_detached_seal_is_pynacls_combined_output(msg: bytes, aad: bytes) -> None:
    ct, tag = _aead.seal_detached(msg, aad, NONCE, KEY)
    assert ct + tag == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        msg, aad, NONCE, KEY
    )
    assert _aead.open_detached(ct, tag, aad, NONCE, KEY) == msg


@pytest.mark.parametrize("direct", [True, False])
def test_any_change_fails_and_both_paths_agree(
    direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not direct:
        monkeypatch.setattr(_aead, "_lib", None)  # the public-API fallback
    msg, aad = b"payload bytes" * 5, b"primary block"
    ct, tag = _aead.seal_detached(msg, aad, NONCE, KEY)
    assert _aead.open_detached(ct, tag, aad, NONCE, KEY) == msg
    assert (
        _aead.open_detached(
            b"", *_aead.seal_detached(b"", aad, NONCE, KEY)[1:], aad, NONCE, KEY
        )
        == b""
    )
    flipped = bytes([ct[0] ^ 1]) + ct[1:]
    for args in (
        (flipped, tag, aad, NONCE, KEY),
        (ct, bytes(16), aad, NONCE, KEY),
        (ct, tag[:15], aad, NONCE, KEY),
        (ct, tag, aad + b"x", NONCE, KEY),
        (ct, tag, aad, bytes(24), KEY),
        (ct, tag, aad, NONCE, bytes(32)),
    ):
        with pytest.raises(_aead.AeadFailed):
            _aead.open_detached(*args)


def test_wrong_sizes_of_key_or_nonce_are_refused() -> None:
    with pytest.raises(ValueError, match="24-byte nonce"):
        _aead.seal_detached(b"x", b"", NONCE[:23], KEY)
    with pytest.raises(ValueError, match="32-byte key"):
        _aead.open_detached(b"x", bytes(16), b"", NONCE, KEY[:31])
