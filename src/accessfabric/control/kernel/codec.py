"""Canonical binary fields for signed objects: a writer and a strict reader.

All integers are unsigned big-endian.  Variable-length fields carry a length (or count)
prefix; sets are written sorted and the reader refuses unsorted or repeated items, trailing
bytes and out-of-range values, so one object has exactly one encoding and
``encode(decode(b)) == b`` for every accepted ``b``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise

from accessfabric.identity.node_id import NODE_ID_LENGTH, parse_node_id

_U64_MAX = (1 << 64) - 1


@lru_cache(maxsize=8192)
def canonical_node_id(text: str) -> str:
    """:func:`~accessfabric.identity.parse_node_id`, memoised.

    Its pure-Python CRC costs ~0.1 ms; a hop sees the same few node ids in every lease, so
    verification would otherwise spend most of its time re-checking them.
    """
    return parse_node_id(text)


class MalformedError(ValueError):
    """Bytes that are not a canonical encoding of the expected object."""


class Writer:
    """Appends canonical fields to a byte buffer."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def uint(self, value: int, size: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an int, got {type(value).__name__}")
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"{value} does not fit in u{8 * size}")
        self._parts.append(value.to_bytes(size, "big"))

    def u64(self, *values: int) -> None:
        """Each of ``values`` as a u64, in order."""
        for value in values:
            self.uint(value, 8)

    def fixed(self, data: bytes, size: int) -> None:
        if len(data) != size:
            raise ValueError(f"expected {size} bytes, got {len(data)}")
        self._parts.append(bytes(data))

    def name(self, text: str) -> None:
        """u8 length + ASCII (names are checked by :mod:`vocabulary` before they get here)."""
        raw = text.encode("ascii")
        self.uint(len(raw), 1)
        self._parts.append(raw)

    def names(self, texts: Iterable[str]) -> None:
        """u8 count + names in ascending order, no repeats."""
        ordered = sorted(set(texts))
        self.uint(len(ordered), 1)
        for text in ordered:
            self.name(text)

    def node_id(self, node_id: str) -> None:
        """The canonical 40-character node id as ASCII (fixed size, no prefix)."""
        self.fixed(node_id.encode("ascii"), NODE_ID_LENGTH)

    def to_bytes(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads canonical fields; every deviation raises :class:`MalformedError`."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise MalformedError(f"truncated: needed {size} bytes at offset {self._offset}")
        chunk = bytes(self._data[self._offset : end])
        self._offset = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def u64(self) -> int:
        return self.uint(8)

    def name(self) -> str:
        raw = self.take(self.uint(1))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedError("a name is not ASCII") from None

    def names(self) -> tuple[str, ...]:
        items = tuple(self.name() for _ in range(self.uint(1)))
        if any(a >= b for a, b in pairwise(items)):
            raise MalformedError("a name list is not in strictly ascending order")
        return items

    def node_id(self) -> str:
        raw = self.take(NODE_ID_LENGTH)
        try:
            text = raw.decode("ascii")
            canonical = canonical_node_id(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedError(f"bad node id: {exc}") from None
        if canonical != text:
            raise MalformedError("node id is not in canonical (lower-case) form")
        return text

    @property
    def at_end(self) -> bool:
        """Nothing left to read (an optional field added at the end of a body is absent)."""
        return self._offset == len(self._data)

    def finish(self) -> None:
        if self._offset != len(self._data):
            raise MalformedError(f"{len(self._data) - self._offset} trailing bytes")

    def __enter__(self) -> Reader:
        """``with Reader(body) as data:`` must read all of ``body`` (:meth:`finish` at the end)."""
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:  # an error raised inside the block is the one to tell
            self.finish()


def check_u64(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise ValueError(f"{name} must be an integer 0..2**64-1, got {value!r}")
    return value
