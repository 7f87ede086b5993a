"""A relay can neither read nor undetectably modify, reorder, drop, replay or cut sealed bytes."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from accessfabric.identity.keys import NodeKey
from accessfabric.sealing import (
    RecordOpener,
    RecordSealer,
    SealingError,
    SealInitiator,
    SealResponder,
)
from accessfabric.sealing.handshake import EXCHANGE_ROOM
from accessfabric.sealing.records import FINAL_BIT, HEADER, KEY_CHANGE_BIT, TAG_SIZE
from accessfabric.sealing.resume_proof import PROOF_SIZE
from accessfabric.wire.limits import MAX_KEY_EXCHANGE

OPENER = NodeKey.from_seed(b"\x11" * 32)
DESTINATION = NodeKey.from_seed(b"\x22" * 32)
MALLORY = NodeKey.from_seed(b"\x33" * 32)
DIRECTORY = {key.node_id: key.sealing_public_key_bytes for key in (OPENER, DESTINATION, MALLORY)}
CONTEXT = b"service=rdp;token=0123456789abcdef"


def _handshake(context: bytes = CONTEXT) -> tuple[SealInitiator, SealResponder]:
    initiator = SealInitiator(
        OPENER.sealing_private_key(),
        OPENER.node_id,
        DESTINATION.sealing_public_key_bytes,
        CONTEXT,
        random_bytes=os.urandom,
        opened_ms=int(time.time() * 1000),
    )
    responder = SealResponder(
        DESTINATION.sealing_private_key(),
        initiator.key_exchange,
        DIRECTORY.get,
        context,
        random_bytes=os.urandom,
    )
    return initiator, responder


def _records(blob: bytes) -> list[bytes]:
    out = []
    offset = 0
    while offset < len(blob):
        (word,) = HEADER.unpack_from(blob, offset)
        end = offset + HEADER.size + (word & 0x7FFFFFFF) + TAG_SIZE
        out.append(blob[offset:end])
        offset = end
    return out


def _chunks(blob: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(blob)), min(20, len(blob) - 1)))
    return [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]


def test_both_directions_round_trip_in_any_chunking() -> None:
    rng = random.Random(3)
    initiator, responder = _handshake()
    messages = [os.urandom(rng.randrange(0, 200_000)) for _ in range(5)]
    wire = b"".join(initiator.sealer.seal(m) for m in messages) + initiator.sealer.finish()
    got = b"".join(p for chunk in _chunks(wire, rng) for p in responder.opener.feed(chunk))
    assert got == b"".join(messages)
    responder.opener.check_end()
    reply = responder.reply_header + responder.sealer.seal(b"hello opener", final=True)
    back = b"".join(p for chunk in _chunks(reply, rng) for p in initiator.feed_reply(chunk))
    assert back == b"hello opener"
    assert initiator.opener is not None
    initiator.opener.check_end()
    # Sealing hides the content: no plaintext run survives.
    assert messages[0][:64] not in wire


def _tampered(manipulate: Callable[[list[bytes]], list[bytes]]) -> None:
    initiator, responder = _handshake()
    wire = b"".join(initiator.sealer.seal(os.urandom(1000)) for _ in range(4))
    wire += initiator.sealer.finish()
    records = _records(wire)
    forged = manipulate(records)
    with pytest.raises(SealingError):
        for record in forged:
            responder.opener.feed(record)
        responder.opener.check_end()


def test_modified_byte_is_detected() -> None:
    def flip(records: list[bytes]) -> list[bytes]:
        damaged = bytearray(records[1])
        damaged[10] ^= 0x01
        return [records[0], bytes(damaged), *records[2:]]

    _tampered(flip)


def test_modified_length_header_is_detected() -> None:
    def shorten(records: list[bytes]) -> list[bytes]:
        damaged = bytearray(records[0])
        damaged[3] ^= 0x01  # the length is authenticated as associated data
        return [bytes(damaged), *records[1:]]

    _tampered(shorten)


def test_reordered_records_are_detected() -> None:
    _tampered(lambda r: [r[1], r[0], *r[2:]])


def test_dropped_record_is_detected() -> None:
    _tampered(lambda r: [r[0], *r[2:]])


def test_replayed_record_is_detected() -> None:
    _tampered(lambda r: [r[0], r[0], *r[1:]])


def test_truncated_stream_is_detected() -> None:
    _tampered(lambda r: r[:-1])  # the final record never arrives


def test_bytes_after_the_final_record_are_rejected() -> None:
    _tampered(lambda r: [*r, r[0]])


def test_key_exchange_replayed_into_another_stream_is_refused() -> None:
    initiator, _ = _handshake()
    with pytest.raises(SealingError, match="does not verify"):  # the context is the prologue's
        SealResponder(
            DESTINATION.sealing_private_key(),
            initiator.key_exchange,
            DIRECTORY.get,
            b"ssh",
            random_bytes=os.urandom,
        )


def test_a_relay_without_the_keys_cannot_read_or_impersonate() -> None:
    initiator, responder = _handshake()
    wire = initiator.sealer.seal(b"secret keystrokes")
    # Mallory relays the stream and holds every public value, plus her own keys: message 1
    # is encrypted to the destination's static key, so she cannot read it (nor its keys).
    with pytest.raises(SealingError, match="does not verify"):
        SealResponder(
            MALLORY.sealing_private_key(),
            initiator.key_exchange,
            DIRECTORY.get,
            CONTEXT,
            random_bytes=os.urandom,
        )
    # She cannot open a stream in the opener's name either: she lacks its static key, and
    # the static key message 1 proves is hers, not the named opener's.
    forged = SealInitiator(
        MALLORY.sealing_private_key(),
        OPENER.node_id,
        DESTINATION.sealing_public_key_bytes,
        CONTEXT,
        random_bytes=os.urandom,
        opened_ms=int(time.time() * 1000),
    )
    with pytest.raises(SealingError, match="not opener"):
        SealResponder(
            DESTINATION.sealing_private_key(),
            forged.key_exchange,
            DIRECTORY.get,
            CONTEXT,
            random_bytes=os.urandom,
        )
    # The real destination still reads the opener's bytes.
    assert responder.opener.feed(wire) == [b"secret keystrokes"]


def test_a_substituted_reply_is_detected_by_the_opener() -> None:
    """A relay cannot answer in the destination's place: message 2 needs ``se`` (the
    destination's static key); neither its own ephemeral key with a made-up tag nor the
    destination's genuine reply to another stream passes."""
    initiator, responder = _handshake()
    answer = responder.sealer.seal(b"screen update")
    _, other = _handshake()
    made_up = b"\x04" + MALLORY.sealing_public_key_bytes + os.urandom(16)
    for reply in (made_up, other.reply_header):
        with pytest.raises(SealingError, match="failed authentication"):
            _handshake()[0].feed_reply(reply + answer)
    assert initiator.feed_reply(responder.reply_header + answer) == [b"screen update"]


