"""WebSocket carrier specifics: the upgrade, refusals, and the behind-a-proxy mode.

The proxy tests run Debian's nginx (package ``nginx-light``) as a child process on
loopback, as an ordinary TLS-terminating HTTP reverse proxy (``docs/adr/0005``):

* ``proxy``: nginx's own (CA-signed) certificate, ``/fabric`` proxied as plain ws to a
  ``behind_proxy`` listener;
* ``mitm``: nginx presents another node's Ed25519 certificate and re-encrypts to an
  ordinary listener, i.e. a man in the middle;
* ``proxy_to_bound``: the ordinary proxy in front of an ordinary (bound) listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import random
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect as raw_connect
from websockets.exceptions import InvalidStatus

from accessfabric.carriers.base import CarrierInfo
from accessfabric.carriers.websocket import forwarded_client
from accessfabric.errors import AuthenticationError, ErrorCode, IdentityMismatchError
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import client_context, write_certificate_files
from accessfabric.node.dialing.endpoints import LocalNode, connect_ws, serve_ws
from accessfabric.node.streams.connection import SessionConnection
from tests.carriers.pairs import LOOPBACK, Acceptor, make_node, port_of, serving

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def make_proxy_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 it signed: (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test proxy CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "proxy-ca.crt", directory / "proxy.crt", directory / "proxy.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


LOCATION = """
    location /fabric {{
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_read_timeout 300s;
      proxy_ssl_protocols TLSv1.3;
    }}
"""

SERVER = """
  server {{
    listen {listen} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
{location}
  }}
"""

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
{servers}
}}
"""


@dataclass
class Nginx:
    ca: Path
    proxy_port: int
    """TLS with the proxy's certificate -> plain ws to ``unbound_upstream``."""
    mitm_port: int
    """TLS with Mallory's node certificate -> wss to ``bound_upstream``."""
    proxy_to_bound_port: int
    """TLS with the proxy's certificate -> wss to ``bound_upstream``."""
    unbound_upstream: int
    bound_upstream: int

    def proxy_tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def nginx_binary() -> str | None:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@contextlib.contextmanager
def running_nginx(tmp: Path, servers: str, probe_port: int) -> Iterator[None]:
    """nginx with ``servers`` in ``tmp`` until the block ends, once ``probe_port`` accepts."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx not installed (Debian package nginx-light)")
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, servers=servers))
    process = subprocess.Popen(
        [binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                _, err = process.communicate()
                pytest.fail(f"nginx exited {process.returncode}: {err.decode(errors='replace')}")
            try:
                socket.create_connection((LOOPBACK, probe_port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("nginx did not start listening")
                time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    tmp = tmp_path_factory.mktemp("nginx")
    ca, cert, key = make_proxy_certificate(tmp)
    mallory_cert, mallory_key = write_certificate_files(NodeKey.generate(), tmp / "mallory")
    ports = [free_port() for _ in range(5)]
    config = Nginx(ca, *ports)

    def server(port: int, cert: Path, key: Path, upstream: str) -> str:
        location = LOCATION.format(upstream=upstream)
        return SERVER.format(listen=f"{LOOPBACK}:{port}", cert=cert, key=key, location=location)

    servers = "".join(
        [
            server(config.proxy_port, cert, key, f"http://{LOOPBACK}:{config.unbound_upstream}"),
            server(
                config.mitm_port,
                mallory_cert,
                mallory_key,
                f"https://{LOOPBACK}:{config.bound_upstream}",
            ),
            server(
                config.proxy_to_bound_port,
                cert,
                key,
                f"https://{LOOPBACK}:{config.bound_upstream}",
            ),
        ]
    )
    with running_nginx(tmp, servers, config.proxy_port):
        yield config


async def echo_hash(connection: SessionConnection) -> None:
    stream = await connection.accept_stream()
    assert stream is not None
    digest = hashlib.sha256()
    while chunk := await stream.read(65536):
        digest.update(chunk)
    stream.write(digest.digest())
    stream.close()


async def round_trip(dialer: SessionConnection, acceptor: SessionConnection) -> None:
    server = asyncio.create_task(echo_hash(acceptor))
    data = random.Random(5).randbytes(2 * 1024 * 1024)
    stream = await dialer.open_stream("hash")
    for offset in range(0, len(data), 65536):
        stream.write(data[offset : offset + 65536])
        await stream.drain()
    stream.close()
    assert await stream.readexactly(32) == hashlib.sha256(data).digest()
    await server


async def proxied_pair_works(
    dialer: SessionConnection, accepted: Acceptor, dialer_node: LocalNode, server_node: LocalNode
) -> None:
    """A pair through a TLS-terminating proxy: pinned both ways, no channel binding, the
    client's address forwarded; a ping and a stream work, and an abort reaches the far end."""
    acceptor = await accepted.next_ready()
    assert dialer.info.kind == acceptor.info.kind
    assert (await dialer.ready()).peer_node_id == server_node.key.node_id
    assert (await acceptor.ready()).peer_node_id == dialer_node.key.node_id
    assert dialer.info.channel_binding == acceptor.info.channel_binding == b""
    assert acceptor.info.forwarded_for == LOOPBACK  # what the proxy saw, not the proxy itself
    assert await dialer.ping() >= 0
    await round_trip(dialer, acceptor)
    dialer.abort()
    await asyncio.wait_for(acceptor.wait_closed(), 5)


