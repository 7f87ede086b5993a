from __future__ import annotations

import inspect
from typing import Protocol

import pytest

from accessfabric.errors import AuthenticationError, ErrorCode, IdentityMismatchError
from accessfabric.identity import Ed25519Authenticator, NodeKey, transcript_hash

TRANSCRIPT = transcript_hash(b"accessfabric auth test", b"hello-a", b"hello-b", b"binding")


class SessionAuthenticator(Protocol):
    """The structural interface the session expects (mirrors its Protocol)."""

    node_id: str
    public_key: bytes
    node_record: bytes

    def sign(self, transcript: bytes) -> bytes: ...

    def verify(
        self,
        node_id: str,
        public_key: bytes,
        node_record: bytes,
        transcript: bytes,
        signature: bytes,
    ) -> None: ...


@pytest.fixture
def alice() -> NodeKey:
    return NodeKey.generate()


@pytest.fixture
def bob() -> NodeKey:
    return NodeKey.generate()


def test_matches_the_session_interface(alice: NodeKey) -> None:
    authenticator: SessionAuthenticator = Ed25519Authenticator(alice, node_record=b"record")
    assert authenticator.node_id == alice.node_id
    assert authenticator.public_key == alice.public_key_bytes
    assert authenticator.node_record == b"record"
    parameters = list(inspect.signature(Ed25519Authenticator.verify).parameters)
    assert parameters == ["self", "node_id", "public_key", "node_record", "transcript", "signature"]
    parameters = list(inspect.signature(Ed25519Authenticator.__init__).parameters)
    assert parameters == ["self", "key", "expected_peer_id", "node_record"]


def test_sign_and_verify(alice: NodeKey, bob: NodeKey) -> None:
    a = Ed25519Authenticator(alice, expected_peer_id=bob.node_id)
    b = Ed25519Authenticator(bob, expected_peer_id=alice.node_id)
    signature = b.sign(TRANSCRIPT)
    assert len(signature) == 64
    a.verify(b.node_id, b.public_key, b.node_record, TRANSCRIPT, signature)
    b.verify(a.node_id, a.public_key, a.node_record, TRANSCRIPT, a.sign(TRANSCRIPT))


def test_without_expected_peer_any_authentic_node_passes(alice: NodeKey, bob: NodeKey) -> None:
    Ed25519Authenticator(alice).verify(
        bob.node_id, bob.public_key_bytes, b"", TRANSCRIPT, bob.sign(TRANSCRIPT)
    )


def test_expected_peer_id_accepts_any_spelling(alice: NodeKey, bob: NodeKey) -> None:
    a = Ed25519Authenticator(alice, expected_peer_id=f" {bob.node_id.upper()} ")
    a.verify(bob.node_id, bob.public_key_bytes, b"", TRANSCRIPT, bob.sign(TRANSCRIPT))
    a.verify(bob.node_id.upper(), bob.public_key_bytes, b"", TRANSCRIPT, bob.sign(TRANSCRIPT))


def test_malformed_expected_peer_id_is_a_local_error(alice: NodeKey) -> None:
    with pytest.raises(ValueError, match="checksum mismatch"):
        last = "b" if alice.node_id.endswith("a") else "a"  # always a different character
        Ed25519Authenticator(alice, expected_peer_id=alice.node_id[:-1] + last)


def test_wrong_transcript(alice: NodeKey, bob: NodeKey) -> None:
    signature = bob.sign(TRANSCRIPT)
    other = transcript_hash(b"accessfabric auth test", b"hello-a", b"hello-b", b"other binding")
    with pytest.raises(AuthenticationError, match="does not verify") as info:
        Ed25519Authenticator(alice).verify(bob.node_id, bob.public_key_bytes, b"", other, signature)
    assert info.value.error_code == ErrorCode.AUTHENTICATION_FAILED


def test_signature_by_another_key(alice: NodeKey, bob: NodeKey) -> None:
    mallory = NodeKey.generate()
    with pytest.raises(AuthenticationError, match="does not verify"):
        Ed25519Authenticator(alice).verify(
            bob.node_id, bob.public_key_bytes, b"", TRANSCRIPT, mallory.sign(TRANSCRIPT)
        )


def test_node_id_not_derived_from_key(alice: NodeKey, bob: NodeKey) -> None:
    mallory = NodeKey.generate()
    # Mallory claims Bob's id but signs with her own key.
    with pytest.raises(AuthenticationError, match="derives") as info:
        Ed25519Authenticator(alice, expected_peer_id=bob.node_id).verify(
            bob.node_id, mallory.public_key_bytes, b"", TRANSCRIPT, mallory.sign(TRANSCRIPT)
        )
    assert not isinstance(info.value, IdentityMismatchError)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_malformed_public_key(alice: NodeKey, bob: NodeKey, length: int) -> None:
    with pytest.raises(AuthenticationError, match="public key is malformed"):
        Ed25519Authenticator(alice).verify(
            bob.node_id, b"\x01" * length, b"", TRANSCRIPT, bob.sign(TRANSCRIPT)
        )


@pytest.mark.parametrize("node_id", ["", "afn1", "bob", "afn1" + "a" * 36])
def test_malformed_node_id(alice: NodeKey, bob: NodeKey, node_id: str) -> None:
    with pytest.raises(AuthenticationError, match="node id is malformed"):
        Ed25519Authenticator(alice).verify(
            node_id, bob.public_key_bytes, b"", TRANSCRIPT, bob.sign(TRANSCRIPT)
        )


@pytest.mark.parametrize("length", [0, 63, 65])
def test_malformed_signature(alice: NodeKey, bob: NodeKey, length: int) -> None:
    with pytest.raises(AuthenticationError, match="signature must be 64 bytes"):
        Ed25519Authenticator(alice).verify(
            bob.node_id, bob.public_key_bytes, b"", TRANSCRIPT, b"\x00" * length
        )


def test_identity_mismatch_after_proof(alice: NodeKey, bob: NodeKey) -> None:
    carol = NodeKey.generate()
    a = Ed25519Authenticator(alice, expected_peer_id=bob.node_id)
    with pytest.raises(IdentityMismatchError, match=carol.node_id) as info:
        a.verify(carol.node_id, carol.public_key_bytes, b"", TRANSCRIPT, carol.sign(TRANSCRIPT))
    assert info.value.error_code == ErrorCode.IDENTITY_MISMATCH
    assert bob.node_id in str(info.value)


def test_unproven_claim_is_not_reported_as_mismatch(alice: NodeKey, bob: NodeKey) -> None:
    carol = NodeKey.generate()
    a = Ed25519Authenticator(alice, expected_peer_id=bob.node_id)
    with pytest.raises(AuthenticationError) as info:
        a.verify(carol.node_id, carol.public_key_bytes, b"", TRANSCRIPT, b"\x00" * 64)
    assert not isinstance(info.value, IdentityMismatchError)


def test_node_record_is_opaque(alice: NodeKey, bob: NodeKey) -> None:
    Ed25519Authenticator(alice).verify(
        bob.node_id, bob.public_key_bytes, b"\xff" * 100, TRANSCRIPT, bob.sign(TRANSCRIPT)
    )
