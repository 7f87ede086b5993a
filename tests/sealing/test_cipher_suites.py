"""Version 3 sealing (Noise IK): both suites seal, the suite, time and stream are bound by
the Noise protocol name and prologue (a relay that changes them breaks message 1), the
retired home-made versions 1 and 2 are refused with a clear error, an unknown suite is
refused as sealing, and an opener built from docs/sealing.md alone talks to the responder."""

from __future__ import annotations

import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from accessfabric.identity.keys import NodeKey
from accessfabric.sealing import SealingError, SealInitiator, SealResponder
from accessfabric.sealing.handshake import (
    destination_resume_key,
    is_sealing_key_exchange,
    parse_key_exchange,
)
from accessfabric.sealing.noise import HandshakeIK
from accessfabric.sealing.records import HEADER, TAG_SIZE, CipherSuite

OPENER = NodeKey.from_seed(b"\x11" * 32)
DESTINATION = NodeKey.from_seed(b"\x22" * 32)
DIRECTORY = {key.node_id: key.sealing_public_key_bytes for key in (OPENER, DESTINATION)}
CONTEXT = b"rdp\x00" + b"t" * 16
SUITES = list(CipherSuite)


def _initiator(suite: CipherSuite) -> SealInitiator:
    return SealInitiator(
        OPENER.sealing_private_key(), OPENER.node_id,
        DESTINATION.sealing_public_key_bytes, CONTEXT, suite=suite,
        random_bytes=os.urandom, opened_ms=int(time.time() * 1000),
    )  # fmt: skip


def _responder(blob: bytes, context: bytes = CONTEXT) -> SealResponder:
    return SealResponder(
        DESTINATION.sealing_private_key(), blob, DIRECTORY.get, context, random_bytes=os.urandom
    )


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.label)
def test_either_suite_round_trips_both_ways_with_the_same_record_layout(
    suite: CipherSuite,
) -> None:
    initiator = _initiator(suite)
    assert initiator.key_exchange[:2] == bytes((4, suite.value))
    responder = _responder(initiator.key_exchange)
    assert responder.suite is suite
    assert responder.resume_key == initiator.resume_key
    message = os.urandom(150_000)
    wire = initiator.sealer.seal(message) + initiator.sealer.finish()
    assert len(wire) == len(message) + 4 * (HEADER.size + TAG_SIZE)  # 3 records + final
    assert b"".join(responder.opener.feed(wire)) == message
    responder.opener.check_end()
    answer = os.urandom(70_000)
    back = responder.reply_header + responder.sealer.seal(answer) + responder.sealer.finish()
    assert len(responder.reply_header) == 49
    assert b"".join(initiator.feed_reply(back)) == answer
    assert initiator.opener is not None
    initiator.opener.check_end()


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.label)
def test_tampering_is_detected_with_either_suite(suite: CipherSuite) -> None:
    initiator = _initiator(suite)
    responder = _responder(initiator.key_exchange)
    wire = bytearray(initiator.sealer.seal(b"payload " * 100))
    wire[HEADER.size + 10] ^= 0x01
    with pytest.raises(SealingError, match="record 0 failed authentication"):
        responder.opener.feed(bytes(wire))
    back = bytearray(responder.reply_header + responder.sealer.seal(b"answer"))
    back[-1] ^= 0x80  # the tag
    with pytest.raises(SealingError, match="record 0 failed authentication"):
        initiator.feed_reply(bytes(back))
    reply = bytearray(_responder(initiator.key_exchange).reply_header)
    reply[-1] ^= 0x01  # Noise message 2's tag
    with pytest.raises(SealingError, match="failed authentication"):
        _initiator(suite).feed_reply(bytes(reply))


@pytest.mark.parametrize(
    ("sent", "flipped"),
    [
        (CipherSuite.AES_256_GCM, CipherSuite.CHACHA20_POLY1305),
        (CipherSuite.CHACHA20_POLY1305, CipherSuite.AES_256_GCM),
    ],
    ids=["aes-to-chacha", "chacha-to-aes"],
)
def test_a_relay_that_flips_the_suite_breaks_message_one(
    sent: CipherSuite, flipped: CipherSuite
) -> None:
    """Downgrade protection: the suite is in the Noise protocol name and the prologue, so
    the destination cannot read message 1 (no responder, no resume key for the relay)."""
    initiator = _initiator(sent)
    blob = bytes((4, flipped.value)) + initiator.key_exchange[2:]
    with pytest.raises(SealingError, match="Noise message 1 does not verify"):
        _responder(blob)
    with pytest.raises(SealingError, match="Noise message 1 does not verify"):
        destination_resume_key(DESTINATION.sealing_private_key(), blob, CONTEXT)


def test_time_opener_id_and_stream_are_bound_by_the_prologue() -> None:
    """``opened_ms`` (a relay freshening a recorded open), the opener id and the stream
    context (a blob replayed into another stream) all change the prologue."""
    initiator = _initiator(CipherSuite.AES_256_GCM)
    blob = initiator.key_exchange
    parsed = parse_key_exchange(blob)
    assert parsed is not None
    fresher = blob[:2] + (parsed.opened_ms + 60_000).to_bytes(8, "big") + blob[10:]
    assert parse_key_exchange(fresher).opened_ms == parsed.opened_ms + 60_000  # type: ignore[union-attr]
    id_at = 10 + 160 + 1
    renamed = bytearray(blob)
    renamed[id_at + 5] ^= 0x01  # another (unknown or other) opener id
    other = b"ssh\x00" + b"t" * 16
    for altered, context in ((fresher, CONTEXT), (bytes(renamed), CONTEXT), (blob, other)):
        with pytest.raises(SealingError, match="does not verify"):
            SealResponder(
                DESTINATION.sealing_private_key(),
                altered,
                lambda _id: b"\x00" * 32,
                context,
                random_bytes=os.urandom,
            )


