"""TLS 1.3 contexts and certificates bound to node identity (stdlib ``ssl``; no sockets here).

There is no CA.  Each node presents a self-signed X.509 certificate whose key *is* its
Ed25519 node key and whose subject CN is its node id.  The stdlib offers no
certificate-verify callback, so nothing is verified during the handshake; instead, after
it, the carrier reads :class:`PeerTlsInfo` and the session binds it to AUTH (see
``docs/identity.md``, "What the carrier does after the TLS handshake").
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from accessfabric.errors import AuthenticationError, IdentityMismatchError
from accessfabric.identity.errors import IdentityError
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.node_id import node_id_from_public_key, parse_node_id
from accessfabric.identity.private_file import write_private_file
from accessfabric.identity.tls_exporter import ChannelBindingUnavailable, tls_exporter

CHANNEL_BINDING_TYPE = "tls-exporter"
CERTIFICATE_BACKDATE = datetime.timedelta(hours=1)
CERTIFICATE_LIFETIME = datetime.timedelta(days=3653)  # ten years


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerTlsInfo:
    """What the TLS layer knows about the peer once the handshake is done.

    ``fingerprint`` (SHA-256 of the certificate DER) and ``public_key_bytes`` (raw Ed25519)
    are ``None`` when the peer sent no certificate: a server's view of a client, unless the
    server pins client certificates.  ``channel_binding`` is the connection's
    RFC 9266 ``tls-exporter`` value (32 bytes), identical on both ends of one TLS
    connection and different on any other connection.
    """

    fingerprint: bytes | None
    public_key_bytes: bytes | None
    channel_binding: bytes


def make_certificate(key: NodeKey, now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``key``: ``(certificate PEM, private key PEM)``.

    Subject and issuer CN are the node id; valid from ``now - 1h`` to ``now + 10 years``.
    """
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key.node_id)])
    public_key = key.private_key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CERTIFICATE_BACKDATE)
        .not_valid_after(now + CERTIFICATE_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key.private_key, None)
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key.private_key_pem()


def certificate_fingerprint(der: bytes) -> bytes:
    """SHA-256 of a certificate's DER encoding (32 bytes)."""
    return hashlib.sha256(der).digest()