# ---------------------------------------------------------------- through nginx


async def test_behind_proxy_listener_works_through_tls_terminating_nginx(
    nginx: Nginx, tmp_path: Path
) -> None:
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    async with serving(
        serve_ws, server_node, nginx.unbound_upstream, behind_proxy=True, tls=False
    ) as (_, accepted):
        dialer = await connect_ws(
            dialer_node,
            f"wss://{LOOPBACK}:{nginx.proxy_port}/fabric",
            expected_peer_id=server_node.key.node_id,
            proxy_tls=nginx.proxy_tls(),
        )
        await proxied_pair_works(dialer, accepted, dialer_node, server_node)


async def test_proxy_mode_pin_catches_another_node_behind_the_proxy(
    nginx: Nginx, tmp_path: Path
) -> None:
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    async with serving(serve_ws, server_node, nginx.unbound_upstream, behind_proxy=True, tls=False):
        with pytest.raises(IdentityMismatchError):
            await connect_ws(
                dialer_node,
                f"wss://{LOOPBACK}:{nginx.proxy_port}/fabric",
                expected_peer_id=NodeKey.generate().node_id,
                proxy_tls=nginx.proxy_tls(),
            )


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
async def test_man_in_the_middle_fails_without_proxy_mode(
    nginx: Nginx, tmp_path: Path, pinned: bool
) -> None:
    """nginx terminates TLS with its own node certificate: the channel bindings differ."""
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    async with serving(serve_ws, server_node, nginx.bound_upstream) as (_, accepted):
        with pytest.raises(AuthenticationError):
            await connect_ws(
                dialer_node,
                f"wss://{LOOPBACK}:{nginx.mitm_port}/fabric",
                expected_peer_id=server_node.key.node_id if pinned else None,
            )
        assert accepted.seen, "the listener saw the relayed handshake"
        ends = [await asyncio.wait_for(c.wait_closed(), 5) for c in accepted.seen]
        assert all(end.error_code == ErrorCode.AUTHENTICATION_FAILED for end in ends), ends
        assert not any(c.is_ready for c in accepted.seen)


async def test_proxy_mode_dialer_fails_against_a_bound_listener(
    nginx: Nginx, tmp_path: Path
) -> None:
    """Skipping the binding takes both ends: a listener not marked behind_proxy refuses."""
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    async with serving(serve_ws, server_node, nginx.bound_upstream):
        with pytest.raises(AuthenticationError):
            await connect_ws(
                dialer_node,
                f"wss://{LOOPBACK}:{nginx.proxy_to_bound_port}/fabric",
                expected_peer_id=server_node.key.node_id,
                proxy_tls=nginx.proxy_tls(),
            )


async def test_proxy_mode_verifies_the_proxy_certificate(nginx: Nginx, tmp_path: Path) -> None:
    """Mallory's certificate is not signed by the proxy CA: TLS fails before any AUTH."""
    dialer_node = make_node(tmp_path / "d")
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect_ws(
            dialer_node,
            f"wss://{LOOPBACK}:{nginx.mitm_port}/fabric",
            expected_peer_id=NodeKey.generate().node_id,
            proxy_tls=nginx.proxy_tls(),
        )


# ---------------------------------------------------------------- no proxy


async def test_behind_proxy_listener_refuses_a_direct_bound_dialer(tmp_path: Path) -> None:
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    async with serving(serve_ws, server_node, 0, behind_proxy=True) as (server, _):
        port = port_of(server)
        with pytest.raises(AuthenticationError):
            await connect_ws(
                dialer_node,
                f"wss://{LOOPBACK}:{port}/fabric",
                expected_peer_id=server_node.key.node_id,
            )


