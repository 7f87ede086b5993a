from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessfabric.identity import (
    NodeKey,
    node_id_from_public_key,
    parse_node_id,
    verify_public_key_matches,
)

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
CRC_GENERATOR = 0x180069  # x^20 + x^19 + x^6 + x^5 + x^3 + 1
CRC_XOR_OUT = 0xFFFFF

# RFC 8032 section 7.1, TEST 1: the seed and its public key.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")

VECTORS = [
    (RFC8032_PUBLIC, "afn12vmufcyrzwa52kwh47o3v2azqsez7mg4bvfc"),
    (
        bytes.fromhex("3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"),
        "afn1f5if3b25irfxr26cgswq6t5esnggyhx42ppg",
    ),  # the key with the all-zero seed
]


def _poly_mod(value: int, generator: int) -> int:
    degree = generator.bit_length() - 1
    while value.bit_length() - 1 >= degree:
        value ^= generator << (value.bit_length() - 1 - degree)
    return value


@pytest.mark.parametrize(("public_key", "node_id"), VECTORS)
def test_vectors(public_key: bytes, node_id: str) -> None:
    assert node_id_from_public_key(public_key) == node_id
    assert parse_node_id(node_id) == node_id
    assert verify_public_key_matches(node_id, public_key)


def test_rfc8032_seed_gives_rfc8032_public_key() -> None:
    key = NodeKey.from_seed(RFC8032_SEED)
    assert key.public_key_bytes == RFC8032_PUBLIC
    assert key.node_id == VECTORS[0][1]


@pytest.mark.parametrize(("public_key", "node_id"), VECTORS)
def test_body_and_checksum_form_one_crc_codeword(public_key: bytes, node_id: str) -> None:
    data = node_id[4:]
    assert len(data) == 36
    assert (
        base64.b32decode(data[:32].upper())
        == hashlib.sha256(b"accessfabric node id v1" + public_key).digest()[:20]
    )
    codeword = 0
    for char in data:
        codeword = codeword << 5 | ALPHABET.index(char)
    assert _poly_mod(codeword ^ CRC_XOR_OUT, CRC_GENERATOR) == 0


def test_generator_detects_every_two_bit_error_in_180_bits() -> None:
    for high in range(180):
        for low in range(high):
            assert _poly_mod(1 << high | 1 << low, CRC_GENERATOR) != 0


def test_parse_normalises_case_and_whitespace() -> None:
    node_id = VECTORS[0][1]
    assert parse_node_id(f"  {node_id.upper()}\n") == node_id
    assert parse_node_id("\t" + node_id[:10].upper() + node_id[10:] + " ") == node_id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bad node id prefix"),
        ("afn2vmufcyrzwa52kwh47o3v2azqsez7mg4bvfc", "bad node id prefix"),
        ("xfn12vmufcyrzwa52kwh47o3v2azqsez7mg4bvfc", "bad node id prefix"),
        ("afn12vmufcyrzwa52kwh47o3v2azqsez7mg4bvf", "bad node id length: expected 40"),
        ("afn12vmufcyrzwa52kwh47o3v2azqsez7mg4bvfcc", "got 41"),
        ("afn12vmufcyrzwa52kwh47o3v2az0sez7mg4bvfc", "bad character '0' at position 29"),
        ("afn12vmufcyrzwa52kwh47o3v2azqsez7mg4bvf1", "bad character '1' at position 40"),
        ("afn12vmufcyrzwa52kwh47o3v2azq ez7mg4bvfc", "bad character ' ' at position 30"),
        ("afn12vmufcyrzwa52kwh47o3v2azqsez7mg4bvfd", "checksum mismatch"),
        ("afn12vmufcyrzwa52kwh47o3v2azqsez7mg4bvcf", "checksum mismatch"),
        ("afn1avmufcyrzwa52kwh47o3v2azqsez7mg4bvfc", "checksum mismatch"),
    ],
)
def test_parse_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_node_id(text)


def test_all_zero_placeholder_is_rejected() -> None:
    with pytest.raises(ValueError, match="checksum mismatch"):
        parse_node_id("afn1" + "a" * 36)


def test_parse_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        parse_node_id(b"afn12vmufcyrzwa52kwh47o3v2azqsez7mg4bvfc")  # type: ignore[arg-type]


@pytest.mark.parametrize(("public_key", "node_id"), VECTORS)
def test_every_single_character_typo_is_detected(public_key: bytes, node_id: str) -> None:
    for position in range(4, len(node_id)):
        for char in ALPHABET:
            if char == node_id[position]:
                continue
            typo = node_id[:position] + char + node_id[position + 1 :]
            with pytest.raises(ValueError, match="checksum mismatch"):
                parse_node_id(typo)


@pytest.mark.parametrize(("public_key", "node_id"), VECTORS)
def test_every_adjacent_transposition_is_detected(public_key: bytes, node_id: str) -> None:
    for position in range(4, len(node_id) - 1):
        a, b = node_id[position], node_id[position + 1]
        if a == b:
            continue
        swapped = node_id[:position] + b + a + node_id[position + 2 :]
        with pytest.raises(ValueError, match="checksum mismatch"):
            parse_node_id(swapped)


@given(
    public_key=st.binary(min_size=32, max_size=32),
    position=st.integers(min_value=4, max_value=39),
    replacement=st.sampled_from(ALPHABET),
)
def test_property_single_typo_detected(public_key: bytes, position: int, replacement: str) -> None:
    node_id = node_id_from_public_key(public_key)
    assert parse_node_id(node_id) == node_id
    if node_id[position] == replacement:
        return
    typo = node_id[:position] + replacement + node_id[position + 1 :]
    with pytest.raises(ValueError, match="checksum mismatch"):
        parse_node_id(typo)
    assert not verify_public_key_matches(typo, public_key)


@given(public_key=st.binary(min_size=32, max_size=32))
def test_property_format(public_key: bytes) -> None:
    node_id = node_id_from_public_key(public_key)
    assert len(node_id) == 40
    assert node_id.startswith("afn1")
    assert set(node_id[4:]) <= set(ALPHABET)


def test_verify_public_key_matches_rejects_others() -> None:
    node_id = VECTORS[0][1]
    assert not verify_public_key_matches(node_id, VECTORS[1][0])
    assert not verify_public_key_matches("not a node id", RFC8032_PUBLIC)
    assert not verify_public_key_matches(node_id, RFC8032_PUBLIC[:31])
    assert verify_public_key_matches(node_id.upper(), RFC8032_PUBLIC)


def test_node_id_from_public_key_checks_input() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        node_id_from_public_key(b"\x00" * 33)
    with pytest.raises(TypeError):
        node_id_from_public_key("00" * 32)  # type: ignore[arg-type]
