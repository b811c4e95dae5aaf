"""XChaCha20-Poly1305 (libsodium's ``crypto_aead_xchacha20poly1305_ietf``) with a detached tag.

Same primitive, same library as ``nacl.bindings`` (PyNaCl's bundled
libsodium), called through PyNaCl's own CFFI module when it is importable:
PyNaCl's Python wrapper formats its error messages and zero-fills its output
buffer on every call, ~2.8 us per call, which is half of what sealing a 1 KB
payload costs. Going to the C function directly also lets the ciphertext and
the tag come out as two byte strings with one copy each (our BCB keeps them
apart: the ciphertext replaces the target's data, the tag is a result).

If PyNaCl's CFFI module is not there (a future PyNaCl may move it), the
public ``nacl.bindings`` functions are used; results are identical
(tests/unit/security/test_aead.py).
"""

from __future__ import annotations

from typing import Any, Final

import nacl.bindings
import nacl.exceptions

TAG_BYTES: Final = 16

_ffi: Any = None
_lib: Any = None
try:  # PyNaCl's CFFI binding of libsodium (not a documented API: fall back)
    import nacl._sodium as _sodium

    _ffi = _sodium.ffi
    _lib = _sodium.lib
    _alloc: Any = _ffi.new_allocator(should_clear_after_alloc=False)
    _enc_c: Any = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt
    _dec_c: Any = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt
    _NULL: Any = _ffi.NULL
    _memmove: Any = _ffi.memmove
except (ImportError, AttributeError):  # pragma: no cover -- depends on PyNaCl's layout
    _lib = _ffi = None


class AeadFailed(Exception):
    """The tag did not verify (wrong key, nonce, AAD, or altered bytes)."""


def _check(nonce: bytes, key: bytes) -> None:
    # The C functions read exactly 24 and 32 bytes: shorter inputs would be
    # read past their end. Callers pass derived values, so this never fires
    # on peer input; it guards against our own mistakes.
    if len(nonce) != 24 or len(key) != 32:
        raise ValueError("XChaCha20-Poly1305 needs a 24-byte nonce and a 32-byte key")


def seal_detached(
    message: bytes, aad: bytes, nonce: bytes, key: bytes
) -> tuple[bytes, bytes]:
    """Encrypt ``message``; returns ``(ciphertext, tag)`` (ciphertext as long as message)."""
    _check(nonce, key)
    if _lib is None:  # pragma: no cover
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            message, aad, nonce, key
        )
        return sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    n = len(message)
    out = _alloc("unsigned char[]", n + TAG_BYTES)
    _enc_c(out, _NULL, message, n, aad, len(aad), _NULL, nonce, key)
    buf = _ffi.buffer(out, n + TAG_BYTES)
    ciphertext: bytes = buf[:n]
    tag: bytes = buf[n:]
    return ciphertext, tag


def open_detached(
    ciphertext: bytes, tag: bytes, aad: bytes, nonce: bytes, key: bytes
) -> bytes:
    """Decrypt and verify; returns the plaintext or raises :class:`AeadFailed`."""
    _check(nonce, key)
    if len(tag) != TAG_BYTES:
        raise AeadFailed()
    if _lib is None:  # pragma: no cover
        try:
            plain: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                ciphertext + tag, aad, nonce, key
            )
            return plain
        except nacl.exceptions.CryptoError as exc:
            raise AeadFailed() from exc
    n = len(ciphertext)
    # One buffer holds ciphertext || tag and receives the plaintext in place
    # (libsodium checks the tag before it decrypts): one allocation of the
    # payload's size instead of two, which matters at megabytes.
    buf = _alloc("unsigned char[]", n + TAG_BYTES)
    _memmove(buf, ciphertext, n)
    _memmove(buf + n, tag, TAG_BYTES)
    if _dec_c(buf, _NULL, _NULL, buf, n + TAG_BYTES, aad, len(aad), nonce, key):
        raise AeadFailed()
    result: bytes = _ffi.buffer(buf, n)[:]
    return result
