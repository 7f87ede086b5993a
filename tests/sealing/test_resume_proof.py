"""Only a sealed stream's two ends can prove a resume; a relay cannot forge or replay one."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import time

import pytest

from accessfabric.identity.keys import NodeKey
from accessfabric.sealing import SealingError, SealInitiator
from accessfabric.sealing.handshake import destination_resume_key
from accessfabric.sealing.resume_proof import (
    PROOF_SIZE,
    ResumeRefused,
    prove_resume,
    verify_resume,
)

OPENER = NodeKey.from_seed(b"\x11" * 32)
DESTINATION = NodeKey.from_seed(b"\x22" * 32)
MALLORY = NodeKey.from_seed(b"\x33" * 32)
TOKEN = bytes(range(16))


@dataclasses.dataclass(frozen=True)
class Attempt:
    token: bytes = TOKEN
    service: str = "rdp"
    route_id: int = 7
    route_lease: bytes = b"signed lease of route 7"
    start_offset: int = 65_536


def _initiator(key: NodeKey = OPENER) -> SealInitiator:
    return SealInitiator(
        key.sealing_private_key(),
        key.node_id,
        DESTINATION.sealing_public_key_bytes,
        b"ctx",
        random_bytes=os.urandom,
        opened_ms=int(time.time() * 1000),
    )


def _prove(key: bytes, counter: int, attempt: Attempt = Attempt()) -> bytes:
    a = attempt
    return prove_resume(
        key, counter, token=a.token, service=a.service, route_id=a.route_id,
        route_lease=a.route_lease, start_offset=a.start_offset,
    )  # fmt: skip


def _verify(key: bytes, proof: bytes, last: int = 0, attempt: Attempt = Attempt()) -> int:
    a = attempt
    return verify_resume(
        key, proof, last_counter=last, token=a.token, service=a.service, route_id=a.route_id,
        route_lease=a.route_lease, start_offset=a.start_offset,
    )  # fmt: skip


def test_both_ends_derive_the_same_resume_key_and_nobody_else_does() -> None:
    initiator = _initiator()
    at_destination = destination_resume_key(
        DESTINATION.sealing_private_key(), initiator.key_exchange, b"ctx"
    )
    assert at_destination == initiator.resume_key
    assert len(initiator.resume_key) == 32
    # Mallory relays the stream: she has the blob and her own static key, not S_dest;
    # message 1 (which carries the key) is encrypted to S_dest.
    with pytest.raises(SealingError):
        destination_resume_key(MALLORY.sealing_private_key(), initiator.key_exchange, b"ctx")
    # Her own handshake with the destination gives her a key for her stream, not this one.
    assert _initiator(MALLORY).resume_key != initiator.resume_key
    # Every stream has its own key (fresh ephemeral), even between the same two nodes.
    assert _initiator().resume_key != initiator.resume_key


def test_a_genuine_proof_verifies_and_returns_its_counter() -> None:
    key = _initiator().resume_key
    proof = _prove(key, 3)
    assert len(proof) == PROOF_SIZE
    assert _verify(key, proof, last=2) == 3


def test_a_replayed_proof_is_refused() -> None:
    key = _initiator().resume_key
    first, second = _prove(key, 1), _prove(key, 2)
    assert _verify(key, first) == 1
    with pytest.raises(ResumeRefused, match=r"^resume proof replayed"):
        _verify(key, first, last=1)
    assert _verify(key, second, last=1) == 2
    with pytest.raises(ResumeRefused, match=r"^resume proof replayed"):
        _verify(key, first, last=2)  # an older attempt that arrives late


@pytest.mark.parametrize(
    "changed",
    [
        Attempt(token=bytes(16)),
        Attempt(service="ssh"),
        Attempt(route_id=8),
        Attempt(route_lease=b"signed lease of route 8"),
        Attempt(start_offset=0),
        Attempt(start_offset=65_537),
    ],
    ids=["token", "service", "route", "lease", "offset-back", "offset-forward"],
)
def test_a_proof_is_bound_to_its_stream_route_and_offset(changed: Attempt) -> None:
    key = _initiator().resume_key
    with pytest.raises(ResumeRefused, match=r"^resume proof invalid"):
        _verify(key, _prove(key, 1), attempt=changed)


def test_forged_and_malformed_proofs_are_refused() -> None:
    key = _initiator().resume_key
    genuine = _prove(key, 1)
    mallory = _prove(_initiator(MALLORY).resume_key, 1)
    raised_counter = genuine[:1] + (9).to_bytes(8, "big") + genuine[9:]
    flipped = genuine[:-1] + bytes((genuine[-1] ^ 1,))
    for forged in (mallory, raised_counter, flipped, bytes(PROOF_SIZE)):
        with pytest.raises(ResumeRefused, match=r"^resume proof invalid"):
            _verify(key, forged)
    for malformed in (genuine[:-1], genuine + b"\x00", b"\x02" + genuine[1:]):
        with pytest.raises(ResumeRefused, match=r"^resume proof invalid"):
            _verify(key, malformed)
    with pytest.raises(ResumeRefused, match=r"^resume proof missing"):
        _verify(key, b"")


def test_unsealed_and_hostile_key_exchanges() -> None:
    destination = DESTINATION.sealing_private_key()
    initiator = _initiator()
    assert destination_resume_key(destination, b"", b"ctx") is None  # unsealed: nothing to bind
    assert destination_resume_key(destination, b"\x05" + initiator.key_exchange[1:], b"") is None
    blob = initiator.key_exchange
    with pytest.raises(SealingError):  # a low-order point as the ephemeral key
        destination_resume_key(destination, blob[:10] + bytes(32) + blob[42:], b"ctx")


def test_the_proof_layout_is_the_documented_one() -> None:
    """docs/sealing.md, computed here from the page, not from the module."""
    key = bytes(range(32))
    parts = [
        b"accessfabric resume proof v1",
        TOKEN,
        b"rdp",
        (7).to_bytes(8, "big"),
        hashlib.sha256(b"signed lease of route 7").digest(),
        (65_536).to_bytes(8, "big"),
        (5).to_bytes(8, "big"),
    ]
    message = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    tag = hmac.new(key, message, hashlib.sha256).digest()
    assert _prove(key, 5) == b"\x01" + (5).to_bytes(8, "big") + tag
