"""Verification of Ed25519 signatures given raw public key bytes."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PUBLIC_KEY_LENGTH = 32
SIGNATURE_LENGTH = 64


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """Parse a raw 32-byte Ed25519 public key; :class:`ValueError` if it is not one."""
    if len(raw) != PUBLIC_KEY_LENGTH:
        raise ValueError(f"Ed25519 public key must be {PUBLIC_KEY_LENGTH} bytes, got {len(raw)}")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError("not a valid Ed25519 public key") from None


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    Malformed keys and signatures are simply invalid; this never raises for bad input bytes.
    """
    if len(signature) != SIGNATURE_LENGTH:
        return False
    try:
        load_public_key(public_key).verify(signature, message)
    except (ValueError, InvalidSignature):
        return False
    return True
