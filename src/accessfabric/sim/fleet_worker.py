"""One worker process of ``accessfabric sim fleet``: many devices on one event loop.

A device is a real :class:`NodeRuntime` (its own node key, ``[control]`` with an
enrollment token, role ``mobile-edge``, no listeners): it enrolls, heartbeats its facts,
learns entries from its directory and holds authenticated TLS sessions to them, takes
route leases and now and then opens a short stream to the fleet's echo service through
an entry.  The worker only measures: heartbeat and lease latency (around the control
client's own calls), stream outcomes, and which entries each device holds a session to.

Every ``REPORT_INTERVAL`` seconds it prints one JSON line on stdout (see
:func:`_report`); it stops on SIGTERM.  Run by :mod:`accessfabric.sim.fleet`::

    python -m accessfabric.sim.fleet_worker --configs A.toml B.toml ... \
        --entries ID1,ID2 --service fleet-echo --stream-interval 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from accessfabric.control.client.client import ControlClient
from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.control_link import LOST_LEASE_WAIT, PLANNER_SNAPSHOT_AGE
from accessfabric.node.host.host_monitor import SharedReadings
from accessfabric.node.runtime import NodeRuntime
from accessfabric.sim.device_cache import CoalescedCache
from accessfabric.timeouts import wait_within
from accessfabric.wire.registry import TrafficClass

REPORT_INTERVAL = 1.0
STREAM_BYTES = 4096
STREAM_TIMEOUT = 10.0
"""Seconds a stream's echo may take, and its open beyond a re-home's wait (below)."""
OPEN_TIMEOUT = LOST_LEASE_WAIT + PLANNER_SNAPSHOT_AGE + STREAM_TIMEOUT
"""Seconds a stream's open may take: a stream opened while its device re-homes waits up
to ``LOST_LEASE_WAIT`` for the device's new entry (node/control_link.py), then asks for
leases around the lost one."""
FAILED_RETRY = 2.0
"""Mean seconds before a device whose stream failed tries again."""
START_SPREAD = 0.02
"""Seconds between two device starts of one worker (pacing, no connect storm)."""
FREEZE_EVERY = 25
"""Devices started between two freezes of the worker's heap (:func:`_freeze_started`)."""


def _freeze_started(count: bool = True) -> int:
    """Collect the young generations, then exempt every live object from later full
    collections (``gc.freeze``), as ``node run`` does once started.

    A worker hosts hundreds of devices in one heap: a full collection walked all their
    runtimes and stalled every device of the worker for 0.5-1.7 s at 1000 devices (a
    real device is its own process with a small heap), which the heartbeats and leases
    in flight measured as control plane latency (issue 17, ADR 0043 "garbage
    collector").  Cyclic garbage already in the oldest generation is kept: a load tool
    runs for minutes.  Returns how many objects are frozen (``gc.get_freeze_count``
    walks them all: ~30 ms per 600 000, so it is read here, not in every report, and
    only when ``count``: read at every freeze of a 333-device start it was 3.5 % of the
    worker's CPU, docs/benchmarks.md); 0 when not counted."""
    gc.collect(1)
    gc.freeze()
    return gc.get_freeze_count() if count else 0


class GcPauses:
    """The longest garbage-collection pause (ms) since the last :meth:`take`."""

    def __init__(self) -> None:
        self.max_ms = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.max_ms = max(self.max_ms, (time.perf_counter() - self._started) * 1000)

    def take(self) -> float:
        out, self.max_ms = self.max_ms, 0.0
        return round(out, 1)


