"""Node ids: the human-friendly, checksummed name derived from a node's Ed25519 public key.

Format (40 characters, all lowercase)::

    afn1 <body: 32 base32 chars> <checksum: 4 base32 chars>

* ``body`` is RFC 4648 base32 (lowercase, no padding) of
  ``sha256(b"accessfabric node id v1" + public_key)[:20]`` (160 bits).
* ``checksum`` is the CRC-20 of the 160 body bits with generator
  ``x^20 + x^19 + x^6 + x^5 + x^3 + 1`` (``0x180069`` = ``(x + 1)`` times the primitive
  ``x^19 + x^5 + x^2 + x + 1``), initial value 0, final XOR ``0xfffff``, written as four
  base32 characters, most significant first.  (The final XOR only makes placeholder ids
  such as ``"afn1" + "a" * 36`` invalid; it changes no detection property.)

Because body and checksum form one 180-bit CRC codeword, every error confined to 20
consecutive bits is detected: any single mistyped character and any swap of two adjacent
characters.  Every 1-, 2- or 3-bit error is detected too; other errors slip through with
probability 2**-20.  See ``docs/identity.md`` for a worked example.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

NODE_ID_PREFIX = "afn1"
NODE_ID_LENGTH = 40
PUBLIC_KEY_LENGTH = 32

_DOMAIN = b"accessfabric node id v1"
_BODY_BYTES = 20
_BODY_CHARS = 32
_CHECKSUM_CHARS = 4
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_ALPHABET_SET = frozenset(_ALPHABET)
_CRC_POLY = 0x180069
_CRC_BITS = 20
_CRC_XOR_OUT = 0xFFFFF


def _crc20(body: bytes) -> int:
    """Remainder of ``body(x) * x^20`` modulo the generator (MSB first, initial value 0)."""
    remainder = int.from_bytes(body, "big") << _CRC_BITS
    for bit in range(remainder.bit_length() - 1, _CRC_BITS - 1, -1):
        if remainder >> bit & 1:
            remainder ^= _CRC_POLY << (bit - _CRC_BITS)
    return remainder


def checksum_chars(body: bytes) -> str:
    """The four base32 characters of the CRC-20 of ``body`` (a node id's last four; an
    authority key's too)."""
    crc = _crc20(body) ^ _CRC_XOR_OUT
    shifts = range(_CRC_BITS - 5, -1, -5)
    return "".join(_ALPHABET[(crc >> shift) & 0x1F] for shift in shifts)


def node_id_from_public_key(public_key: bytes) -> str:
    """Derive the node id of a raw 32-byte Ed25519 public key."""
    if not isinstance(public_key, bytes):
        raise TypeError(f"public key must be bytes, not {type(public_key).__name__}")
    if len(public_key) != PUBLIC_KEY_LENGTH:
        raise ValueError(
            f"public key must be {PUBLIC_KEY_LENGTH} bytes (raw Ed25519), got {len(public_key)}"
        )
    body = hashlib.sha256(_DOMAIN + public_key).digest()[:_BODY_BYTES]
    body_text = base64.b32encode(body).decode("ascii").lower()
    return NODE_ID_PREFIX + body_text + checksum_chars(body)


def parse_node_id(text: str) -> str:
    """Validate a node id typed or pasted by a person and return its canonical form.

    Surrounding whitespace is dropped and upper case is folded to lower case.  Raises
    :class:`ValueError` naming the problem: bad prefix, bad length, bad character (with its
    position) or checksum mismatch.
    """
    if not isinstance(text, str):
        raise TypeError(f"node id must be str, not {type(text).__name__}")
    candidate = text.strip().lower()
    if not candidate.startswith(NODE_ID_PREFIX):
        raise ValueError(f"bad node id prefix: expected {NODE_ID_PREFIX!r}, got {candidate[:4]!r}")
    if len(candidate) != NODE_ID_LENGTH:
        raise ValueError(
            f"bad node id length: expected {NODE_ID_LENGTH} characters, got {len(candidate)}"
        )
    for position, char in enumerate(candidate[len(NODE_ID_PREFIX) :], start=len(NODE_ID_PREFIX)):
        if char not in _ALPHABET_SET:
            raise ValueError(
                f"bad character {char!r} at position {position + 1} of node id "
                "(allowed: a-z and 2-7)"
            )
    body_text = candidate[len(NODE_ID_PREFIX) : len(NODE_ID_PREFIX) + _BODY_CHARS]
    body = base64.b32decode(body_text.upper())
    checksum = candidate[-_CHECKSUM_CHARS:]
    if checksum != checksum_chars(body):
        raise ValueError("node id checksum mismatch: the id is mistyped or corrupted")
    return candidate


def verify_public_key_matches(node_id: str, public_key: bytes) -> bool:
    """True when ``node_id`` (any accepted spelling) is the id of ``public_key``.

    A malformed node id or a public key of the wrong length is simply not a match.
    """
    try:
        canonical = parse_node_id(node_id)
        derived = node_id_from_public_key(public_key)
    except ValueError:
        return False
    return hmac.compare_digest(canonical.encode("ascii"), derived.encode("ascii"))
