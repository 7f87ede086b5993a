"""``accessfabric bench idle``: resident memory of idle authenticated sessions.

For each kind of connection, two fresh processes: an acceptor and a dialer on
loopback (``127.0.0.1``).  The dialer opens one warm-up connection (so code paths,
imports and the TLS context are loaded), both sides read their ``VmRSS``, the dialer
opens ``N`` more connections (1000; 200 with ``--quick``), both wait a moment, collect
garbage and read ``VmRSS`` again.  The figure is the RSS delta / ``N`` on each side:

* **fabric session**: TCP+TLS carrier plus a fabric session that completed its
  HELLO/AUTH/SESSION_READY handshake, no stream open (``connect_tcp`` / ``serve_tcp``,
  default :class:`SessionConfig`);
* **plain TLS** (the baseline): an asyncio TLS 1.3 connection with the same
  certificates and a do-nothing ``asyncio.Protocol`` on each side.

The soft ``RLIMIT_NOFILE`` is raised to the hard limit in every process.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import tempfile
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from accessfabric.bench.common import (
    BenchNode,
    machine_note,
    raise_nofile_limit,
    rss_bytes,
    run_async,
)
from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.node.dialing.endpoints import connect_tcp, serve_tcp
from accessfabric.node.serving.admission import Admission, AdmissionLimits
from accessfabric.node.streams.connection import SessionConnection

HOST = "127.0.0.1"
ACCEPTOR_SEED = bytes(range(128, 160))
DIALER_SEED = bytes(range(160, 192))
BATCH = 50
SETTLE_S = 1.0
TARGET_BYTES = 64 * 1024
UNLIMITED_HANDSHAKES = AdmissionLimits(
    handshakes_per_second=1e6,
    handshake_burst=1e6,
    max_pending_handshakes=4 * BATCH,
    max_pending_handshakes_per_address=4 * BATCH,
)
REPLY_TIMEOUT_S = 120.0


class _Quiet(asyncio.Protocol):
    """A plain TLS connection that does nothing."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


def _settled_rss() -> int:
    gc.collect()
    return rss_bytes()


async def _acceptor(conn: Connection, kind: str, cert_dir: str) -> None:
    raise_nofile_limit()
    loop = asyncio.get_running_loop()
    node = BenchNode.make(ACCEPTOR_SEED, Path(cert_dir))
    kept: list[Any] = []
    server: asyncio.Server
    if kind == "fabric":
        # The figure is memory, not admission: a handshake budget that lets the batches
        # through (the default 100/s refused some dials, and the dialer gave up).
        local = replace(node.local(), admission=Admission(UNLIMITED_HANDSHAKES))
        server = await serve_tcp(local, HOST, 0, kept.append)
    else:
        server = await loop.create_server(_Quiet, HOST, 0, ssl=node.server_ssl(), backlog=1024)
    conn.send(server.sockets[0].getsockname()[1])
    while True:
        message = await loop.run_in_executor(None, conn.recv)
        if message == "rss":
            await asyncio.sleep(SETTLE_S)
            conn.send((_settled_rss(), len(kept)))
        else:
            break
    server.close()


async def _dialer(conn: Connection, kind: str, cert_dir: str, port: int, count: int) -> None:
    raise_nofile_limit()
    loop = asyncio.get_running_loop()
    node = BenchNode.make(DIALER_SEED, Path(cert_dir))
    local = node.local()
    context = node.client_ssl()
    peer_id = BenchNode.make(ACCEPTOR_SEED, Path(cert_dir)).key.node_id
    kept: list[Any] = []

    async def dial() -> None:
        if kind == "fabric":
            session: SessionConnection = await connect_tcp(
                local, HOST, port, expected_peer_id=peer_id
            )
            kept.append(session)
        else:
            transport, _ = await loop.create_connection(
                _Quiet, HOST, port, ssl=context, server_hostname=HOST
            )
            kept.append(transport)

    await dial()  # warm-up: everything lazily made is made now
    await asyncio.sleep(SETTLE_S)
    before = _settled_rss()
    conn.send(("warm", before))
    await loop.run_in_executor(None, conn.recv)
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(*(dial() for _ in range(min(BATCH, count - first))))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(SETTLE_S)
    conn.send(("done", _settled_rss(), elapsed, len(kept) - 1))
    await loop.run_in_executor(None, conn.recv)
    for item in kept:
        if isinstance(item, SessionConnection):
            item.abort()
        else:
            item.close()


