"""``Ed25519Authenticator``: the signer/verifier the sans-IO session uses for AUTH."""

from __future__ import annotations

import hmac

from accessfabric.errors import AuthenticationError, IdentityMismatchError
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.node_id import node_id_from_public_key, parse_node_id
from accessfabric.identity.signatures import SIGNATURE_LENGTH, load_public_key, verify_signature


class Ed25519Authenticator:
    """Proves this node's identity and checks the peer's, over a transcript the session builds.

    The session computes the transcript (both HELLO frames and the carrier's channel
    binding); this class only signs and verifies bytes.  ``node_record`` is carried opaquely:
    it is not checked here.
    """

    def __init__(
        self, key: NodeKey, expected_peer_id: str | None = None, node_record: bytes = b""
    ) -> None:
        self._key = key
        self.node_id: str = key.node_id
        self.public_key: bytes = key.public_key_bytes
        self.node_record: bytes = node_record
        self.expected_peer_id: str | None = (
            None if expected_peer_id is None else parse_node_id(expected_peer_id)
        )

    def sign(self, transcript: bytes) -> bytes:
        """Our Ed25519 signature over ``transcript``."""
        return self._key.sign(transcript)

    def verify(
        self,
        node_id: str,
        public_key: bytes,
        node_record: bytes,
        transcript: bytes,
        signature: bytes,
    ) -> None:
        """Check the peer's AUTH claim; return ``None`` when it holds.

        Raises :class:`AuthenticationError` when the public key is malformed, the claimed
        ``node_id`` does not derive from it, or ``signature`` does not verify over
        ``transcript``.  Only once the peer has proven possession of the key behind
        ``node_id`` is that id compared with ``expected_peer_id``:
        :class:`IdentityMismatchError` then means an authentic, but unexpected, node.
        """
        del node_record  # carried opaquely; signed node records are checked elsewhere
        try:
            load_public_key(public_key)
        except ValueError as exc:
            raise AuthenticationError(f"peer public key is malformed: {exc}") from None
        derived = node_id_from_public_key(public_key)
        try:
            claimed = parse_node_id(node_id)
        except ValueError as exc:
            raise AuthenticationError(f"peer node id is malformed: {exc}") from None
        if not hmac.compare_digest(claimed.encode("ascii"), derived.encode("ascii")):
            raise AuthenticationError(
                f"peer claims node id {claimed} but its public key derives {derived}"
            )
        if len(signature) != SIGNATURE_LENGTH:
            raise AuthenticationError(
                f"peer AUTH signature must be {SIGNATURE_LENGTH} bytes, got {len(signature)}"
            )
        if not verify_signature(public_key, transcript, signature):
            raise AuthenticationError(f"AUTH signature of {claimed} does not verify")
        if self.expected_peer_id is not None and claimed != self.expected_peer_id:
            raise IdentityMismatchError(
                f"expected peer {self.expected_peer_id} but {claimed} authenticated"
            )
