"""Flood defences of a node's listener (issue 14): connections that never start TLS, failed
AUTH behind one address, refused-stream floods over many sessions, and a peer violation
with many streams open.  One real node runtime on loopback per test."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from accessfabric.errors import ErrorCode
from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import client_context
from accessfabric.identity.tls_exporter import tls_exporter
from accessfabric.node.config.node_config import NodeConfig
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.serving.admission import AdmissionLimits
from accessfabric.node.streams.connection import FabricStream, SessionConnection
from accessfabric.session import Session, SessionConfig
from accessfabric.session import events as ev
from accessfabric.wire import frames as fr
from accessfabric.wire.registry import FrameType
from tests.node.harness import start_node

LOOPBACK = Endpoint(carrier="tcp", host="127.0.0.1", port=0)


def node_config(tmp_path: Path, limits: AdmissionLimits, **session: float) -> NodeConfig:
    return NodeConfig(
        key_path=tmp_path / "node.key",
        cert_dir=tmp_path / "node",
        listen=(LOOPBACK,),
        limits=limits,
        session=dataclasses.replace(SessionConfig(), **session),  # type: ignore[arg-type]
        allow={"echo": ("*",)},  # services are default deny; these tests attack the listener
    )


async def started(config: NodeConfig) -> tuple[NodeRuntime, int]:
    runtime = NodeRuntime(config, key=NodeKey.generate())
    await runtime.start()
    return runtime, runtime.listeners[0].endpoint.port


async def held_for(port: int, source: str) -> tuple[float, float]:
    """Connect from ``source`` and never start TLS: how long the node kept the socket, as
    (at least, at most) -- the node accepted it between our connect call and its return."""
    before = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    after = time.monotonic()
    try:
        while await reader.read(1024):
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()
    now = time.monotonic()
    return now - after, now - before


async def test_pre_tls_connections_cut_at_handshake_timeout_and_capped_at_accept(
    tmp_path: Path,
) -> None:
    timeout = 4.0
    limits = AdmissionLimits(
        max_pending_handshakes=1300,
        max_pending_handshakes_per_address=1200,
        handshake_burst=5000,
        handshakes_per_second=5000,
    )
    runtime, port = await started(node_config(tmp_path, limits, handshake_timeout=timeout))
    admission = runtime.local.admission
    try:
        # 1800 connections from one address, then 200 from another: 2000 in all.
        tasks = [asyncio.create_task(held_for(port, "127.0.0.1")) for _ in range(1800)]
        async with asyncio.timeout(20):
            while admission.pending + admission.refused["pending handshakes per address"] < 1800:
                await asyncio.sleep(0.05)
        second = [asyncio.create_task(held_for(port, "127.0.0.2")) for _ in range(200)]
        held = await asyncio.gather(*tasks, *second)
    finally:
        await runtime.shutdown()
    from_first, from_second = held[:1800], held[1800:]
    # Beyond the caps: closed at accept, long before the handshake deadline.
    refused_first = [t for t in from_first if t[0] < timeout / 2]
    refused_second = [t for t in from_second if t[0] < timeout / 2]
    assert len(refused_first) == 600  # per-address cap 1200
    assert len(refused_second) == 100  # total cap 1300 with 1200 pending
    assert admission.refused["pending handshakes per address"] == 600
    assert admission.refused["pending handshakes"] == 100
    # Admitted: cut at handshake_timeout (not asyncio's 60 s), generous slack for load.
    cut = [t for t in held if t[0] >= timeout / 2]
    assert len(cut) == 1300
    assert min(most for _, most in cut) >= timeout * 0.95
    assert max(least for least, _ in cut) <= timeout + 8.0
    assert admission.pending == 0
    assert admission.refused["tls handshake"] == 1300
    metrics = runtime.observe.registry.get_sample_value(
        "accessfabric_connections_refused_total", {"reason": "pending handshakes"}
    )
    assert metrics == 100


class BadSigner(Ed25519Authenticator):
    """A dialer whose AUTH signature never verifies (a wrong or broken key)."""

    def sign(self, transcript: bytes) -> bytes:
        return bytes(64)


async def failing_auth(port: int, key: NodeKey, cert_dir: Path) -> ErrorCode | int:
    """One handshake with a bad AUTH signature; the code the node ended it with."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(key, cert_dir), server_hostname="127.0.0.1"
    )
    binding = tls_exporter(writer.get_extra_info("ssl_object"))
    session = Session(
        dialer=True,
        authenticator=BadSigner(key),
        random_bytes=secrets.token_bytes,
        channel_binding=binding,
        now=time.monotonic(),
    )
    try:
        async with asyncio.timeout(10):
            while True:
                writer.write(session.data_to_send(now=time.monotonic()))
                data = await reader.read(65536)
                if not data:
                    break
                for event in session.receive_data(data, time.monotonic()):
                    if isinstance(event, ev.SessionTerminated):
                        return event.error_code
    except ConnectionError:
        pass
    finally:
        writer.close()
    assert session.terminated is not None, "the node accepted a bad AUTH signature"
    return session.terminated.error_code