def _acceptor_process(conn: Connection, kind: str, cert_dir: str) -> None:
    run_async(_acceptor(conn, kind, cert_dir))


def _dialer_process(conn: Connection, kind: str, cert_dir: str, port: int, count: int) -> None:
    run_async(_dialer(conn, kind, cert_dir, port, count))


def _reply(conn: Connection, process: Any, what: str) -> Any:
    """The next message from ``process``; an error, not a hang, when it died first."""
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while not conn.poll(0.5):
        if not process.is_alive():
            raise RuntimeError(f"the {what} process ended (exit code {process.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer from the {what} in {REPLY_TIMEOUT_S:.0f} s")
    return conn.recv()


def _measure(kind: str, cert_dir: Path, count: int) -> dict[str, float]:
    """Per-connection RSS on each side for ``count`` idle connections of ``kind``."""
    mp = multiprocessing.get_context("spawn")
    acceptor_conn, acceptor_end = mp.Pipe()
    dialer_conn, dialer_end = mp.Pipe()
    acceptor = mp.Process(
        target=_acceptor_process, args=(acceptor_end, kind, str(cert_dir)), daemon=True
    )
    acceptor.start()
    dialer: Any = None
    try:
        port = _reply(acceptor_conn, acceptor, "acceptor")
        dialer = mp.Process(
            target=_dialer_process,
            args=(dialer_end, kind, str(cert_dir), port, count),
            daemon=True,
        )
        dialer.start()
        _, dialer_before = _reply(dialer_conn, dialer, "dialer")
        acceptor_conn.send("rss")
        acceptor_before, _ = _reply(acceptor_conn, acceptor, "acceptor")
        dialer_conn.send("go")
        _, dialer_after, elapsed, opened = _reply(dialer_conn, dialer, "dialer")
        acceptor_conn.send("rss")
        acceptor_after, accepted = _reply(acceptor_conn, acceptor, "acceptor")
        dialer_conn.send("stop")
        acceptor_conn.send("stop")
        if opened != count:
            raise RuntimeError(f"{kind}: opened {opened} of {count} connections")
        return {
            "dialer": (dialer_after - dialer_before) / count,
            "acceptor": (acceptor_after - acceptor_before) / count,
            "accepted": float(accepted),
            "seconds": elapsed,
        }
    finally:
        for process in (dialer, acceptor):
            if process is not None:
                process.join(10)
                if process.is_alive():
                    process.kill()


def run(quick: bool) -> BenchReport:
    count = 200 if quick else 1000
    report = BenchReport("idle")
    with tempfile.TemporaryDirectory(prefix="afidle-") as tmp:
        cert_dir = Path(tmp) / "tls"
        BenchNode.make(ACCEPTOR_SEED, cert_dir).server_ssl()
        BenchNode.make(DIALER_SEED, cert_dir).client_ssl()
        tls = _measure("tls", cert_dir, count)
        fabric = _measure("fabric", cert_dir, count)
    for side in ("dialer", "acceptor"):
        report.add(
            BenchResult(
                metric=f"idle fabric session RSS, {side}",
                value=fabric[side] / 1024,
                unit="KiB",
                baseline_metric=f"idle plain TLS conn RSS, {side}",
                baseline_value=tls[side] / 1024,
            )
        )
    worst = max(fabric["dialer"], fabric["acceptor"])
    report.notes["sessions"] = (
        f"{count} per kind; fabric handshakes took {fabric['seconds']:.1f} s, "
        f"plain TLS {tls['seconds']:.1f} s"
    )
    report.notes["target"] = (
        f"<= 64 KiB per idle session: {'met' if worst <= TARGET_BYTES else 'not met'} "
        f"(worst side {worst / 1024:.1f} KiB)"
    )
    report.notes["fd limit"] = f"soft RLIMIT_NOFILE raised to {raise_nofile_limit()}"
    report.notes["machine"] = machine_note()
    return report
