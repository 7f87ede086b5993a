"""Forward secrecy of the opener's direction (docs/sealing.md, version 4).

A relay records every byte of a sealed TCP forward and later learns the destination's
static sealing key (here: the test's own key material).  With it the relay can read
Noise message 1's payload, so the early key and the records sealed before the opener had
message 2 -- Noise IK's message-1 properties.  The records after the key-change record are
under ``Split()``'s initiator key, which needs an ephemeral private key the relay never had:
no key it can derive opens them, while the destination read every byte.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.node.streams.connection import SessionConnection
from accessfabric.node.streams.resumable import ResumableStream
from accessfabric.node.streams.sealed_stream import SealedStream
from accessfabric.sealing import RecordOpener, SealingError, SealInitiator
from accessfabric.sealing.handshake import (
    KEY_SIZE,
    PROTOCOL_NAMES,
    parse_key_exchange,
    prologue,
    stream_context,
)
from accessfabric.sealing.noise import HandshakeIK
from accessfabric.sealing.records import HEADER, KEY_CHANGE_BIT, TAG_SIZE, CipherSuite
from accessfabric.session import events as ev
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until
from tests.relay.fabric import build
from tests.relay.test_sealed_forward import SERVICE, digest_server, forward, payload, routes


class OpenerRecorder:
    """The relay's recording of the opener's direction: the OPEN_STREAM it got and every
    DATA byte on that same stream (the destination's direction is another stream)."""

    def __init__(self) -> None:
        self.opens: list[tuple[tuple[int, int], ev.StreamOpened]] = []
        self.data: dict[tuple[int, int], bytearray] = defaultdict(bytearray)

    def __call__(self, connection: SessionConnection, event: ev.Event) -> None:
        if type(event) is ev.StreamOpened:
            assert isinstance(event, ev.StreamOpened)
            self.opens.append(((id(connection), event.stream_id), event))
        elif type(event) is ev.DataReceived:
            assert isinstance(event, ev.DataReceived)
            self.data[(id(connection), event.stream_id)] += bytes(event.data)


def _split_at_key_change(records: bytes) -> int:
    """The offset just past the key-change record (the relay can find it: headers are in
    clear); -1 when there is none."""
    offset = 0
    while offset + HEADER.size <= len(records):
        (word,) = HEADER.unpack_from(records, offset)
        end = offset + HEADER.size + (word & 0x3FFFFFFF) + TAG_SIZE
        if word & KEY_CHANGE_BIT:
            return end
        offset = end
    return -1


async def test_a_relay_that_learns_the_destination_key_cannot_read_after_the_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    initiators: list[SealInitiator] = []
    make = SealedStream.opener

    def opener(inner: ResumableStream, initiator: SealInitiator) -> SealedStream:
        initiators.append(initiator)  # (to wait until the opener has read message 2)
        return make(inner, initiator)

    monkeypatch.setattr(SealedStream, "opener", opener)
    fabric = await build(tmp_path, relays=1)
    target = await digest_server()
    recorder = OpenerRecorder()
    fabric.relays[0].data_plane.hooks.append(recorder)
    forwarder = await forward(fabric, target)
    try:
        fabric.source.routes.set_routes(SERVICE, TrafficClass.RELIABLE, routes(fabric, [0]))
        reader, writer = await asyncio.open_connection("127.0.0.1", forwarder.port)
        before, after = payload(100_000), b"AFTER-THE-SWITCH " * 20_000
        writer.write(before)
        await writer.drain()
        # the destination's reply (message 2) goes out at once, before any record of its
        # own: the opener has it while ``before`` may still be on its way
        await until(lambda: len(initiators) == 1 and initiators[0].opener is not None)
        writer.write(after)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        # the destination read every byte
        assert answer.split(b" ")[0].decode() == hashlib.sha256(before + after).hexdigest()
    finally:
        await forwarder.close()
        target.close()
        await fabric.stop()

    # later, the relay learns the destination's static key
    [(stream, opened)] = recorder.opens
    records = bytes(recorder.data[stream])
    destination_static = fabric.keys[fabric.destination.node_id].sealing_private_key()
    blob = parse_key_exchange(opened.key_exchange)
    assert blob is not None
    suite = CipherSuite(blob.suite)
    noise = HandshakeIK(
        PROTOCOL_NAMES[suite], initiator=False,
        prologue=prologue(
            opened.key_exchange, blob.opener_node_id.encode(),
            stream_context(opened.service, opened.resume_token),
        ),
        static=destination_static, ephemeral=X25519PrivateKey.generate(),
    )  # fmt: skip
    early_key = noise.read_message(blob.message)[:KEY_SIZE]  # message 1 is open to it
    # ... so the records before the switch are (message 1's properties, documented)
    cut = _split_at_key_change(records)
    assert 0 < cut < len(records), "the opener never left the early key"
    early_plain = b"".join(RecordOpener(early_key, suite).feed(records[: cut - 20]))
    assert before.startswith(early_plain)
    with pytest.raises(SealingError, match="unexpected key-change record"):
        RecordOpener(early_key, suite).feed(records[:cut])
    # ... but nothing after it: not the early key (at either nonce), not the initiator key
    # of a Split() the relay can run itself (its own ephemeral, the real message 1)
    noise.write_message(b"")
    assert noise.transport is not None
    rest = records[cut:]
    assert len(rest) > len(after)  # the bulk of the stream is after the switch
    for key in (early_key, noise.transport[1].key, noise.transport[0].key):
        with pytest.raises(SealingError, match="failed authentication"):
            RecordOpener(key, suite).feed(rest)
    continued = RecordOpener(early_key, suite, next_key=early_key)
    with pytest.raises(SealingError, match="failed authentication"):
        continued.feed(records)
    assert after[:16] not in records
