"""Sealed records: the byte stream a stream's two ends exchange once sealing is on.

A record is ``header u32 | ciphertext | tag (16)``: the header's top bit marks
the final record and the rest is the plaintext length; the header is the
AEAD's associated data and the nonce is the record counter (Noise's nonce encoding for
the cipher: each direction is a Noise ``CipherState`` whose ``EncryptWithAd(header,
plaintext)`` makes the record body), so a relay that
alters, reorders, drops, replays or truncates records is detected at the next
record (or at the end of the stream, which must be a sealed final record).
The opener -> destination direction changes its key once (version 4): records sent
before the opener had Noise message 2 are under the early key; then an empty record
flagged :data:`KEY_CHANGE_BIT` (under the early key) ends it, and the records after it
are under ``Split()``'s initiator key from nonce 0.
Records are cut by the writer, not by frames: a stream resumed on another
route resends the very same ciphertext bytes, so a nonce is never reused.

The AEAD is the stream's :class:`CipherSuite` (the opener picks it, the handshake binds
it): ChaCha20-Poly1305 or AES-256-GCM, both with a 32-byte key, a 96-bit nonce and a
16-byte tag, so the record layout is the same for both.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

MAX_RECORD_PLAINTEXT = 64 * 1024 - 32
TAG_SIZE = 16
HEADER = struct.Struct(">I")
FINAL_BIT = 1 << 31
KEY_CHANGE_BIT = 1 << 30
"""An empty record with this bit, sealed under the direction's current key, ends that key:
the next record is sealed with the key the direction changes to, at nonce 0 (version 4:
the opener's early key gives way to Noise's ``Split()`` initiator key)."""
_NONCE_PREFIX = b"\x00\x00\x00\x00"


class SealingError(Exception):
    """A sealed record did not verify: the bytes were altered, reordered, dropped or cut."""


class CipherSuite(IntEnum):
    """The records' AEAD; the value is its byte in the key exchange (docs/sealing.md)."""

    CHACHA20_POLY1305 = 1
    AES_256_GCM = 2

    @property
    def label(self) -> str:
        """The name ``[sealing] cipher`` uses: ``chacha20-poly1305`` or ``aes-256-gcm``."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_label(cls, label: str) -> CipherSuite:
        """The suite named ``label`` (:attr:`label`); ValueError when there is none."""
        for suite in cls:
            if suite.label == label:
                return suite
        raise ValueError(f"unknown cipher {label!r}")

    @classmethod
    def from_wire(cls, value: int) -> CipherSuite:
        """The suite a key exchange names; :class:`SealingError` for an unknown byte."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(f"{suite.value} ({suite.label})" for suite in cls)
            raise SealingError(f"unknown cipher suite {value} (known: {known})") from None

    def aead(self, key: bytes) -> ChaCha20Poly1305 | AESGCM:
        """The AEAD keyed with ``key`` (32 bytes)."""
        return ChaCha20Poly1305(key) if self is CipherSuite.CHACHA20_POLY1305 else AESGCM(key)


def _nonce_of(suite: CipherSuite) -> Callable[[int], bytes]:
    """Noise's nonce for the suite's cipher (spec §12.3, §12.4): 32 zero bits, then the
    record counter as 64 bits, little-endian for ChaChaPoly, big-endian for AESGCM."""
    order: Literal["little", "big"] = "little" if suite is CipherSuite.CHACHA20_POLY1305 else "big"

    def nonce(counter: int) -> bytes:
        return _NONCE_PREFIX + counter.to_bytes(8, order)

    return nonce


