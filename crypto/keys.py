"""Node identities and the operator key: Ed25519 signing, X25519 agreement.

A node has two key pairs (spec/design.md, crypto): an Ed25519 key that signs
(RFC 8032) and an X25519 key (RFC 7748) that agrees a symmetric key with
another node. They are separate keys, never one key converted to the other,
so that a flaw in one use cannot leak into the other.

Secrets are bytes held in frozen dataclasses with ``repr=False`` so that a log
line or a traceback never prints them.

Key generation reads the operating system's CSPRNG (through PyNaCl/libsodium
or ``secrets.token_bytes``) unless the caller passes ``entropy`` (tests, reproducible
fixtures). That is the one exception to "randomness is a parameter": keys from
a seeded ``random.Random`` would be guessable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

from dcis.crypto.errors import AuthenticationFailed, InvalidArgument

PUBLIC_KEY_BYTES = 32
SECRET_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_ID_BYTES = 8


def _derive(entropy: bytes, purpose: bytes) -> bytes:
    # BLAKE2b with a personalisation string: one secret input, independent
    # outputs per purpose (RFC 7693; "person" is at most 16 bytes).
    return hashlib.blake2b(entropy, digest_size=32, person=purpose).digest()


def _entropy(entropy: bytes | None) -> bytes:
    if entropy is None:
        return secrets.token_bytes(64)
    if len(entropy) < 32:
        raise InvalidArgument(f"entropy must be at least 32 bytes, got {len(entropy)}")
    return bytes(entropy)


def key_id(public_key: bytes) -> bytes:
    """A short (8-byte) fingerprint of a public key, for display and lookup."""
    return hashlib.blake2b(
        public_key, digest_size=KEY_ID_BYTES, person=b"dcis-key-id"
    ).digest()


def _check_len(name: str, value: object, n: int) -> None:
    if not isinstance(value, bytes) or len(value) != n:
        raise InvalidArgument(f"{name} must be {n} bytes")


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 ``signature`` over ``message``.

    Raises :class:`AuthenticationFailed` when it does not verify (including a
    malformed key or signature: which of these it was is nobody's business).
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise AuthenticationFailed()
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (
        nacl.exceptions.BadSignatureError,
        nacl.exceptions.ValueError,
        ValueError,
    ) as exc:
        raise AuthenticationFailed() from exc


@dataclass(frozen=True, slots=True)
class OperatorKey:
    """The constellation operator's Ed25519 key; it signs node certificates and
    revocation lists. Keep it on the ground; nodes hold only its public half."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_len("seed", self.seed, SECRET_KEY_BYTES)

    @classmethod
    def generate(cls, *, entropy: bytes | None = None) -> OperatorKey:
        """A new operator key (from the OS CSPRNG unless ``entropy`` is given)."""
        return cls(seed=_derive(_entropy(entropy), b"dcis-operator"))

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return bytes(nacl.signing.SigningKey(self.seed).verify_key)

    @property
    def key_id(self) -> bytes:
        """8-byte fingerprint of :attr:`public_key`."""
        return key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over ``message``."""
        return bytes(nacl.signing.SigningKey(self.seed).sign(message).signature)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's private keys: Ed25519 (``signing_seed``) and X25519 (``kx_secret``).

    ``node`` is the node number (the ``N`` of ``ipn:N.S``).
    """

    node: int
    signing_seed: bytes = field(repr=False)
    kx_secret: bytes = field(repr=False)
    _signer: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    _kx_public: bytes = field(init=False, repr=False, compare=False)
    _agreed: dict[bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        node: object = self.node
        if (
            not isinstance(node, int)
            or isinstance(node, bool)
            or not 0 < node < 1 << 64
        ):
            raise InvalidArgument(
                f"node must be an integer in 1..2**64-1, got {self.node!r}"
            )
        _check_len("signing_seed", self.signing_seed, SECRET_KEY_BYTES)
        _check_len("kx_secret", self.kx_secret, SECRET_KEY_BYTES)
        # Derived once: signing and agreement run per bundle.
        object.__setattr__(self, "_signer", nacl.signing.SigningKey(self.signing_seed))
        object.__setattr__(
            self, "_kx_public", nacl.bindings.crypto_scalarmult_base(self.kx_secret)
        )
        object.__setattr__(self, "_agreed", {})

    @classmethod
    def generate(cls, node: int, *, entropy: bytes | None = None) -> NodeIdentity:
        """New keys for ``node`` (from the OS CSPRNG unless ``entropy`` is given)."""
        e = _entropy(entropy)
        return cls(
            node=node,
            signing_seed=_derive(e, b"dcis-node-sign"),
            kx_secret=_derive(e, b"dcis-node-kx"),
        )

    @property
    def sign_public(self) -> bytes:
        """32-byte Ed25519 public key."""
        return bytes(self._signer.verify_key)

    @property
    def kx_public(self) -> bytes:
        """32-byte X25519 public key."""
        return self._kx_public

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over ``message``."""
        return bytes(self._signer.sign(message).signature)

    def agree(self, peer_kx_public: bytes, *, label: bytes) -> bytes:
        """A 32-byte symmetric key shared with the holder of ``peer_kx_public``.

        X25519 (static-static), then BLAKE2b keyed by the shared secret over
        ``label`` and both public keys in a fixed order, so both ends derive
        the same key and different labels give independent keys. Results are
        cached per (peer, label): agreement costs ~50 µs, a bundle less.

        Raises :class:`AuthenticationFailed` for a low-order peer key (an
        all-zero shared secret), which an attacker would use to force a known key.
        """
        if len(peer_kx_public) != PUBLIC_KEY_BYTES:
            raise AuthenticationFailed()
        cache_key = peer_kx_public + b"\0" + label
        cached = self._agreed.get(cache_key)
        if cached is not None:
            return cached
        try:
            shared = nacl.bindings.crypto_scalarmult(self.kx_secret, peer_kx_public)
        except nacl.exceptions.CryptoError as exc:
            # libsodium refuses low-order points itself (all-zero result).
            raise AuthenticationFailed() from exc
        if hmac.compare_digest(shared, bytes(32)):
            raise AuthenticationFailed()
        lo, hi = sorted((self._kx_public, peer_kx_public))
        derived = hashlib.blake2b(label + lo + hi, key=shared, digest_size=32).digest()
        if len(self._agreed) > 4096:  # bounded: a constellation, not the internet
            self._agreed.clear()
        self._agreed[cache_key] = derived
        return derived
