"""``accessfabric bench fleet``: N real devices against two entries, beside N plain TLS
connections measured in the same run (issue 17).

* **The fleet**: ``accessfabric sim fleet`` (:mod:`accessfabric.sim.fleet`) with
  ``--devices N --entries 2 --workers 3 --heartbeat 10 --stream-interval 120 --hold 15
  --kill-entry`` (the flags of the 1000-device runs in docs/benchmarks.md; N = 1000, 50
  and a 5 s hold with ``--quick``): a control plane, two entries, a service host and N
  node runtimes, every one enrolling, heartbeating, holding a session
  with its placed entry, taking route leases and streaming to an echo service; then one
  entry is SIGKILLed and its devices re-home.
* **The baseline**: one server process accepting plain TLS 1.3 connections (the same
  certificates code as the fabric, a 64-byte echo) and N client connections from this
  process, opened the same way (batches), each sending a 64-byte ping every 10 s (the
  fleet's heartbeat interval) with a random phase.

Figures and what each is compared with:

=================================  ===============================================
fleet                              baseline (same run)
=================================  ===============================================
seconds until all N connected      seconds to open N plain TLS connections
and heartbeating
entry CPU during the hold, % of    the TLS server's CPU during its hold, % of one
one core (the busier entry)        core
entry RSS growth per session, KiB  TLS server RSS growth per connection, KiB
heartbeat p99, ms                  plain TLS ping round trip p99, ms
route lease p99, ms (as the         plain TLS ping round trip p99, ms
device sees it, docs/fleet.md)
re-home after SIGKILL, s           seconds to open that many plain TLS connections
=================================  ===============================================

The issue's targets (60 s, 10 %, 64 KiB, 250 ms, 100 ms, 15 s) are in the notes; the
entry CPU of the fleet includes the streams its devices open (one per device every
~120 s), the baseline's only pings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from accessfabric.bench.common import BenchNode, machine_note, raise_nofile_limit, run_async
from accessfabric.bench.report import BenchReport, BenchResult, BenchSetupError
from accessfabric.percentile import percentile
from accessfabric.sim.fleet import add_fleet_arguments, run_fleet
from accessfabric.sim.proc_usage import cpu_seconds, rss_bytes

HOST = "127.0.0.1"
SERVER_SEED = bytes(range(64, 96))
CLIENT_SEED = bytes(range(96, 128))
HEARTBEAT = 10.0
HOLD = 15.0
BATCH = 50
PING = b"p" * 64
TARGETS = {
    "connected_s": 60.0,
    "entry_cpu_percent": 10.0,
    "rss_per_session_kib": 64.0,
    "heartbeat_p99_ms": 250.0,
    "lease_p99_ms": 100.0,
    "rehome_s": 15.0,
}


# ---------------------------------------------------------------- the baseline


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
    except OSError:
        pass
    finally:
        writer.close()


async def _serve(conn: Connection, cert_dir: str) -> None:
    raise_nofile_limit()
    node = BenchNode.make(SERVER_SEED, Path(cert_dir))
    server = await asyncio.start_server(_echo, HOST, 0, ssl=node.server_ssl(), backlog=1024)
    conn.send(server.sockets[0].getsockname()[1])
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
    server.close()


def _server_process(conn: Connection, cert_dir: str) -> None:
    run_async(_serve(conn, cert_dir))


async def _clients(
    port: int, cert_dir: Path, count: int, server_pid: int, hold: float, interval: float
) -> dict[str, float]:
    raise_nofile_limit()
    node = BenchNode.make(CLIENT_SEED, cert_dir)
    context = node.client_ssl()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the baseline measures TLS, not pinning
    pairs: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect() -> None:
        pairs.append(await asyncio.open_connection(HOST, port, ssl=context))

    await connect()  # warm-up
    await asyncio.sleep(1.0)
    rss_before = rss_bytes(server_pid)
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        await asyncio.gather(*(connect() for _ in range(min(BATCH, count - first))))
    connect_s = time.perf_counter() - started
    rtts: list[float] = []
    stop = time.monotonic() + hold

    async def ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(random.uniform(0, interval))
        while time.monotonic() < stop:
            sent = time.perf_counter()
            writer.write(PING)
            await reader.readexactly(len(PING))
            rtts.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(interval)

    cpu_before, at = cpu_seconds(server_pid), time.monotonic()
    await asyncio.gather(*(ping(r, w) for r, w in pairs[1:]))
    cpu = (cpu_seconds(server_pid) - cpu_before) / (time.monotonic() - at) * 100
    rss_after = rss_bytes(server_pid)
    for _, writer in pairs:
        writer.close()
    return {
        "connect_s": connect_s,
        "cpu_percent": cpu,
        "rss_per_connection_kib": (rss_after - rss_before) / count / 1024,
        "ping_p99_ms": percentile(rtts, 0.99) if rtts else 0.0,
        "pings": float(len(rtts)),
    }


@contextlib.contextmanager
def _tls_server() -> Iterator[tuple[int, Path, int]]:
    """A plain TLS server process on loopback: (its port, its directory, its pid); it is
    stopped (killed if it does not stop) when the block ends."""
    mp = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="af-bench-fleet-") as tmp:
        ours, theirs = mp.Pipe()
        server = mp.Process(target=_server_process, args=(theirs, tmp), daemon=True)
        server.start()
        try:
            port = ours.recv()
            assert server.pid is not None
            yield port, Path(tmp), server.pid
        finally:
            ours.send("stop")
            server.join(10)
            if server.is_alive():
                server.kill()


def plain_tls_baseline(
    count: int, hold: float = HOLD, interval: float = HEARTBEAT
) -> dict[str, float]:
    """N plain TLS connections to a server process: connect time, its CPU and RSS, p99."""
    with _tls_server() as (port, tmp, pid):
        return run_async(_clients(port, tmp, count, pid, hold, interval))


def rehome_baseline(count: int) -> float:
    """Seconds to open ``count`` plain TLS connections (the re-home's baseline)."""
    if count <= 0:
        return 0.0
    with _tls_server() as (port, tmp, _):

        async def connect_all() -> float:
            context = BenchNode.make(CLIENT_SEED, tmp).client_ssl()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            writers: list[asyncio.StreamWriter] = []

            async def one() -> None:
                writers.append((await asyncio.open_connection(HOST, port, ssl=context))[1])

            started = time.perf_counter()
            for first in range(0, count, BATCH):
                await asyncio.gather(*(one() for _ in range(min(BATCH, count - first))))
            took = time.perf_counter() - started
            for writer in writers:
                writer.close()
            return took

        return run_async(connect_all())


# ---------------------------------------------------------------- the suite


def fleet_args(
    devices: int, hold: float = HOLD, control_cpu: int | None = None
) -> argparse.Namespace:
    """``sim fleet``'s own parser with the suite's flags (every other option at its
    default: a new ``sim fleet`` option cannot be missing here)."""
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
    placement = [] if control_cpu is None else ["--control-cpu", str(control_cpu)]
    return parser.parse_args(
        ["--devices", str(devices), "--entries", "2", "--workers", "3", "--heartbeat",
         f"{HEARTBEAT:g}", "--stream-interval", "120", "--ready-timeout", "240", "--hold",
         f"{hold:g}", "--kill-entry", "--json", "--quiet", *placement]
    )  # fmt: skip


def _max(values: dict[str, Any]) -> float:
    numbers = [float(v) for v in values.values() if isinstance(v, int | float)]
    return max(numbers) if numbers else float("nan")


def report(devices: int, summary: dict[str, Any], base: dict[str, float], rehome: float
           ) -> BenchReport:  # fmt: skip
    out = BenchReport("fleet")
    n = f"{devices} plain TLS connections"

    def add(metric: str, value: Any, unit: str, baseline_metric: str, baseline: float) -> None:
        number = float(value) if isinstance(value, int | float) else float("nan")
        out.add(BenchResult(metric=metric, value=number, unit=unit,
                            baseline_metric=baseline_metric, baseline_value=baseline))  # fmt: skip

    add(f"{devices} devices connected+heartbeating", summary.get("connected_heartbeating_s"),
        "s", f"open {n}", base["connect_s"])  # fmt: skip
    add("entry CPU, hold (busier entry)", _max(summary.get("entry_cpu_hold_percent", {})),
        "% core", f"TLS server CPU, {n} pinging", base["cpu_percent"])  # fmt: skip
    add("entry RSS per session", _max(summary.get("entry_rss_growth_per_session_kib", {})),
        "KiB", "TLS server RSS per connection", base["rss_per_connection_kib"])  # fmt: skip
    add("heartbeat p99", summary.get("heartbeat_p99_ms"), "ms",
        "plain TLS ping p99", base["ping_p99_ms"])  # fmt: skip
    add("route lease p99", summary.get("lease_p99_ms"), "ms",
        "plain TLS ping p99", base["ping_p99_ms"])  # fmt: skip
    kill = summary.get("kill") or {}
    add(f"re-home {kill.get('devices_on_it', 0)} devices after SIGKILL", kill.get("back_s"),
        "s", f"open {kill.get('devices_on_it', 0)} plain TLS connections", rehome)  # fmt: skip
    out.notes["machine"] = machine_note()
    out.notes["targets (issue 17)"] = ", ".join(f"{k} {v:g}" for k, v in TARGETS.items())
    out.notes["fleet"] = (
        f"ready_s {summary.get('ready_s')}, connected {summary.get('connected')}, "
        f"sessions per entry {summary.get('entry_sessions')}, streams ok "
        f"{summary.get('streams_ok')} failed {summary.get('streams_failed')}, "
        f"lost after kill {kill.get('lost')}, streams while re-homing ok "
        f"{kill.get('streams_ok')} failed {kill.get('streams_failed')}"
    )
    out.notes["route lease: as the device sees it vs in the worker's loop"] = (
        f"p50 {summary.get('lease_p50_ms')} / p99 {summary.get('lease_p99_ms')} ms as the "
        "device sees it (its own work + the request's time on the wire, TCP_INFO), p50 "
        f"{summary.get('lease_loop_p50_ms')} / p99 {summary.get('lease_loop_p99_ms')} ms "
        "wall time in the worker (its loop's turns for the other devices included); "
        f"{summary.get('lease_wall_only')} leases timed by wall time alone"
    )
    out.notes["heartbeat: as the device sees it vs in the worker's loop"] = (
        f"p50 {summary.get('heartbeat_p50_ms')} / p99 {summary.get('heartbeat_p99_ms')} ms "
        "as the device sees it, p50 "
        f"{summary.get('heartbeat_loop_p50_ms')} / p99 {summary.get('heartbeat_loop_p99_ms')} "
        "ms wall time in the worker; "
        f"{summary.get('heartbeat_wall_only')} heartbeats timed by wall time alone"
    )
    out.notes["start: CPU seconds by process"] = (
        f"{summary.get('start_cpu_s')} over {summary.get('start_wall_s')} s of wall time"
    )
    out.notes["steady state (the hold)"] = (
        f"{summary.get('hold_heartbeats')} heartbeats p50 "
        f"{summary.get('hold_heartbeat_p50_ms')} p99 {summary.get('hold_heartbeat_p99_ms')} ms, "
        f"{summary.get('hold_leases')} leases p99 {summary.get('hold_lease_p99_ms')} ms"
    )
    out.notes["baseline"] = f"{int(base['pings'])} pings, every {HEARTBEAT:g} s per connection"
    return out


def _fleet(devices: int, hold: float, control_cpu: int | None) -> dict[str, Any]:
    try:
        return run_fleet(fleet_args(devices, hold, control_cpu))
    except Exception as error:  # DemoFailed and the like: the fleet could not run
        raise BenchSetupError(f"the fleet did not run: {error}") from error


def _moved(summary: dict[str, Any]) -> int:
    return int((summary.get("kill") or {}).get("devices_on_it") or 0)


def own_cpu_for_control() -> int | None:
    """The CPU the second fleet gives its control plane alone (the last one this process
    may use), or None on a machine with one."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-1] if len(allowed) >= 2 else None


def run(quick: bool) -> BenchReport:
    """The fleet twice: every process sharing every CPU, then with the control plane on
    a CPU of its own (``sim fleet --control-cpu``, as on a host of its own): the first
    run's control plane waits for a CPU behind the simulated devices (ADR 0056)."""
    devices, hold = (50, 5.0) if quick else (1000, HOLD)
    summary = _fleet(devices, hold, None)
    base = plain_tls_baseline(devices, hold)
    out = report(devices, summary, base, rehome_baseline(_moved(summary)))
    cpu = own_cpu_for_control()
    if cpu is None:
        out.notes["control plane on a CPU of its own"] = "not run: one CPU"
        return out
    own = _fleet(devices, hold, cpu)
    placed = report(devices, own, base, rehome_baseline(_moved(own)))
    for result in placed.results:
        out.add(replace(result, metric=f"{result.metric} [control on CPU {cpu} alone]"))
    for key in ("fleet", *(k for k in placed.notes if k.startswith(("route lease", "heart")))):
        out.notes[f"{key} [control on CPU {cpu} alone]"] = placed.notes[key]
    out.notes[f"start: CPU seconds by process [control on CPU {cpu} alone]"] = placed.notes[
        "start: CPU seconds by process"
    ]
    return out
