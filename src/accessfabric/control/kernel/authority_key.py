"""The authority public key as text: copy-paste friendly, checksummed like node ids.

Format (63 characters, lower case)::

    afauth1 <body: 52 base32 chars> <checksum: 4 base32 chars>

* ``body`` is RFC 4648 base32 (lower case, no padding) of the raw 32-byte Ed25519 public
  key; its last character carries 1 bit of key and 4 zero bits.
* ``checksum`` is the CRC-20 of the 256 key bits with the node-id generator
  (``0x180069``, initial value 0, final XOR ``0xfffff``), as four base32 characters, most
  significant first.  As for node ids, any one mistyped character and any swap of two
  adjacent characters is detected.
"""

from __future__ import annotations

import base64

from accessfabric.identity.node_id import checksum_chars
from accessfabric.identity.signatures import PUBLIC_KEY_LENGTH, load_public_key

AUTHORITY_KEY_PREFIX = "afauth1"
_BODY_CHARS = 52
AUTHORITY_KEY_TEXT_LENGTH = len(AUTHORITY_KEY_PREFIX) + _BODY_CHARS + 4
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def format_authority_key(public_key: bytes) -> str:
    """The text form of a raw 32-byte Ed25519 authority public key."""
    load_public_key(public_key)  # ValueError unless it is one
    return AUTHORITY_KEY_PREFIX + _body(public_key) + checksum_chars(public_key)


def parse_authority_key(text: str) -> bytes:
    """The raw public key of a pasted authority key; :class:`ValueError` naming the problem.

    Surrounding whitespace and upper case are accepted.
    """
    if not isinstance(text, str):
        raise TypeError(f"authority key must be str, not {type(text).__name__}")
    candidate = text.strip().lower()
    if not candidate.startswith(AUTHORITY_KEY_PREFIX):
        raise ValueError(f"bad authority key prefix: expected {AUTHORITY_KEY_PREFIX!r}")
    if len(candidate) != AUTHORITY_KEY_TEXT_LENGTH:
        raise ValueError(
            f"bad authority key length: expected {AUTHORITY_KEY_TEXT_LENGTH} characters, "
            f"got {len(candidate)}"
        )
    for position, char in enumerate(candidate):
        if position >= len(AUTHORITY_KEY_PREFIX) and char not in _ALPHABET:
            raise ValueError(
                f"bad character {char!r} at position {position + 1} of the authority key "
                "(allowed: a-z and 2-7)"
            )
    body = candidate[len(AUTHORITY_KEY_PREFIX) : len(AUTHORITY_KEY_PREFIX) + _BODY_CHARS]
    key = base64.b32decode(body.upper() + "====")
    if len(key) != PUBLIC_KEY_LENGTH or _body(key) != body or candidate[-4:] != checksum_chars(key):
        raise ValueError("authority key checksum mismatch: the key is mistyped or corrupted")
    try:
        load_public_key(key)
    except ValueError:
        raise ValueError("authority key is not a valid Ed25519 public key") from None
    return key


def _body(key: bytes) -> str:
    return base64.b32encode(key).decode("ascii").rstrip("=").lower()
