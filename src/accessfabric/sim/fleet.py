"""``accessfabric sim fleet``: N real devices against an entry pool, on loopback.

It starts a control plane (SQLite), ``--entries`` entry nodes, one service host serving
``fleet-echo`` (a TCP echo server of this process) and ``--workers`` worker processes
(:mod:`accessfabric.sim.fleet_worker`), each running its share of the devices as real
node runtimes on one event loop.  Every device has its own node key and enrolls with a
``mobile-edge`` token of tenant ``fleet``; the tokens, the service and every grant the
devices need are made here, in :func:`_grant_fleet`.

The live view on stderr shows devices connected, heartbeats/s, heartbeat and lease
p50/p99, streams ok/failed and each entry's CPU and RSS.  ``--kill-entry`` SIGKILLs the
first entry once every device is ready and measures how long its devices take to hold a
session with another entry.  The summary (``--json``: one object on stdout) is
described in docs/fleet.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from accessfabric.demo.control import Control, create_grant, start_control
from accessfabric.demo.procs import COMMAND, DemoFailed, Processes, env, free_port
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import write_certificate_files
from accessfabric.percentile import percentile
from accessfabric.sim.cpu_placement import (
    control_cpu_problem,
    keep_off,
    lower_priority,
    pin_process,
    restore,
)
from accessfabric.sim.proc_usage import CpuMeter, cpu_seconds, rss_bytes

SERVICE = "fleet-echo"
TENANT = "fleet"
WINDOW = 10.0
"""Seconds of latency samples behind the live view's p50/p99."""
REHOME_TIMEOUT = 30.0
DEVICE_LOOP_LAG_BUDGET = 5.0
"""A device's ``[pressure] loop_lag_budget`` (0.5 by default): the lag of a worker's loop."""
KILL_SETTLE = 3.0
"""Seconds after the killed entry's devices are back before its stream counts are taken."""
KILL_STREAM_SAMPLE = 20
KILL_SETTLE_MAX = 20.0
"""... or longer, up to this, until ``KILL_STREAM_SAMPLE`` streams have ended since the kill:
a fast re-home on a busy machine left too few streams to say whether any failed."""


def _p50_p99(values: list[float]) -> str:
    return f"{_fmt(percentile_or_none(values, 0.5))}/{_fmt(percentile_or_none(values, 0.99))}"


def percentile_or_none(values: list[float], q: float) -> float | None:
    """:func:`accessfabric.percentile.percentile`, None (JSON null) when there is none."""
    return percentile(values, q) if values else None


@dataclass
class WorkerState:
    proc: asyncio.subprocess.Process
    last: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    gc_max_ms: float = 0.0
    """The worker's longest garbage-collection pause: every device of it stalled."""


@dataclass
class FleetRun:
    devices: int
    work: Path
    procs: Processes
    entry_ids: list[str] = field(default_factory=list)
    entry_names: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerState] = field(default_factory=list)
    heartbeat_ms: list[tuple[float, float]] = field(default_factory=list)
    lease_ms: list[tuple[float, float]] = field(default_factory=list)
    all_heartbeat_ms: list[float] = field(default_factory=list)
    all_heartbeat_loop_ms: list[float] = field(default_factory=list)
    """Heartbeats' wall time in the workers, their shared loop's turns included."""
    all_lease_ms: list[float] = field(default_factory=list)
    all_lease_loop_ms: list[float] = field(default_factory=list)
    """Leases' wall time in the workers, their shared loop's turns included."""
    entry_rss_before: dict[str, int] = field(default_factory=dict)

    def total(self, key: str) -> int:
        return sum(w.totals.get(key, 0) for w in self.workers)

    def connected(self) -> int:
        return sum(int(w.last.get("connected", 0)) for w in self.workers)

    def ready(self, key: str) -> int:
        return sum(int(w.last.get(key, 0)) for w in self.workers)

    def on(self, entry: str) -> set[int]:
        out: set[int] = set()
        for w in self.workers:
            out.update(w.last.get("on", {}).get(entry, []))
        return out


