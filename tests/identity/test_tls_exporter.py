"""RFC 9266 tls-exporter from stdlib ssl objects, checked against an independent derivation.

The independent value comes from OpenSSL's key log (``EXPORTER_SECRET``) and RFC 8446
§7.5 computed here with HKDF: ``HKDF-Expand-Label(Derive-Secret(secret, label, ""),
"exporter", Hash(""), 32)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from accessfabric.identity import NodeKey
from accessfabric.identity.tls import client_context, server_context
from accessfabric.identity.tls_exporter import (
    TLS_EXPORTER_LABEL,
    ChannelBindingUnavailable,
    tls_exporter,
)


def hkdf_expand_label(
    algorithm: hashes.HashAlgorithm, secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(algorithm, length, info).derive(secret)


def rfc8446_exporter(cipher: str, exporter_secret: bytes, label: bytes, length: int) -> bytes:
    algorithm: hashes.HashAlgorithm
    if cipher.endswith("SHA384"):
        algorithm, digest = hashes.SHA384(), hashlib.sha384
    else:
        algorithm, digest = hashes.SHA256(), hashlib.sha256
    empty_hash = digest(b"").digest()
    derived = hkdf_expand_label(
        algorithm, exporter_secret, label, empty_hash, algorithm.digest_size
    )
    return hkdf_expand_label(algorithm, derived, b"exporter", empty_hash, length)


def handshake_pair(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    a, b = socket.socketpair()
    result: dict[str, ssl.SSLSocket] = {}

    def accept() -> None:
        result["server"] = server.wrap_socket(a, server_side=True)

    thread = threading.Thread(target=accept)
    thread.start()
    client_side = client.wrap_socket(b)
    thread.join(10)
    return result["server"], client_side


def test_exporter_matches_rfc8446_derivation_from_the_key_log(tmp_path: Path) -> None:
    server_key, client_key = NodeKey.generate(), NodeKey.generate()
    server = server_context(server_key, tmp_path / "s")
    client = client_context(client_key, tmp_path / "c")
    client.keylog_filename = str(tmp_path / "keylog")
    server_side, client_side = handshake_pair(server, client)
    try:
        negotiated = client_side.cipher()
        assert negotiated is not None
        lines = (tmp_path / "keylog").read_text().split()
        secret = bytes.fromhex(lines[lines.index("EXPORTER_SECRET") + 2])
        expected = rfc8446_exporter(negotiated[0], secret, TLS_EXPORTER_LABEL, 32)
        assert tls_exporter(client_side) == expected
        assert tls_exporter(server_side) == expected
        other = tls_exporter(client_side, label=b"EXPORTER-other", length=48)
        assert other == rfc8446_exporter(negotiated[0], secret, b"EXPORTER-other", 48)
    finally:
        server_side.close()
        client_side.close()


def test_exporter_is_unique_per_connection(tmp_path: Path) -> None:
    server = server_context(NodeKey.generate(), tmp_path / "s")
    client = client_context(NodeKey.generate(), tmp_path / "c")
    values = []
    for _ in range(3):
        server_side, client_side = handshake_pair(server, client)
        assert tls_exporter(server_side) == tls_exporter(client_side)
        values.append(tls_exporter(client_side))
        server_side.close()
        client_side.close()
    assert len(set(values)) == 3 and all(len(v) == 32 for v in values)


def test_exporter_from_asyncio_ssl_transport(tmp_path: Path) -> None:
    """asyncio's SSL transport exposes an ssl.SSLObject over memory BIOs: same value."""
    asyncio.run(exporter_over_asyncio(tmp_path))


def test_exporter_from_uvloop_ssl_transport(tmp_path: Path) -> None:
    """The node runs on uvloop when installed; its SSL transport works the same."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
    uvloop.run(exporter_over_asyncio(tmp_path))


def test_exporter_under_concurrent_handshakes(tmp_path: Path) -> None:
    """64 connections at once: each pair agrees, no two connections share a value."""

    async def many() -> None:
        results = await asyncio.gather(*(exporter_over_asyncio(tmp_path) for _ in range(64)))
        assert len(set(results)) == 64

    asyncio.run(many())


async def exporter_over_asyncio(tmp_path: Path) -> bytes:
    server = server_context(NodeKey.generate(), tmp_path / "s")
    client = client_context(NodeKey.generate(), tmp_path / "c")
    seen: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(tls_exporter(writer.get_extra_info("ssl_object")))
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        ours = tls_exporter(writer.get_extra_info("ssl_object"))
        assert await asyncio.wait_for(seen, 10) == ours
        writer.close()
    finally:
        listener.close()
    return ours


def test_exporter_refuses_tls12_and_non_ssl_objects(tmp_path: Path) -> None:
    server = server_context(NodeKey.generate(), tmp_path / "s")
    client = client_context(NodeKey.generate(), tmp_path / "c")
    unconnected = client.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    with pytest.raises(ChannelBindingUnavailable):
        tls_exporter(unconnected)  # no handshake yet: version() is None
    server_side, client_side = handshake_pair(server, client)
    try:

        class Impostor:
            server_side = False

            def version(self) -> str:
                return "TLSv1.3"

            def get_channel_binding(self, kind: str) -> bytes:
                return b"x"

        with pytest.raises(ChannelBindingUnavailable, match="not a connected"):
            tls_exporter(Impostor())  # type: ignore[arg-type]
    finally:
        server_side.close()
        client_side.close()
