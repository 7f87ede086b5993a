"""tests/vectors/sealing.json: version 4 sealed streams with every secret fixed.

The file is what ``make_sealing.py`` writes (not stale); an opener assembled from
docs/sealing.md (prologue, blob, payload, nonces) over the vector-checked Noise module
produces exactly its key exchange and records; the module's responder and initiator read
the other side's bytes back to the plaintexts.  The Go peer checks the same file with
flynn/noise (tests/interop/test_go_sealed.py)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from accessfabric.identity.keys import NodeKey
from accessfabric.sealing import SealInitiator, SealResponder
from accessfabric.sealing.handshake import stream_context
from accessfabric.sealing.noise import HandshakeIK
from accessfabric.sealing.records import CipherSuite

VECTORS = Path(__file__).parents[1] / "vectors"
DATA: dict[str, Any] = json.loads((VECTORS / "sealing.json").read_text())


def test_the_file_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_sealing", VECTORS / "make_sealing.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(module.build()) == (VECTORS / "sealing.json").read_text(), (
        "run python tests/vectors/make_sealing.py"
    )


def _records(
    aead: ChaCha20Poly1305 | AESGCM, little: bool, texts: list[str], final: bool = True
) -> bytes:
    out = b""
    for counter, text in enumerate(texts):
        plain = bytes.fromhex(text)
        last = final and counter == len(texts) - 1
        header = (len(plain) | (1 << 31 if last else 0)).to_bytes(4, "big")
        nonce = bytes(4) + counter.to_bytes(8, "little" if little else "big")
        out += header + aead.encrypt(nonce, plain, header)
    return out


def _key_change(aead: ChaCha20Poly1305 | AESGCM, little: bool, counter: int) -> bytes:
    """The key-change record: empty, header ``0x40000000``, under the early key."""
    header = (1 << 30).to_bytes(4, "big")
    return header + aead.encrypt(
        bytes(4) + counter.to_bytes(8, "little" if little else "big"), b"", header
    )


@pytest.mark.parametrize("case", DATA["cases"], ids=lambda c: c["noise_protocol_name"])
def test_an_opener_from_the_page_makes_exactly_the_vector(case: dict[str, Any]) -> None:
    opener = NodeKey.from_seed(bytes.fromhex(DATA["opener_seed"]))
    node_id = opener.node_id.encode()
    head = bytes((4, case["suite"])) + DATA["opened_ms"].to_bytes(8, "big")
    context = DATA["service"].encode() + b"\x00" + bytes.fromhex(DATA["resume_token"])
    prologue = b"accessfabric e2e sealing v4" + head + bytes((len(node_id),)) + node_id + context
    assert prologue.hex() == case["prologue"]
    noise = HandshakeIK(
        case["noise_protocol_name"], initiator=True, prologue=prologue,
        static=opener.sealing_private_key(),
        ephemeral=X25519PrivateKey.from_private_bytes(
            bytes.fromhex(DATA["opener_ephemeral_private"])
        ),
        remote_static=bytes.fromhex(DATA["destination_sealing_public_key"]),
    )  # fmt: skip
    payload = bytes.fromhex(DATA["message1_payload"])
    blob = head + noise.write_message(payload) + bytes((len(node_id),)) + node_id
    assert blob.hex() == case["key_exchange"]
    chacha = case["suite"] == CipherSuite.CHACHA20_POLY1305
    cipher = ChaCha20Poly1305 if chacha else AESGCM
    early = cipher(payload[:32])
    texts, before = DATA["to_destination_plaintexts"], DATA["to_destination_before_reply"]
    reply = bytes.fromhex(case["reply_header"])
    assert reply[0] == 4 and noise.read_message(reply[1:]) == b""
    assert noise.transport is not None
    # before message 2: the early key; then the key-change record (still the early key, the
    # next nonce) and the rest under Split()'s initiator key from nonce 0
    records = (
        _records(early, chacha, texts[:before], final=False)
        + _key_change(early, chacha, before)
        + _records(cipher(noise.transport[0].key), chacha, texts[before:])
    )
    assert records.hex() == case["opener_to_destination_records"]
    back = (ChaCha20Poly1305 if chacha else AESGCM)(noise.transport[1].key)
    assert (
        _records(back, chacha, DATA["to_opener_plaintexts"]).hex()
        == (case["destination_to_opener_records"])
    )


@pytest.mark.parametrize("case", DATA["cases"], ids=lambda c: c["noise_protocol_name"])
def test_the_module_reads_both_directions_of_the_vector(case: dict[str, Any]) -> None:
    opener = NodeKey.from_seed(bytes.fromhex(DATA["opener_seed"]))
    destination = NodeKey.from_seed(bytes.fromhex(DATA["destination_seed"]))
    context = stream_context(DATA["service"], bytes.fromhex(DATA["resume_token"]))
    responder = SealResponder(
        destination.sealing_private_key(), bytes.fromhex(case["key_exchange"]),
        {opener.node_id: opener.sealing_public_key_bytes}.get, context,
        ephemeral=X25519PrivateKey.from_private_bytes(
            bytes.fromhex(DATA["destination_ephemeral_private"])
        ), random_bytes=os.urandom,
    )  # fmt: skip
    assert responder.reply_header.hex() == case["reply_header"]
    got = responder.opener.feed(bytes.fromhex(case["opener_to_destination_records"]))
    assert b"".join(got) == b"".join(map(bytes.fromhex, DATA["to_destination_plaintexts"]))
    responder.opener.check_end()
    assert responder.resume_key == bytes.fromhex(DATA["message1_payload"])[32:]
    initiator = SealInitiator(
        opener.sealing_private_key(), opener.node_id,
        destination.sealing_public_key_bytes, context, suite=CipherSuite(case["suite"]),
        opened_ms=DATA["opened_ms"],
        ephemeral=X25519PrivateKey.from_private_bytes(
            bytes.fromhex(DATA["opener_ephemeral_private"])
        ),
        payload=bytes.fromhex(DATA["message1_payload"]), random_bytes=os.urandom,
    )  # fmt: skip
    wire = bytes.fromhex(case["reply_header"] + case["destination_to_opener_records"])
    assert b"".join(initiator.feed_reply(wire)) == bytes.fromhex(DATA["to_opener_plaintexts"][0])
    assert initiator.opener is not None
    initiator.opener.check_end()