def public_key_from_certificate(der: bytes) -> bytes:
    """The raw Ed25519 public key of a DER certificate.

    Raises :class:`AuthenticationError` if the bytes are not a certificate or its key is
    not Ed25519: this is used on certificates a peer sent.
    """
    try:
        certificate = x509.load_der_x509_certificate(der)
        public_key = certificate.public_key()
    except ValueError:
        raise AuthenticationError("peer TLS certificate is malformed") from None
    if not isinstance(public_key, Ed25519PublicKey):
        raise AuthenticationError("peer TLS certificate key is not Ed25519")
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_certificate_files(
    key: NodeKey,
    cert_dir: str | os.PathLike[str],
    now: datetime.datetime | None = None,
    *,
    durable: bool = True,
) -> tuple[Path, Path]:
    """Make sure ``cert_dir`` holds ``<node id>.crt`` and ``<node id>.key`` for ``key``.

    ``ssl`` loads certificates only from files.  The directory is created with mode 0700;
    both files are written atomically with mode 0600.  An existing certificate is reused
    while it belongs to ``key`` and is valid at ``now``.  Returns ``(cert path, key path)``.
    ``durable=False``: no fsync (a load tool provisioning its devices' throw-away files).
    """
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    directory = Path(cert_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_path = directory / f"{key.node_id}.crt"
        key_path = directory / f"{key.node_id}.key"
        key_pem = key.private_key_pem()
        if not _file_has(key_path, key_pem):
            write_private_file(key_path, key_pem, overwrite=True, durable=durable)
        if not _certificate_usable(cert_path, key, now):
            cert_pem, _ = make_certificate(key, now)
            write_private_file(cert_path, cert_pem, overwrite=True, durable=durable)
    except OSError as exc:
        raise IdentityError(directory, f"cannot write TLS files: {exc.strerror or exc}") from None
    return cert_path, key_path


def server_context(
    key: NodeKey,
    cert_dir: str | os.PathLike[str],
    *,
    pinned_client_certificates: Iterable[bytes] = (),
) -> ssl.SSLContext:
    """A TLS 1.3-only server context that presents ``key``'s certificate.

    By default the server does not ask for a client certificate: with no CA the stdlib
    would reject every self-signed one (there is no verify callback), so the client proves
    its identity in AUTH over a transcript that includes the channel binding.  If the
    server knows its clients' certificates in advance, pass their DER bytes as
    ``pinned_client_certificates``: the server then requires a client certificate and only
    accepts exactly those.  Session tickets are off, so every handshake carries certificates.
    """
    context = _tls13_context(server_side=True, key=key, cert_dir=cert_dir)
    context.num_tickets = 0
    pinned = b"".join(pinned_client_certificates)
    if pinned:
        context.load_verify_locations(cadata=pinned)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(key: NodeKey, cert_dir: str | os.PathLike[str]) -> ssl.SSLContext:
    """A TLS 1.3-only client context that offers ``key``'s certificate and verifies nothing.

    Hostname and chain checks are off (there is no CA); the server's certificate is bound
    to its node id after the handshake with :func:`verify_peer_certificate`.
    """
    context = _tls13_context(server_side=False, key=key, cert_dir=cert_dir)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_identity_from_ssl_object(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> PeerTlsInfo:
    """Read the peer's certificate fingerprint, Ed25519 key and the channel binding.

    Call after the handshake.  Raises :class:`ValueError` if the handshake is not complete
    or did not negotiate TLS 1.3, and :class:`AuthenticationError` if the peer's
    certificate is malformed or not Ed25519.
    """
    version = ssl_object.version()
    if version != "TLSv1.3":
        raise ValueError(f"expected a completed TLS 1.3 handshake, got {version!r}")
    try:
        binding = tls_exporter(ssl_object)
    except ChannelBindingUnavailable as error:
        raise ValueError(f"TLS channel binding is not available: {error}") from None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return PeerTlsInfo(fingerprint=None, public_key_bytes=None, channel_binding=binding)
    return PeerTlsInfo(
        fingerprint=certificate_fingerprint(der),
        public_key_bytes=public_key_from_certificate(der),
        channel_binding=binding,
    )


def verify_peer_certificate(info: PeerTlsInfo, node_id: str, public_key: bytes) -> None:
    """Check that the TLS peer is the node that authenticated in AUTH.

    ``node_id`` and ``public_key`` are those the peer's AUTH proved.  Raises
    :class:`AuthenticationError` if the peer sent no certificate or ``node_id`` does not
    derive from ``public_key``, and :class:`IdentityMismatchError` if the certificate holds
    a different key (someone else terminated TLS: a man in the middle).
    """
    if info.public_key_bytes is None:
        raise AuthenticationError("peer presented no TLS certificate")
    try:
        claimed = parse_node_id(node_id)
        derived = node_id_from_public_key(public_key)
    except ValueError as exc:
        raise AuthenticationError(f"peer AUTH identity is malformed: {exc}") from None
    if claimed != derived:
        raise AuthenticationError(f"node id {claimed} does not derive from the AUTH public key")
    if not hmac.compare_digest(info.public_key_bytes, public_key):
        certificate_node = node_id_from_public_key(info.public_key_bytes)
        raise IdentityMismatchError(
            f"TLS peer certificate belongs to {certificate_node}, but AUTH proved {claimed}"
        )


def _tls13_context(
    *, server_side: bool, key: NodeKey, cert_dir: str | os.PathLike[str]
) -> ssl.SSLContext:
    cert_path, key_path = write_certificate_files(key, cert_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_path, key_path)
    return context


def _file_has(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except OSError:
        return False


def _certificate_usable(path: Path, key: NodeKey, now: datetime.datetime) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        der = certificate.public_bytes(serialization.Encoding.DER)
        matches_key = public_key_from_certificate(der) == key.public_key_bytes
    except (OSError, ValueError, AuthenticationError):
        return False
    return (
        matches_key
        and certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc
        and certificate.subject.rfc4514_string() == f"CN={key.node_id}"
    )
