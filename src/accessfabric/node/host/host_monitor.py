"""``HostMonitor``: samples the machine, sends NODE_PRESSURE, gates mobile relaying.

Every ``[pressure] interval`` seconds the monitor measures (:mod:`.host_facts`):
process and system CPU, event-loop lag (how late its own timer fired), memory, open
file descriptors against ``RLIMIT_NOFILE``, bytes queued for sending on every session,
battery and charging (``[device] power_supply``) and per-peer throughput; every
``[device] network_manager_interval`` it asks NetworkManager over D-Bus for network type
and metered (:mod:`.network_manager`; ``[device]``'s values when it does not answer).  From them it
derives four pressure levels (percent), the four fields of NODE_PRESSURE:

* ``queue``: bytes queued on all sessions against ``[session] pressure_queue_bytes``;
* ``cpu``: the larger of the event loop thread's run-queue wait (seconds per second it
  was runnable but off the CPU: starved by other work or its cgroup's quota) against
  ``[pressure] run_queue_budget`` and event-loop lag against ``[pressure]
  loop_lag_budget``, the highest reading held for :data:`CPU_HOLD` seconds.  Not the
  process's own CPU share: a node busy with the bulk it receives is not starved, and
  capping bulk toward it would throttle it by its own success (ADR 0040);
* ``memory``: system memory in use (``1 - MemAvailable / MemTotal``);
* ``network``: open descriptors against the soft ``RLIMIT_NOFILE`` (every session,
  listener and forwarded connection is one).

When the highest level reaches ``[pressure] high_percent`` the node sends NODE_PRESSURE
to every peer it has a session with, again when a level moves by 10 points or every
:data:`RESEND_INTERVAL` seconds while it lasts, and when it ends — then on every change
until a level below the session's ``PRESSURE_HIGH`` (50 %) went out, so peers give bulk
its share back. Peers act on it: their session lowers bulk's share toward this node and,
for cpu or memory pressure, caps the rate of reliable / bulk / droppable toward it
(``session/pressure_cap.py``), and their route manager fails routes whose first hop it
is over to an alternate (``[routes] pressure_threshold``). The same levels go to the
control plane in every heartbeat (``pressure.*``), where health and the planner see
them.

A ``mobile-edge`` node relays only while :meth:`HostMonitor.relay_refusal` is None: its
owner opted in (``[device] relay_opt_in``), it is charging or its battery is at least
``min_relay_battery_percent``, it is not metered unless ``allow_metered_relay``, and —
with ``relay_requires_foreground`` — its app is not in the background (``[device]
foreground`` or ``POST /device?foreground=`` on the admin socket, set by an app wrapper:
Linux reports no foreground state). When that changes, new relayed streams are refused
with the reason (existing ones finish: a drain), and the control link heartbeats at once
with ``device.relay_opt_in`` false, so the planner routes around the node.

Many runtimes in one process (``sim fleet``'s devices, ADR 0037) share one
:class:`SharedReadings`, passed to each runtime at construction (``NodeRuntime(...,
host_readings=)``, the light profile; a node process reads its own): the CPU, memory,
descriptor and power readings are the process's and the machine's anyway, so the
process reads ``/proc`` once per interval instead of once per runtime.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from accessfabric.control.client.facts import MAX_QUEUE, PeerMeasurement
from accessfabric.node.config.node_config import NodeConfig
from accessfabric.node.dialing.nat_probe import NatMonitor
from accessfabric.node.host.host_facts import (
    CpuSampler,
    CpuShares,
    FdFacts,
    MemoryFacts,
    PowerFacts,
    RunQueueSampler,
    RunQueueShares,
    cpu_pressure_path,
    read_cpu_psi,
    read_fds,
    read_memory,
    read_power,
)
from accessfabric.node.host.network_manager import (
    NetworkFacts,
    read_network_manager,
    system_bus_address,
)
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.observe.log_format import log_event
from accessfabric.session.core import PRESSURE_HIGH
from accessfabric.timeouts import cancel_and_wait

log = logging.getLogger(__name__)

RESEND_INTERVAL = 5.0
"""Seconds between two NODE_PRESSURE frames of one episode with unchanged levels."""
RESEND_STEP = 10
"""A level change (points) that sends NODE_PRESSURE again at once."""
PEAK_DECAY = 0.95
"""Per-second decay of a peer's peak throughput (a minute halves it about 20 times)."""
MAX_TRACKED_PEERS = 256
BUSY_SHARE = 0.2
"""Loop-thread CPU (seconds per second) from which run-queue wait counts in full: a node
that waits for a CPU but has little to do (a mostly idle node on a loaded machine) is not
short of CPU for its peers' traffic, and below this its wait counts in proportion."""
CPU_HOLD = 1.0
"""Seconds the cpu level keeps its highest reading: a node throttled by its cgroup reads
as lagging in one sample and as idle (little CPU time) in the next; without the hold its
NODE_PRESSURE would flap between the two every sample."""