def test_unknown_opener_and_malformed_blobs_are_refused() -> None:
    initiator, _ = _handshake()
    with pytest.raises(SealingError):
        SealResponder(
            DESTINATION.sealing_private_key(),
            initiator.key_exchange,
            {}.get,
            CONTEXT,
            random_bytes=os.urandom,
        )
    for blob in (b"", b"\x05" + initiator.key_exchange[1:], initiator.key_exchange[:-1]):
        with pytest.raises(SealingError):
            SealResponder(
                DESTINATION.sealing_private_key(),
                blob,
                DIRECTORY.get,
                CONTEXT,
                random_bytes=os.urandom,
            )
    with pytest.raises(SealingError):  # a low-order point as the ephemeral key
        SealResponder(
            DESTINATION.sealing_private_key(),
            initiator.key_exchange[:10] + b"\x00" * 32 + initiator.key_exchange[42:],
            DIRECTORY.get,
            CONTEXT,
            random_bytes=os.urandom,
        )


def test_an_opener_record_is_sent_only_where_a_resume_proof_still_fits_beside_it() -> None:
    def exchange(record: bytes) -> bytes:
        return SealInitiator(
            OPENER.sealing_private_key(), OPENER.node_id,
            DESTINATION.sealing_public_key_bytes, CONTEXT, opener_record=record,
            random_bytes=os.urandom, opened_ms=int(time.time() * 1000),
        ).key_exchange  # fmt: skip

    bare = len(exchange(b""))
    fits = b"r" * (EXCHANGE_ROOM - bare - 2)
    assert len(exchange(fits)) == EXCHANGE_ROOM  # sent: the proof still fits beside it
    assert len(exchange(fits)) + PROOF_SIZE <= MAX_KEY_EXCHANGE
    assert len(exchange(fits + b"r")) == bare  # one byte more: left out


def test_the_opener_changes_key_once_it_has_message_2() -> None:
    """Early records under the early key, then ``40000000 | tag`` under it at the next
    nonce, then Split()'s initiator key from nonce 0; the destination follows."""
    initiator, responder = _handshake()
    early = bytes(initiator.sealer.seal(b"early"))
    assert initiator.feed_reply(responder.reply_header + responder.sealer.seal(b"hi")) == [b"hi"]
    assert not initiator.sealer.rekeyed
    later = bytes(initiator.sealer.seal(b"later"))
    assert initiator.sealer.rekeyed and later[:4] == bytes.fromhex("40000000")
    final = bytes(initiator.sealer.finish())
    assert responder.opener.feed(early + later + final) == [b"early", b"later"]
    responder.opener.check_end()
    # a relay that drops the key-change record: the next record fails (still read under
    # the early key, at nonce 1)
    cut = HEADER.size + TAG_SIZE
    dropped = SealResponder(
        DESTINATION.sealing_private_key(),
        initiator.key_exchange,
        DIRECTORY.get,
        CONTEXT,
        random_bytes=os.urandom,
    )
    assert dropped.opener.feed(early) == [b"early"]
    with pytest.raises(SealingError, match="record 1 failed authentication"):
        dropped.opener.feed(later[cut:])
    # ... or repeats it (the new key, nonce 1, does not open it), or reflects it
    repeated = RecordOpener(bytes(32), next_key=bytes(range(32)))
    sealer = RecordSealer(bytes(32))
    sealer.change_key(bytes(range(32)))
    change = bytes(sealer.seal(b"a"))
    assert repeated.feed(change) == [b"a"]
    with pytest.raises(SealingError, match="failed authentication"):
        repeated.feed(change[:cut])
    with pytest.raises(SealingError, match="unexpected key-change record"):
        RecordOpener(bytes(32)).feed(change)  # a direction with one key
    with pytest.raises(SealingError, match="already changed"):
        sealer.change_key(bytes(32))


def test_a_key_change_record_with_a_length_or_final_is_refused() -> None:
    key = bytes(32)
    aead = ChaCha20Poly1305(key)
    for word in (KEY_CHANGE_BIT | 5, KEY_CHANGE_BIT | FINAL_BIT):
        header = HEADER.pack(word)
        body = b"\x00" * (word & 0xFFFF)
        record = header + aead.encrypt(bytes(12), body, header)
        with pytest.raises(SealingError, match="must be empty and not final"):
            RecordOpener(key, next_key=bytes(range(32))).feed(record)