def _toml(lines: list[str], path: Path) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _control_lines(control: Control, token: str, heartbeat: float) -> list[str]:
    return [
        "[control]",
        f'url = "{control.url}"',
        f'authority_key = "{control.authority}"',
        f'token = "{token}"',
        f"heartbeat_interval = {heartbeat}",
    ]


async def _grant_fleet(control: Control, devices: int, entries: int) -> dict[str, str]:
    """Every token and every grant the fleet needs, in one place.

    Devices: ``mobile-edge`` of tenant ``fleet``, one use each; entries and the service
    host of the same tenant, so the directory shows the devices only their own entries.
    Services are default deny: one grant admits the tenant's ``mobile-edge`` nodes to
    ``fleet-echo``.  The control API is TLS, its certificate pinned to the authority key.
    """
    wanted = {"mobile-edge": devices, "entry": entries, "service-host": 1}
    headers = {"Authorization": f"Bearer {control.admin_token}"}
    tokens: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        for role, uses in wanted.items():
            body = {"tenant": TENANT, "roles": [role], "ttl_s": 3600, "uses": uses}
            async with client.post(
                f"{control.url}/v1/admin/tokens", json=body, headers=headers, ssl=control.pin
            ) as response:
                reply = await response.json()
                if response.status != 201:
                    raise DemoFailed(f"token for {role}: {reply}")
                tokens[role] = str(reply["token"])
    await create_grant(control, TENANT, [SERVICE], roles=["mobile-edge"])
    return tokens


async def _heartbeats(control: Control) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {control.admin_token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
        client.get(f"{control.url}/v1/admin/nodes", headers=headers, ssl=control.pin) as response,
    ):
        body = await response.json()
    return {n["node_id"]: int(n.get("heartbeats", 0)) for n in body.get("nodes", [])}


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()


async def _wait_infrastructure(run: FleetRun, control: Control, ids: dict[str, str]) -> None:
    """Until every entry and the host heartbeated twice (the second carries entry->host RTT)."""
    deadline = time.monotonic() + 60
    while True:
        heard = await _heartbeats(control)
        if all(heard.get(node_id, 0) >= 2 for node_id in ids.values()):
            return
        for name in ids:
            proc = run.procs.children[name]
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DemoFailed(f"{name} did not heartbeat:\n{run.procs.tail(name)}")
        await asyncio.sleep(0.2)


async def _start_infrastructure(
    run: FleetRun, control: Control, tokens: dict[str, str], entries: int, heartbeat: float
) -> asyncio.Server:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    home_port = free_port()
    ids: dict[str, str] = {}
    for name in ["home", *(f"entry-{i + 1}" for i in range(entries))]:
        key = NodeKey.generate()
        key.save(run.work / f"{name}.key")
        ids[name] = key.node_id
    home = [
        'key_path = "home.key"', 'roles = ["service-host"]', "drain_timeout = 1",
        "[[listen]]", 'carrier = "tcp"', f'address = "127.0.0.1:{home_port}"',
        "[[services]]", f'name = "{SERVICE}"', f'target = "127.0.0.1:{echo_port}"',
        'traffic_class = "reliable"',
        *_control_lines(control, tokens["service-host"], 1.0),
    ]  # fmt: skip
    run.procs.start(
        "home", [*COMMAND, "node", "run", "--config", str(_toml(home, run.work / "home.toml"))]
    )
    for i in range(entries):
        name = f"entry-{i + 1}"
        lines = [
            f'key_path = "{name}.key"', 'roles = ["entry"]', "drain_timeout = 1",
            "[[listen]]", 'carrier = "tcp"', 'address = "127.0.0.1:0"',
            "[[peers]]", f'node_id = "{ids["home"]}"',
            f'endpoints = ["tcp://127.0.0.1:{home_port}"]', 'connect = "always"',
            *_control_lines(control, tokens["entry"], heartbeat),
        ]  # fmt: skip
        config = _toml(lines, run.work / f"{name}.toml")
        run.procs.start(name, [*COMMAND, "node", "run", "--config", str(config)])
        run.entry_ids.append(ids[name])
        run.entry_names[ids[name]] = name
    await _wait_infrastructure(run, control, ids)
    for node_id, name in run.entry_names.items():
        run.entry_rss_before[node_id] = rss_bytes(run.procs.children[name].pid)
    return echo