async def test_valid_key_behind_an_address_with_failing_keys_still_gets_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="accessfabric.node.serving.admission")
    runtime, port = await started(node_config(tmp_path, AdmissionLimits()))
    try:
        bad = NodeKey.generate()
        codes = [await failing_auth(port, bad, tmp_path / "bad") for _ in range(14)]
        # The first ten fail AUTH; then that (address, key) is refused before verifying.
        assert codes[:10] == [ErrorCode.AUTHENTICATION_FAILED] * 10
        assert codes[-1] == ErrorCode.ENHANCE_YOUR_CALM
        assert runtime.local.admission.refused["rate limit"] >= 1
        # Another key at the same address is not locked out.
        good = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "good")
        connection = await connect_tcp(good, "127.0.0.1", port, expected_peer_id=runtime.node_id)
        stream = await connection.open_stream("echo")
        stream.write(b"in")
        assert await stream.readexactly(2) == b"in"
        connection.abort()
    finally:
        await runtime.shutdown()
    refusals = [r.getMessage() for r in caplog.records if "reason=rate limit" in r.getMessage()]
    assert refusals and bad.node_id in refusals[0]
    assert len(refusals) == 1  # one line per interval per (address, key), the rest counted


async def echo_rtts(connection: SessionConnection, count: int) -> list[float]:
    stream = await connection.open_stream("echo")
    rtts = []
    for _ in range(count):
        start = time.perf_counter()
        stream.write(b"x" * 64)
        await stream.readexactly(64)
        rtts.append(time.perf_counter() - start)
    stream.close()
    return rtts


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_refusal_flood_over_eight_sessions_trips_the_limiter_within_tens(
    tmp_path: Path,
) -> None:
    """The node, the attacker (8 sessions of one key opening streams with garbage route
    leases, bench abuse's attacker) and the healthy client each run in their own process."""
    metrics_port = free_port()
    node = await asyncio.to_thread(
        start_node, tmp_path, "node", f'metrics_listen = "127.0.0.1:{metrics_port}"'
    )
    try:
        local = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "healthy")
        healthy = await connect_tcp(local, "127.0.0.1", node.port, expected_peer_id=node.node_id)
        stream = await healthy.open_stream("echo")
        await paced_echoes(stream, 50)  # warm up
        # Baseline windows as long, in all, as the flood's: the shared machine's own
        # hiccups then land in both about as often.
        baseline = await echoes_for(stream, 2.5)
        # Niced: the attacker would be on another machine; its own CPU must not count here.
        attacker = await asyncio.create_subprocess_exec(
            "nice", "-n", "19",
            sys.executable, "-m", "accessfabric.bench.abuse_attacker", "refused-streams",
            str(node.port), node.node_id, "5", str(tmp_path / "attacker"),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert attacker.stdout is not None
        assert await attacker.stdout.readline() == b"started\n"  # its start-up is over
        during: list[float] = []
        async with asyncio.timeout(20):
            while attacker.returncode is None:
                during += await paced_echoes(stream, 25)
            out, _ = await attacker.communicate()
        attack = json.loads(out)
        baseline += await echoes_for(stream, 2.5)  # after the flood too
        assert healthy.is_ready
        healthy.abort()
        samples = await asyncio.to_thread(scrape, metrics_port)
    finally:
        await asyncio.to_thread(node.kill)
    refused = sum(v for k, v in samples.items() if k.startswith("accessfabric_streams_refused"))
    assert attack["opens"] > 100 and attack["sessions"] >= 1
    assert 0 < refused <= 80, (refused, attack)  # tens, not 8 x 4650
    assert attack["session refused"] > 0  # new sessions of that peer are refused
    calm = samples.get('accessfabric_connections_refused_total{reason="refused streams"}', 0)
    assert calm > 0
    # The healthy session's echo p99 within 2x of its own baseline, measured before and
    # after the flood.  A 5 ms floor absorbs scheduler noise: on this 2-vCPU machine shared
    # by other builds, quiet baselines range 1-6 ms; the unlimited flood pushed p99 to
    # ~300 ms (issue 14).
    assert len(during) >= 100
    assert p99(during) <= 2 * max(p99(baseline), 0.005), (p99(baseline), p99(during))


async def echoes_for(stream: FabricStream, seconds: float) -> list[float]:
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples += await paced_echoes(stream, 25)
    return samples


async def paced_echoes(stream: FabricStream, count: int) -> list[float]:
    rtts = []
    for _ in range(count):
        start = time.perf_counter()
        stream.write(b"x" * 64)
        await stream.readexactly(64)
        rtts.append(time.perf_counter() - start)
        await asyncio.sleep(0.002)
    return rtts


async def test_one_bad_frame_with_256_streams_open_writes_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    runtime, port = await started(node_config(tmp_path, AdmissionLimits()))
    try:
        local = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client")
        connection = await connect_tcp(local, "127.0.0.1", port, expected_peer_id=runtime.node_id)
        streams = [await connection.open_stream("echo") for _ in range(256)]
        for stream in streams:
            stream.write(b"hi")
        for stream in streams:
            assert await stream.readexactly(2) == b"hi"
        assert runtime.dispatcher.active == 256
        # One frame far over the size limit: a session-level violation (FRAME_SIZE_ERROR).
        assert connection._transport is not None
        connection._transport.write(fr.HEADER.pack(1_000_000 << 8 | FrameType.DATA, 0, 1))
        ended = await asyncio.wait_for(connection.wait_closed(), 10)
        assert ended.error_code == ErrorCode.FRAME_SIZE_ERROR
        async with asyncio.timeout(10):
            while runtime.dispatcher.active:
                await asyncio.sleep(0.02)
    finally:
        await runtime.shutdown()
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not tracebacks, tracebacks[0].getMessage()


def test_limits_config_keys_are_read_and_checked(tmp_path: Path) -> None:
    from accessfabric.node.config.node_config import ConfigError, load_node_config

    config = tmp_path / "node.toml"
    config.write_text(
        'key_path = "n.key"\n[limits]\nmax_pending_handshakes = 7\nhandshake_burst = 3.5\n'
        "auth_failures_per_key_burst = 4\nlog_interval = 2\n"
    )
    limits = load_node_config(config).limits
    assert limits.max_pending_handshakes == 7
    assert limits.handshake_burst == 3.5
    assert limits.auth_failures_per_key_burst == 4.0
    assert limits.log_interval == 2.0
    assert limits.refused_streams_per_peer_burst == AdmissionLimits().refused_streams_per_peer_burst
    for bad, message in (
        ("max_pending_handshakes = 0", "limits.max_pending_handshakes: expected an integer >= 1"),
        ("handshake_burst = -1", "limits.handshake_burst: expected a positive number"),
        ("handshakes = 5", "limits.handshakes: unknown key"),
        ('log_interval = "10s"', "limits.log_interval: expected a number"),
    ):
        config.write_text(f'key_path = "n.key"\n[limits]\n{bad}\n')
        with pytest.raises(ConfigError) as caught:
            load_node_config(config)
        assert message in str(caught.value), str(caught.value)


async def test_connections_that_never_start_tls_hold_no_tls_buffers(tmp_path: Path) -> None:
    """Before its first byte an admitted connection has no TLS protocol (asyncio's allocates
    a 256 KiB receive buffer each): 300 of them cost a few KiB each of Python memory."""
    import tracemalloc

    limits = AdmissionLimits(max_pending_handshakes_per_address=1000, handshake_burst=1000)
    runtime, port = await started(node_config(tmp_path, limits))
    writers = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
        async with asyncio.timeout(10):
            while runtime.local.admission.pending < 300:
                await asyncio.sleep(0.02)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        for writer in writers:
            writer.close()
        await runtime.shutdown()
    assert grown / 300 < 32 * 1024, f"{grown / 300 / 1024:.1f} KiB per connection"
