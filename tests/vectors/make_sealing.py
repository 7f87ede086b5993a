"""Generate ``sealing.json``: golden vectors of a version 4 sealed stream (docs/sealing.md).

    python tests/vectors/make_sealing.py           # rewrite sealing.json
    python tests/vectors/make_sealing.py --check   # exit 1 if sealing.json is stale

Every secret is fixed (both nodes' seeds, both ephemeral keys, message 1's payload, the
time), so the output never changes unless the format does.  For each suite: the Noise
prologue and protocol name, the key exchange, the reply, and a few records each way (the
bytes the relays forward).  ``tests/sealing/test_sealing_vectors.py`` checks that the
module reproduces them and reads them as the other end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accessfabric.identity.keys import NodeKey
from accessfabric.sealing.handshake import (
    PROTOCOL_NAMES,
    SealInitiator,
    SealResponder,
    prologue,
    stream_context,
)
from accessfabric.sealing.records import CipherSuite

OPENER_SEED = bytes(range(32))
DESTINATION_SEED = bytes(range(32, 64))
OPENER_EPHEMERAL = bytes.fromhex("20" * 32)
DESTINATION_EPHEMERAL = bytes.fromhex("40" * 32)
PAYLOAD = bytes(range(100, 132)) + bytes(range(200, 232))  # early key | resume key
OPENED_MS = 1_767_225_600_000  # 2026-01-01T00:00Z
SERVICE = "echo"
TOKEN = bytes(range(16))
TO_DESTINATION = [b"hello, destination", b"after message 2", b""]  # the last one final
BEFORE_REPLY = 1
"""How many of TO_DESTINATION the opener seals before it reads the reply (early key);
the rest follow the key-change record, under Split()'s initiator key."""
TO_OPENER = [b"hello, opener", b""]

OUT = Path(__file__).with_name("sealing.json")


def _no_randomness(n: int) -> bytes:
    raise AssertionError("the vectors fix every key: nothing is drawn")


def build() -> dict[str, Any]:
    opener, destination = NodeKey.from_seed(OPENER_SEED), NodeKey.from_seed(DESTINATION_SEED)
    context = stream_context(SERVICE, TOKEN)
    cases = []
    for suite in CipherSuite:
        initiator = SealInitiator(
            opener.sealing_private_key(), opener.node_id, destination.sealing_public_key_bytes,
            context, suite=suite, opened_ms=OPENED_MS,
            ephemeral=X25519PrivateKey.from_private_bytes(OPENER_EPHEMERAL), payload=PAYLOAD,
            random_bytes=_no_randomness,
        )  # fmt: skip
        responder = SealResponder(
            destination.sealing_private_key(), initiator.key_exchange,
            {opener.node_id: opener.sealing_public_key_bytes}.get, context,
            ephemeral=X25519PrivateKey.from_private_bytes(DESTINATION_EPHEMERAL),
            random_bytes=_no_randomness,
        )  # fmt: skip
        last = len(TO_DESTINATION) - 1
        to_destination = b"".join(
            bytes(initiator.sealer.seal(text, final=index == last))
            for index, text in enumerate(TO_DESTINATION[:BEFORE_REPLY])
        )
        to_opener = b"".join(
            bytes(responder.sealer.seal(text, final=index == len(TO_OPENER) - 1))
            for index, text in enumerate(TO_OPENER)
        )
        assert initiator.feed_reply(responder.reply_header + to_opener) == [
            text for text in TO_OPENER if text
        ]
        to_destination += b"".join(
            bytes(initiator.sealer.seal(text, final=index == last))
            for index, text in enumerate(TO_DESTINATION)
            if index >= BEFORE_REPLY
        )
        cases.append(
            {
                "suite": int(suite),
                "noise_protocol_name": PROTOCOL_NAMES[suite],
                "prologue": prologue(
                    initiator.key_exchange, opener.node_id.encode(), context
                ).hex(),
                "key_exchange": initiator.key_exchange.hex(),
                "reply_header": responder.reply_header.hex(),
                "opener_to_destination_records": to_destination.hex(),
                "destination_to_opener_records": to_opener.hex(),
            }
        )
    return {
        "about": "docs/sealing.md version 4 (Noise IK): fixed keys and randomness; "
        "records: each list's last entry is the empty final record; the opener seals the "
        "first to_destination_before_reply plaintexts under the early key, reads the reply "
        "and destination records, then sends the key-change record and the rest under "
        "Split()'s initiator key",
        "opener_seed": OPENER_SEED.hex(),
        "opener_node_id": opener.node_id,
        "opener_sealing_public_key": opener.sealing_public_key_bytes.hex(),
        "destination_seed": DESTINATION_SEED.hex(),
        "destination_sealing_public_key": destination.sealing_public_key_bytes.hex(),
        "opener_ephemeral_private": OPENER_EPHEMERAL.hex(),
        "destination_ephemeral_private": DESTINATION_EPHEMERAL.hex(),
        "message1_payload": PAYLOAD.hex(),
        "opened_ms": OPENED_MS,
        "service": SERVICE,
        "resume_token": TOKEN.hex(),
        "to_destination_plaintexts": [text.hex() for text in TO_DESTINATION],
        "to_destination_before_reply": BEFORE_REPLY,
        "to_opener_plaintexts": [text.hex() for text in TO_OPENER],
        "cases": cases,
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


if __name__ == "__main__":
    text = render(build())
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else 1)
    OUT.write_text(text)
