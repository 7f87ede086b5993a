"""The attacker of ``bench abuse``: one flood against a node on loopback, in its own process.

``python -m accessfabric.bench.abuse_attacker KIND PORT NODE_ID SECONDS CERT_DIR`` runs
flood KIND for SECONDS; it prints ``started`` when the flood begins and, at the end,
one JSON line of what it did:

* ``pre-tls``: 2000 TCP connections that never send a byte (held until the node cuts them);
* ``tls-churn``: TLS handshakes then a close, 64 at a time;
* ``bad-auth``: sessions whose AUTH signature never verifies, 16 at a time, each with a
  fresh key (the per-address limiter's work);
* ``refused-streams``: 8 sessions of one key opening streams with garbage route leases;
* ``quic-initials``: QUIC Initials, each with a fresh destination connection id (so a new
  connection to the server) and never continued, up to 5000 a second, against the node's
  QUIC port (PORT is that port);
* ``connect-storm``: ``STORM`` (400) valid sessions, each with a fresh key, dialled at
  once; each is held for SECONDS or until the node ends it, and counted as ``admitted``,
  ``goaway ENHANCE_YOUR_CALM`` (refused after AUTH), ``closed <code>`` or
  ``refused before a session: <error>`` (closed at accept, before TLS, by the pending
  handshake caps or the handshake budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import ssl
import sys
import time
from collections import Counter
from pathlib import Path

from accessfabric.bench.common import raise_nofile_limit
from accessfabric.errors import ProtocolError
from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import client_context
from accessfabric.identity.tls_exporter import tls_exporter
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.session import Session
from accessfabric.session import events as ev

HOST = "127.0.0.1"
STORM = 400


class _BadSigner(Ed25519Authenticator):
    def sign(self, transcript: bytes) -> bytes:
        return bytes(64)


async def _pre_tls(port: int, seconds: float, counts: dict[str, int]) -> None:
    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            counts["connect failed"] += 1
            return
        counts["opened"] += 1
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(reader.read(), seconds)
        writer.close()

    await asyncio.gather(*(one() for _ in range(2000)))


async def _tls_churn(port: int, deadline: float, cert_dir: Path, counts: dict[str, int]) -> None:
    context = client_context(NodeKey.generate(), cert_dir)

    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(
                    HOST, port, ssl=context, server_hostname=HOST
                )
                counts["handshakes"] += 1
                writer.close()
            except (OSError, ssl.SSLError):
                counts["refused"] += 1
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker() for _ in range(64)))


async def _bad_auth_once(port: int, cert_dir: Path) -> int:
    key = NodeKey.generate()
    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=client_context(key, cert_dir), server_hostname=HOST
    )
    binding = tls_exporter(writer.get_extra_info("ssl_object"))
    session = Session(
        dialer=True,
        authenticator=_BadSigner(key),
        random_bytes=secrets.token_bytes,
        channel_binding=binding,
        now=time.monotonic(),
    )
    try:
        while True:
            writer.write(session.data_to_send(now=time.monotonic()))
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                return -1
            for event in session.receive_data(data, time.monotonic()):
                if isinstance(event, ev.SessionTerminated):
                    return int(event.error_code)
    finally:
        writer.close()


async def _bad_auth(port: int, deadline: float, cert_dir: Path, counts: dict[str, int]) -> None:
    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                code = await _bad_auth_once(port, cert_dir)
                counts[f"code {code}"] += 1
            except (OSError, ssl.SSLError, TimeoutError):
                counts["refused"] += 1
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker() for _ in range(16)))


async def _refused_streams(
    port: int, node_id: str, deadline: float, cert_dir: Path, counts: dict[str, int]
) -> None:
    key = NodeKey.generate()

    async def worker(index: int) -> None:
        local = LocalNode(key=key, cert_dir=cert_dir / str(index))
        while time.monotonic() < deadline:
            try:
                connection = await connect_tcp(local, HOST, port, expected_peer_id=node_id)
            except (OSError, ProtocolError, TimeoutError, ssl.SSLError):
                counts["session refused"] += 1
                await asyncio.sleep(0.05)
                continue
            counts["sessions"] += 1
            try:
                while not connection.is_closed and time.monotonic() < deadline:
                    for _ in range(32):
                        await connection.open_stream("echo", route_lease=os.urandom(80))
                        counts["opens"] += 1
                    await asyncio.sleep(0.001)
            except (ConnectionError, ProtocolError):
                pass
            connection.abort()

    await asyncio.gather(*(worker(i) for i in range(8)))


async def _quic_initials(port: int, deadline: float, counts: dict[str, int]) -> None:
    """One real client Initial, re-sent with a fresh random destination connection id each
    time: to the server every one is a new connection (its payload no longer decrypts, so
    none ever completes), and the attacker spends nothing per connection."""
    import socket

    from qh3.quic.connection import QuicConnection

    from accessfabric.carriers.quic_adapter import client_configuration

    configuration = client_configuration(
        certificate_fingerprint=None, idle_timeout=30.0, max_data=1 << 20,
        max_stream_data=1 << 20,
    )  # fmt: skip
    quic = QuicConnection(configuration=configuration)
    quic.connect((HOST, port), now=time.time())
    initial = bytearray(quic.datagrams_to_send(now=time.time())[0][0])
    cid_length = initial[5]  # flags (1), version (4), DCID length (1), DCID
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        while time.monotonic() < deadline:
            for _ in range(50):
                initial[6 : 6 + cid_length] = os.urandom(cid_length)
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(initial, (HOST, port))
                    counts["initials"] += 1
            await asyncio.sleep(0.01)
    finally:
        sock.close()


async def _connect_storm(
    port: int, node_id: str, seconds: float, cert_dir: Path, counts: dict[str, int]
) -> None:
    from accessfabric.errors import ErrorCode

    locals_ = [LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / f"s{i}") for i in range(STORM)]
    for local in locals_:  # certificates made before the storm, not during it
        local.tls_context(server=False)
    print("ready", flush=True)
    if port < 0:
        port_text, node_id = (await asyncio.to_thread(sys.stdin.readline)).split()
        port = int(port_text)
    os.nice(19)  # the storm's own CPU would be other machines': it must not count here
    held = []

    async def one(local: LocalNode) -> None:
        try:
            connection = await asyncio.wait_for(
                connect_tcp(local, HOST, port, expected_peer_id=node_id), 10.0
            )
        except (OSError, ProtocolError, TimeoutError, ssl.SSLError, EOFError) as exc:
            counts[f"refused before a session: {type(exc).__name__}"] += 1
            return
        held.append(connection)
        deadline = time.monotonic() + seconds
        while not connection.is_closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        terminated = connection.session.terminated
        if not connection.is_closed:
            counts["admitted"] += 1
        elif terminated is not None and terminated.error_code == ErrorCode.ENHANCE_YOUR_CALM:
            counts["goaway ENHANCE_YOUR_CALM"] += 1
        else:
            counts[f"closed {terminated.error_code if terminated else None}"] += 1

    print("started", flush=True)
    await asyncio.gather(*(one(local) for local in locals_))
    for connection in held:
        connection.abort()


async def main(kind: str, port: int, node_id: str, seconds: float, cert_dir: Path) -> None:
    counts: dict[str, int] = Counter()
    if kind == "connect-storm":  # "started" once its keys exist
        await _connect_storm(port, node_id, seconds, cert_dir, counts)
        print(json.dumps(dict(counts)), flush=True)
        return
    print("started", flush=True)  # the interpreter's start-up is over: the flood begins
    deadline = time.monotonic() + seconds
    if kind == "pre-tls":
        await _pre_tls(port, seconds, counts)
    elif kind == "tls-churn":
        await _tls_churn(port, deadline, cert_dir, counts)
    elif kind == "bad-auth":
        await _bad_auth(port, deadline, cert_dir, counts)
    elif kind == "refused-streams":
        await _refused_streams(port, node_id, deadline, cert_dir, counts)
    elif kind == "quic-initials":
        await _quic_initials(port, deadline, counts)
    else:
        raise SystemExit(f"unknown flood {kind!r}")
    print(json.dumps(dict(counts)), flush=True)


if __name__ == "__main__":
    raise_nofile_limit()
    kind, port, node_id, seconds, cert_dir = sys.argv[1:6]
    asyncio.run(main(kind, -1 if port == "-" else int(port), node_id, float(seconds),
                     Path(cert_dir)))  # fmt: skip
