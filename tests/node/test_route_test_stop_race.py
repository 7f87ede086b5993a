"""A route test stopped in the loop step its first hop's session arrives stops (ADR 0067).

The control link's ``close`` (node stop) cancels the running route tests and waits for
them.  With 3.11's ``asyncio.wait_for`` around the session, a cancel landing as the
session arrived was lost: the probe went on (PINGs, the end-to-end probe, the next
route: tens of seconds with real timeouts), posted its result, and the stop waited.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from accessfabric.node.routing.route_test_runner import RouteTestRunner
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until


class Connection:
    def __init__(self) -> None:
        self.pings = 0

    async def ping(self) -> float:
        self.pings += 1
        await asyncio.sleep(0.001)
        return 0.001


class Routes:
    def __init__(self) -> None:
        self.route = SimpleNamespace(
            route_id=7, first_hop="relay", lease=SimpleNamespace(hops=("laptop", "relay", "host"))
        )

    async def routes(self, service: str, traffic_class: TrafficClass) -> list[Any]:
        return [self.route]

    async def open_on_route(self, route: Any, service: str, traffic_class: TrafficClass) -> Any:
        raise ConnectionError("no stream in this test")


class Peers:
    """The first hop's session; ``stop`` runs in the loop step it is handed over."""

    def __init__(self) -> None:
        self.connection = Connection()
        self.stop: list[Any] = []
        self.stopping: list[asyncio.Task[None]] = []

    async def session(self, node_id: str) -> Connection:
        await asyncio.sleep(0)
        self.stopping.append(asyncio.get_running_loop().create_task(self.stop[0]()))
        return self.connection


class Client:
    def __init__(self) -> None:
        self.posted: list[str] = []

    async def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.posted.append(path)
        return {}


async def test_a_stop_landing_as_the_first_hops_session_arrives_ends_the_route_test() -> None:
    peers, client = Peers(), Client()
    runtime = SimpleNamespace(routes=Routes(), peers=peers, control_client=None)
    runner = RouteTestRunner(runtime, client)  # type: ignore[arg-type]
    peers.stop.append(runner.close)
    runner.take([{"test_id": "0123456789abcdef", "service": "web", "traffic_class": "bulk"}])
    await until(lambda: peers.stopping, what="the route test asked for its first hop")
    await asyncio.wait_for(peers.stopping[0], 5.0)  # close() returned
    assert client.posted == [], "the route test went on after it was cancelled"
    assert runner.done == 0