@dataclass(frozen=True, slots=True)
class PressureLevels:
    queue: int
    cpu: int
    memory: int
    network: int

    @property
    def highest(self) -> int:
        return max(self.queue, self.cpu, self.memory, self.network)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.queue, self.cpu, self.memory, self.network)


def _percent(share: float) -> int:
    return max(0, min(100, round(share * 100)))


@dataclass(frozen=True, slots=True)
class Readings:
    cpu: CpuShares
    memory: MemoryFacts
    fds: FdFacts
    power: PowerFacts
    run_queue: RunQueueShares | None = None
    cpu_psi: float | None = None


class OwnReadings:
    """One runtime's readings (a node process: the default)."""

    def __init__(self) -> None:
        self.cpu = CpuSampler()
        self.run_queue = RunQueueSampler()
        self.psi_path = cpu_pressure_path()

    def read(self, now: float, power_supply: Path) -> Readings:
        return Readings(
            self.cpu.sample(now), read_memory(), read_fds(), read_power(power_supply),
            self.run_queue.sample(now), read_cpu_psi(self.psi_path),
        )  # fmt: skip


class SharedReadings:
    """The readings of every runtime of one process, taken at most every ``fresh``
    seconds (by ``time.monotonic``) and handed to all of them in between.  The process's
    CPU is split evenly over its ``users`` runtimes: a simulated device's share, not the
    whole worker's (which had every device of a busy worker report cpu pressure)."""

    def __init__(self, fresh: float = 1.0, users: int = 1) -> None:
        self.fresh = fresh
        self.users = max(1, users)
        self._own = OwnReadings()
        self._held: dict[Path, tuple[float, Readings]] = {}
        self.taken = 0
        """Readings taken from ``/proc`` (tests/sim/test_fleet_light.py)."""

    def read(self, now: float, power_supply: Path) -> Readings:
        del now  # the runtimes' clocks may differ; the process's is the one that counts
        at = time.monotonic()
        held = self._held.get(power_supply)
        if held is None or at - held[0] >= self.fresh:
            taken = self._own.read(at, power_supply)
            cpu = CpuShares(process=taken.cpu.process / self.users, system=taken.cpu.system)
            rq = taken.run_queue
            if rq is not None:  # the loop's running share too; its wait is everyone's
                rq = replace(rq, running=rq.running / self.users)
            held = (at, replace(taken, cpu=cpu, run_queue=rq))
            self._held[power_supply] = held
            self.taken += 1
        return held[1]


