"""Demo: a bulk download loop and an interactive echo session through laptop's forwards.

Both run at once through laptop's ``[[forwards]]`` (``web`` in class bulk, ``term``
interactive), so both ride laptop's route leases: laptop -> entry -> relay-a -> home.
The download runs in the demo's own process, the echo client in a process of its own
(:mod:`accessfabric.demo.echo`), as a browser and a terminal would.
Every downloaded copy's sha256 is checked; every echo's round-trip time is kept with
the moment it was answered.  A live view prints, once a second, per-class throughput
(from laptop's ``/metrics``), the interactive round-trip times and laptop's route
failovers.  A third of the way through, relay-a gets SIGKILL: the streams resume via
relay-b, and the recovery time runs from the kill to the answer of the first echo sent
after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field

import aiohttp

from accessfabric.demo.echo import PROBE, PROBE_INTERVAL
from accessfabric.demo.fleet import ECHO, Fleet
from accessfabric.demo.procs import DemoFailed, Processes, env
from accessfabric.percentile import percentile

KILL_AT = 1 / 3
"""Fraction of the run after which relay-a is killed."""

FAILOVER_WINDOW = 1.0
"""Seconds from the kill in which echoes are counted as the failover's, not the steady
state's: the streams move to relay-b, new sessions are dialled and the bulk's
unacknowledged bytes are sent again.  The recovery time measures that second on its own."""

SLOW_ECHO = 0.010
"""Echoes slower than this (issue 18's interactive p99 target) are listed one by one
(``--json``: ``over_10ms``)."""


@dataclass
class Traffic:
    copies: int = 0
    bytes: int = 0
    mismatches: int = 0
    errors: list[str] = field(default_factory=list)
    elapsed: float = 1.0
    rtts: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    chunk_at: list[float] = field(default_factory=list)
    started: float = 0.0
    killed_at: float | None = None
    failovers: int = 0

    @property
    def ok(self) -> bool:
        return self.copies > 0 and not self.mismatches and not self.errors

    def pct(self, q: float) -> float:
        return percentile(self.rtts, q)

    def in_failover(self, index: int) -> bool:
        """Whether echo ``index`` was in flight at the kill or sent within
        :data:`FAILOVER_WINDOW` after it."""
        if self.killed_at is None:
            return False
        sent, answered = self.sent_at[index], self.answered_at[index]
        return answered >= self.killed_at and sent < self.killed_at + FAILOVER_WINDOW

    def pct_steady(self, q: float) -> float:
        """The percentile of the echoes outside the failover (:meth:`in_failover`)."""
        return percentile((rtt for i, rtt in enumerate(self.rtts) if not self.in_failover(i)), q)

    @property
    def failover_echoes(self) -> int:
        """How many echoes :meth:`pct_steady` leaves out."""
        return sum(self.in_failover(i) for i in range(len(self.rtts)))

    def slow_echoes(self) -> list[tuple[float, float, bool]]:
        """Each echo slower than :data:`SLOW_ECHO`: (seconds into the run at its send,
        its round trip in seconds, whether it was the failover's)."""
        return [
            (self.sent_at[i] - self.started, rtt, self.in_failover(i))
            for i, rtt in enumerate(self.rtts)
            if rtt > SLOW_ECHO
        ]

    @property
    def recovery(self) -> float:
        """From the kill to the answer of the first echo sent after it."""
        if self.killed_at is None:
            return float("nan")
        killed = self.killed_at
        after = [a for s, a in zip(self.sent_at, self.answered_at, strict=True) if s >= killed]
        return after[0] - killed if after else float("inf")

    @property
    def bulk_pause(self) -> float:
        """The longest gap between two download chunks from the kill on."""
        if self.killed_at is None:
            return float("nan")
        gaps = [
            b - max(a, self.killed_at)
            for a, b in zip(self.chunk_at, self.chunk_at[1:], strict=False)
            if b > self.killed_at
        ]
        return max(gaps, default=float("inf"))


async def _download(fleet: Fleet, result: Traffic, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", fleet.ports["forward_web"])
            writer.write(b"GET /blob.bin HTTP/1.0\r\nHost: home\r\n\r\n")
            await writer.drain()
            header = await reader.readuntil(b"\r\n\r\n")
            if not header.startswith(b"HTTP/1.0 200"):
                raise ConnectionError(f"HTTP answer {header[:40]!r}")
            digest = hashlib.sha256()
            size = 0
            while chunk := await reader.read(1 << 20):
                result.chunk_at.append(time.monotonic())
                digest.update(chunk)
                size += len(chunk)
                result.bytes += len(chunk)
            writer.close()
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as error:
            result.errors.append(f"download: {error!r}")
            await asyncio.sleep(0.5)
            continue
        result.copies += 1
        if digest.digest() != fleet.sha256 or size != fleet.file_size:
            result.mismatches += 1


async def _interactive(fleet: Fleet, result: Traffic, stop: asyncio.Event) -> None:
    """The echo client in a process of its own (:mod:`accessfabric.demo.echo`): one line
    per echo on its stdout, read here as it comes; its stdin closed at ``stop``."""
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", ECHO, "client", str(fleet.ports["forward_term"]),
        "--probe", str(PROBE), "--interval", str(PROBE_INTERVAL),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env(),
        start_new_session=True, cwd=fleet.work,  # cwd: tests find what is left by it
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    closing = asyncio.create_task(_close_at(stop, client.stdin))
    try:
        while line := await client.stdout.readline():
            kind, _, rest = line.decode().strip().partition(" ")
            if kind == "echo":
                sent_at, rtt, answered_at = (float(f) for f in rest.split())
                result.rtts.append(rtt)
                result.sent_at.append(sent_at)
                result.answered_at.append(answered_at)
            else:
                result.errors.append(rest or line.decode(errors="replace").strip())
        if await asyncio.wait_for(client.wait(), 60) != 0 and not result.errors:
            result.errors.append(f"echo client: exit status {client.returncode}")
    finally:
        closing.cancel()
        if client.returncode is None:
            client.kill()
            await client.wait()


async def _close_at(stop: asyncio.Event, stdin: asyncio.StreamWriter) -> None:
    await stop.wait()
    stdin.close()


async def _scrape(client: aiohttp.ClientSession, url: str) -> tuple[dict[str, float], int]:
    """Laptop's stream bytes received by class, and its route failovers so far."""
    async with client.get(url) as response:
        text = await response.text()
    by_class: dict[str, float] = {}
    failovers = 0
    prefix = 'accessfabric_stream_bytes_total{direction="in",traffic_class="'
    for line in text.splitlines():
        if line.startswith(prefix):
            by_class[line[len(prefix) :].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("accessfabric_route_switches_total{"):
            failovers += int(float(line.rsplit(" ", 1)[1]))
    return by_class, failovers


def _kill(fleet: Fleet, procs: Processes, label: str) -> None:
    os.killpg(procs.children[fleet.process(label)].pid, signal.SIGKILL)


async def _kill_midway(
    fleet: Fleet, procs: Processes, result: Traffic, started: float, after: float
) -> None:
    await asyncio.sleep(max(0.0, started + after - time.monotonic()))
    _kill(fleet, procs, "relay-a")
    result.killed_at = time.monotonic()
    print(f"    {result.killed_at - started:4.1f}s  relay-a KILLED (SIGKILL)")


async def _live_view(fleet: Fleet, result: Traffic, started: float, stop: asyncio.Event) -> None:
    url = f"http://127.0.0.1:{fleet.ports['metrics']}/metrics"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        last, failovers = await _scrape(client, url)
        seen = 0
        print("    time  bulk Mbit/s  interactive kbit/s  echo RTT p50 / max (ms)  event")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            now, count = await _scrape(client, url)
            event = ""
            if count > failovers:
                event = f"{count - failovers} stream(s) resumed via relay-b"
                result.failovers += count - failovers
                failovers = count
            fresh = result.rtts[seen:]
            seen = len(result.rtts)
            bulk = (now.get("bulk", 0) - last.get("bulk", 0)) * 8 / 1e6
            inter = (now.get("interactive", 0) - last.get("interactive", 0)) * 8 / 1e3
            rtt = (
                f"{statistics.median(fresh) * 1e3:7.2f} / {max(fresh) * 1e3:7.2f}"
                if fresh
                else "      - /       -"
            )
            print(
                f"    {time.monotonic() - started:4.1f}s  {bulk:11.0f}  {inter:18.1f}  "
                f"{rtt}        {event}".rstrip()
            )
            last = now


STOP_WITHIN = 60.0
"""Seconds the download, the echo client and the live view have to stop once told."""


async def run_traffic(fleet: Fleet, procs: Processes, duration: float) -> Traffic:
    started = time.monotonic()
    result = Traffic(started=started)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(_download(fleet, result, stop)),
        asyncio.create_task(_interactive(fleet, result, stop)),
        asyncio.create_task(_live_view(fleet, result, started, stop)),
        asyncio.create_task(_kill_midway(fleet, procs, result, started, duration * KILL_AT)),
    ]
    await asyncio.sleep(duration)
    stop.set()
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), STOP_WITHIN)
    except TimeoutError:
        raise DemoFailed(f"the traffic did not stop within {STOP_WITHIN:g} s") from None
    result.elapsed = time.monotonic() - started
    return result
