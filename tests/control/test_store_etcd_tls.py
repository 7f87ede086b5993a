"""TLS between a control replica and etcd: ``etcd://…?ca=…&cert=…&key=…`` on a real member.

One etcd member (its own, not the session cluster) serves clients over TLS and demands a
client certificate; the store works with the URL's files and fails without a client cert.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from accessfabric.control.server.store import StoreUnavailableError
from accessfabric.control.server.store.etcd import EtcdStore, parse_etcd_url
from accessfabric.control.server.store.etcd_cluster import EtcdTls, LocalEtcdCluster, etcd_binary


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: ExtendedKeyUsageOID | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls(directory: Path) -> EtcdTls:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("accessfabric test etcd CA", ca_key, None)
    files = {}
    for role, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"etcd {role}", key, (ca.subject, ca_key), usage=usage)
        (directory / f"{role}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(directory / f"{role}-key.pem", key)
        files[role] = (directory / f"{role}.pem", directory / f"{role}-key.pem")
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return EtcdTls(
        ca=directory / "ca.pem",
        server_cert=files["server"][0],
        server_key=files["server"][1],
        client_cert=files["client"][0],
        client_key=files["client"][1],
    )


def test_store_speaks_tls_with_a_client_certificate_to_etcd(tmp_path: Path) -> None:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed on this machine (apt-get install etcd-server)")
    tls = make_tls(tmp_path)
    with LocalEtcdCluster(tmp_path / "etcd", size=1, tls=tls) as cluster:
        url = cluster.store_url + "/tls" + tls.query()
        with EtcdStore.from_url(url) as store:
            revision = store.put("k", b"v")
            entry = store.get("k")
            assert entry is not None and entry.mod_revision == revision

            async def first_change() -> str:
                async for change in store.watch("", revision - 1):
                    return change.key
                return ""

            assert asyncio.run(asyncio.wait_for(first_change(), 10)) == "k"
        without_client_cert = EtcdStore(
            cluster.endpoints,
            namespace="/tls",
            timeout=1.0,
            credentials=parse_etcd_url(cluster.store_url + f"?ca={tls.ca}").credentials(),
        )
        with without_client_cert, pytest.raises(StoreUnavailableError):
            without_client_cert.get("k")
        plaintext = EtcdStore(cluster.endpoints, namespace="/tls", timeout=1.0)
        with plaintext, pytest.raises(StoreUnavailableError):
            plaintext.get("k")


def test_tls_url_mistakes_are_named() -> None:
    for bad in (
        "etcd://h:2379?cert=a.pem&key=b.pem",
        "etcd://h:2379?ca=c.pem&cert=a.pem",
        "etcd://h:2379?password=x",
    ):
        with pytest.raises(ValueError):
            parse_etcd_url(bad)
    target = parse_etcd_url("etcd://h:2379/ns?ca=/c.pem&cert=/a.pem&key=/b.pem")
    assert (target.namespace, target.ca, target.cert, target.key) == (
        "/ns",
        "/c.pem",
        "/a.pem",
        "/b.pem",
    )
