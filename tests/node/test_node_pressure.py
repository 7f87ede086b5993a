"""NODE_PRESSURE driven by real measurements: a ``node run`` process near its fd limit.

The node runs with ``RLIMIT_NOFILE`` = 64.  Sessions opened to it (real TCP + TLS, each one
descriptor at the node) push its open descriptors toward the limit; at ``[pressure]
high_percent`` it sends NODE_PRESSURE to every peer.  A peer's session acts on it: bulk's
scheduler share toward the node drops.  Closing the sessions ends the pressure: the node
says so and the peer gives bulk its share back.  ``accessfabric status --json`` shows the
node's own measurements (its ``host`` section) throughout.

The second test puts the node and a CPU hog in one cpu cgroup (v1 or v2) capped at 1 % of
a core: the node's event loop falls behind (loop lag), which is cpu pressure.  The third
tells "busy" from "starved" (ADR 0040): a node kept busy by bulk on a core of its own
reports no cpu pressure; the same node sharing the core with a hog waits in the run queue,
reports it, and its peer (with the cap turned on) caps bulk toward it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.streams.connection import FabricStream, SessionConnection
from accessfabric.session import SessionConfig
from accessfabric.session.core import PRESSURE_HIGH
from accessfabric.wire.registry import TrafficClass
from tests.node.harness import COMMAND, command_env, start_node

LIMIT = 64
HIGH = 80


async def node_status(socket: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "status", "--socket", str(socket), "--json", env=command_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err
    status: dict[str, Any] = json.loads(out)
    return status


def bulk_weight(connection: SessionConnection) -> int:
    return connection.session.metrics().bulk_weight


async def until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_fd_pressure_sends_node_pressure_and_peers_slow_bulk(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    extra = f"[pressure]\ninterval = 0.2\nhigh_percent = {HIGH}\n"
    node = await loop.run_in_executor(
        None, lambda: start_node(tmp_path / "n", "n", extra, nofile=LIMIT)
    )
    socket = tmp_path / "n" / "n.admin.sock"
    local = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client")
    extra_sessions: list[SessionConnection] = []
    try:

        async def connect() -> SessionConnection:
            connection = await connect_tcp(
                local, "127.0.0.1", node.port, expected_peer_id=node.node_id, timeout=10
            )
            await connection.ready()
            return connection

        watcher = await connect()
        stream = await watcher.open_stream("echo")
        stream.write(b"ping")
        assert await stream.readexactly(4) == b"ping"
        normal = bulk_weight(watcher)
        host = (await node_status(socket))["host"]
        assert host["fds_limit"] == LIMIT
        assert host["pressure_network"] < HIGH and host["under_pressure"] is False
        assert host["fds_open"] > 0 and host["memory_rss_bytes"] > 0
        assert watcher.session.peer_pressure is None  # nothing said yet

        def network_level() -> int:
            return (watcher.session.peer_pressure or (0, 0, 0, 0))[3]

        # every session is a descriptor at the node: push it toward its limit (on a busy
        # machine the node may report cpu pressure first: wait for the network level)
        while network_level() < HIGH:
            assert len(extra_sessions) < LIMIT, (
                f"no network NODE_PRESSURE near the fd limit: {watcher.session.peer_pressure}"
            )
            extra_sessions.append(await connect())
            if len(extra_sessions) * 2 > LIMIT // 2:  # close to the mark: let it sample
                await asyncio.sleep(0.3)
        assert bulk_weight(watcher) < normal  # the peer acts on it: bulk slows toward the node
        line = await loop.run_in_executor(None, node.wait_for, "node pressure")
        assert line["network"] >= HIGH
        host = (await node_status(socket))["host"]
        assert host["under_pressure"] is True and host["pressure_sent"] >= 1

        # the pressure ends: the node says so, the peer gives bulk its share back
        for connection in extra_sessions:
            connection.abort()
        extra_sessions.clear()
        await until(lambda: max(watcher.session.peer_pressure or (100,)) < PRESSURE_HIGH, 10.0)
        assert bulk_weight(watcher) == normal
        await loop.run_in_executor(None, node.wait_for, "node pressure over")
        stream.write(b"still served")
        assert await stream.readexactly(12) == b"still served"
        stream.close()
        watcher.abort()
    finally:
        for connection in extra_sessions:
            connection.abort()
        node.kill()


async def chatter(chat: FabricStream, answers: list[int]) -> None:
    """Interactive data every 0.2 s (the pressure cap engages only while it flows, ADR 0045);
    ``answers[0]`` counts the echoes."""
    while True:
        chat.write(b"ping")
        assert await chat.readexactly(4) == b"ping"
        answers[0] += 1
        await asyncio.sleep(0.2)


CGROUP_ROOT = Path("/sys/fs/cgroup")


class CpuGroup:
    """A fresh cpu cgroup (v1 ``cpu`` hierarchy, else v2 with the ``cpu`` controller)."""

    def __init__(self) -> None:
        v1 = CGROUP_ROOT / "cpu"
        name = f"af-pressure-{secrets.token_hex(4)}"
        if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
            self.path, self.v2 = v1 / name, False
        elif (CGROUP_ROOT / "cgroup.controllers").exists() and os.access(CGROUP_ROOT, os.W_OK):
            if "cpu" not in (CGROUP_ROOT / "cgroup.controllers").read_text().split():
                pytest.skip("the cgroup-v2 root has no cpu controller")
            with contextlib.suppress(OSError):
                (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu\n")
            self.path, self.v2 = CGROUP_ROOT / name, True
        else:
            pytest.skip("no writable cpu cgroup (v1 /sys/fs/cgroup/cpu or v2): needs root")
        self.path.mkdir()
        if self.v2 and not (self.path / "cpu.max").exists():
            self.path.rmdir()
            pytest.skip("the cgroup-v2 cpu controller cannot be enabled here")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def favour(self) -> None:
        """The largest CPU weight: against the machine's other work (a shared test machine)
        the group gets nearly all of the CPUs it runs on; inside it, fair shares."""
        if self.v2:
            (self.path / "cpu.weight").write_text("10000\n")
        else:
            (self.path / "cpu.shares").write_text("262144\n")

    def quota(self, microseconds: int | None) -> None:
        """CPU time per 100 ms period for the whole group (None: unlimited)."""
        if self.v2:
            value = "max" if microseconds is None else str(microseconds)
            (self.path / "cpu.max").write_text(f"{value} 100000\n")
        else:
            (self.path / "cpu.cfs_quota_us").write_text(f"{microseconds or -1}\n")

    def leave(self, pid: int) -> None:
        """Move ``pid`` back to the hierarchy's root group."""
        (self.path.parent / "cgroup.procs").write_text(f"{pid}\n")

    async def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.quota(None)
        for _ in range(50):  # the group empties once its processes are reaped
            try:
                self.path.rmdir()
                return
            except OSError:
                await asyncio.sleep(0.1)


