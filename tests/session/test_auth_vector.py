"""``tests/vectors/auth.json``: the AUTH message with the tls-exporter binding, checked
against the session's transcript, the identity signer and the frame codec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from accessfabric.errors import AuthenticationError
from accessfabric.identity import Ed25519Authenticator, NodeKey
from accessfabric.session.auth import auth_transcript, signed_message
from accessfabric.wire import PROTOCOL_VERSION, Auth, FrameDecoder, Hello, encode
from tests.identity.test_tls_exporter import rfc8446_exporter

VECTORS = Path(__file__).parents[1] / "vectors"


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS / "auth.json").read_text())
    return document


def test_generator_output_is_current() -> None:
    done = subprocess.run(
        [sys.executable, str(VECTORS / "make_auth.py"), "--check"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_exporter_value_is_rfc8446_from_the_secret(vector: dict[str, Any]) -> None:
    secret = bytes.fromhex(vector["exporter_secret"])
    label = vector["exporter_label"].encode()
    assert (
        rfc8446_exporter(vector["cipher_suite"], secret, label, 32).hex() == vector["tls_exporter"]
    )


def test_hellos_decode_to_the_vector_fields(vector: dict[str, Any]) -> None:
    assert vector["version"] == PROTOCOL_VERSION
    for role in ("dialer", "acceptor"):
        side = vector[role]
        raw = bytes.fromhex(side["hello_frame"])
        (frame,) = FrameDecoder().feed(raw)
        assert isinstance(frame, Hello)
        assert frame.versions == (PROTOCOL_VERSION,)
        assert frame.public_key.hex() == side["public_key"]
        assert frame.nonce.hex() == side["nonce"]
        assert frame.node_id == side["node_id"]
        assert encode(frame) == raw
        assert NodeKey.from_seed(bytes.fromhex(side["seed"])).node_id == side["node_id"]


def test_transcript_signed_messages_and_signatures(vector: dict[str, Any]) -> None:
    dialer, acceptor = vector["dialer"], vector["acceptor"]
    transcript = auth_transcript(
        bytes.fromhex(dialer["hello_frame"]),
        bytes.fromhex(acceptor["hello_frame"]),
        bytes.fromhex(vector["tls_exporter"]),
    )
    assert transcript.hex() == vector["transcript"]
    for role, is_dialer in (("dialer", True), ("acceptor", False)):
        side = vector[role]
        message = signed_message(transcript, is_dialer)
        assert message.hex() == side["signed_message"]
        assert message[: -len(transcript)].decode() == side["role_label"]
        signer = Ed25519Authenticator(NodeKey.from_seed(bytes.fromhex(side["seed"])))
        signature = signer.sign(message)
        assert signature.hex() == side["signature"] and len(signature) == 64
        assert encode(Auth(signature)).hex() == side["auth_frame"]
        verifier = Ed25519Authenticator(NodeKey.generate())
        public_key = bytes.fromhex(side["public_key"])
        verifier.verify(side["node_id"], public_key, b"", message, signature)
        other_role = signed_message(transcript, not is_dialer)
        with pytest.raises(AuthenticationError):  # a reflected AUTH fails
            verifier.verify(side["node_id"], public_key, b"", other_role, signature)