def _device_configs(run: FleetRun, control: Control, token: str, heartbeat: float) -> list[Path]:
    devices = run.work / "devices"
    devices.mkdir()
    paths = []
    for index in range(run.devices):
        name = f"device-{index:05d}"
        key = NodeKey.generate()
        key.save(devices / f"{name}.key")
        # Provisioned with its key, as a device is: its TLS certificate (the node's default
        # cert_dir).  Made at the device's start, the files' fsyncs stalled the worker's
        # loop that all its other devices share (issue 17, ADR 0043 "lease latency").
        write_certificate_files(key, devices / "tls", durable=False)
        lines = [
            f'key_path = "{name}.key"', 'roles = ["mobile-edge"]', "drain_timeout = 1",
            *_control_lines(control, token, heartbeat),
            # the worker's loop lag is all its devices' together, not one device's load
            "[pressure]", f"loop_lag_budget = {DEVICE_LOOP_LAG_BUDGET:g}",
            # the worker's host's NetworkManager is no simulated device's network: its
            # network type and metered flag are [device]'s (each device asked D-Bus every
            # 5 s, in vain here: ~1 % of a worker's CPU)
            "[device]", "network_manager = false",
        ]  # fmt: skip
        paths.append(_toml(lines, devices / f"{name}.toml"))
    return paths


async def _start_workers(
    run: FleetRun, paths: list[Path], workers: int, stream_interval: float, device_nice: int
) -> None:
    share = math.ceil(len(paths) / workers)
    for w in range(workers):
        mine = paths[w * share : (w + 1) * share]
        if not mine:
            continue
        stderr = (run.work / f"worker-{w}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "accessfabric.sim.fleet_worker",
            "--entries", ",".join(run.entry_ids), "--service", SERVICE,
            "--stream-interval", str(stream_interval), "--configs", *map(str, mine),
            stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env(), start_new_session=True,
        )  # fmt: skip
        state = WorkerState(proc)
        run.workers.append(state)  # stopped at the end whatever happens next
        if device_nice:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # ended already
                lower_priority(proc.pid, device_nice)
        asyncio.get_running_loop().create_task(_read_worker(run, state))


async def _read_worker(run: FleetRun, state: WorkerState) -> None:
    assert state.proc.stdout is not None
    while line := await state.proc.stdout.readline():
        try:
            report = json.loads(line)
        except ValueError:
            continue
        now = time.monotonic()
        state.last = report
        for key in (
            "heartbeats", "leases", "heartbeat_wall_only", "lease_wall_only", "streams_ok",
            "streams_failed", "stream_bytes",
        ):  # fmt: skip
            state.totals[key] = state.totals.get(key, 0) + int(report.get(key, 0))
        if report.get("last_error"):
            state.last["error"] = report["last_error"]
        state.gc_max_ms = max(state.gc_max_ms, float(report.get("gc_max_ms", 0.0)))
        run.heartbeat_ms += [(now, v) for v in report.get("heartbeat_ms", [])]
        run.lease_ms += [(now, v) for v in report.get("lease_ms", [])]
        run.all_heartbeat_ms += report.get("heartbeat_ms", [])
        run.all_heartbeat_loop_ms += report.get("heartbeat_loop_ms", [])
        run.all_lease_ms += report.get("lease_ms", [])
        run.all_lease_loop_ms += report.get("lease_loop_ms", [])


def _entry_usage(run: FleetRun, cpu: dict[str, CpuMeter]) -> dict[str, dict[str, float]]:
    out = {}
    for node_id, name in run.entry_names.items():
        meter = cpu.get(node_id)
        if meter is None:
            continue
        try:
            out[name] = {"cpu_percent": meter.percent(), "rss_mib": rss_bytes(meter.pid) / 2**20}
        except OSError:
            out[name] = {"cpu_percent": 0.0, "rss_mib": 0.0}
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