async def test_cpu_hog_in_the_nodes_cgroup_sends_cpu_pressure(tmp_path: Path) -> None:
    """A CPU hog shares the node's cgroup, capped at 1 % of a core: the node's event loop
    falls behind, it sends NODE_PRESSURE (cpu), the peer slows bulk (weight and rate cap)
    while an interactive echo still answers; the hog ends, so do the pressure and the cap."""
    group = CpuGroup()
    loop = asyncio.get_running_loop()
    extra = f"[pressure]\ninterval = 0.1\nhigh_percent = {HIGH}\nloop_lag_budget = 0.15\n"
    node = await loop.run_in_executor(None, lambda: start_node(tmp_path / "c", "c", extra))
    hog: subprocess.Popen[bytes] | None = None
    local = LocalNode(
        key=NodeKey.generate(), cert_dir=tmp_path / "client",
        session_config=SessionConfig(pressure_min_rate=512 * 1024),  # the default floor
    )  # fmt: skip
    try:
        group.add(node.process.pid)
        watcher = await connect_tcp(
            local, "127.0.0.1", node.port, expected_peer_id=node.node_id, timeout=10
        )
        await watcher.ready()
        normal = bulk_weight(watcher)
        before = (await node_status(tmp_path / "c" / "c.admin.sock"))["host"]
        assert before["pressure_cpu"] < HIGH and before["under_pressure"] is False
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        group.add(hog.pid)
        group.quota(1000)  # 1 ms per 100 ms for both

        def cpu_pressure() -> bool:
            levels = watcher.session.peer_pressure
            return levels is not None and levels[1] >= HIGH

        await until(cpu_pressure, 20.0)
        assert bulk_weight(watcher) < normal
        line = await loop.run_in_executor(None, node.wait_for, "node pressure")
        assert line["cpu"] >= HIGH
        # bulk toward the node is rate-capped (session/pressure_cap.py); interactive is not
        bulk = await watcher.open_stream("echo", TrafficClass.BULK)
        chat = await watcher.open_stream("echo", TrafficClass.INTERACTIVE)

        async def feed() -> None:
            while True:
                bulk.write(b"b" * 65536)
                await bulk.drain()

        async def discard() -> None:
            while await bulk.read(65536):
                pass

        answers = [0]
        feeders = [asyncio.create_task(f) for f in (feed(), discard(), chatter(chat, answers))]

        def cap() -> float | None:
            return watcher.session.metrics().pressure_rate_cap

        await until(lambda: cap() is not None, 20.0)
        capped_at = answers[0]
        await until(lambda: answers[0] > capped_at, 20.0)  # interactive answers, bulk capped

        hog.kill()
        hog.wait(5)
        group.quota(None)
        await until(lambda: max(watcher.session.peer_pressure or (100,)) < PRESSURE_HIGH, 20.0)
        assert bulk_weight(watcher) == normal
        await until(lambda: cap() is None, 20.0)  # recovered and lifted while bulk flows
        for task in feeders:
            task.cancel()
        watcher.abort()
    finally:
        if hog is not None and hog.poll() is None:
            hog.kill()
            hog.wait(5)
        node.kill()
        await group.remove()


BOUNDED_HOG = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
"""A busy loop that ends by itself (a real-time one must not outlive a killed test)."""