class Samples:
    """Latencies (ms) and counts since the last report."""

    def __init__(self) -> None:
        self.gc = GcPauses()
        self.heartbeat_ms: list[float] = []
        """As the device sees it (:class:`RequestTimer`)."""
        self.heartbeat_loop_ms: list[float] = []
        """Wall time in the worker, its shared loop's turns included."""
        self.lease_ms: list[float] = []
        """As the device sees it (:class:`RequestTimer`)."""
        self.lease_loop_ms: list[float] = []
        """Wall time in the worker, its shared loop's turns included."""
        self.wall_only = {"heartbeat": 0, "lease": 0}
        """Requests the kernel could not time: their wall time stands."""
        self.heartbeats = 0
        self.leases = 0
        self.streams_ok = 0
        self.streams_failed = 0
        self.stream_bytes = 0
        self.last_error = ""
        self.frozen = 0

    def take(self) -> dict[str, Any]:
        out = {
            "heartbeat_ms": list(self.heartbeat_ms),
            "heartbeat_loop_ms": list(self.heartbeat_loop_ms),
            "heartbeat_wall_only": self.wall_only["heartbeat"],
            "lease_ms": list(self.lease_ms),
            "lease_loop_ms": list(self.lease_loop_ms),
            "lease_wall_only": self.wall_only["lease"],
            "heartbeats": self.heartbeats,
            "leases": self.leases,
            "streams_ok": self.streams_ok,
            "streams_failed": self.streams_failed,
            "stream_bytes": self.stream_bytes,
            "last_error": self.last_error,
            "gc_max_ms": self.gc.take(),
            "frozen": self.frozen,
        }
        self.heartbeat_ms.clear()  # in place: the wrappers hold these lists
        self.heartbeat_loop_ms.clear()
        self.lease_ms.clear()
        self.lease_loop_ms.clear()
        self.wall_only = dict.fromkeys(self.wall_only, 0)
        self.heartbeats = self.leases = self.streams_ok = self.streams_failed = 0
        self.stream_bytes = 0
        return out


LEASE_PATH = "/v1/leases/route"
HEARTBEAT_PATH = "/v1/heartbeat"