class LiveView:
    def __init__(self, run: FleetRun, quiet: bool) -> None:
        self.run = run
        self.quiet = quiet
        self.last_heartbeats = 0
        self.last_at = time.monotonic()
        self.cpu = {
            node_id: CpuMeter(run.procs.children[name].pid)
            for node_id, name in run.entry_names.items()
        }
        self.usage: dict[str, dict[str, float]] = {}

    def tick(self, phase: str) -> None:
        run, now = self.run, time.monotonic()
        cut = now - WINDOW
        run.heartbeat_ms = [s for s in run.heartbeat_ms if s[0] >= cut]
        run.lease_ms = [s for s in run.lease_ms if s[0] >= cut]
        beats = run.total("heartbeats")
        rate = (beats - self.last_heartbeats) / max(now - self.last_at, 1e-3)
        self.last_heartbeats, self.last_at = beats, now
        self.usage = _entry_usage(run, self.cpu)
        if self.quiet:
            return
        hb = [v for _, v in run.heartbeat_ms]
        ls = [v for _, v in run.lease_ms]
        entries = "  ".join(
            f"{name} {u['cpu_percent']:.0f}% {u['rss_mib']:.0f}MiB on={len(run.on(i))}"
            for i, name in run.entry_names.items()
            if (u := self.usage.get(name))
        )
        print(
            f"[{phase:8}] connected {run.connected():5}/{run.devices}  hb/s {rate:6.1f}  "
            f"hb p50/p99 {_p50_p99(hb)} ms  lease p50/p99 {_p50_p99(ls)} ms  "
            f"streams {run.total('streams_ok')} ok {run.total('streams_failed')} failed  "
            f"{entries}",
            file=sys.stderr,
            flush=True,
        )


def _is_ready(run: FleetRun, streams: bool) -> bool:
    """Every device connected and heard; with streams also leased and streamed once."""
    n = run.devices
    if run.connected() < n or run.ready("heard") < n:
        return False
    return not streams or (run.ready("leased") >= n and run.ready("streamed") >= n)


async def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    procs = Processes(work)
    run = FleetRun(args.devices, work, procs)
    echo: asyncio.Server | None = None
    allowed = None if args.control_cpu is None else keep_off(args.control_cpu)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            # The control plane's policy is the fleet's interval: with its default (1 s)
            # nodes heartbeating every 5 s were unreachable to it for 0.5 s of every 5
            # (after 4.5 intervals), so directories left their entries out (devices then
            # dialled a second entry) and every flap moved every directory's version.
            # Every simulated device connects from 127.0.0.1, a real fleet from its own
            # addresses: the control plane's per-address caps (256 connections, 64
            # handshakes under way) would refuse most of a large fleet's heartbeats.  A
            # device may hold two (a lease request beside its heartbeat cycle).
            per_address = str(2 * args.devices + args.entries + 64)
            control = await start_control(
                work, procs, f"{args.heartbeat:g}s",
                ["--max-connections-per-address", per_address,
                 "--max-pending-handshakes-per-address", per_address],
            )  # fmt: skip
        if args.control_cpu is not None:
            pin_process(procs.children["control"].pid, args.control_cpu)
        tokens = await _grant_fleet(control, args.devices, args.entries)
        echo = await _start_infrastructure(run, control, tokens, args.entries, args.heartbeat)
        paths = await asyncio.to_thread(
            _device_configs, run, control, tokens["mobile-edge"], args.heartbeat
        )
        started = time.monotonic()
        await _start_workers(run, paths, args.workers, args.stream_interval, args.device_nice)
        view = LiveView(run, args.quiet)
        summary: dict[str, Any] = {"devices": args.devices, "entries": args.entries}
        ready_at: float | None = None
        connected_at: float | None = None
        while time.monotonic() - started < args.ready_timeout:
            await asyncio.sleep(1.0)
            view.tick("starting")
            _check_workers(run)
            if (
                connected_at is None
                and run.connected() >= run.devices
                and run.ready("heard") >= run.devices
            ):
                connected_at = time.monotonic() - started
            if _is_ready(run, args.stream_interval > 0):
                ready_at = time.monotonic() - started
                break
        summary["connected_heartbeating_s"] = connected_at
        summary["ready_s"] = ready_at
        summary["start_cpu_s"] = _cpu_by_process(run)
        summary["start_wall_s"] = round(time.monotonic() - started, 1)
        hold_started = time.monotonic()
        hold_samples = len(run.all_heartbeat_ms), len(run.all_lease_ms)
        hold_cpu = _entries_cpu(run)
        hold_until = hold_started + args.hold
        while time.monotonic() < hold_until:
            await asyncio.sleep(1.0)
            view.tick("steady")
        summary["entries_usage"] = view.usage
        summary.update(_hold_latency(run, hold_samples))
        summary["entry_cpu_hold_percent"] = _cpu_since(run, hold_cpu, hold_started)
        summary["entry_sessions"] = {n: len(run.on(i)) for i, n in run.entry_names.items()}
        summary["entry_rss_growth_per_session_kib"] = _rss_per_session(run, view)
        if args.drain_entry and ready_at is not None:
            summary["drain"] = await _drain_entry(run, view, control)
        if args.kill_entry and ready_at is not None:
            summary["kill"] = await _kill_entry(run, view)
        summary.update(_totals(run))
        summary["worker_gc_max_ms"] = max((w.gc_max_ms for w in run.workers), default=0.0)
        summary["worker_frozen"] = min((int(w.last.get("frozen", 0)) for w in run.workers),
                                       default=0)  # fmt: skip
        summary["last_errors"] = sorted(
            {str(w.last.get("error")) for w in run.workers if w.last.get("error")}
        )[:5]
        return summary
    finally:
        for w in run.workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
        for w in run.workers:
            try:
                await asyncio.wait_for(w.proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.proc.pid, signal.SIGKILL)
                await w.proc.wait()
        procs.stop_all()
        if echo is not None:
            echo.close()
        if allowed is not None:
            restore(allowed)


