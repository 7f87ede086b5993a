"""The opener's choice of AEAD: both suites seal, the suite is bound to the keys (a relay
that flips it breaks the handshake), v1 openers still work as ChaCha20-Poly1305, and an
unknown suite is refused as sealing."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from accessfabric.identity.keys import NodeKey
from accessfabric.sealing import SealingError, SealInitiator, SealResponder
from accessfabric.sealing.handshake import (
    destination_resume_key,
    is_sealing_key_exchange,
    parse_key_exchange,
)
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
    )  # fmt: skip


def _responder(blob: bytes) -> SealResponder:
    return SealResponder(DESTINATION.sealing_private_key(), blob, DIRECTORY.get, CONTEXT)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.label)
def test_either_suite_round_trips_both_ways_with_the_same_record_layout(
    suite: CipherSuite,
) -> None:
    initiator = _initiator(suite)
    assert initiator.key_exchange[:2] == bytes((2, suite.value))
    responder = _responder(initiator.key_exchange)
    assert responder.suite is suite
    message = os.urandom(150_000)
    wire = initiator.sealer.seal(message) + initiator.sealer.finish()
    assert len(wire) == len(message) + 4 * (HEADER.size + TAG_SIZE)  # 3 records + final
    assert b"".join(responder.opener.feed(wire)) == message
    responder.opener.check_end()
    answer = os.urandom(70_000)
    back = responder.reply_header + responder.sealer.seal(answer) + responder.sealer.finish()
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


@pytest.mark.parametrize(
    ("sent", "flipped"),
    [
        (CipherSuite.AES_256_GCM, CipherSuite.CHACHA20_POLY1305),
        (CipherSuite.CHACHA20_POLY1305, CipherSuite.AES_256_GCM),
    ],
    ids=["aes-to-chacha", "chacha-to-aes"],
)
def test_a_relay_that_flips_the_suite_breaks_the_handshake(
    sent: CipherSuite, flipped: CipherSuite
) -> None:
    """Downgrade protection: the destination accepts the flipped blob (both suites are
    fine with it) but derives other keys, so neither direction's first record opens."""
    initiator = _initiator(sent)
    blob = bytes((2, flipped.value)) + initiator.key_exchange[2:]
    responder = _responder(blob)
    assert responder.suite is flipped
    with pytest.raises(SealingError, match="record 0 failed authentication"):
        responder.opener.feed(initiator.sealer.seal(b"hello"))
    with pytest.raises(SealingError, match="record 0 failed authentication"):
        initiator.feed_reply(responder.reply_header + responder.sealer.seal(b"hi"))
    # the resume key does not depend on the suite: a flip gives the relay nothing there
    assert destination_resume_key(DESTINATION.sealing_private_key(), blob) == (initiator.resume_key)


def test_a_relay_that_makes_a_recorded_exchange_look_fresh_breaks_the_handshake() -> None:
    """``opened_ms`` is bound into the keys: a relay replaying an old open with a new
    time (to pass the destination's freshness check) gets a handshake that fails."""
    initiator = _initiator(CipherSuite.AES_256_GCM)
    parsed = parse_key_exchange(initiator.key_exchange)
    assert parsed is not None and parsed.opened_ms is not None
    fresher = (parsed.opened_ms + 60_000).to_bytes(8, "big")
    blob = initiator.key_exchange[:2] + fresher + initiator.key_exchange[10:]
    assert parse_key_exchange(blob).opened_ms == parsed.opened_ms + 60_000  # type: ignore[union-attr]
    responder = _responder(blob)
    with pytest.raises(SealingError, match="record 0 failed authentication"):
        responder.opener.feed(initiator.sealer.seal(b"hello"))


def test_a_relay_that_rewrites_the_exchange_as_version_1_breaks_the_handshake() -> None:
    initiator = _initiator(CipherSuite.AES_256_GCM)
    as_v1 = b"\x01" + initiator.key_exchange[10:]  # drop suite and time: ChaCha20, old keys
    responder = _responder(as_v1)
    assert responder.suite is CipherSuite.CHACHA20_POLY1305
    assert responder.reply_header[0] == 1
    with pytest.raises(SealingError, match="record 0 failed authentication"):
        responder.opener.feed(initiator.sealer.seal(b"hello"))
    with pytest.raises(SealingError, match="unsupported sealing version 1"):
        initiator.feed_reply(responder.reply_header + responder.sealer.seal(b"hi"))


