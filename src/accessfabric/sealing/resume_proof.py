"""Resume proofs: only a sealed stream's two ends can move it to another route.

A RESUME OPEN_STREAM names the stream by its resume token, which every relay on a path
sees.  For a sealed stream the source adds a proof in the frame's key-exchange field
(empty on a resume otherwise, so the wire does not change)::

    version u8 (=1) | counter u64 | tag (32)
    tag = HMAC-SHA256(resume_key, H(token, service, route_id, SHA-256(route lease),
                                    start_offset, counter))

``resume_key`` comes from the sealing handshake (:mod:`.handshake`): relays do not have
it.  ``counter`` grows with every resume attempt of the stream; the destination accepts
only a counter above the last one it accepted, so a proof seen on the wire cannot be
replayed, and the tag binds it to the route (lease) and the resume offset the source
chose.  See docs/sealing.md.

A resume from offset 0 (the source never heard from the destination: its first path may
have failed before reaching it) appends the stream's original key exchange after the
proof, so a destination that never saw the stream can serve it as new — the proof, made
with the resume key that very exchange gives, shows the sender holds its ephemeral secret
(a relay that saw the exchange does not).  :func:`split_resume_field` separates the two.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

VERSION = 1
TAG_SIZE = 32
_HEAD = struct.Struct(">BQ")
PROOF_SIZE = _HEAD.size + TAG_SIZE
_LABEL = b"accessfabric resume proof v1"


def split_resume_field(field: bytes) -> tuple[bytes, bytes]:
    """(proof, original key exchange or b"") of a RESUME's key-exchange field."""
    return bytes(field[:PROOF_SIZE]), bytes(field[PROOF_SIZE:])


class ResumeRefused(Exception):
    """A resume proof did not verify; the text starts with the refusal's label."""


def _tag(
    key: bytes,
    counter: int,
    *,
    token: bytes,
    service: str,
    route_id: int,
    route_lease: bytes,
    start_offset: int,
) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (
        _LABEL,
        token,
        service.encode("utf-8"),
        route_id.to_bytes(8, "big"),
        hashlib.sha256(route_lease).digest(),
        start_offset.to_bytes(8, "big"),
        counter.to_bytes(8, "big"),
    ):
        mac.update(len(part).to_bytes(4, "big"))
        mac.update(part)
    return mac.digest()


def prove_resume(
    key: bytes,
    counter: int,
    *,
    token: bytes,
    service: str,
    route_id: int,
    route_lease: bytes,
    start_offset: int,
) -> bytes:
    """The proof the source puts in its RESUME OPEN_STREAM (``counter`` >= 1, never reused)."""
    tag = _tag(
        key, counter, token=token, service=service, route_id=route_id,
        route_lease=route_lease, start_offset=start_offset,
    )  # fmt: skip
    return _HEAD.pack(VERSION, counter) + tag


def verify_resume(
    key: bytes,
    proof: bytes,
    *,
    last_counter: int,
    token: bytes,
    service: str,
    route_id: int,
    route_lease: bytes,
    start_offset: int,
) -> int:
    """The proof's counter if it is genuine and fresh; :class:`ResumeRefused` says why not.

    Nothing changes here: the caller records the counter once it adopted the stream.
    """
    if not proof:
        raise ResumeRefused("resume proof missing: the stream is sealed, its resume must prove it")
    if len(proof) != PROOF_SIZE or proof[0] != VERSION:
        raise ResumeRefused(
            f"resume proof invalid: {len(proof)} bytes, version {proof[0]} "
            f"(expected {PROOF_SIZE} bytes, version {VERSION})"
        )
    counter: int = _HEAD.unpack_from(proof)[1]
    expected = _tag(
        key, counter, token=token, service=service, route_id=route_id,
        route_lease=route_lease, start_offset=start_offset,
    )  # fmt: skip
    if not hmac.compare_digest(expected, proof[_HEAD.size :]):
        raise ResumeRefused(
            "resume proof invalid: the tag does not match (not made with this stream's "
            "resume key, or for another route or offset)"
        )
    if counter <= last_counter:
        raise ResumeRefused(
            f"resume proof replayed: counter {counter}, already accepted {last_counter}"
        )
    return counter
