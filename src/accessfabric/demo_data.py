"""Demo step 2: bulk download and interactive session at once through fabric processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from accessfabric.demo_control import SERVICE, Fleet
from accessfabric.demo_procs import COMMAND, Processes, free_port
from accessfabric.node.status import fetch_status, render

FILE_SIZE = 16 << 20
PROBE = 64
PROBE_INTERVAL = 0.02


@dataclass
class DataResult:
    ok: bool = True
    copies: int = 0
    bytes: int = 0
    file_size: int = FILE_SIZE
    elapsed: float = 1.0
    rtts: list[float] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return len(self.rtts)

    @property
    def p50(self) -> float:
        return statistics.median(self.rtts) if self.rtts else 0.0

    @property
    def p99(self) -> float:
        if len(self.rtts) < 2:
            return self.p50
        return statistics.quantiles(self.rtts, n=100)[98]


def _write_configs(work: Path, fleet: Fleet, ports: dict[str, int]) -> tuple[Path, Path]:
    home_id = fleet.keys["home"].node_id
    home = work / "home.toml"
    home.write_text(
        f'key_path = "{fleet.paths["home"]}"\n'
        f'metrics_listen = "127.0.0.1:{ports["home_metrics"]}"\n'
        f'[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:{ports["home"]}"\n'
        f'[[services]]\nname = "{SERVICE}"\ntarget = "127.0.0.1:{ports["http"]}"\n'
        'traffic_class = "bulk"\n'
    )
    laptop = work / "laptop.toml"
    laptop.write_text(
        f'key_path = "{fleet.paths["laptop"]}"\n'
        f'metrics_listen = "127.0.0.1:{ports["metrics"]}"\n'
        f'[[forwards]]\nlisten = "127.0.0.1:{ports["web"]}"\nservice = "{SERVICE}"\n'
        'traffic_class = "bulk"\n'
        f'[[forwards]]\nlisten = "127.0.0.1:{ports["echo"]}"\nservice = "echo"\n'
        'traffic_class = "interactive"\n'
        f'[[peers]]\nnode_id = "{home_id}"\nendpoints = ["tcp://127.0.0.1:{ports["home"]}"]\n'
        f'connect = "always"\nservices = ["{SERVICE}", "echo"]\n'
    )
    return home, laptop


async def _wait_port(port: int, what: str, procs: Processes, name: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline or procs.children[name].poll() is not None:
                raise RuntimeError(f"{what} did not start:\n{procs.log(name)}") from None
            await asyncio.sleep(0.1)


async def _wait_session(admin: Path, procs: Processes) -> None:
    """Until laptop's session to home is ready (its peer is ``connect = "always"``)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            status = await fetch_status(admin)
            if any(s["state"] == "ready" for s in status["sessions"]):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("laptop has no session to home:\n" + procs.log("laptop"))
        await asyncio.sleep(0.1)


async def _download(port: int, expected: bytes, result: DataResult, stop: asyncio.Event) -> None:
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /blob.bin HTTP/1.0\r\nHost: home\r\n\r\n")
        await writer.drain()
        digest = hashlib.sha256()
        header = await reader.readuntil(b"\r\n\r\n")
        assert header.startswith(b"HTTP/1.0 200"), header[:40]
        size = 0
        while chunk := await reader.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            result.bytes += len(chunk)
        writer.close()
        result.copies += 1
        result.ok &= digest.digest() == expected and size == result.file_size


