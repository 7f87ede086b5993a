"""Route tests the operator starts from the console, and the per-hop RTTs of a route.

**Route tests.**  The console cannot reach a node (nodes talk to the control plane, not
the other way round), so a test is queued here (``POST /v1/admin/nodes/{id}/route-tests``),
handed to the node in its next heartbeat reply (``route_tests``), run there exactly as
``accessfabric diag route`` runs it (:mod:`accessfabric.node.admin.diagnostics`), and its result
posted back (``POST /v1/route-tests/{test_id}``, node-signed); the console polls
``GET /v1/admin/route-tests/{test_id}``.  Soft state of the replica that queued it, like
the event timeline: bounded (:data:`MAX_TESTS`, :data:`MAX_PENDING_PER_NODE`), forgotten
after :data:`TEST_TTL`.  A node heartbeating to another replica does not see it (the
console then reports the test as expired).

**Per-hop RTT** (:func:`hop_links`).  Each hop of a route measures the RTT of its session to
the next one (session SRTT) and reports it in its heartbeat (``peers``); a route's hop ``k``
is the link from hop ``k-1`` to hop ``k``, as the node before it (else the node after it)
last reported.  ``POST /v1/leases/route/hops`` gives them to the source of a lease it holds,
for ``diag route`` (hop 1 it measures itself, with PINGs).
"""

from __future__ import annotations

import itertools
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from accessfabric.control.server.heartbeats import HeartbeatTable

MAX_TESTS = 256
MAX_PENDING_PER_NODE = 4
TEST_TTL = 120.0
"""Seconds a test is kept (queued, running or done)."""
MAX_RESULT_ROUTES = 8


class RouteTestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(slots=True, kw_only=True)
class RouteTest:
    test_id: str
    node_id: str
    service: str
    traffic_class: str
    created_at: float
    state: str = "queued"
    """``queued`` (waiting for the node's heartbeat), ``running``, ``done``, ``expired``."""
    delivered_at: float | None = None
    finished_at: float | None = None
    result: dict[str, Any] | None = field(default=None)

    def to_json(self, now: float) -> dict[str, Any]:
        state = self.state
        if state in ("queued", "running") and now - self.created_at > TEST_TTL / 2:
            state = "expired"  # the node never answered (another replica, or gone)
        return {
            "test_id": self.test_id,
            "node_id": self.node_id,
            "service": self.service,
            "traffic_class": self.traffic_class,
            "state": state,
            "created_at": self.created_at,
            "delivered_at": self.delivered_at,
            "finished_at": self.finished_at,
            "result": self.result,
        }


class RouteTests:
    def __init__(self) -> None:
        self._tests: OrderedDict[str, RouteTest] = OrderedDict()

    def _sweep(self, now: float) -> None:
        while self._tests:
            oldest = next(iter(self._tests.values()))
            if len(self._tests) <= MAX_TESTS and now - oldest.created_at <= TEST_TTL:
                return
            self._tests.popitem(last=False)

    def create(self, node_id: str, service: str, traffic_class: str, now: float) -> RouteTest:
        self._sweep(now)
        pending = [t for t in self._tests.values() if t.node_id == node_id and t.state != "done"]
        if len(pending) >= MAX_PENDING_PER_NODE:
            raise RouteTestError(
                "too_many_tests", f"{node_id} has {len(pending)} route tests under way already"
            )
        test = RouteTest(
            test_id=secrets.token_hex(8), node_id=node_id, service=service,
            traffic_class=traffic_class, created_at=now,
        )  # fmt: skip
        self._tests[test.test_id] = test
        return test

    def get(self, test_id: str, now: float) -> RouteTest | None:
        self._sweep(now)
        return self._tests.get(test_id)

    def take(self, node_id: str, now: float) -> list[dict[str, str]]:
        """The queued tests of ``node_id`` (for its heartbeat reply), now ``running``."""
        if not self._tests:
            return []
        out = []
        for test in self._tests.values():
            if test.node_id == node_id and test.state == "queued":
                test.state, test.delivered_at = "running", now
                out.append(
                    {"test_id": test.test_id, "service": test.service,
                     "traffic_class": test.traffic_class}
                )  # fmt: skip
        return out

    def finish(self, node_id: str, test_id: str, result: dict[str, Any], now: float) -> None:
        test = self._tests.get(test_id)
        if test is None or test.node_id != node_id:
            raise RouteTestError("unknown_test", f"no route test {test_id} for this node")
        if test.state == "done":
            raise RouteTestError("test_done", f"route test {test_id} has its result already")
        test.state, test.finished_at, test.result = "done", now, _bounded(result)


def _bounded(result: dict[str, Any]) -> dict[str, Any]:
    """Keep the keys the console shows (the body is already capped by the API's limit)."""
    routes = result.get("routes")
    kept = routes[:MAX_RESULT_ROUTES] if isinstance(routes, list) else []
    error = result.get("error")
    return {
        "routes": [r for r in kept if isinstance(r, dict)],
        "error": str(error)[:512] if error else "",
    }


def hop_links(
    heartbeats: HeartbeatTable, hops: tuple[str, ...], now: float
) -> list[dict[str, Any]]:
    """Per link of ``hops`` (hop ``k`` = hops[k-1] -> hops[k]): the RTT its ends last
    reported, who measured it and how old that report is (``None`` when neither did)."""
    links = []
    for index, (src, dst) in enumerate(itertools.pairwise(hops), start=1):
        link: dict[str, Any] = {
            "hop": index, "from": src, "to": dst, "rtt_ms": None, "measured_by": None,
            "age_s": None,
        }  # fmt: skip
        for by, other in ((src, dst), (dst, src)):
            state = heartbeats.get(by)
            if state is None:
                continue
            peer = next((p for p in state.facts.peers if p.node_id == other), None)
            if peer is not None:
                link.update(
                    rtt_ms=peer.rtt_ms, measured_by=by,
                    age_s=round(max(0.0, now - state.received_at), 1),
                )  # fmt: skip
                break
        links.append(link)
    return links
