"""How the session proves identities without knowing any cryptography itself.

The session computes the AUTH transcript — a hash over both HELLO frames as
sent, in dialer-then-acceptor order, and the carrier's channel binding — and
asks an injected :class:`Authenticator` to sign it and to verify the peer's
signature.  Each side signs ``role label || transcript``, so an AUTH cannot be
reflected back to its sender, and the channel binding ties it to this one
carrier connection, so it cannot be replayed or relayed on another.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

TRANSCRIPT_LABEL = b"accessfabric session v1 auth transcript"
DIALER_LABEL = b"accessfabric session v1 dialer signature"
ACCEPTOR_LABEL = b"accessfabric session v1 acceptor signature"


class Authenticator(Protocol):
    """Signs our transcript and verifies the peer's (``identity.Ed25519Authenticator``)."""

    @property
    def node_id(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    @property
    def node_record(self) -> bytes: ...

    def sign(self, transcript: bytes) -> bytes: ...

    def verify(
        self,
        node_id: str,
        public_key: bytes,
        node_record: bytes,
        transcript: bytes,
        signature: bytes,
    ) -> None:
        """Raise ``AuthenticationError`` or ``IdentityMismatchError`` unless the proof holds."""
        ...


def auth_transcript(dialer_hello: bytes, acceptor_hello: bytes, channel_binding: bytes) -> bytes:
    """sha256 over length-prefixed label, both HELLOs and the channel binding."""
    digest = hashlib.sha256()
    for part in (TRANSCRIPT_LABEL, dialer_hello, acceptor_hello, channel_binding):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.digest()


def signed_message(transcript: bytes, dialer: bool) -> bytes:
    """What one side signs: its role label, then the transcript."""
    return (DIALER_LABEL if dialer else ACCEPTOR_LABEL) + transcript
