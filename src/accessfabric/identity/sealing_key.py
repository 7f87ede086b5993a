"""The static X25519 sealing key, derived from the node's Ed25519 seed.

``x25519_private = HKDF-SHA256(ikm=ed25519_seed, salt=None, info=SEALING_KEY_INFO, length=32)``
(``salt=None`` is RFC 5869's string of 32 zero bytes; X25519 clamps the scalar as usual).
One key file therefore holds both the signing and the sealing identity, and the two keys
are independent: HKDF output reveals nothing about the seed.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALING_KEY_INFO = b"accessfabric x25519 sealing v1"
SEED_LENGTH = 32


def derive_sealing_private_key(ed25519_seed: bytes) -> X25519PrivateKey:
    """Derive the node's X25519 sealing private key from its 32-byte Ed25519 seed."""
    if len(ed25519_seed) != SEED_LENGTH:
        raise ValueError(f"Ed25519 seed must be {SEED_LENGTH} bytes, got {len(ed25519_seed)}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEALING_KEY_INFO)
    return X25519PrivateKey.from_private_bytes(hkdf.derive(ed25519_seed))
