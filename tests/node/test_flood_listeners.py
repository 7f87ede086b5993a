"""Accept caps and the handshake budget on the QUIC and HTTPS-fallback listeners (issue 14,
ADR 0028): a flood of handshakes that never finish, from one address, is refused beyond
the per-address cap before any TLS work, the admitted ones are cut at ``handshake_timeout``,
and a healthy client at another address still gets a session.  One node runtime on
loopback per test; the attacker speaks from 127.0.0.2."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path

import pytest
from qh3.quic.connection import QuicConnection

from accessfabric.carriers.quic_adapter import client_configuration
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.dial import dial
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.runtime import SESSION_LOG_BURST, NodeRuntime
from accessfabric.node.serving.admission import AdmissionLimits
from accessfabric.session import SessionConfig
from tests.conditions import until

ATTACKER = "127.0.0.2"
CAP = 8
FLOOD = 40
TIMEOUT = 1.5
PATHS = {"https": "/fabric-poll"}


async def _node(tmp_path: Path, carrier: str) -> NodeRuntime:
    config = NodeConfig(
        key_path=tmp_path / "node.key",
        cert_dir=tmp_path / "node",
        listen=(Endpoint(carrier=carrier, host="127.0.0.1", port=0, path=PATHS.get(carrier, "")),),
        limits=AdmissionLimits(max_pending_handshakes_per_address=CAP),
        session=dataclasses.replace(SessionConfig(), handshake_timeout=TIMEOUT),
        allow={"echo": ("*",)},
    )
    runtime = NodeRuntime(config, key=NodeKey.generate())
    await runtime.start()
    return runtime


async def _healthy_session(runtime: NodeRuntime, tmp_path: Path) -> None:
    """A fresh client at 127.0.0.1 gets a session and an echo through it."""
    client = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client")
    endpoint = runtime.listeners[0].endpoint
    connection = await dial(client, endpoint, expected_peer_id=runtime.node_id, timeout=10)
    try:
        stream = await connection.open_stream("echo")
        stream.write(b"still here")
        assert await asyncio.wait_for(stream.readexactly(10), 10) == b"still here"
    finally:
        connection.abort()


def _quic_initials(port: int, count: int) -> socket.socket:
    """``count`` QUIC connections started from ATTACKER (each its own Initial, padded to
    1200 bytes) whose handshakes are never continued: the socket is never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ATTACKER, 0))
    for _ in range(count):
        configuration = client_configuration(
            certificate_fingerprint=None, idle_timeout=30.0, max_data=1 << 20,
            max_stream_data=1 << 20,
        )  # fmt: skip
        quic = QuicConnection(configuration=configuration)
        quic.connect(("127.0.0.1", port), now=time.time())
        for data, address in quic.datagrams_to_send(now=time.time()):
            sock.sendto(data, address)
    return sock


async def test_quic_handshake_flood_is_capped_per_address_and_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runtime = await _node(tmp_path, "quic")
    admission = runtime.local.admission
    try:
        port = runtime.listeners[0].endpoint.port
        flood = _quic_initials(port, FLOOD)
        try:
            refused = "pending handshakes per address"
            await until(lambda: admission.pending_from(ATTACKER) == CAP, timeout=10)
            await until(lambda: admission.refused[refused] >= FLOOD - CAP, timeout=10)
            assert admission.pending_from(ATTACKER) == CAP  # never more than the cap
            for _ in range(4):  # each closes its QUIC connection: qh3 logs the peer close
                await _healthy_session(runtime, tmp_path)
            # the admitted ones never finish: cut at handshake_timeout, their slots freed
            started = time.monotonic()
            await until(lambda: admission.pending_from(ATTACKER) == 0, timeout=TIMEOUT + 10)
            assert time.monotonic() - started <= TIMEOUT + 10
            assert admission.refused["tls handshake"] >= CAP
            assert admission.pending == 0  # the healthy one released its slot too
            closes = [r for r in caplog.records if r.getMessage().startswith("Native peer")]
            assert len(closes) <= 1, [r.getMessage() for r in closes]  # rate-limited
            refusals = [r for r in caplog.records if "reason=pending handshakes" in r.getMessage()]
            assert len(refusals) == 1  # FLOOD - CAP refusals, one line
        finally:
            flood.close()
    finally:
        await runtime.shutdown()


async def _held(port: int) -> float:
    """Connect from ATTACKER, never start TLS: seconds until the node closed the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
    start = time.monotonic()
    with suppress(ConnectionError):
        await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return time.monotonic() - start


async def test_https_fallback_pre_tls_flood_is_capped_per_address_and_cut(tmp_path: Path) -> None:
    runtime = await _node(tmp_path, "https")
    admission = runtime.local.admission
    try:
        port = runtime.listeners[0].endpoint.port
        flood = [asyncio.create_task(_held(port)) for _ in range(FLOOD)]
        await until(lambda: admission.pending_from(ATTACKER) == CAP, timeout=10)
        await until(
            lambda: admission.refused["pending handshakes per address"] == FLOOD - CAP, timeout=10
        )
        await _healthy_session(runtime, tmp_path)
        times = await asyncio.gather(*flood)
    finally:
        await runtime.shutdown()
    refused = [t for t in times if t < TIMEOUT / 2]
    cut = [t for t in times if t >= TIMEOUT / 2]
    assert len(refused) == FLOOD - CAP  # closed at accept, before any TLS work
    assert len(cut) == CAP and max(cut) <= TIMEOUT + 8.0  # not asyncio's 60 s
    assert admission.pending == 0


async def test_a_session_flood_writes_a_bounded_number_of_session_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Any key can open a session: 60 sessions from one address (a fresh key each) write
    at most SESSION_LOG_BURST ``session accepted`` and as many ``session ended`` lines."""
    caplog.set_level(logging.INFO, logger="accessfabric.node.runtime")
    runtime = await _node(tmp_path, "tcp")
    sessions = 60
    try:
        endpoint = runtime.listeners[0].endpoint
        for index in range(sessions):
            client = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / f"c{index % 4}")
            connection = await dial(client, endpoint, expected_peer_id=runtime.node_id)
            connection.abort()
        await until(lambda: runtime.accepted_sessions == 0, timeout=10)
        lines = Counter(r.getMessage() for r in caplog.records)
        assert lines["session accepted"] == SESSION_LOG_BURST, lines
        assert lines["session ended"] == SESSION_LOG_BURST, lines
    finally:
        await runtime.shutdown()


async def _over_long_header(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(
        b"GET /fabric-poll/s/x/down HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n"
    )
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_malformed_requests_to_the_https_fallback_write_one_line_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runtime = await _node(tmp_path, "https")
    try:
        port = runtime.listeners[0].endpoint.port
        for _ in range(20):
            assert (await _over_long_header(port)).startswith(b"HTTP/1.0 400")
    finally:
        await runtime.shutdown()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    refused = [r for r in caplog.records if "request refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]