def test_the_static_key_in_message_one_must_be_the_named_openers() -> None:
    """A node that opens with its own static key but names another node is refused."""
    mallory = NodeKey.from_seed(b"\x33" * 32)
    forged = SealInitiator(
        mallory.sealing_private_key(), OPENER.node_id,
        DESTINATION.sealing_public_key_bytes, CONTEXT,
        random_bytes=os.urandom, opened_ms=int(time.time() * 1000),
    )  # fmt: skip
    with pytest.raises(SealingError, match="not opener"):
        _responder(forged.key_exchange)
    with pytest.raises(SealingError, match="no sealing key known"):
        SealResponder(
            DESTINATION.sealing_private_key(),
            forged.key_exchange,
            {}.get,
            CONTEXT,
            random_bytes=os.urandom,
        )


@pytest.mark.parametrize("version", [1, 2, 3])
def test_retired_versions_are_sealing_exchanges_that_are_refused(version: int) -> None:
    """An older opener's exchange is never served unsealed: recognised as sealing, refused
    with an error that names both versions."""
    blob = bytes((version, 1)) + os.urandom(100)
    assert is_sealing_key_exchange(blob)
    assert parse_key_exchange(blob) is None
    with pytest.raises(SealingError, match=f"version {version}: this node speaks version 4"):
        _responder(blob)
    with pytest.raises(SealingError, match="speaks version 4"):
        destination_resume_key(DESTINATION.sealing_private_key(), blob, CONTEXT)


def test_an_older_destinations_reply_fails_the_opener() -> None:
    initiator = _initiator(CipherSuite.AES_256_GCM)
    with pytest.raises(SealingError, match="unsupported sealing version 2"):
        initiator.feed_reply(b"\x02" + bytes(48))


def test_an_unknown_suite_is_a_sealing_exchange_that_is_refused() -> None:
    """Recognised as sealing (so the node refuses it as such, never serves it unsealed),
    but no responder: the suite is named in the error."""
    blob = b"\x04\x09" + _initiator(CipherSuite.AES_256_GCM).key_exchange[2:]
    assert is_sealing_key_exchange(blob)
    parsed = parse_key_exchange(blob)
    assert parsed is not None and parsed.suite == 9 and parsed.opener_node_id == OPENER.node_id
    with pytest.raises(SealingError, match="unknown cipher suite 9"):
        _responder(blob)
    assert not is_sealing_key_exchange(b"\x05\x01" + blob[2:])  # an unknown version is not


def test_suite_labels_are_the_config_names() -> None:
    assert [s.label for s in CipherSuite] == ["chacha20-poly1305", "aes-256-gcm"]
    assert CipherSuite.from_label("aes-256-gcm") is CipherSuite.AES_256_GCM
    with pytest.raises(ValueError, match="unknown cipher"):
        CipherSuite.from_label("aes-128-gcm")


# ---------------------------------------------------------------- the page, byte for byte


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.label)
def test_an_opener_built_from_docs_sealing_md_talks_to_the_responder(suite: CipherSuite) -> None:
    """docs/sealing.md's layout, prologue, payload and record nonces, assembled here from
    the page (Noise itself is the vector-checked ``HandshakeIK``), not from the module."""
    name = {1: "Noise_IK_25519_ChaChaPoly_SHA256", 2: "Noise_IK_25519_AESGCM_SHA256"}[suite]
    node_id = OPENER.node_id.encode()
    head = bytes((4, suite.value)) + (1_767_225_600_000).to_bytes(8, "big")
    prologue = b"accessfabric e2e sealing v4" + head + bytes((len(node_id),)) + node_id + CONTEXT
    noise = HandshakeIK(
        name, initiator=True, prologue=prologue, static=OPENER.sealing_private_key(),
        ephemeral=X25519PrivateKey.generate(),
        remote_static=DESTINATION.sealing_public_key_bytes,
    )  # fmt: skip
    early, resume = os.urandom(32), os.urandom(32)
    message = noise.write_message(early + resume)
    assert len(message) == 160
    blob = head + message + bytes((len(node_id),)) + node_id
    aead = ChaCha20Poly1305 if suite is CipherSuite.CHACHA20_POLY1305 else AESGCM
    order = "little" if suite is CipherSuite.CHACHA20_POLY1305 else "big"

    def nonce(counter: int) -> bytes:
        return bytes(4) + counter.to_bytes(8, order)  # type: ignore[arg-type]

    records = b""
    for counter, (text, final) in enumerate(((b"hello", False), (b"", True))):
        header = HEADER.pack(len(text) | (1 << 31 if final else 0))
        records += header + aead(early).encrypt(nonce(counter), text, header)

    responder = _responder(blob)
    assert responder.suite is suite and responder.resume_key == resume
    assert destination_resume_key(DESTINATION.sealing_private_key(), blob, CONTEXT) == resume
    assert responder.opener.feed(records) == [b"hello"]
    responder.opener.check_end()
    reply = responder.reply_header + responder.sealer.seal(b"world")
    assert reply[0] == 4
    noise.read_message(reply[1:49])
    assert noise.transport is not None
    body = reply[49:]
    opened = aead(noise.transport[1].key).decrypt(nonce(0), body[4:], body[:4])
    assert opened == b"world"