def pin(pid: int, cpus: set[int], *, round_robin: bool = False) -> None:
    """Every thread of ``pid`` to ``cpus`` (and with ``round_robin`` to ``SCHED_RR`` 1: it
    runs as soon as it wakes, before any ordinary task; two such share by 100 ms turns)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)
            if round_robin:
                os.sched_setscheduler(int(task.name), os.SCHED_RR, os.sched_param(1))


async def test_a_node_busy_with_bulk_is_not_pressured_a_starved_one_is(tmp_path: Path) -> None:
    """cpu pressure is the event loop's run-queue wait, not the node's own CPU use.

    Node and test process each get a core and the largest CPU weight (so the machine's
    other work barely counts).  Bulk echoed at full speed keeps the node busy: no cpu
    pressure.  A hog joins the node's core: the node waits for the CPU half the time, sends
    NODE_PRESSURE (cpu), and its peer (``pressure_min_rate`` set) caps bulk toward it while
    an interactive echo answers; the hog ends, so do pressure and cap."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    node_cpu, own_cpu = {cpus[0]}, {cpus[1]}
    group = CpuGroup()
    group.favour()
    loop = asyncio.get_running_loop()
    # pressure from 50 %, a run-queue wait of a whole second per second being 100 %: the
    # busy node's own CPU use (>= 0.5 core, asserted below) would count as pressure, were
    # it the signal
    extra = "[pressure]\ninterval = 0.1\nhigh_percent = 50\nrun_queue_budget = 1.0\n"
    node = await loop.run_in_executor(None, lambda: start_node(tmp_path / "b", "b", extra))
    socket = tmp_path / "b" / "b.admin.sock"
    hog: subprocess.Popen[bytes] | None = None
    own = os.getpid()
    affinity = os.sched_getaffinity(0)
    feeders: list[asyncio.Task[None]] = []
    try:
        group.add(node.process.pid)
        pin(node.process.pid, node_cpu, round_robin=True)
        group.add(own)
        pin(own, own_cpu)
        local = LocalNode(
            key=NodeKey.generate(), cert_dir=tmp_path / "client",
            session_config=SessionConfig(pressure_min_rate=512 * 1024),  # the default floor
        )  # fmt: skip
        watcher = await connect_tcp(
            local, "127.0.0.1", node.port, expected_peer_id=node.node_id, timeout=10
        )
        await watcher.ready()
        bulk = await watcher.open_stream("echo", TrafficClass.BULK)
        chat = await watcher.open_stream("echo", TrafficClass.INTERACTIVE)
        echoed = 0

        async def feed() -> None:
            while True:
                bulk.write(b"b" * 65536)
                await bulk.drain()

        async def discard() -> None:
            nonlocal echoed
            while chunk := await bulk.read(65536):
                echoed += len(chunk)

        answers = [0]
        feeders = [asyncio.create_task(f) for f in (feed(), discard(), chatter(chat, answers))]
        busy: list[dict[str, Any]] = []

        def was_busy() -> bool:
            return max((h["cpu_process"] for h in busy), default=0) >= 0.5

        while len(busy) < 8 or echoed < 64 * 1024 * 1024 or not was_busy():
            if watcher.session.peer_pressure is not None:
                break  # told pressure: asserted against below
            busy.append((await node_status(socket))["host"])
            assert len(busy) < 100, ("the node was never busy", busy)
        # busy with our bulk, not waiting for a CPU: no cpu pressure reached the peer
        levels = watcher.session.peer_pressure
        assert levels is None or levels[1] < PRESSURE_HIGH, (levels, busy)
        assert max(h["pressure_cpu"] for h in busy) < PRESSURE_HIGH, busy
        assert watcher.session.metrics().pressure_rate_cap is None
        print("busy node:", [(h["loop_cpu"], h["run_queue_wait"], h["pressure_cpu"]) for h in busy])

        hog = subprocess.Popen([sys.executable, "-c", BOUNDED_HOG])
        group.add(hog.pid)
        pin(hog.pid, node_cpu, round_robin=True)

        def cpu_pressure() -> bool:
            levels = watcher.session.peer_pressure
            return levels is not None and levels[1] >= PRESSURE_HIGH

        await until(cpu_pressure, 20.0)
        starved = (await node_status(socket))["host"]
        assert starved["run_queue_wait"] is not None, starved
        print(
            "starved node:", {k: starved[k] for k in ("loop_cpu", "run_queue_wait", "pressure_cpu")}
        )
        await until(lambda: watcher.session.metrics().pressure_rate_cap is not None, 20.0)
        capped_at = answers[0]
        await until(lambda: answers[0] > capped_at, 20.0)  # interactive answers, bulk capped

        hog.kill()
        hog.wait(5)
        await until(lambda: max(watcher.session.peer_pressure or (100,)) < PRESSURE_HIGH, 20.0)
        await until(lambda: watcher.session.metrics().pressure_rate_cap is None, 20.0)
        watcher.abort()
    finally:
        for task in feeders:
            task.cancel()
        if hog is not None and hog.poll() is None:
            hog.kill()
            hog.wait(5)
        node.kill()
        with contextlib.suppress(OSError):
            group.leave(own)
        pin(own, affinity)
        await group.remove()