class RecordSealer:
    """Seals one direction of a stream into records."""

    __slots__ = ("_aead", "_counter", "_next_key", "_nonce", "_suite", "finished", "rekeyed")

    def __init__(self, key: bytes, suite: CipherSuite = CipherSuite.CHACHA20_POLY1305) -> None:
        self._aead = suite.aead(key)
        self._suite = suite
        self._nonce = _nonce_of(suite)
        self._counter = 0
        self._next_key: bytes | None = None
        self.finished = False
        self.rekeyed = False
        """Whether the key-change record was sent (the direction is on its second key)."""

    def change_key(self, key: bytes) -> None:
        """Seal with ``key`` from the next :meth:`seal` on: that call first emits the
        key-change record (empty, :data:`KEY_CHANGE_BIT`) under the current key, then
        seals under ``key`` from nonce 0.  Once per direction; ignored once finished."""
        if self.rekeyed or self._next_key is not None:
            raise SealingError("this direction already changed its key")
        if not self.finished:
            self._next_key = key

    def _key_change_record(self) -> bytearray:
        header = HEADER.pack(KEY_CHANGE_BIT)
        out = bytearray(header)
        out += self._aead.encrypt(self._nonce(self._counter), b"", header)
        assert self._next_key is not None
        self._aead = self._suite.aead(self._next_key)
        self._counter = 0
        self._next_key = None
        self.rekeyed = True
        return out

    def seal(self, data: bytes | bytearray | memoryview, final: bool = False) -> bytearray:
        """Records carrying ``data`` (several when it is long); ``final`` closes the direction.

        Encrypted straight into one output buffer (no per-record ciphertext objects)."""
        if self.finished:
            raise SealingError("this direction is already finished")
        if self._next_key is not None:
            return self._key_change_record() + self._seal(data, final)
        return self._seal(data, final)

    def _seal(self, data: bytes | bytearray | memoryview, final: bool) -> bytearray:
        view = memoryview(data)
        size = len(view)
        records = max(1, -(-size // MAX_RECORD_PLAINTEXT))
        out = bytearray(size + records * (HEADER.size + TAG_SIZE))
        target = memoryview(out)
        position = written = 0
        encrypt_into = self._aead.encrypt_into
        while True:
            piece = view[position : position + MAX_RECORD_PLAINTEXT]
            position += len(piece)
            last = position >= size
            header = HEADER.pack(len(piece) | (FINAL_BIT if final and last else 0))
            target[written : written + HEADER.size] = header
            written += HEADER.size
            end = written + len(piece) + TAG_SIZE
            encrypt_into(self._nonce(self._counter), piece, header, target[written:end])
            written = end
            self._counter += 1
            if last:
                break
        if final:
            self.finished = True
        return out

    def finish(self) -> bytearray:
        """The sealed end of this direction (an empty final record)."""
        return self.seal(b"", final=True)


class RecordOpener:
    """Opens the records of one direction, however the bytes were cut into frames."""

    __slots__ = ("_aead", "_buffer", "_counter", "_next_key", "_nonce", "_suite", "finished")

    def __init__(
        self,
        key: bytes,
        suite: CipherSuite = CipherSuite.CHACHA20_POLY1305,
        next_key: bytes | None = None,
    ) -> None:
        """``next_key``: the key a key-change record switches to (None: this direction
        never changes its key, and a key-change record in it is refused)."""
        self._aead = suite.aead(key)
        self._suite = suite
        self._nonce = _nonce_of(suite)
        self._buffer = bytearray()
        self._counter = 0
        self._next_key = next_key
        self.finished = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Plaintexts of every record completed by ``data``.

        Whole records are opened straight from ``data``; only an incomplete tail is
        kept (copied) until the rest of it arrives."""
        if self.finished and data:
            raise SealingError("bytes after the final record")
        buffer = self._buffer
        out: list[bytes] = []
        if buffer:
            buffer += data
            with memoryview(buffer) as view:
                offset = self._open(view, out)
            del buffer[:offset]
        else:
            with memoryview(data) as view:
                offset = self._open(view, out)
                buffer += view[offset:]
        return out

    def _open(self, view: memoryview, out: list[bytes]) -> int:
        """Open the complete records at the start of ``view``; how many bytes they took."""
        offset = 0
        available = len(view)
        decrypt = self._aead.decrypt
        while available - offset >= HEADER.size:
            (word,) = HEADER.unpack_from(view, offset)
            length = word & ~(FINAL_BIT | KEY_CHANGE_BIT)
            if length > MAX_RECORD_PLAINTEXT:
                raise SealingError(f"record length {length} exceeds {MAX_RECORD_PLAINTEXT}")
            end = offset + HEADER.size + length + TAG_SIZE
            if end > available:
                break
            header = view[offset : offset + HEADER.size]
            try:
                plaintext = decrypt(
                    self._nonce(self._counter), view[offset + HEADER.size : end], header
                )
            except InvalidTag:
                raise SealingError(
                    f"record {self._counter} failed authentication (altered, reordered, "
                    "dropped or replayed on the way)"
                ) from None
            self._counter += 1
            offset = end
            if word & KEY_CHANGE_BIT:
                self._change_key(word)
                decrypt = self._aead.decrypt
                continue
            if plaintext:
                out.append(plaintext)
            if word & FINAL_BIT:
                self.finished = True
                if offset != available:
                    raise SealingError("bytes after the final record")
                break
        return offset

    def _change_key(self, word: int) -> None:
        """A key-change record opened: later records are under the next key, from nonce 0."""
        if word != KEY_CHANGE_BIT:
            raise SealingError("a key-change record must be empty and not final")
        if self._next_key is None:
            raise SealingError("unexpected key-change record (this direction has one key)")
        self._aead = self._suite.aead(self._next_key)
        self._counter = 0
        self._next_key = None

    def check_end(self) -> None:
        """Call at the end of the stream: raise unless the final record arrived."""
        if not self.finished:
            raise SealingError("stream ended without its sealed final record (truncated)")
