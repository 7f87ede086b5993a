"""TLS for the control API, pinned through the authority key (ADR 0017).

``control serve`` makes a fresh Ed25519 TLS key at every start and a certificate for it
that the **authority key signs** (issuer: the authority).  A client that pins the
authority public key — every node already does, for leases — accepts the server when the
certificate's signature verifies under that key and the certificate is within its
validity; no CA, no second value to distribute, and the authority's signing key never
signs a TLS handshake itself.  A client checks the certificate before it sends anything
(admin tokens, enrollment tokens, signed requests).

* :func:`server_context` — the server's ``ssl.SSLContext`` (TLS 1.2+).
* :func:`verify_control_certificate` — the client's check of the DER certificate.
* :class:`AuthorityPin` — that check as an aiohttp ``ssl=`` argument.
* :func:`pinned_https_connection` — an ``http.client`` connection for the admin CLI.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import http.client
import os
import ssl
import tempfile
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from accessfabric.control.kernel.authority import Authority

CERTIFICATE_LIFETIME = datetime.timedelta(days=400)
CERTIFICATE_BACKDATE = datetime.timedelta(hours=1)
SUBJECT = "accessfabric control API"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ControlTlsError(ValueError):
    """The server's certificate is not one the pinned authority issued."""


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def issue_certificate(
    authority: Authority, now: datetime.datetime | None = None
) -> tuple[bytes, bytes]:
    """A new TLS key and its certificate signed by ``authority``: ``(cert PEM, key PEM)``."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = Ed25519PrivateKey.generate()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SUBJECT)]))
        .issuer_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, authority.public_key_text)])
        )
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CERTIFICATE_BACKDATE)
        .not_valid_after(now + CERTIFICATE_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    certificate = authority.sign_certificate(builder)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def server_context(authority: Authority) -> ssl.SSLContext:
    """The control API's server context with a fresh authority-issued certificate."""
    cert_pem, key_pem = issue_certificate(authority)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files: a private temporary file, removed at once.
    with tempfile.TemporaryDirectory(prefix="af-control-tls-") as directory:
        path = Path(directory) / "tls.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert_pem + key_pem)
        context.load_cert_chain(path)
    return context


def verify_control_certificate(
    der: bytes | None, authority_public_key: bytes, now: datetime.datetime | None = None
) -> None:
    """Raise :class:`ControlTlsError` unless ``der`` was issued by the pinned authority and
    is valid at ``now``."""
    if not der:
        raise ControlTlsError("the control plane sent no TLS certificate")
    try:
        certificate = x509.load_der_x509_certificate(der)
        Ed25519PublicKey.from_public_bytes(authority_public_key).verify(
            certificate.signature, certificate.tbs_certificate_bytes
        )
    except InvalidSignature:
        raise ControlTlsError(
            "the control plane's TLS certificate is not signed by the pinned authority key"
        ) from None
    except ValueError as exc:
        raise ControlTlsError(f"the control plane's TLS certificate is malformed: {exc}") from None
    now = now or datetime.datetime.now(datetime.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ControlTlsError("the control plane's TLS certificate is not valid now")


def _unverified_client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin below replaces CA verification
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class AuthorityPin(aiohttp.Fingerprint):
    """aiohttp's ``ssl=`` argument that accepts only an authority-issued certificate.

    aiohttp calls :meth:`check` on the new TLS connection before sending the request."""

    def __init__(self, authority_public_key: bytes) -> None:
        super().__init__(hashlib.sha256(authority_public_key).digest())
        self._authority = authority_public_key

    def check(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            verify_control_certificate(der, self._authority)
        except ControlTlsError:
            peer = transport.get_extra_info("peername") or ("?", 0)
            got = hashlib.sha256(der or b"").digest()
            raise aiohttp.ServerFingerprintMismatch(
                self.fingerprint, got, peer[0], peer[1]
            ) from None


def pinned_https_connection(
    host: str, port: int, authority_public_key: bytes, timeout: float
) -> http.client.HTTPSConnection:
    """A connected ``http.client`` connection whose certificate the authority issued
    (raises :class:`ControlTlsError` before anything is sent when it was not)."""
    connection = http.client.HTTPSConnection(
        host, port, timeout=timeout, context=_unverified_client_context()
    )
    connection.connect()
    assert isinstance(connection.sock, ssl.SSLSocket)
    try:
        verify_control_certificate(
            connection.sock.getpeercert(binary_form=True), authority_public_key
        )
    except ControlTlsError:
        connection.close()
        raise
    return connection
