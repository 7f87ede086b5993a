"""Route tests the operator started from the console, run on this node.

The control plane hands them over in a heartbeat reply (``route_tests``:
:mod:`accessfabric.control.server.route_tests`); each runs exactly as ``accessfabric diag route``
(:meth:`NodeDiagnostics.probe_route`, no burst) and its result is posted back
(``POST /v1/route-tests/{test_id}``).  At most :data:`MAX_RUNNING` at once; more in one
reply are dropped (the console shows them as expired).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

from accessfabric.node.admin.diagnostics import NodeDiagnostics
from accessfabric.observe.log_format import log_event
from accessfabric.timeouts import cancel_and_wait
from accessfabric.wire.registry import TrafficClass

if TYPE_CHECKING:
    from accessfabric.control.client.client import ControlClient
    from accessfabric.node.parts import NodeParts

log = logging.getLogger(__name__)

MAX_RUNNING = 2
TEST_ID = re.compile(r"[0-9a-f]{16}")


class RouteTestRunner:
    def __init__(self, runtime: NodeParts, client: ControlClient) -> None:
        self.runtime = runtime
        self.client = client
        self._running: dict[str, asyncio.Task[None]] = {}
        self.done = 0

    def take(self, tests: object) -> None:
        """Start the tests of a heartbeat reply's ``route_tests`` (bad entries are skipped)."""
        if not isinstance(tests, list):
            return
        for item in tests:
            if len(self._running) >= MAX_RUNNING:
                return
            if not isinstance(item, dict):
                continue
            test_id, service = item.get("test_id"), item.get("service")
            try:
                traffic_class = TrafficClass.from_name(str(item.get("traffic_class")))
            except ValueError:
                continue
            if not isinstance(test_id, str) or not TEST_ID.fullmatch(test_id):
                continue
            if not isinstance(service, str) or test_id in self._running:
                continue
            task = asyncio.create_task(self._run(test_id, service, traffic_class))
            self._running[test_id] = task
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._running.items()):
            if running is task:
                del self._running[key]

    async def _run(self, test_id: str, service: str, traffic_class: TrafficClass) -> None:
        log_event(log, "route test", test=test_id, service=service,
                  traffic_class=traffic_class.name.lower())  # fmt: skip
        result: dict[str, Any]
        try:
            probes = await NodeDiagnostics(self.runtime).probe_route(service, traffic_class)
            result = {"routes": probes}
        except ConnectionError as error:  # no usable route lease: say why
            result = {"routes": [], "error": str(error)}
        try:
            await self.client.request("POST", f"/v1/route-tests/{test_id}", result)
            self.done += 1
        except Exception as error:  # the control plane may be gone meanwhile
            log_event(log, "route test result not delivered", logging.WARNING,
                      test=test_id, error=str(error))  # fmt: skip

    async def close(self) -> None:
        await cancel_and_wait(list(self._running.values()))
