"""``transcript_hash``: an unambiguous SHA-256 over a label and a sequence of byte strings."""

from __future__ import annotations

import hashlib

_MAX_PART_LENGTH = 0xFFFF_FFFF


def transcript_hash(label: bytes, *parts: bytes) -> bytes:
    """``sha256(u32be(len(label)) || label || u32be(len(p1)) || p1 || ...)``.

    Every element is length-prefixed, so no two different (label, parts) sequences encode
    to the same bytes: moving a byte from one part to the next, or splitting a part in two,
    changes the hash.
    """
    digest = hashlib.sha256()
    for part in (label, *parts):
        if not isinstance(part, bytes):
            raise TypeError(f"transcript parts must be bytes, not {type(part).__name__}")
        if len(part) > _MAX_PART_LENGTH:
            raise ValueError("transcript part longer than 2**32 - 1 bytes")
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.digest()
