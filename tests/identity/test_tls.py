"""Real TLS 1.3 handshakes over loopback socket pairs, with threads."""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from accessfabric.errors import AuthenticationError, IdentityMismatchError
from accessfabric.identity import Ed25519Authenticator, NodeKey, transcript_hash
from accessfabric.identity.tls import (
    PeerTlsInfo,
    certificate_fingerprint,
    client_context,
    make_certificate,
    peer_identity_from_ssl_object,
    public_key_from_certificate,
    server_context,
    verify_peer_certificate,
    write_certificate_files,
)

AUTH_LABEL = b"accessfabric test auth v1"


@dataclass
class Side:
    info: PeerTlsInfo | None = None
    own_der: bytes | None = None
    error: BaseException | None = None
    version: str | None = None
    cipher: str | None = None


def _run_side(
    context: ssl.SSLContext, sock: socket.socket, *, server_side: bool, result: Side
) -> None:
    try:
        with context.wrap_socket(sock, server_side=server_side) as tls:
            if server_side:
                tls.sendall(b"s")
                assert tls.recv(1) == b"c"
            else:
                assert tls.recv(1) == b"s"  # the server accepted our Finished (and certificate)
                tls.sendall(b"c")
            result.info = peer_identity_from_ssl_object(tls)
            result.version = tls.version()
            cipher = tls.cipher()
            result.cipher = cipher[0] if cipher else None
            tls.unwrap()
    except BaseException as exc:  # collected and asserted on by the test
        result.error = exc


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[Side, Side]:
    """Connect a client and a server context over a loopback socketpair."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    server_side, client_side = Side(), Side()
    thread = threading.Thread(
        target=_run_side, args=(server, a), kwargs={"server_side": True, "result": server_side}
    )
    thread.start()
    _run_side(client, b, server_side=False, result=client_side)
    thread.join(20)
    assert not thread.is_alive()
    return server_side, client_side


@pytest.fixture
def server_key() -> NodeKey:
    return NodeKey.generate()


@pytest.fixture
def client_key() -> NodeKey:
    return NodeKey.generate()


def _der(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def test_make_certificate(server_key: NodeKey) -> None:
    now = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    cert_pem, key_pem = make_certificate(server_key, now)
    assert key_pem == server_key.private_key_pem()
    certificate = x509.load_pem_x509_certificate(cert_pem)
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == server_key.node_id
    assert certificate.issuer == certificate.subject
    assert certificate.not_valid_before_utc == now - datetime.timedelta(hours=1)
    assert certificate.not_valid_after_utc.year == 2040
    public_key = certificate.public_key()
    assert isinstance(public_key, Ed25519PublicKey)
    assert public_key.public_bytes_raw() == server_key.public_key_bytes
    public_key.verify(certificate.signature, certificate.tbs_certificate_bytes)  # self-signed
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    der = _der(cert_pem)
    assert certificate_fingerprint(der) == hashlib.sha256(der).digest()
    assert public_key_from_certificate(der) == server_key.public_key_bytes


def test_make_certificate_needs_aware_time(server_key: NodeKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_certificate(server_key, datetime.datetime(2030, 1, 1))


def test_public_key_from_bad_certificate() -> None:
    with pytest.raises(AuthenticationError, match="malformed"):
        public_key_from_certificate(b"\x30\x03\x02\x01\x00")


def test_write_certificate_files(tmp_path: Path, server_key: NodeKey) -> None:
    cert_dir = tmp_path / "tls"
    cert_path, key_path = write_certificate_files(server_key, cert_dir)
    assert stat.S_IMODE(cert_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o600
    assert cert_path.name == f"{server_key.node_id}.crt"
    assert key_path.read_bytes() == server_key.private_key_pem()
    first = cert_path.read_bytes()
    write_certificate_files(server_key, cert_dir)
    assert cert_path.read_bytes() == first  # still valid: reused
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3700)
    write_certificate_files(server_key, cert_dir, now=later)
    assert cert_path.read_bytes() != first  # expired at `later`: renewed
    cert_path.write_bytes(make_certificate(NodeKey.generate())[0])
    write_certificate_files(server_key, cert_dir)
    assert public_key_from_certificate(_der(cert_path.read_bytes())) == (
        server_key.public_key_bytes
    )


def test_contexts_are_tls13_only(tmp_path: Path, server_key: NodeKey) -> None:
    for context in (server_context(server_key, tmp_path), client_context(server_key, tmp_path)):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert client_context(server_key, tmp_path).verify_mode == ssl.CERT_NONE
    assert not client_context(server_key, tmp_path).check_hostname
    assert server_context(server_key, tmp_path).num_tickets == 0


def test_handshake_binds_server_certificate(
    tmp_path: Path, server_key: NodeKey, client_key: NodeKey
) -> None:
    server, client = handshake(
        server_context(server_key, tmp_path / "s"), client_context(client_key, tmp_path / "c")
    )
    assert server.error is None and client.error is None, (server.error, client.error)
    assert server.version == client.version == "TLSv1.3"
    assert server.info is not None and client.info is not None
    server_cert = (tmp_path / "s" / f"{server_key.node_id}.crt").read_bytes()
    assert client.info.fingerprint == certificate_fingerprint(_der(server_cert))
    assert client.info.public_key_bytes == server_key.public_key_bytes
    # By default the server requests no client certificate (see docs/identity.md).
    assert server.info.fingerprint is None
    assert server.info.public_key_bytes is None
    assert server.info.channel_binding == client.info.channel_binding
    assert len(client.info.channel_binding) >= 32
    verify_peer_certificate(client.info, server_key.node_id, server_key.public_key_bytes)


def test_channel_binding_differs_between_connections(
    tmp_path: Path, server_key: NodeKey, client_key: NodeKey
) -> None:
    s_ctx = server_context(server_key, tmp_path)
    c_ctx = client_context(client_key, tmp_path)
    first = handshake(s_ctx, c_ctx)
    second = handshake(s_ctx, c_ctx)
    bindings = []
    for server, client in (first, second):
        assert server.info is not None and client.info is not None
        assert server.info.channel_binding == client.info.channel_binding
        bindings.append(client.info.channel_binding)
        assert client.info.fingerprint == first[1].info.fingerprint  # type: ignore[union-attr]
    assert bindings[0] != bindings[1]


def test_pinned_client_certificates(
    tmp_path: Path, server_key: NodeKey, client_key: NodeKey
) -> None:
    client_cert_path, _ = write_certificate_files(client_key, tmp_path / "c")
    client_der = _der(client_cert_path.read_bytes())
    s_ctx = server_context(server_key, tmp_path / "s", pinned_client_certificates=[client_der])
    server, client = handshake(s_ctx, client_context(client_key, tmp_path / "c"))
    assert server.error is None and client.error is None, (server.error, client.error)
    assert server.info is not None and client.info is not None
    assert server.info.fingerprint == certificate_fingerprint(client_der)
    assert server.info.public_key_bytes == client_key.public_key_bytes
    assert server.info.channel_binding == client.info.channel_binding
    verify_peer_certificate(server.info, client_key.node_id, client_key.public_key_bytes)

    stranger = NodeKey.generate()
    server, client = handshake(s_ctx, client_context(stranger, tmp_path / "x"))
    assert isinstance(server.error, ssl.SSLCertVerificationError)
    assert isinstance(client.error, (ssl.SSLError, OSError))


def test_tls12_peer_is_refused(tmp_path: Path, server_key: NodeKey, client_key: NodeKey) -> None:
    old_client = client_context(client_key, tmp_path)
    old_client.minimum_version = ssl.TLSVersion.TLSv1_2
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    server, client = handshake(server_context(server_key, tmp_path), old_client)
    assert isinstance(server.error, ssl.SSLError)
    assert isinstance(client.error, ssl.SSLError)


def test_certificate_from_another_key_is_detected(
    tmp_path: Path, server_key: NodeKey, client_key: NodeKey
) -> None:
    impostor = NodeKey.generate()
    _, client = handshake(server_context(impostor, tmp_path), client_context(client_key, tmp_path))
    assert client.info is not None
    with pytest.raises(IdentityMismatchError, match=impostor.node_id):
        verify_peer_certificate(client.info, server_key.node_id, server_key.public_key_bytes)
    with pytest.raises(AuthenticationError, match="does not derive"):
        verify_peer_certificate(client.info, server_key.node_id, impostor.public_key_bytes)
    with pytest.raises(AuthenticationError, match="malformed"):
        verify_peer_certificate(client.info, "afn1bogus", impostor.public_key_bytes)


def test_missing_certificate_is_an_authentication_error(server_key: NodeKey) -> None:
    info = PeerTlsInfo(fingerprint=None, public_key_bytes=None, channel_binding=b"x" * 48)
    with pytest.raises(AuthenticationError, match="no TLS certificate"):
        verify_peer_certificate(info, server_key.node_id, server_key.public_key_bytes)


def test_channel_binding_needs_completed_handshake(tmp_path: Path, client_key: NodeKey) -> None:
    bio_in, bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(client_key, tmp_path).wrap_bio(bio_in, bio_out)
    with pytest.raises(ValueError, match=r"TLS 1\.3"):
        peer_identity_from_ssl_object(tls)


def _auth_over(
    info_signer: PeerTlsInfo, info_verifier: PeerTlsInfo, signer: NodeKey, verifier: NodeKey
) -> None:
    """The signer proves its identity over its own view of the channel; the verifier checks
    it over its own view (what the session does with the carrier's channel binding)."""
    transcript_signer = transcript_hash(AUTH_LABEL, b"hellos", info_signer.channel_binding)
    transcript_verifier = transcript_hash(AUTH_LABEL, b"hellos", info_verifier.channel_binding)
    signature = Ed25519Authenticator(signer).sign(transcript_signer)
    Ed25519Authenticator(verifier, expected_peer_id=signer.node_id).verify(
        signer.node_id, signer.public_key_bytes, b"", transcript_verifier, signature
    )


def test_honest_auth_over_tls_passes(
    tmp_path: Path, server_key: NodeKey, client_key: NodeKey
) -> None:
    server, client = handshake(
        server_context(server_key, tmp_path), client_context(client_key, tmp_path)
    )
    assert server.info is not None and client.info is not None
    _auth_over(client.info, server.info, client_key, server_key)  # client -> server
    _auth_over(server.info, client.info, server_key, client_key)  # server -> client
    verify_peer_certificate(client.info, server_key.node_id, server_key.public_key_bytes)


def test_man_in_the_middle_fails_authentication(
    tmp_path: Path, server_key: NodeKey, client_key: NodeKey
) -> None:
    """Mallory terminates TLS on both sides with her own key and relays AUTH messages."""
    mallory = NodeKey.generate()
    s_ctx = server_context(server_key, tmp_path)
    # Leg 1: Mallory connects to the real server as a TLS client.
    server_leg, mallory_as_client = handshake(s_ctx, client_context(mallory, tmp_path))
    # Leg 2: the real client connects to Mallory, who serves her own certificate.
    mallory_as_server, client_leg = handshake(
        server_context(mallory, tmp_path), client_context(client_key, tmp_path)
    )
    for side in (server_leg, mallory_as_client, mallory_as_server, client_leg):
        assert side.error is None and side.info is not None
    assert server_leg.info is not None and client_leg.info is not None
    assert server_leg.info.channel_binding != client_leg.info.channel_binding

    # The client's AUTH, relayed unchanged to the server, fails there ...
    with pytest.raises(AuthenticationError, match="does not verify"):
        _auth_over(client_leg.info, server_leg.info, client_key, server_key)
    # ... the server's AUTH, relayed to the client, fails there ...
    with pytest.raises(AuthenticationError, match="does not verify"):
        _auth_over(server_leg.info, client_leg.info, server_key, client_key)
    # ... and the certificate the client saw is not the key the server's AUTH names.
    with pytest.raises(IdentityMismatchError):
        verify_peer_certificate(client_leg.info, server_key.node_id, server_key.public_key_bytes)


def test_certificate_files_provisioned_without_fsync_are_used_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sim fleet`` provisions its devices' TLS files (``durable=False``: no fsync, a
    load tool's throw-away files); a device's start then finds them and writes nothing."""
    import os

    from accessfabric.identity.tls import write_certificate_files

    key = NodeKey.generate()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    cert, key_path = write_certificate_files(key, tmp_path / "tls", durable=False)
    assert synced == []
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    before = (cert.stat().st_mtime_ns, key_path.stat().st_mtime_ns)
    assert write_certificate_files(key, tmp_path / "tls") == (cert, key_path)
    assert (cert.stat().st_mtime_ns, key_path.stat().st_mtime_ns) == before
    assert synced == []  # nothing written again
    write_certificate_files(NodeKey.generate(), tmp_path / "other")
    assert synced  # the default still fsyncs