def test_an_unknown_suite_is_a_sealing_exchange_that_is_refused() -> None:
    """Recognised as sealing (so the node refuses it as such, never serves it unsealed),
    but no responder: the suite is named in the error."""
    blob = b"\x02\x09" + _initiator(CipherSuite.AES_256_GCM).key_exchange[2:]
    assert is_sealing_key_exchange(blob)
    parsed = parse_key_exchange(blob)
    assert parsed is not None and parsed.suite == 9 and parsed.opener_node_id == OPENER.node_id
    with pytest.raises(SealingError, match="unknown cipher suite 9"):
        _responder(blob)
    assert not is_sealing_key_exchange(b"\x03\x01" + blob[2:])  # an unknown version is not


def test_suite_labels_are_the_config_names() -> None:
    assert [s.label for s in CipherSuite] == ["chacha20-poly1305", "aes-256-gcm"]
    assert CipherSuite.from_label("aes-256-gcm") is CipherSuite.AES_256_GCM
    with pytest.raises(ValueError, match="unknown cipher"):
        CipherSuite.from_label("aes-128-gcm")


# ---------------------------------------------------------------- the page, byte for byte


def _raw(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _h(label: bytes, *parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in (label, *parts):
        digest.update(len(part).to_bytes(4, "big") + part)
    return digest.digest()


def _hkdf(secret: bytes, salt: bytes, direction: bytes) -> bytes:
    info = b"accessfabric e2e sealing v1 " + direction
    return HKDF(hashes.SHA256(), 32, salt=salt, info=info).derive(secret)


@pytest.mark.parametrize(
    ("version", "suite"),
    [
        (1, CipherSuite.CHACHA20_POLY1305),
        (2, CipherSuite.CHACHA20_POLY1305),
        (2, CipherSuite.AES_256_GCM),
    ],
    ids=["v1", "v2-chacha", "v2-aes"],
)
def test_an_opener_built_from_docs_sealing_md_talks_to_the_responder(
    version: int, suite: CipherSuite
) -> None:
    """docs/sealing.md's layout and key schedule, computed here from the page, not the
    module: v1 (an older opener) is served as ChaCha20-Poly1305, v2 with either suite."""
    static = OPENER.sealing_private_key()
    destination = X25519PublicKey.from_public_bytes(DESTINATION.sealing_public_key_bytes)
    ephemeral = X25519PrivateKey.generate()
    node_id = OPENER.node_id.encode()
    opened = (1_767_225_600_000).to_bytes(8, "big")  # v2: when the opener made it (Unix ms)
    head = b"\x01" if version == 1 else bytes((2, suite.value)) + opened
    blob = head + _raw(ephemeral) + bytes((len(node_id),)) + node_id
    label = b"accessfabric e2e sealing v%d" % version
    bound = () if version == 1 else (bytes((2, suite.value)) + opened,)
    transcript = _h(label, *bound, _raw(static), _raw(destination), _raw(ephemeral), CONTEXT)
    secret = ephemeral.exchange(destination) + static.exchange(destination)
    aead = ChaCha20Poly1305 if suite is CipherSuite.CHACHA20_POLY1305 else AESGCM
    to_destination = aead(_hkdf(secret, transcript, b"opener to destination"))
    nonce = bytes(4) + (0).to_bytes(8, "big")
    header = HEADER.pack(5)
    record = header + to_destination.encrypt(nonce, b"hello", header)

    responder = _responder(blob)
    assert responder.suite is suite
    assert responder.opener.feed(record) == [b"hello"]
    reply = responder.reply_header + responder.sealer.seal(b"world")
    assert reply[0] == version
    reply_public = X25519PublicKey.from_public_bytes(reply[1:33])
    reply_key = _hkdf(
        secret + ephemeral.exchange(reply_public),
        _h(label, transcript, reply[1:33]),
        b"destination to opener",
    )
    body = reply[33:]
    assert aead(reply_key).decrypt(nonce, body[HEADER.size :], body[: HEADER.size]) == b"world"