class HostMonitor:
    """See the module doc.  ``connections``: every live session of the node."""

    def __init__(
        self,
        config: NodeConfig,
        connections: Callable[[], list[SessionConnection]],
        *,
        clock: Callable[[], float] = time.monotonic,
        readings: SharedReadings | None = None,
    ) -> None:
        """``readings``: the process's shared readings (the light profile of ``sim
        fleet``'s devices, many runtimes in one process); by default the monitor reads
        its own process, as a node does."""
        self.config = config
        self.device = config.device
        self.settings = config.pressure
        self.mobile = "mobile-edge" in config.roles
        self._connections = connections
        self._clock = clock
        self._own_readings: OwnReadings | None = None
        self.readings: OwnReadings | SharedReadings = self._own if readings is None else readings
        """Where the CPU, run-queue, PSI, memory, descriptor and power readings come from.
        Given at construction, so a light-profile device never reads ``/proc`` on its
        own, not even its first sample (that read listed the whole worker's ~1000
        descriptors once per device started: issue 17, docs/benchmarks.md)."""
        self._task: asyncio.Task[None] | None = None
        self._nm_task: asyncio.Task[None] | None = None
        nat = config.nat
        self.nat = NatMonitor(nat.reflectors, nat.listen, nat.interval, nat.timeout)
        """The NAT probe (``[nat] reflectors``) and this node's reflector (``[nat] listen``)."""
        self.network_manager: NetworkFacts | None = None
        """NetworkManager's last answer (None: not asked, or it did not answer)."""
        self.on_relay_change: Callable[[], None] | None = None
        """Called when the mobile relay state changes (the control link heartbeats)."""
        self.loop_lag = 0.0
        self.process_cpu = 0.0
        self.system_cpu: float | None = None
        self.run_queue_wait: float | None = None
        """Seconds per second the loop's thread waited for a CPU (None: no schedstat)."""
        self.loop_cpu: float | None = None
        """Seconds per second the loop's thread ran (schedstat)."""
        self.cpu_psi: float | None = None
        """PSI ``some avg10`` of the node's cgroup (v2) or the system: shown, not a level."""
        self.memory = MemoryFacts(None, None, None)
        self.fds = FdFacts(0, None)
        self.power = PowerFacts(None, False)
        self.foreground: bool | None = config.device.foreground
        """The app's foreground state, as config or the admin socket last set it (None:
        not reported; the platform reports none on Linux)."""
        self.queued_bytes = 0
        self.levels = PressureLevels(0, 0, 0, 0)
        self.under_pressure = False
        self.pressure_sent = 0
        """NODE_PRESSURE frames sent (one per session per send)."""
        self._sent_levels: PressureLevels | None = None
        self._sent_at = 0.0
        self._bytes: dict[str, tuple[int, float]] = {}
        self._peak_mbps: dict[str, float] = {}
        self._relay_refusal: str | None = None
        self._cpu_readings: collections.deque[tuple[float, int]] = collections.deque()
        self.relay_changes = 0
        self.sampled_at: float | None = None
        self.sample(0.0)

    @property
    def _own(self) -> OwnReadings:
        """This runtime's own readings of its process (made when first needed)."""
        if self._own_readings is None:
            self._own_readings = OwnReadings()
        return self._own_readings

    @property
    def _cpu(self) -> CpuSampler:
        """This runtime's own CPU sampler (tests replace its readings)."""
        return self._own.cpu

    @property
    def _run_queue(self) -> RunQueueSampler:
        return self._own.run_queue

    @_run_queue.setter
    def _run_queue(self, sampler: RunQueueSampler) -> None:
        self._own.run_queue = sampler

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.nat.start()
        self._task = asyncio.create_task(self._run())
        if self.device.network_manager:
            self._nm_task = asyncio.create_task(self._watch_network_manager())

    async def close(self) -> None:
        await cancel_and_wait(t for t in (self._task, self._nm_task) if t is not None)
        await self.nat.close()

    async def _watch_network_manager(self) -> None:
        address = self.device.system_bus or system_bus_address()
        while True:
            facts = await read_network_manager(address)
            if facts != self.network_manager:
                log_event(
                    log, "network manager",
                    network_type=facts.network_type if facts else "-",
                    metered=facts.metered if facts else "-",
                    answered=facts is not None,
                )  # fmt: skip
                self.network_manager = facts
                self._update_relay_gate()
                if self.on_relay_change is not None:  # the planner sees the new facts now
                    self.on_relay_change()
            await asyncio.sleep(self.device.network_manager_interval)

    @property
    def network_type(self) -> str:
        """NetworkManager's primary connection type when it knows, else ``[device]``'s."""
        facts = self.network_manager
        if facts is not None and facts.network_type is not None:
            return facts.network_type
        return self.device.network_type

    @property
    def metered(self) -> bool:
        """Metered by config (the owner's word) or by NetworkManager."""
        facts = self.network_manager
        return self.device.metered or bool(facts is not None and facts.metered)

    @property
    def network_source(self) -> str:
        return "networkmanager" if self.network_manager is not None else "config"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.interval
        while True:
            started = loop.time()
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - started - interval)
            try:
                self.sample(lag)
            except Exception:  # a bug must not end sampling silently
                log.exception("host sample failed")

    # ------------------------------------------------------------ sampling

    def sample(self, loop_lag: float) -> None:
        """One measurement: facts, levels, NODE_PRESSURE when needed, the relay gate."""
        now = self._clock()
        self.loop_lag = loop_lag
        readings = self.readings.read(now, self.device.power_supply)
        shares = readings.cpu
        self.process_cpu, self.system_cpu = shares.process, shares.system
        shares_rq = readings.run_queue
        self.loop_cpu = None if shares_rq is None else shares_rq.running
        self.run_queue_wait = None if shares_rq is None else shares_rq.waiting
        self.cpu_psi = readings.cpu_psi
        self.memory, self.fds, self.power = readings.memory, readings.fds, readings.power
        connections = [c for c in self._connections() if not c.is_closed]
        self.queued_bytes = sum(c.session.queued_bytes() for c in connections)
        self._measure_throughput(connections, now)
        budget = self.settings.loop_lag_budget
        starved = (self.run_queue_wait or 0.0) / self.settings.run_queue_budget
        starved *= min(1.0, (self.loop_cpu or 0.0) / BUSY_SHARE)  # idle: waits cost no one
        queue_limit = max(1, self.config.session.pressure_queue_bytes)
        self.levels = PressureLevels(
            queue=_percent(self.queued_bytes / queue_limit),
            cpu=self._held_cpu(_percent(max(starved, loop_lag / budget)), now),
            memory=_percent(self.memory.system_used or 0.0),
            network=_percent(self.fds.used),
        )
        self.sampled_at = now
        self._signal_pressure(connections, now)
        self._update_relay_gate()

    def _held_cpu(self, level: int, now: float) -> int:
        """The highest cpu reading of the last :data:`CPU_HOLD` seconds (this one included)."""
        readings = self._cpu_readings
        while readings and now - readings[0][0] >= CPU_HOLD:
            readings.popleft()
        while readings and readings[-1][1] <= level:
            readings.pop()  # a monotonic deque: the front is the maximum
        readings.append((now, level))
        return readings[0][1]

    def _measure_throughput(self, connections: list[SessionConnection], now: float) -> None:
        seen: set[str] = set()
        for connection in connections:
            session = connection.session
            peer = session.peer_node_id
            if not peer or peer in seen:
                continue
            seen.add(peer)
            # the two byte counts only, not the whole metrics() (frames, queues, states):
            # every session of every device, every second (issue 17, docs/benchmarks.md)
            total = sum(session.bytes_out_by_class.values()) + sum(
                session.bytes_in_by_class.values()
            )
            previous = self._bytes.get(peer)
            if previous is None and len(self._bytes) >= MAX_TRACKED_PEERS:
                continue
            self._bytes[peer] = (total, now)
            if previous is None or now <= previous[1] or total < previous[0]:
                continue
            mbps = (total - previous[0]) * 8 / (now - previous[1]) / 1e6
            decayed = self._peak_mbps.get(peer, 0.0) * PEAK_DECAY ** (now - previous[1])
            self._peak_mbps[peer] = max(mbps, decayed)
        for gone in set(self._bytes) - seen:
            self._bytes.pop(gone, None)
            self._peak_mbps.pop(gone, None)

    def _signal_pressure(self, connections: list[SessionConnection], now: float) -> None:
        levels = self.levels
        high = levels.highest >= self.settings.high_percent
        sent = self._sent_levels
        if high:
            due = (
                not self.under_pressure
                or sent is None
                or now - self._sent_at >= RESEND_INTERVAL
                or any(
                    abs(a - b) >= RESEND_STEP
                    for a, b in zip(levels.as_tuple(), sent.as_tuple(), strict=True)
                )
            )
        else:  # when it ends, and until peers were told a level they do not slow bulk for
            due = self.under_pressure or (
                sent is not None and sent.highest >= PRESSURE_HIGH and levels != sent
            )
        if high != self.under_pressure:
            log_event(
                log, "node pressure" if high else "node pressure over",
                logging.WARNING if high else logging.INFO,
                queue=levels.queue, cpu=levels.cpu, memory=levels.memory,
                network=levels.network, threshold=self.settings.high_percent,
            )  # fmt: skip
        self.under_pressure = high
        if not due:
            return
        self._sent_levels, self._sent_at = levels, now
        for connection in connections:
            if connection.is_ready and connection.send_pressure(*levels.as_tuple()):
                self.pressure_sent += 1

    # ------------------------------------------------------------ mobile relay

    def _update_relay_gate(self) -> None:
        refusal = self._refusal()
        if refusal == self._relay_refusal:
            return
        self._relay_refusal = refusal
        self.relay_changes += 1
        log_event(
            log, "mobile relay " + ("paused" if refusal else "allowed"),
            reason=refusal or "-", battery=self.power.battery_percent,
            charging=self.power.charging, metered=self.metered,
        )  # fmt: skip
        if self.on_relay_change is not None:
            self.on_relay_change()

    def _refusal(self) -> str | None:
        if not self.mobile:
            return None
        device = self.device
        if not device.relay_opt_in:
            return "mobile relay not opted in: [device] relay_opt_in is false"
        if self.metered and not device.allow_metered_relay:
            return "mobile relay paused: the network is metered"
        if device.relay_requires_foreground and self.foreground is False:
            return "mobile relay paused: the app is in the background"
        battery, floor = self.power.battery_percent, device.min_relay_battery_percent
        if battery is not None and not self.power.charging and battery < floor:
            return (
                f"mobile relay paused: battery {battery:.0f} % below {floor:.0f} % and not charging"
            )
        return None

    def set_foreground(self, foreground: bool | None) -> None:
        """The app wrapper says whether it is in the foreground (None: it no longer says);
        the relay gate follows at once (new relayed streams refused, the control plane told)."""
        if foreground != self.foreground:
            log_event(log, "foreground", foreground="-" if foreground is None else foreground)
        self.foreground = foreground
        self._update_relay_gate()

    def relay_refusal(self) -> str | None:
        """Why this node relays no new stream now (None: it relays)."""
        return self._relay_refusal

    # ------------------------------------------------------------ reports

    def heartbeat_fields(self, relay_opt_in: bool) -> dict[str, Any]:
        """The measured facts, as ``HeartbeatFacts`` fields (``dataclasses.replace``)."""
        fields: dict[str, Any] = {
            "cpu": self.levels.cpu / 100,
            "memory": self.levels.memory / 100,
            "queue_depth": min(MAX_QUEUE, self.queued_bytes // 1024),
            "socket_pressure": self.levels.network / 100,
            "network_type": self.network_type,
            "metered": self.metered,
            "foreground": self.foreground,
        }
        if self.mobile:  # the planner takes a node reporting a battery for a mobile one
            fields["battery_percent"] = self.power.battery_percent
            fields["charging"] = self.power.charging
            fields["relay_opt_in"] = self._relay_refusal is None
        else:
            fields["relay_opt_in"] = relay_opt_in
        return fields

    def nat_fields(self, listening: bool) -> dict[str, Any]:
        """``nat.type`` and ``nat.reachable`` once probed (``listening``: the node has a
        listener; reachable means both); nothing before, so the defaults stand."""
        report = self.nat.report
        if report is None:
            return {}
        return {"nat_type": report.type, "reachable": listening and report.reachable is not False}

    def with_bandwidth(self, peers: Sequence[PeerMeasurement]) -> tuple[PeerMeasurement, ...]:
        """``peers`` with the peak throughput seen on their session, where one was seen."""
        out = []
        for peer in peers:
            peak = self._peak_mbps.get(peer.node_id, 0.0)
            out.append(peer._replace(bandwidth_mbps=round(peak, 3)) if peak >= 1.0 else peer)
        return tuple(out)

    def status(self) -> dict[str, Any]:
        """The ``host`` section of ``accessfabric status``: the node's own measured facts."""
        memory = self.memory
        return {
            "cpu_process": round(self.process_cpu, 3),
            "cpu_system": None if self.system_cpu is None else round(self.system_cpu, 3),
            "loop_lag_ms": round(self.loop_lag * 1e3, 1),
            "loop_cpu": None if self.loop_cpu is None else round(self.loop_cpu, 3),
            "run_queue_wait": None
            if self.run_queue_wait is None
            else round(self.run_queue_wait, 3),
            "cpu_psi_some": None if self.cpu_psi is None else round(self.cpu_psi, 3),
            "memory_rss_bytes": memory.process_rss_bytes,
            "memory_system_used": None
            if memory.system_used is None
            else round(memory.system_used, 3),
            "fds_open": self.fds.open,
            "fds_limit": self.fds.limit,
            "queued_bytes": self.queued_bytes,
            "pressure_queue": self.levels.queue,
            "pressure_cpu": self.levels.cpu,
            "pressure_memory": self.levels.memory,
            "pressure_network": self.levels.network,
            "under_pressure": self.under_pressure,
            "pressure_sent": self.pressure_sent,
            "battery_percent": self.power.battery_percent,
            "charging": self.power.charging,
            "network_type": self.network_type,
            "metered": self.metered,
            "network_source": self.network_source,
            "foreground": self.foreground,
            **self.nat.status(),
            "mobile_relay": ("-" if not self.mobile else self._relay_refusal or "allowed"),
            "peer_peak_mbps": ", ".join(
                f"{peer[:14]}… {mbps:.1f}" for peer, mbps in sorted(self._peak_mbps.items())
            )
            or "-",
        }


FOREGROUND_VALUES = {"true": True, "false": False, "unknown": None}


def device_handler(host: HostMonitor) -> Any:
    """``POST /device?foreground=true|false|unknown`` on the admin socket: an app wrapper
    tells the node whether its app is in the foreground; answers the node's ``host``
    status."""

    async def handle(request: web.Request) -> web.Response:
        value = request.query.get("foreground")
        if value not in FOREGROUND_VALUES:
            return web.json_response(
                {"error": "foreground: expected true, false or unknown"}, status=400
            )
        host.set_foreground(FOREGROUND_VALUES[value])
        return web.json_response(host.status())

    return handle
