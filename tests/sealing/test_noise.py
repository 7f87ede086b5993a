"""The Noise IK module against the published Noise test vectors.

tests/vectors/noise_ik.json: every ``Noise_IK_25519_*`` vector without a PSK from snow's
``tests/vectors/cacophony.txt`` and ``snow.txt`` (its ``source`` field names the commit
and licence).  Each vector fixes both sides' static and ephemeral keys and the prologue;
the two handshake messages, the handshake hash and the transport messages after it must
match byte for byte, played from both sides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.sealing.noise import HandshakeIK, NoiseError, public_bytes

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "noise_ik.json").read_text())[
    "vectors"
]


def _key(hex_key: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_key))


def _sides(vector: dict[str, Any]) -> tuple[HandshakeIK, HandshakeIK]:
    initiator = HandshakeIK(
        vector["protocol_name"],
        initiator=True,
        prologue=bytes.fromhex(vector["init_prologue"]),
        static=_key(vector["init_static"]),
        ephemeral=_key(vector["init_ephemeral"]),
        remote_static=bytes.fromhex(vector["init_remote_static"]),
    )
    responder = HandshakeIK(
        vector["protocol_name"],
        initiator=False,
        prologue=bytes.fromhex(vector["resp_prologue"]),
        static=_key(vector["resp_static"]),
        ephemeral=_key(vector["resp_ephemeral"]),
    )
    return initiator, responder


def test_the_vector_file_covers_the_suites_the_sealing_uses() -> None:
    names = {vector["protocol_name"] for vector in VECTORS}
    assert {"Noise_IK_25519_ChaChaPoly_SHA256", "Noise_IK_25519_AESGCM_SHA256"} <= names
    assert len(VECTORS) == 16


@pytest.mark.parametrize(
    "vector", VECTORS, ids=[f"{v['from']}:{v['protocol_name']}" for v in VECTORS]
)
def test_published_noise_ik_vector(vector: dict[str, Any]) -> None:
    initiator, responder = _sides(vector)
    messages = vector["messages"]
    first, second = messages[0], messages[1]
    payload = bytes.fromhex(first["payload"])
    assert initiator.write_message(payload).hex() == first["ciphertext"]
    assert responder.read_message(bytes.fromhex(first["ciphertext"])) == payload
    assert responder.remote_static == public_bytes(_key(vector["init_static"]))
    payload = bytes.fromhex(second["payload"])
    assert responder.write_message(payload).hex() == second["ciphertext"]
    assert initiator.read_message(bytes.fromhex(second["ciphertext"])) == payload
    if "handshake_hash" in vector:
        assert initiator.handshake_hash.hex() == vector["handshake_hash"]
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.transport is not None and responder.transport is not None
    for index, message in enumerate(messages[2:]):
        sender, receiver = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        assert sender.transport is not None and receiver.transport is not None
        plaintext = bytes.fromhex(message["payload"])
        assert sender.transport[0].encrypt_with_ad(b"", plaintext).hex() == message["ciphertext"]
        opened = receiver.transport[1].decrypt_with_ad(b"", bytes.fromhex(message["ciphertext"]))
        assert opened == plaintext


def test_a_changed_prologue_or_flipped_byte_fails_message_one() -> None:
    vector = next(v for v in VECTORS if v["protocol_name"] == "Noise_IK_25519_ChaChaPoly_SHA256")
    initiator, _ = _sides(vector)
    message = initiator.write_message(b"payload")
    other_prologue = dict(vector, resp_prologue=vector["resp_prologue"] + "00")
    with pytest.raises(NoiseError):
        _sides(other_prologue)[1].read_message(message)
    flipped = bytearray(message)
    flipped[40] ^= 1  # inside the encrypted static key
    with pytest.raises(NoiseError):
        _sides(vector)[1].read_message(bytes(flipped))
    with pytest.raises(NoiseError, match="out of order"):
        initiator.write_message(b"")
