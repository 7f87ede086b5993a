from __future__ import annotations

import hashlib

import pytest

from accessfabric.identity import transcript_hash


def test_known_encoding() -> None:
    expected = hashlib.sha256(
        b"\x00\x00\x00\x05label" + b"\x00\x00\x00\x03abc" + b"\x00\x00\x00\x00"
    ).digest()
    assert transcript_hash(b"label", b"abc", b"") == expected


def test_label_only() -> None:
    assert transcript_hash(b"x") == hashlib.sha256(b"\x00\x00\x00\x01x").digest()


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ((b"ab", b"c"), (b"a", b"bc")),
        ((b"abc",), (b"ab", b"c")),
        ((b"a", b""), (b"a",)),
        ((b"", b"a"), (b"a",)),
        ((b"label", b"a"), (b"labela",)),
    ],
)
def test_unambiguous(left: tuple[bytes, ...], right: tuple[bytes, ...]) -> None:
    assert transcript_hash(*left) != transcript_hash(*right)


def test_rejects_str() -> None:
    with pytest.raises(TypeError):
        transcript_hash(b"label", "text")  # type: ignore[arg-type]