def _cpu_by_process(run: FleetRun) -> dict[str, float]:
    """CPU seconds each process of the fleet used so far: where start-up time goes."""
    pids = {name: proc.pid for name, proc in run.procs.children.items()}
    pids.update({f"worker-{i}": w.proc.pid for i, w in enumerate(run.workers)})
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            out[name] = round(cpu_seconds(pid), 1)
    return out


def _entries_cpu(run: FleetRun) -> dict[str, float]:
    out = {}
    for name in run.entry_names.values():
        with contextlib.suppress(OSError):
            out[name] = cpu_seconds(run.procs.children[name].pid)
    return out


def _cpu_since(run: FleetRun, before: dict[str, float], since: float) -> dict[str, float]:
    """Per entry: percent of one core used on average since ``since``."""
    elapsed = max(time.monotonic() - since, 1e-3)
    now = _entries_cpu(run)
    return {n: round((now[n] - before[n]) / elapsed * 100, 2) for n in before if n in now}


def _check_workers(run: FleetRun) -> None:
    for i, w in enumerate(run.workers):
        if w.proc.returncode is not None:
            tail = (run.work / f"worker-{i}.log").read_text(errors="replace")[-2000:]
            raise DemoFailed(f"fleet worker {i} exited ({w.proc.returncode}):\n{tail}")


def _rss_per_session(run: FleetRun, view: LiveView) -> dict[str, float]:
    out = {}
    for node_id, name in run.entry_names.items():
        sessions = len(run.on(node_id))
        usage = view.usage.get(name)
        if sessions and usage:
            grown = usage["rss_mib"] * 2**20 - run.entry_rss_before[node_id]
            out[name] = round(grown / sessions / 1024, 1)
    return out


async def _drain(control: Control, node_id: str, method: str) -> None:
    headers = {"Authorization": f"Bearer {control.admin_token}"}
    url = f"{control.url}/v1/admin/nodes/{node_id}/drain"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
        client.request(method, url, headers=headers, ssl=control.pin) as response,
    ):
        if response.status != 200:
            raise DemoFailed(f"drain {node_id}: {response.status} {await response.text()}")


