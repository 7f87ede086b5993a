"""Sealed records: the byte stream a stream's two ends exchange once sealing is on.

A record is ``header u32 | ciphertext | tag (16)``: the header's top bit marks
the final record and the rest is the plaintext length; the header is the
AEAD's associated data and the nonce is the record counter, so a relay that
alters, reorders, drops, replays or truncates records is detected at the next
record (or at the end of the stream, which must be a sealed final record).
Records are cut by the writer, not by frames: a stream resumed on another
route resends the very same ciphertext bytes, so a nonce is never reused.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAX_RECORD_PLAINTEXT = 64 * 1024 - 32
TAG_SIZE = 16
HEADER = struct.Struct(">I")
FINAL_BIT = 1 << 31
_NONCE_PREFIX = b"\x00\x00\x00\x00"


class SealingError(Exception):
    """A sealed record did not verify: the bytes were altered, reordered, dropped or cut."""


def _nonce(counter: int) -> bytes:
    return _NONCE_PREFIX + counter.to_bytes(8, "big")


class RecordSealer:
    """Seals one direction of a stream into records."""

    __slots__ = ("_aead", "_counter", "finished")

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0
        self.finished = False

    def seal(self, data: bytes | memoryview, final: bool = False) -> bytes:
        """Records carrying ``data`` (several when it is long); ``final`` closes the direction."""
        if self.finished:
            raise SealingError("this direction is already finished")
        view = memoryview(data)
        out: list[bytes] = []
        position = 0
        while True:
            piece = view[position : position + MAX_RECORD_PLAINTEXT]
            position += len(piece)
            last = position >= len(view)
            header = HEADER.pack(len(piece) | (FINAL_BIT if final and last else 0))
            out.append(header)
            out.append(self._aead.encrypt(_nonce(self._counter), bytes(piece), header))
            self._counter += 1
            if last:
                break
        if final:
            self.finished = True
        return b"".join(out)

    def finish(self) -> bytes:
        """The sealed end of this direction (an empty final record)."""
        return self.seal(b"", final=True)


class RecordOpener:
    """Opens the records of one direction, however the bytes were cut into frames."""

    __slots__ = ("_aead", "_buffer", "_counter", "finished")

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._buffer = bytearray()
        self._counter = 0
        self.finished = False

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """Plaintexts of every record completed by ``data``."""
        if self.finished and data:
            raise SealingError("bytes after the final record")
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            (word,) = HEADER.unpack_from(buffer, offset)
            length = word & ~FINAL_BIT
            if length > MAX_RECORD_PLAINTEXT:
                raise SealingError(f"record length {length} exceeds {MAX_RECORD_PLAINTEXT}")
            end = offset + HEADER.size + length + TAG_SIZE
            if end > len(buffer):
                break
            header = bytes(buffer[offset : offset + HEADER.size])
            sealed = bytes(buffer[offset + HEADER.size : end])
            try:
                plaintext = self._aead.decrypt(_nonce(self._counter), sealed, header)
            except InvalidTag:
                raise SealingError(
                    f"record {self._counter} failed authentication (altered, reordered, "
                    "dropped or replayed on the way)"
                ) from None
            self._counter += 1
            offset = end
            if plaintext:
                out.append(plaintext)
            if word & FINAL_BIT:
                self.finished = True
                if offset != len(buffer):
                    raise SealingError("bytes after the final record")
                break
        del buffer[:offset]
        return out

    def check_end(self) -> None:
        """Call at the end of the stream: raise unless the final record arrived."""
        if not self.finished:
            raise SealingError("stream ended without its sealed final record (truncated)")
