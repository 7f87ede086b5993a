"""Per-route and per-stream diagnostics of a running node (``accessfabric diag``).

Served on the node's admin socket (0600) as ``GET /diag/streams``,
``GET /diag/route?service=S&class=C&burst=N`` and ``GET /diag/memory?action=A&top=N``
(:mod:`accessfabric.node.admin.memory_diag`).

* :meth:`NodeDiagnostics.streams`: every live stream with its class, credit, bytes,
  queued and unacknowledged bytes, its session's RTT and why it is blocked, if it is:
  ``credit`` (bytes queued, the peer's window used up), ``carrier`` (the carrier's buffer
  is full), ``pacing`` (the delay-based pacer holds the shared classes back), ``scheduler``
  (queued, waiting for its turn), ``-`` (nothing queued).
* :meth:`NodeDiagnostics.probe_route`: on the primary and each alternate route to a
  service: the first hop's session (dial), three PINGs on it (RTT, loss), then a probe
  stream on exactly that route: two bytes (``\\r\\n``) and, with ``burst``, that many zero
  bytes more, timed until the destination acknowledges them end to end.  The bytes reach
  the service (a CRLF is ignored by HTTP servers; use ``burst`` with a service that
  tolerates it); the stream is then reset.  A failure names the hop: the first hop when
  its session or PINGs fail, "beyond hop 1" when a relay refused the route or no ACK came.

  Per-hop RTT (``hop_rtt_ms``, one per link, ``hop_rtt_source`` says where each comes
  from): hop 1 is the PINGs' minimum; every later hop is the RTT the node before it
  measures on its own session to the next (its session SRTT), as it last reported it in a
  heartbeat — asked of the control plane for this route's lease
  (``POST /v1/leases/route/hops``, :mod:`accessfabric.control.server.route_tests`).  Without a
  control plane (static routes) a three-hop route's second hop is end to end minus hop 1,
  and ``beyond_hop1_ms`` is that difference, measured by this probe, on every route.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from accessfabric.errors import ErrorCode, ProtocolError
from accessfabric.node.admin.memory_diag import DEFAULT_TOP, memory_report
from accessfabric.node.streams.connection import session_clock
from accessfabric.node.streams.resumable import ResumableStream
from accessfabric.node.streams.sealed_stream import SealedStream
from accessfabric.timeouts import wait_within
from accessfabric.wire.registry import TrafficClass

if TYPE_CHECKING:
    from accessfabric.control.kernel.leased_route import LeasedRoute
    from accessfabric.node.parts import NodeParts

log = logging.getLogger(__name__)

PINGS = 3
PING_TIMEOUT = 2.0
PROBE_TIMEOUT = 5.0
MAX_BURST = 16 * 1024 * 1024
PROBE_BYTES = b"\r\n"


def _close(stream: ResumableStream | SealedStream) -> None:
    with contextlib.suppress(ConnectionError, ProtocolError):
        stream.reset(ErrorCode.CANCEL)


def blocked_reason(queued: int, credit: int, capacity: int | None, pacing: float) -> str:
    if queued <= 0:
        return "-"
    if credit <= 0:
        return "credit"
    if capacity is not None and capacity <= 0:
        return "carrier"
    if pacing <= 0:
        return "pacing"
    return "scheduler"


class NodeDiagnostics:
    def __init__(self, runtime: NodeParts) -> None:
        self.runtime = runtime

    def streams(self) -> list[dict[str, Any]]:
        rows = []
        now = session_clock()
        for connection in self.runtime.observe.connections():
            if connection.is_closed:
                continue
            session = connection.session
            snapshot = session.metrics()
            transport = getattr(connection, "_transport", None)
            capacity = transport.write_capacity() if transport is not None else None
            pacer = session.pacer
            pacing = float("inf") if pacer is None else pacer.available(now)
            for stream in snapshot.streams:
                rows.append(
                    {
                        "peer": session.peer_node_id or "-",
                        "stream": stream.stream_id,
                        "service": stream.service,
                        "class": stream.traffic_class,
                        "state": stream.state,
                        "credit": stream.credit,
                        "bytes_in": stream.bytes_in,
                        "bytes_out": stream.bytes_out,
                        "queued": stream.queued_bytes,
                        "unacked": stream.unacked_bytes,
                        "rtt_ms": None if snapshot.srtt is None else round(snapshot.srtt * 1e3, 3),
                        "credit_stalls": stream.credit_stalls,
                        "stall_s": round(stream.stall_seconds, 3),
                        "blocked": blocked_reason(
                            stream.queued_bytes, stream.credit, capacity, pacing
                        ),
                    }
                )
        return rows

    async def probe_route(
        self, service: str, traffic_class: TrafficClass, burst: int = 0
    ) -> list[dict[str, Any]]:
        routes = await self.runtime.routes.routes(service, traffic_class)
        return [
            await self._probe(rank, route, service, traffic_class, burst)
            for rank, route in enumerate(routes)
        ]

    async def _probe(
        self, rank: int, route: LeasedRoute, service: str, traffic_class: TrafficClass, burst: int
    ) -> dict[str, Any]:
        hops = list(route.lease.hops)
        result: dict[str, Any] = {
            "rank": rank,
            "route_id": route.route_id,
            "hops": hops,
            "hop_rtt_ms": [],
            "hop_rtt_source": [],
            "beyond_hop1_ms": None,
            "ping_loss": None,
            "end_to_end_ms": None,
            "burst_bytes": burst,
            "burst_mbps": None,
            "ok": False,
            "failing_hop": None,
            "error": "",
        }
        first = route.first_hop
        try:
            connection = await wait_within(self.runtime.peers.session(first), PROBE_TIMEOUT)
        except (OSError, TimeoutError, ConnectionError, ProtocolError) as error:
            result.update(failing_hop=1, error=f"hop 1 ({first}) unreachable: {error}")
            return result
        rtts = []
        for _ in range(PINGS):
            try:
                rtts.append(await wait_within(connection.ping(), PING_TIMEOUT))
            except (TimeoutError, ConnectionError, ProtocolError):
                continue
        result["ping_loss"] = round(1 - len(rtts) / PINGS, 3)
        first_rtt = min(rtts) if rtts else None
        if first_rtt is None:
            result.update(failing_hop=1, error=f"hop 1 ({first}) answered no PING")
            return result
        try:
            stream = await self.runtime.routes.open_on_route(route, service, traffic_class)
        except ConnectionError as error:
            result.update(failing_hop=1, error=f"open on hop 1 failed: {error}")
            return result
        inner = stream.inner if isinstance(stream, SealedStream) else stream
        try:
            end_to_end = await self._acknowledged(stream, inner, PROBE_BYTES)
        except (TimeoutError, ConnectionError, ProtocolError) as error:
            _close(stream)
            beyond = len(hops) > 2
            why = str(error) or "no end-to-end ACK within the probe timeout"
            result.update(
                failing_hop=2 if beyond else 1, error=f"beyond hop 1: {why}" if beyond else why
            )
            return result
        beyond_ms = round(max(0.0, end_to_end - first_rtt) * 1e3, 3)
        hop_rtts: list[float | None] = [round(first_rtt * 1e3, 3)]
        sources = ["ping"]
        links = await self._links(route) if len(hops) > 2 else []
        for hop in range(2, len(hops)):
            link = links[hop - 1] if hop - 1 < len(links) else {}
            rtt = link.get("rtt_ms")
            if isinstance(rtt, int | float) and not isinstance(rtt, bool):
                hop_rtts.append(round(float(rtt), 3))
                sources.append(f"reported by {str(link.get('measured_by'))[:12]}… "
                               f"{link.get('age_s')} s ago")  # fmt: skip
            elif len(hops) == 3:  # the one hop after the first: end to end minus hop 1
                hop_rtts.append(beyond_ms)
                sources.append("end to end minus hop 1")
            else:
                hop_rtts.append(None)
                sources.append("not reported")
        result.update(
            hop_rtt_ms=hop_rtts, hop_rtt_source=sources, beyond_hop1_ms=beyond_ms,
            end_to_end_ms=round(end_to_end * 1e3, 3), ok=True,
        )  # fmt: skip
        if burst:
            try:
                took = await self._acknowledged(stream, inner, bytes(burst))
                result["burst_mbps"] = round(burst * 8 / took / 1e6, 2) if took > 0 else None
            except (TimeoutError, ConnectionError, ProtocolError) as error:
                result["error"] = f"burst not acknowledged (the service may have closed): {error}"
        _close(stream)
        return result

    async def _links(self, route: LeasedRoute) -> list[dict[str, Any]]:
        """Each link of ``route`` as its hops last reported it (control plane), or []."""
        client = self.runtime.control_client
        if client is None:
            return []
        blob = base64.b64encode(route.blob).decode("ascii")
        try:
            reply = await wait_within(
                client.request("POST", "/v1/leases/route/hops", {"lease": blob}),
                PROBE_TIMEOUT,
            )
        except Exception as error:  # unreachable, refused, timed out: hop 1 and e2e only
            log.info("per-hop RTTs unavailable for route %d: %s", route.route_id, error)
            return []
        links = reply.get("links")
        return [x for x in links if isinstance(x, dict)] if isinstance(links, list) else []

    @staticmethod
    async def _acknowledged(
        stream: ResumableStream | SealedStream, inner: ResumableStream, data: bytes
    ) -> float:
        """Write ``data``; seconds until the destination acknowledged everything written."""
        started = time.monotonic()
        stream.write(data)
        await stream.drain()
        deadline = started + PROBE_TIMEOUT
        while inner.unacked > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("no end-to-end ACK within the probe timeout")
            await asyncio.sleep(0.001)
        return time.monotonic() - started


def register_diagnostics(runtime: NodeParts) -> NodeDiagnostics:
    """Serve ``/diag/streams``, ``/diag/route`` and ``/diag/memory`` on the node's admin
    socket."""
    diagnostics = NodeDiagnostics(runtime)

    async def streams(_request: web.Request) -> web.Response:
        return web.json_response({"node_id": runtime.node_id, "streams": diagnostics.streams()})

    async def route(request: web.Request) -> web.Response:
        service = request.query.get("service", "")
        try:
            traffic_class = TrafficClass.from_name(request.query.get("class", "interactive"))
            burst = int(request.query.get("burst", "0"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        if not service or not 0 <= burst <= MAX_BURST:
            raise web.HTTPBadRequest(text=f"service required; burst within 0..{MAX_BURST}\n")
        try:
            probes = await diagnostics.probe_route(service, traffic_class, burst)
        except ConnectionError as exc:  # NoUsableRoute: no lease, control plane refused...
            return web.json_response(
                {"service": service, "class": traffic_class.name.lower(), "routes": [],
                 "error": str(exc)}, status=409,
            )  # fmt: skip
        return web.json_response(
            {"service": service, "class": traffic_class.name.lower(), "routes": probes}
        )

    async def memory(request: web.Request) -> web.Response:
        try:
            top = int(request.query.get("top", str(DEFAULT_TOP)))
            document = memory_report(request.query.get("action", "report"), top)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        return web.json_response({"node_id": runtime.node_id, **document})

    runtime.observe.add_diagnostic("streams", streams)
    runtime.observe.add_diagnostic("route", route)
    runtime.observe.add_diagnostic("memory", memory)
    return diagnostics