async def _drain_entry(run: FleetRun, view: LiveView, control: Control) -> dict[str, Any]:
    """Drain the last entry (``control drain``): every device on it holds a session with
    another entry, and none with it, within ``REHOME_TIMEOUT``; no stream fails meanwhile.
    Then undrain it (so ``--kill-entry`` has somewhere to send the first entry's devices)."""
    victim = run.entry_ids[-1]
    others = set(run.entry_ids) - {victim}
    moved = run.on(victim)
    failed_before = run.total("streams_failed")
    ok_before = run.total("streams_ok")
    await _drain(control, victim, "POST")
    drained_at = time.monotonic()
    moved_s: float | None = None
    while time.monotonic() - drained_at < REHOME_TIMEOUT:
        await asyncio.sleep(0.5)
        view.tick("draining")
        elsewhere: set[int] = set()
        for other in others:
            elsewhere |= run.on(other)
        if moved <= elsewhere and not run.on(victim):
            moved_s = time.monotonic() - drained_at
            break
    await asyncio.sleep(1.0)  # one more report: streams that were running at the drain
    elsewhere = set()
    for other in others:
        elsewhere |= run.on(other)
    await _drain(control, victim, "DELETE")
    return {
        "entry": run.entry_names[victim],
        "devices_on_it": len(moved),
        "moved": len(moved & elsewhere),
        "lost": len(moved - elsewhere),
        "left_on_it": len(run.on(victim)),
        "moved_s": moved_s,
        "streams_ok": run.total("streams_ok") - ok_before,
        "streams_failed": run.total("streams_failed") - failed_before,
    }


