"""How a fleet worker times a device's route lease and heartbeat (issue 17, ADR 0043
"lease latency").

A worker runs hundreds of devices on one loop; a turn of it spent on other devices'
work is not the control plane's time nor what a device (its own process) waits for.
Here the control plane answers after 80 ms (a real HTTP server in its own thread, real
TCP on loopback); meanwhile the device's loop is blocked for 300 ms by "another
device". The device-seen figure is the request's time on the wire (the kernel's
``TCP_INFO``) plus the device's own work: ~80 ms; the worker's wall time, kept beside
it, holds the 300 ms stall.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from accessfabric.control.client.client import ControlClient
from accessfabric.sim.fleet_worker import HEARTBEAT_PATH, LEASE_PATH, RequestTimer, tcp_ages_ms

ANSWER_AFTER = 0.08
STALL = 0.3

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO")


class _Server:
    """An HTTP server on its own thread and loop: the device's stalls do not delay it."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def lease(_request: web.Request) -> web.Response:
            await asyncio.sleep(ANSWER_AFTER)
            return web.json_response({"routes": []})

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_post(LEASE_PATH, lease)
            app.router.add_post(HEARTBEAT_PATH, lease)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = getattr(site, "_server", None)
            self.port = server.sockets[0].getsockname()[1] if server else 0
            return runner

        asyncio.set_event_loop(self._loop)
        runner = self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> _Server:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class _Client:
    """The calls of :class:`ControlClient` the timer uses, over a real aiohttp session
    (kept-alive connections, the pool the timer reads)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session = aiohttp.ClientSession()

    async def request_replica(self, method: str, path: str, document: Any = None) -> Any:
        async with self._session.request(method, self.url + path, json=document) as response:
            return await response.json()

    async def route_leases(self) -> Any:
        return await self.request_replica("POST", LEASE_PATH, {"service": "echo"})

    async def heartbeat(self) -> Any:
        return await self.request_replica("POST", HEARTBEAT_PATH, {"facts": {}})

    def kept_alive_sockets(self) -> list[Any]:  # the real client's, over this session
        return ControlClient.kept_alive_sockets(cast(ControlClient, self))


def test_tcp_ages_tell_a_request_s_time_on_the_wire() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            client.sendall(b"ask")
            asked = time.monotonic()
            peer.recv(16)
            time.sleep(0.05)
            peer.sendall(b"answer")
            answered = time.monotonic()
            client.recv(16)
            ages = tcp_ages_ms(client)
            assert ages is not None
            sent_ago, received_ago = ages
            took_ms = (answered - asked) * 1000  # what the sleep really took (load)
            assert 40 <= sent_ago - received_ago <= took_ms + 10  # jiffies: 4 ms steps


@pytest.mark.parametrize("call", ["route_leases", "heartbeat"])
def test_a_request_is_timed_apart_from_the_worker_loop_s_other_devices(call: str) -> None:
    path = {"route_leases": LEASE_PATH, "heartbeat": HEARTBEAT_PATH}[call]
    device_ms: list[float] = []
    loop_ms: list[float] = []
    wall_only: list[int] = []
    counted: list[int] = []

    async def main() -> None:
        with _Server() as server:
            fake = _Client(f"http://127.0.0.1:{server.port}")
            try:
                await getattr(fake, call)()  # a kept-alive connection, as a device holds one
                timer = RequestTimer(
                    cast(ControlClient, fake), path, device_ms, loop_ms,
                    lambda: wall_only.append(1), lambda: counted.append(1),
                )  # fmt: skip
                fake.request_replica = timer.request_replica  # type: ignore[method-assign]
                timed = timer.timed(getattr(fake, call))
                if call == "heartbeat":
                    await fake.route_leases()  # another path: passed through, untimed
                # Another device's work blocks the shared loop while the answer is on its way.
                asyncio.get_running_loop().call_later(0.02, time.sleep, STALL)
                await timed()
            finally:
                await fake._session.close()

    asyncio.run(main())
    assert counted == [1] and wall_only == [], "one request timed, by the kernel's ages"
    (device,), (loop,) = device_ms, loop_ms
    assert loop >= STALL * 1000  # the wall time in the worker holds the stall
    assert device >= ANSWER_AFTER * 1000 - 8  # the device's: the answer's time ...
    assert device <= loop - STALL * 1000 / 2  # ... without the stall (or most of it)