def tcp_ages_ms(sock: Any) -> tuple[int, int] | None:
    """(ms since ``sock`` last sent data, ms since it last received data), from the
    kernel's ``TCP_INFO`` (``tcpi_last_data_sent``, ``tcpi_last_data_recv``: jiffies,
    4 ms steps here); ``None`` where the kernel does not tell (not Linux, not TCP)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        fields = struct.unpack_from("24I", info, 8)  # after the eight u8 fields
    except (OSError, AttributeError, ValueError, struct.error):
        return None
    return fields[9], fields[11]


class RequestTimer:
    """A control request's latency as the device sees it, apart from its worker's loop.

    A worker runs hundreds of devices on one event loop: in a fleet's start every turn of
    it is tens to hundreds of milliseconds of other devices' start-up work (TLS
    handshakes, enrolments, cache files), and a request's wall time in the worker counted
    each turn its request and reply waited for: to be written after the request was
    built, to be read once the reply was in the socket, and for the task to resume.  A
    device is its own process with its own loop; none of that is the control plane's,
    nor what a device waits for.  So a route lease (and, the same way, a heartbeat) is
    timed as the device's own work before the request (building and signing it), the
    request's time on the wire — from its last byte sent to the reply's last byte
    received, as the kernel saw them on the connection (``TCP_INFO``, 4 ms steps): the
    control plane's loop, queue, planning, signing and answer — and the device's own
    work after it (parsing, verifying, caching).  The wall time in the worker is kept
    beside it (``loop_ms``); when the kernel cannot tell (the connection closed, not
    Linux), the wall time stands for the request (``wall_only`` is called).

    Timers for several paths chain: each wraps the ``request_replica`` it finds.
    """

    def __init__(
        self,
        client: ControlClient,
        path: str,
        device_ms: list[float],
        loop_ms: list[float],
        wall_only: Callable[[], None],
        count: Callable[[], None],
    ) -> None:
        self._client = client
        self._path = path
        self._request = client.request_replica
        self._device_ms = device_ms
        self._loop_ms = loop_ms
        self._wall_only = wall_only
        self._count = count
        self._wire: tuple[float, float, float | None] | None = None
        """The last request on ``path``: (called, returned, wire ms or None)."""

    async def request_replica(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if path != self._path:
            return await self._request(method, path, *args, **kwargs)
        idle_before = {sock.fileno() for sock in self._client.kept_alive_sockets()}
        called = time.perf_counter()
        try:
            return await self._request(method, path, *args, **kwargs)
        finally:
            # The connection went back to the pool in this same step: no other request
            # of the device has used it since.  The one that received last is it.  A
            # connection that was not idle before the request was opened for it: its
            # handshakes are not in TCP_INFO's ages, so the wall time stands (None).
            timed = [
                (tcp_ages_ms(sock), sock.fileno()) for sock in self._client.kept_alive_sockets()
            ]
            ages = [(age, fd) for age, fd in timed if age]
            returned = time.perf_counter()
            wire = None
            if ages:
                (sent_ago, received_ago), fd = min(ages, key=lambda a: a[0][1])
                if fd in idle_before:
                    wire = max(0, sent_ago - received_ago) * 1.0
                    wire = min(wire, (returned - called) * 1000)
            self._wire = (called, returned, wire)

    def timed(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """``call`` (the client's method that makes the request), timed."""

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._wire = None
            started = time.perf_counter()
            result = await call(*args, **kwargs)
            ended = time.perf_counter()
            wall = (ended - started) * 1000
            self._loop_ms.append(wall)
            timed = self._wire
            if timed is None or timed[2] is None:
                self._device_ms.append(wall)  # an answer from a cache, or no TCP_INFO
                self._wall_only()
            else:
                called, returned, wire = timed
                own = (called - started) + (ended - returned)
                self._device_ms.append(own * 1000 + wire)
            self._count()
            return result

        return wrapper


class Device:
    def __init__(self, index: int, runtime: NodeRuntime, samples: Samples) -> None:
        self.index = index
        self.runtime = runtime
        self.samples = samples
        self.heartbeats = self.leases = self.streams_ok = 0
        control = runtime.control
        assert control is not None, "a fleet device needs [control]"
        client = control.client

        def heard() -> None:
            samples.heartbeats += 1
            self.heartbeats += 1

        def leased() -> None:
            samples.leases += 1
            self.leases += 1

        def wall_only(kind: str) -> Callable[[], None]:
            def count() -> None:
                samples.wall_only[kind] += 1

            return count

        # Instance attributes shadow the methods: the control link calls the wrappers.
        lease = RequestTimer(
            client, LEASE_PATH, samples.lease_ms, samples.lease_loop_ms, wall_only("lease"), leased
        )
        client.request_replica = lease.request_replica  # type: ignore[method-assign]
        client.route_leases = lease.timed(client.route_leases)  # type: ignore[method-assign,assignment]
        beat = RequestTimer(
            client, HEARTBEAT_PATH, samples.heartbeat_ms, samples.heartbeat_loop_ms,
            wall_only("heartbeat"), heard,
        )  # fmt: skip
        client.request_replica = beat.request_replica  # type: ignore[method-assign]
        client.heartbeat = beat.timed(client.heartbeat)  # type: ignore[method-assign,assignment]

    def entries(self) -> set[str]:
        """Node ids this device holds a live, authenticated session with."""
        out = set()
        for connection in self.runtime.observe.connections():
            if connection.is_closed:
                continue
            peer = connection.session.peer_node_id
            if peer:
                out.add(peer)
        return out

    async def stream(self, service: str) -> None:
        payload = os.urandom(STREAM_BYTES)
        samples = self.samples
        try:
            stream = await wait_within(
                self.runtime.routes.open_stream(service, TrafficClass.RELIABLE), OPEN_TIMEOUT
            )
            stream.write(payload)
            await stream.drain()
            got = bytearray()
            deadline = time.monotonic() + STREAM_TIMEOUT
            while len(got) < len(payload):
                left = deadline - time.monotonic()
                chunk = await wait_within(stream.read(65536), max(left, 0.01))
                if not chunk:
                    break
                got += chunk
            stream.close()
            if bytes(got) != payload:
                raise RuntimeError(f"echo returned {len(got)} of {len(payload)} bytes")
            samples.streams_ok += 1
            self.streams_ok += 1
            samples.stream_bytes += 2 * len(payload)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            samples.streams_failed += 1
            samples.last_error = f"{type(error).__name__}: {error}"[:300]


async def _streams(device: Device, service: str, interval: float, rng: random.Random) -> None:
    """A first stream once a heartbeat reported the device's entry session (so the planner
    has a first hop for it), then one every
    ``interval`` (jittered); after a failure sooner (``FAILED_RETRY``)."""
    while not device.entries():  # a session to an entry first ...
        await asyncio.sleep(0.5)
    heard = device.heartbeats
    while device.heartbeats <= heard:  # ... then a heartbeat that reports it to the planner
        await asyncio.sleep(0.5)
    await asyncio.sleep(rng.uniform(0.5, 1.5))
    while True:
        failed = device.samples.streams_failed
        await device.stream(service)
        again = FAILED_RETRY if device.samples.streams_failed > failed else interval
        await asyncio.sleep(again * rng.uniform(0.5, 1.5))


def _report(devices: list[Device], samples: Samples, entries: list[str]) -> None:
    on: dict[str, list[int]] = {e: [] for e in entries}
    connected = 0
    for device in devices:
        held = device.entries()
        if held & set(entries):
            connected += 1
        for entry in held:
            if entry in on:
                on[entry].append(device.index)
    line = {
        "devices": len(devices),
        "connected": connected,
        "heard": sum(1 for d in devices if d.heartbeats),
        "leased": sum(1 for d in devices if d.leases),
        "streamed": sum(1 for d in devices if d.streams_ok),
        "on": on,
        **samples.take(),
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _flush_due(devices: list[Device]) -> None:
    """Write the cache documents a device held for its coalescing interval (a device
    that wrote nothing since still gets its latest state on disk)."""
    now = time.monotonic()
    for device in devices:
        control = device.runtime.control
        cache = None if control is None else control.client.cache
        if isinstance(cache, CoalescedCache):
            with contextlib.suppress(OSError):
                cache.flush_due(now)


async def run(configs: list[Path], entries: list[str], service: str, interval: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    samples = Samples()
    gc.callbacks.append(samples.gc)
    devices: list[Device] = []
    tasks: list[asyncio.Task[None]] = []
    rng = random.Random()
    # the light profile: one /proc reading for all devices, each its share of the CPU
    readings = SharedReadings(users=len(configs))

    async def start_all() -> None:
        for path in configs:
            index = int(path.stem.rsplit("-", 1)[-1])
            runtime = NodeRuntime(load_node_config(path, environ={}), host_readings=readings)
            if runtime.control is not None:  # the light profile's cache (sim/device_cache.py)
                cache = CoalescedCache(runtime.control.client.cache.directory)
                cache.durable = False  # no fsync: every device's cache on one disk
                runtime.control.client.cache = cache
            await runtime.start()
            device = Device(index, runtime, samples)
            devices.append(device)
            if interval > 0:
                tasks.append(asyncio.create_task(_streams(device, service, interval, rng)))
            last = len(devices) == len(configs)
            if len(devices) % FREEZE_EVERY == 0 or last:
                frozen = _freeze_started(count=last)  # counted once all started
                samples.frozen = frozen or samples.frozen
            await asyncio.sleep(START_SPREAD)

    starter = asyncio.create_task(start_all())
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_INTERVAL)
            _report(devices, samples, entries)
            _flush_due(devices)
    finally:
        starter.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(starter, *tasks, return_exceptions=True)
        await asyncio.gather(
            *(asyncio.wait_for(d.runtime.shutdown("fleet stopping"), 5) for d in devices),
            return_exceptions=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="accessfabric-fleet-worker")
    parser.add_argument("--configs", nargs="+", type=Path, required=True)
    parser.add_argument("--entries", required=True, help="entry node ids, comma separated")
    parser.add_argument("--service", required=True)
    parser.add_argument("--stream-interval", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    entries = [e for e in args.entries.split(",") if e]
    main_coroutine = run(args.configs, entries, args.service, args.stream_interval)
    try:  # the node's own loop (node run uses uvloop when it is installed)
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
    else:
        uvloop.run(main_coroutine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
