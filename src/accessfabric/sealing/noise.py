"""The Noise Protocol Framework's IK handshake, sans-IO (Noise spec revision 34, §4-§5, §7).

Only what the sealing handshake uses: the ``IK`` pattern over ``25519``, the ciphers
``ChaChaPoly`` and ``AESGCM`` and the hashes ``SHA256``, ``SHA512``, ``BLAKE2s`` and
``BLAKE2b`` (the sealing handshake uses ``SHA256``; the others are here so every
published ``Noise_IK_25519_*`` test vector checks this code, ``tests/sealing/test_noise.py``).
No randomness, no clock, no I/O: the caller passes the ephemeral key.

    IK:
      <- s
      ...
      -> e, es, s, ss
      <- e, ee, se
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from accessfabric.sealing.records import SealingError

DHLEN: Final = 32
TAG_SIZE: Final = 16
MAX_MESSAGE: Final = 65535
_HASHES: Final = {
    "SHA256": "sha256",
    "SHA512": "sha512",
    "BLAKE2s": "blake2s",
    "BLAKE2b": "blake2b",
}
"""Noise hash name -> hashlib name."""
_CIPHERS: Final = ("ChaChaPoly", "AESGCM")


class NoiseError(SealingError):
    """A Noise message did not verify, or the handshake was used out of order."""


def nonce(cipher: str, n: int) -> bytes:
    """The 96-bit AEAD nonce of counter ``n`` (§12.3, §12.4): 32 zero bits, then ``n`` as
    64 bits little-endian for ChaChaPoly, big-endian for AESGCM."""
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little" if cipher == "ChaChaPoly" else "big")


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``key``'s public half."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519; :class:`NoiseError` for a malformed key or a low-order point (all-zero
    result: a hostile peer's key)."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        raise NoiseError("key agreement failed (malformed or low-order public key)") from None


class CipherState:
    """§5.1: a key (possibly empty) and a nonce counter."""

    __slots__ = ("_aead", "cipher", "key", "n")

    def __init__(self, cipher: str, key: bytes = b"") -> None:
        self.cipher = cipher
        self.n = 0
        self.key = key
        self._aead: ChaCha20Poly1305 | AESGCM | None = None
        if key:
            self._aead = ChaCha20Poly1305(key) if cipher == "ChaChaPoly" else AESGCM(key)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        out = self._aead.encrypt(nonce(self.cipher, self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        try:
            out = self._aead.decrypt(nonce(self.cipher, self.n), ciphertext, ad)
        except InvalidTag:
            raise NoiseError("Noise message failed authentication") from None
        self.n += 1
        return out


class _SymmetricState:
    """§5.2."""

    def __init__(self, protocol_name: bytes, hash_name: str, cipher: str) -> None:
        self._name = _HASHES[hash_name]
        self.hashlen = hashlib.new(self._name).digest_size
        self.cipher = cipher
        if len(protocol_name) <= self.hashlen:
            self.h = protocol_name.ljust(self.hashlen, b"\x00")
        else:
            self.h = self._hash(protocol_name)
        self.ck = self.h
        self.state = CipherState(cipher)

    def _hash(self, data: bytes) -> bytes:
        return hashlib.new(self._name, data).digest()

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self._name).digest()

    def hkdf(self, ikm: bytes) -> tuple[bytes, bytes]:
        """§4.3 HKDF with two outputs."""
        temp = self._hmac(self.ck, ikm)
        first = self._hmac(temp, b"\x01")
        return first, self._hmac(temp, first + b"\x02")

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self.hkdf(ikm)
        self.state = CipherState(self.cipher, temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = self._hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.state.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.state.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        first, second = self.hkdf(b"")
        return CipherState(self.cipher, first[:32]), CipherState(self.cipher, second[:32])


def parse_protocol_name(name: str) -> tuple[str, str]:
    """(cipher, hash) of ``Noise_IK_25519_<cipher>_<hash>``; ValueError for anything else."""
    parts = name.split("_")
    if (
        len(parts) != 5
        or parts[:3] != ["Noise", "IK", "25519"]
        or parts[3] not in _CIPHERS
        or parts[4] not in _HASHES
    ):
        raise ValueError(f"not a supported Noise IK protocol name: {name!r}")
    return parts[3], parts[4]


class HandshakeIK:
    """One side of a ``Noise_IK_25519_<cipher>_<hash>`` handshake (§5.3).

    The initiator calls :meth:`write_message` then :meth:`read_message`; the responder
    :meth:`read_message` then :meth:`write_message`.  After the second message
    :attr:`transport` holds (sending, receiving) cipher states and :attr:`handshake_hash`
    the final ``h``.
    """

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes,
        static: X25519PrivateKey,
        ephemeral: X25519PrivateKey | None,
        remote_static: bytes | None = None,
    ) -> None:
        """``remote_static``: the responder's static public key (the initiator must know
        it: IK's pre-message); a responder learns the initiator's from message 1.
        ``ephemeral`` may be None on a responder that only reads message 1."""
        cipher, hash_name = parse_protocol_name(protocol_name)
        self.initiator = initiator
        self._s = static
        self._e = ephemeral
        self.remote_static = remote_static
        self.remote_ephemeral = b""
        self._symmetric = _SymmetricState(protocol_name.encode("ascii"), hash_name, cipher)
        self._symmetric.mix_hash(prologue)
        if initiator:
            if remote_static is None or len(remote_static) != DHLEN:
                raise ValueError("an IK initiator needs the responder's static key")
            self._symmetric.mix_hash(remote_static)
        else:
            self._symmetric.mix_hash(public_bytes(static))
        self._step = 0
        self.transport: tuple[CipherState, CipherState] | None = None
        self.handshake_hash = b""

    @property
    def _hashlen(self) -> int:
        return self._symmetric.hashlen

    def _expect(self, step: int, writing: bool) -> None:
        mine = (step == 0) == self.initiator
        if self._step != step or mine != writing:
            raise NoiseError("Noise handshake message out of order")

    def _finish(self) -> None:
        first, second = self._symmetric.split()
        self.transport = (first, second) if self.initiator else (second, first)
        self.handshake_hash = self._symmetric.h

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message of this side, carrying ``payload``."""
        symmetric = self._symmetric
        if self._e is None:
            raise NoiseError("no ephemeral key: this handshake only reads message 1")
        if self._step == 0:
            self._expect(0, writing=True)
            assert self.remote_static is not None
            e = public_bytes(self._e)
            symmetric.mix_hash(e)
            symmetric.mix_key(dh(self._e, self.remote_static))  # es
            s = symmetric.encrypt_and_hash(public_bytes(self._s))
            symmetric.mix_key(dh(self._s, self.remote_static))  # ss
            message = e + s + symmetric.encrypt_and_hash(payload)
        else:
            self._expect(1, writing=True)
            assert self.remote_static is not None
            e = public_bytes(self._e)
            symmetric.mix_hash(e)
            symmetric.mix_key(dh(self._e, self.remote_ephemeral))  # ee
            symmetric.mix_key(dh(self._e, self.remote_static))  # se
            message = e + symmetric.encrypt_and_hash(payload)
        if len(message) > MAX_MESSAGE:
            raise ValueError("Noise message longer than 65535 bytes")
        self._step += 1
        if self._step == 2:
            self._finish()
        return message

    def read_message(self, message: bytes) -> bytes:
        """The payload of the peer's next handshake message; :class:`NoiseError` when it
        does not verify (nothing of this handshake is usable after that)."""
        symmetric = self._symmetric
        if self._step == 0:
            self._expect(0, writing=False)
            if len(message) < DHLEN + DHLEN + TAG_SIZE + TAG_SIZE:
                raise NoiseError("Noise message 1 is too short")
            self.remote_ephemeral = bytes(message[:DHLEN])
            symmetric.mix_hash(self.remote_ephemeral)
            symmetric.mix_key(dh(self._s, self.remote_ephemeral))  # es
            end = DHLEN + DHLEN + TAG_SIZE
            self.remote_static = symmetric.decrypt_and_hash(bytes(message[DHLEN:end]))
            symmetric.mix_key(dh(self._s, self.remote_static))  # ss
        else:
            self._expect(1, writing=False)
            assert self.remote_static is not None
            if len(message) < DHLEN + TAG_SIZE:
                raise NoiseError("Noise message 2 is too short")
            self.remote_ephemeral = bytes(message[:DHLEN])
            symmetric.mix_hash(self.remote_ephemeral)
            if self._e is None:
                raise NoiseError("no ephemeral key: this handshake only reads message 1")
            symmetric.mix_key(dh(self._e, self.remote_ephemeral))  # ee
            symmetric.mix_key(dh(self._s, self.remote_ephemeral))  # se
            end = DHLEN
        payload = symmetric.decrypt_and_hash(bytes(message[end:]))
        self._step += 1
        if self._step == 2:
            self._finish()
        return payload
