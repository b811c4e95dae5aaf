"""XChaCha20-Poly1305 straight into and out of our own buffers.

Same primitive and library as ``nacl.bindings`` (PyNaCl's bundled
libsodium), called through PyNaCl's CFFI module when it is importable, as
:mod:`dcis.dtn.bpsec._aead` does: PyNaCl's wrapper wants ``bytes`` (so a chunk
would be sliced out of the object, a copy), zero-fills its output and
returns a fresh string (a second copy). Here a chunk is read in place from
the caller's buffer, sealed into a buffer already padded for zfec, and
opened straight into its place in the object's buffer. Without the CFFI
module (a future PyNaCl may move it) the public functions are used, with the
same results.
"""

from __future__ import annotations

from typing import Any

import nacl.bindings
import nacl.exceptions

from dcis.dfs.core.errors import DecodeError

TAG = 16

_ffi: Any = None
_lib: Any = None
try:  # PyNaCl's CFFI binding of libsodium (not a documented API: fall back)
    import nacl._sodium as _s

    _ffi = _s.ffi
    _lib = _s.lib
    _alloc: Any = _ffi.new_allocator(should_clear_after_alloc=False)
    _enc: Any = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt
    _dec: Any = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt
except (ImportError, AttributeError):  # pragma: no cover -- PyNaCl's layout
    _lib = _ffi = None


def seal_padded(
    message: bytes | memoryview, aad: bytes, nonce: bytes, key: bytes, k: int
) -> memoryview:
    """``message`` sealed (ciphertext || tag), zero-padded to a multiple of
    ``k`` bytes, as a writable view."""
    if len(nonce) != 24 or len(key) != 32:
        raise ValueError("XChaCha20-Poly1305 needs a 24-byte nonce and a 32-byte key")
    n = len(message)
    ct_len = n + TAG
    total = -(-ct_len // k) * k
    if _lib is None:  # pragma: no cover
        ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            bytes(message), aad, nonce, key
        )
        return memoryview(bytearray(ct + bytes(total - ct_len)))
    out = _alloc("unsigned char[]", max(total, 1))
    _enc(
        out,
        _ffi.NULL,
        _ffi.from_buffer(message),
        n,
        aad,
        len(aad),
        _ffi.NULL,
        nonce,
        key,
    )
    view = memoryview(_ffi.buffer(out, total))
    view[ct_len:] = bytes(total - ct_len)
    return view


def new_buffer(size: int) -> memoryview:
    """A writable buffer of ``size`` bytes (not zeroed: every byte is written)."""
    if _lib is None:  # pragma: no cover
        return memoryview(bytearray(size))
    return memoryview(_ffi.buffer(_alloc("unsigned char[]", max(size, 1)), size))


def open_into(out: memoryview, ct: bytes, aad: bytes, nonce: bytes, key: bytes) -> None:
    """Open ``ct`` (ciphertext || tag) into ``out`` (exactly len(ct) - 16
    bytes); DecodeError when the tag fails (``out`` is then untouched)."""
    if len(nonce) != 24 or len(key) != 32 or len(out) != len(ct) - TAG:
        raise DecodeError("bad chunk length, nonce or key")
    if _lib is None:  # pragma: no cover
        try:
            out[:] = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                ct, aad, nonce, key
            )
        except nacl.exceptions.CryptoError as exc:
            raise DecodeError("chunk failed authentication") from exc
        return
    dst = (
        _ffi.from_buffer(out, require_writable=True)
        if len(out)
        else _ffi.new("unsigned char[1]")
    )
    if _dec(dst, _ffi.NULL, _ffi.NULL, ct, len(ct), aad, len(aad), nonce, key):
        raise DecodeError("chunk failed authentication")
