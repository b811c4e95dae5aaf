"""The crypto package's exception tree (it imports nothing of ours, so it has its own).

- :class:`InvalidArgument` -- our caller's mistake (also a :class:`ValueError`).
- :class:`DecodeError` -- bytes from a peer or a file are malformed. Every
  ``*_untrusted`` function raises only this.
- :class:`AuthenticationFailed` -- one opaque error for every failed
  signature check, MAC check or decryption. It never says which byte, key or
  step failed: an oracle that tells a forger *why* helps the forger.
  :class:`CertificateRejected` is the one subclass with a reason, for checks
  that reveal nothing secret (expired, revoked, wrong node) and that operators
  need in their logs.
- :class:`KeyStoreError` -- a key file is missing, unreadable or unsafe.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every error the crypto package raises on purpose."""


class InvalidArgument(CryptoError, ValueError):
    """A caller passed a value that is not allowed (local error)."""


class DecodeError(CryptoError):
    """Untrusted bytes could not be decoded (remote error).

    ``where`` names the place (e.g. ``"certificate, field not_after_ms"``).
    """

    def __init__(self, what: str, *, where: str | None = None) -> None:
        self.what = what
        self.where = where
        super().__init__(f"{where}: {what}" if where else what)


class AuthenticationFailed(CryptoError):
    """A signature, MAC or AEAD tag did not verify. Deliberately opaque."""

    def __init__(self, message: str = "authentication failed") -> None:
        super().__init__(message)


class CertificateRejected(AuthenticationFailed):
    """A well-signed certificate that policy refuses; ``reason`` is safe to log.

    Reasons: ``"expired"``, ``"not yet valid"``, ``"revoked"``,
    ``"wrong node"``, ``"wrong issuer"``.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"certificate rejected: {reason}")


class KeyStoreError(CryptoError):
    """A key store file is missing, malformed, or has unsafe permissions."""