async def _interactive(port: int, result: DataResult, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while not stop.is_set():
        sent = time.perf_counter()
        writer.write(os.urandom(PROBE))
        await writer.drain()
        await reader.readexactly(PROBE)
        result.rtts.append(time.perf_counter() - sent)
        await asyncio.sleep(PROBE_INTERVAL)
    writer.write_eof()
    await reader.read()
    writer.close()


async def _class_bytes(client: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with client.get(url) as response:
        text = await response.text()
    out: dict[str, float] = {}
    prefix = 'accessfabric_stream_bytes_total{direction="in",traffic_class="'
    for line in text.splitlines():
        if line.startswith(prefix):
            out[line[len(prefix) :].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


async def _live_view(url: str, result: DataResult, stop: asyncio.Event) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession() as client:
        last = await _class_bytes(client, url)
        seen = 0
        print("    time   bulk Mbit/s  interactive kbit/s  interactive RTT p50 / max (ms)")
        while not stop.is_set():
            with_timeout = asyncio.ensure_future(stop.wait())
            await asyncio.wait([with_timeout], timeout=1.0)
            with_timeout.cancel()
            now = await _class_bytes(client, url)
            fresh = result.rtts[seen:]
            seen = len(result.rtts)
            bulk = (now.get("bulk", 0) - last.get("bulk", 0)) * 8 / 1e6
            inter = (now.get("interactive", 0) - last.get("interactive", 0)) * 8 / 1e3
            rtt = (
                f"{statistics.median(fresh) * 1e3:6.2f} / {max(fresh) * 1e3:6.2f}"
                if fresh
                else "     - /      -"
            )
            print(f"    {time.monotonic() - started:4.0f}s  {bulk:11.0f}  {inter:18.1f}  {rtt}")
            last = now


async def run_data_path(
    work: Path, procs: Processes, fleet: Fleet, duration: float, keep_running: bool
) -> DataResult:
    names = ("home", "http", "web", "echo", "metrics", "home_metrics")
    ports = {name: free_port() for name in names}
    site = work / "site"
    site.mkdir()
    blob = os.urandom(FILE_SIZE)
    (site / "blob.bin").write_bytes(blob)
    expected = hashlib.sha256(blob).digest()
    procs.start(
        "http", [sys.executable, "-m", "http.server", str(ports["http"]), "--bind", "127.0.0.1"],
        cwd=site,
    )  # fmt: skip
    home_cfg, laptop_cfg = _write_configs(work, fleet, ports)
    procs.start("home", [*COMMAND, "node", "run", "--config", str(home_cfg)])
    procs.start("laptop", [*COMMAND, "node", "run", "--config", str(laptop_cfg)])
    await _wait_port(ports["http"], "the demo HTTP server", procs, "http")
    await _wait_port(ports["home"], "home's fabric listener", procs, "home")
    await _wait_port(ports["web"], "laptop's forward", procs, "laptop")
    await _wait_session(fleet.paths["laptop"].parent / "laptop.admin.sock", procs)
    print(f"    home   hosts {SERVICE!r} -> http.server 127.0.0.1:{ports['http']} (bulk)")
    print(f"    laptop forwards 127.0.0.1:{ports['web']} -> {SERVICE} (bulk), "
          f"127.0.0.1:{ports['echo']} -> echo (interactive)")  # fmt: skip
    print(f"    metrics: http://127.0.0.1:{ports['metrics']}/metrics (laptop)")
    print(f"\n    {duration:.0f} s of {FILE_SIZE >> 20} MiB downloads (sha256 each) + 64-byte "
          f"echoes every {PROBE_INTERVAL * 1e3:.0f} ms:")  # fmt: skip
    result = DataResult()
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [
        asyncio.create_task(_download(ports["web"], expected, result, stop)),
        asyncio.create_task(_interactive(ports["echo"], result, stop)),
        asyncio.create_task(
            _live_view(f"http://127.0.0.1:{ports['metrics']}/metrics", result, stop)
        ),
    ]
    await asyncio.sleep(duration)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    result.elapsed = time.monotonic() - started
    status = await fetch_status(fleet.paths["laptop"].parent / "laptop.admin.sock")
    print("\n    accessfabric status (laptop):")
    for line in render(status).splitlines():
        print("     ", line)
    if keep_running:
        print(f"\n    --keep-running: curl http://127.0.0.1:{ports['web']}/blob.bin -o /dev/null")
        print(f"    accessfabric status --socket {fleet.paths['laptop'].parent}/laptop.admin.sock")
        print("    Ctrl-C to stop")
        await asyncio.Event().wait()
    return result