async def _kill_entry(run: FleetRun, view: LiveView) -> dict[str, Any]:
    victim = run.entry_ids[0]
    others = set(run.entry_ids[1:])
    moved = run.on(victim)
    name = run.entry_names[victim]
    proc = run.procs.children[name]
    failed_before = run.total("streams_failed")
    ok_before = run.total("streams_ok")
    os.killpg(proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    view.cpu.pop(victim, None)
    back_s: float | None = None
    while time.monotonic() - killed_at < REHOME_TIMEOUT:
        await asyncio.sleep(0.5)
        view.tick("rehoming")
        elsewhere: set[int] = set()
        for other in others:
            elsewhere |= run.on(other)
        if moved <= elsewhere:
            back_s = time.monotonic() - killed_at
            break
    elsewhere = set()
    for other in others:
        elsewhere |= run.on(other)
    settled = time.monotonic()  # streams opened while re-homing end
    while time.monotonic() < settled + KILL_SETTLE or (
        run.total("streams_ok") - ok_before + run.total("streams_failed") - failed_before
        < KILL_STREAM_SAMPLE
        and time.monotonic() < settled + KILL_SETTLE_MAX
    ):
        await asyncio.sleep(0.5)
        view.tick("rehomed")
    return {
        "entry": name,
        "devices_on_it": len(moved),
        "back_on_another": len(moved & elsewhere),
        "lost": len(moved - elsewhere),
        "back_s": back_s,
        "streams_ok": run.total("streams_ok") - ok_before,
        "streams_failed": run.total("streams_failed") - failed_before,
    }


def _hold_latency(run: FleetRun, since: tuple[int, int]) -> dict[str, float | None]:
    """Heartbeat and lease latency reported during the hold (steady state: the fleet's
    start-up storm of enrolments, dials and first leases is over)."""
    hb, ls = run.all_heartbeat_ms[since[0] :], run.all_lease_ms[since[1] :]
    return {
        "hold_heartbeats": len(hb),
        "hold_heartbeat_p50_ms": percentile_or_none(hb, 0.5),
        "hold_heartbeat_p99_ms": percentile_or_none(hb, 0.99),
        "hold_leases": len(ls),
        "hold_lease_p99_ms": percentile_or_none(ls, 0.99),
    }


def _totals(run: FleetRun) -> dict[str, Any]:
    hb, ls = run.all_heartbeat_ms, run.all_lease_ms
    return {
        "connected": run.connected(),
        "heartbeats": run.total("heartbeats"),
        "heartbeat_p50_ms": percentile_or_none(hb, 0.5),
        "heartbeat_p99_ms": percentile_or_none(hb, 0.99),
        "heartbeat_loop_p50_ms": percentile_or_none(run.all_heartbeat_loop_ms, 0.5),
        "heartbeat_loop_p99_ms": percentile_or_none(run.all_heartbeat_loop_ms, 0.99),
        "heartbeat_wall_only": run.total("heartbeat_wall_only"),
        "leases": run.total("leases"),
        "lease_p50_ms": percentile_or_none(ls, 0.5),
        "lease_p99_ms": percentile_or_none(ls, 0.99),
        "lease_loop_p50_ms": percentile_or_none(run.all_lease_loop_ms, 0.5),
        "lease_loop_p99_ms": percentile_or_none(run.all_lease_loop_ms, 0.99),
        "lease_wall_only": run.total("lease_wall_only"),
        "devices_heard": run.ready("heard"),
        "devices_leased": run.ready("leased"),
        "devices_streamed": run.ready("streamed"),
        "streams_ok": run.total("streams_ok"),
        "streams_failed": run.total("streams_failed"),
        "stream_bytes": run.total("stream_bytes"),
    }


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=100, help="devices to run (default 100)")
    parser.add_argument("--entries", type=int, default=2, help="entry nodes (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="device worker processes")
    parser.add_argument(
        "--heartbeat", type=float, default=5.0, help="seconds between a device's heartbeats"
    )
    parser.add_argument(
        "--stream-interval", type=float, default=20.0,
        help="mean seconds between a device's echo streams (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0,
        help="seconds to wait for every device to be ready (default 120)",
    )  # fmt: skip
    parser.add_argument("--hold", type=float, default=5.0, help="seconds of steady state")
    parser.add_argument(
        "--kill-entry", action="store_true", help="SIGKILL the first entry once all are ready"
    )
    parser.add_argument(
        "--drain-entry", action="store_true",
        help="once all are ready, drain the last entry (control drain) until its devices "
        "moved, then undrain it",
    )  # fmt: skip
    parser.add_argument(
        "--control-cpu", type=int, metavar="N",
        help="run the control plane on CPU N alone and the rest of the fleet on the other "
        "CPUs, as a control plane on a host of its own (default: all share every CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--device-nice", type=int, default=0, metavar="N",
        help="run the simulated devices' worker processes at niceness N (up to 19): devices "
        "run on hardware of their own, so the fabric's processes (control plane, entries, "
        "service host) get the CPU first when both want it (default 0: equal)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no live view")
    parser.add_argument("--work", type=Path, help="keep keys, configs and logs here")


def run_fleet(args: argparse.Namespace) -> dict[str, Any]:
    """Run the fleet; the summary.  ``DemoFailed`` says what could not be done."""
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_run(args, args.work))
    with tempfile.TemporaryDirectory(prefix="af-fleet-") as tmp:
        return asyncio.run(_run(args, Path(tmp)))


def cmd_fleet(args: argparse.Namespace) -> int:
    problems = []
    if args.devices < 1:
        problems.append("--devices must be at least 1")
    if args.entries < 1 or ((args.kill_entry or args.drain_entry) and args.entries < 2):
        problems.append("--entries must be at least 1 (2 with --kill-entry or --drain-entry)")
    if args.workers < 1:
        problems.append("--workers must be at least 1")
    if args.heartbeat <= 0:
        problems.append("--heartbeat must be positive")
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    if args.device_nice and not own_nice <= args.device_nice <= 19:
        problems.append(
            f"--device-nice must be between {own_nice} (this process's own niceness) and 19"
        )
    if args.control_cpu is not None and (problem := control_cpu_problem(args.control_cpu)):
        problems.append(problem)
    if problems:
        print(f"accessfabric sim fleet: {'; '.join(problems)}", file=sys.stderr)
        return 2
    try:
        summary = run_fleet(args)
    except DemoFailed as error:
        print(f"accessfabric sim fleet: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key, value in summary.items():
            print(f"{key:34} {value}")
    return 0 if summary.get("ready_s") is not None else 1