async def test_other_paths_get_404(tmp_path: Path) -> None:
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    async with serving(serve_ws, server_node, 0) as (server, accepted):
        with pytest.raises(InvalidStatus) as caught:
            await connect_ws(dialer_node, f"wss://{LOOPBACK}:{port_of(server)}/elsewhere")
        assert caught.value.response.status_code == 404
        assert not accepted.seen


async def test_a_text_message_ends_the_carrier(tmp_path: Path) -> None:
    client_node, server_node = make_node(tmp_path / "c"), make_node(tmp_path / "s")
    async with serving(serve_ws, server_node, 0) as (server, accepted):
        port = port_of(server)
        context = client_context(client_node.key, client_node.cert_dir)
        async with raw_connect(
            f"wss://{LOOPBACK}:{port}/fabric", ssl=context, compression=None, proxy=None
        ) as websocket:
            await websocket.send("hello")
            await asyncio.wait_for(websocket.wait_closed(), 5)
            assert websocket.close_code == 1003
        (connection,) = accepted.seen
        end = await asyncio.wait_for(connection.wait_closed(), 5)
        assert end.error_code != ErrorCode.NO_ERROR


async def test_a_ws_dial_that_times_out_before_the_upgrade_closes_its_socket(
    tmp_path: Path,
) -> None:
    """The carrier exists before any session does: the dial's timeout must abort it too."""
    dialer_node, server_node = make_node(tmp_path / "d"), make_node(tmp_path / "s")
    ended = asyncio.Event()

    async def never_upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(4096):  # the upgrade request; never answered
                pass
        ended.set()  # the dialer closed the connection
        writer.close()

    server = await asyncio.start_server(
        never_upgrade, LOOPBACK, 0, ssl=server_node.tls_context(server=True)
    )
    try:
        with pytest.raises(TimeoutError):
            await connect_ws(dialer_node, f"wss://{LOOPBACK}:{port_of(server)}/fabric", timeout=0.5)
        await asyncio.wait_for(ended.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_connect_ws_refuses_unsafe_options(tmp_path: Path) -> None:
    node = make_node(tmp_path / "n")
    peer = NodeKey.generate().node_id
    with pytest.raises(ValueError, match="wss://"):
        await connect_ws(node, f"ws://{LOOPBACK}:1/fabric", expected_peer_id=peer)
    with pytest.raises(ValueError, match="expected_peer_id"):
        await connect_ws(node, f"wss://{LOOPBACK}:1/fabric", proxy_tls=ssl.create_default_context())
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="verify"):
        await connect_ws(
            node, f"wss://{LOOPBACK}:1/fabric", expected_peer_id=peer, proxy_tls=unverified
        )
    with pytest.raises(ValueError, match="behind_proxy"):
        await serve_ws(node, LOOPBACK, 0, lambda connection: None, tls=False)


def test_forwarded_client_is_the_address_the_last_proxy_saw() -> None:
    from websockets.datastructures import Headers

    assert forwarded_client(Headers()) is None
    assert forwarded_client(Headers({"X-Forwarded-For": "203.0.113.9"})) == "203.0.113.9"
    spoofed = Headers([("X-Forwarded-For", "1.2.3.4, 198.51.100.7")])
    assert forwarded_client(spoofed) == "198.51.100.7"
    two = Headers([("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "198.51.100.8")])
    assert forwarded_client(two) == "198.51.100.8"


class NullTransport:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def write_capacity(self) -> int:
        return 1 << 20

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def test_auth_failure_limit_keys_on_the_forwarded_client(tmp_path: Path) -> None:
    node: LocalNode = make_node(tmp_path / "n")
    now = asyncio.get_running_loop().time()
    while node.auth_failures.allows("198.51.100.7", now):
        node.auth_failures.take("198.51.100.7", now)
    handed: list[SessionConnection] = []

    def accept(forwarded: str) -> NullTransport:
        info = CarrierInfo(
            kind="websocket",
            dialer=False,
            peer_address=f"{LOOPBACK}:40000",  # the proxy
            channel_binding=b"",
            forwarded_for=forwarded,
        )
        transport = NullTransport()
        node.accept_connection(info, transport, None, handed.append)
        return transport

    assert accept("198.51.100.7").closed  # refused: that client failed too often
    assert node.rejected_connections == 1 and not handed
    assert not accept("198.51.100.8").closed  # another client behind the same proxy
    assert len(handed) == 1
    handed[0].abort()
