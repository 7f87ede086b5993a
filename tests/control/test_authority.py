"""The authority key file and its copy-paste text form."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.authority_key import format_authority_key, parse_authority_key
from accessfabric.control.kernel.verify import verify_route_lease
from accessfabric.identity import IdentityError
from tests.control.objects_factory import NOW, route_lease

RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def test_create_load_and_sign(tmp_path: Path) -> None:
    path = tmp_path / "authority.key"
    authority = Authority.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Authority.load(path)
    assert loaded.public_key == authority.public_key
    blob = loaded.issue(route_lease())
    assert verify_route_lease(blob, parse_authority_key(authority.public_key_text), NOW)
    with pytest.raises(IdentityError, match="overwrite"):
        Authority.create(path)
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="too open"):
        Authority.load(path)


def test_text_form_round_trips_and_is_friendly() -> None:
    key = RFC8032_PUBLIC
    text = format_authority_key(key)
    assert text.startswith("afauth1") and len(text) == 63
    assert text.isalnum() and text == text.lower()
    assert parse_authority_key(f"  {text.upper()}\n") == key


def test_every_single_character_error_is_detected() -> None:
    text = format_authority_key(RFC8032_PUBLIC)
    for position in range(7, len(text)):
        for char in "abcdefghijklmnopqrstuvwxyz234567":
            if char == text[position]:
                continue
            typo = text[:position] + char + text[position + 1 :]
            with pytest.raises(ValueError):
                parse_authority_key(typo)
    for position in range(7, len(text) - 1):
        swapped = text[:position] + text[position + 1] + text[position] + text[position + 2 :]
        if swapped != text:
            with pytest.raises(ValueError):
                parse_authority_key(swapped)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("afn1" + "a" * 59, "prefix"),
        ("afauth1" + "a" * 10, "length"),
        ("afauth1" + "a" * 51 + "!" + "aaaa", "character"),
    ],
)
def test_parse_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_authority_key(text)
