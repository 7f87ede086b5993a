"""A node's metrics and admin endpoints: ``/metrics`` (Prometheus) and the status socket.

* :class:`NodeObservability` tracks every session the node accepts or dials
  (``FabricMetrics.track`` / ``finished``), counts authentication failures,
  exports route execution (switches by reason, recovery times, route health),
  the data plane's refused streams by reason, the relay's accounting
  (``accessfabric_relay_*``, :mod:`accessfabric.node.relaying.relay_metrics`), and answers
  ``status``.
* ``metrics_listen = "127.0.0.1:9464"`` serves ``GET /metrics`` over aiohttp.
* The admin socket (a unix socket, mode 0600, ``admin_socket`` in the config,
  default ``<key>.admin.sock`` beside the key) serves ``GET /status``: JSON
  with sessions, streams, routes, leases, services, forwards and relay, which
  ``accessfabric status`` prints as tables.  Components add sections with
  :meth:`NodeObservability.add_section`; a section that answers ``None`` is left out.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from accessfabric.carriers.base import CarrierStatsProbe
from accessfabric.errors import ErrorCode
from accessfabric.node.dialing.address import HostPort
from accessfabric.node.relaying.relay_metrics import (
    RelayMetrics,
    RelayView,
    relay_status,
    relayed_anything,
)
from accessfabric.node.routing.route_switches import RouteSwitches
from accessfabric.node.serving.admission import Admission
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.observe.carrier_loss import CarrierLossMetrics
from accessfabric.observe.metrics import FabricMetrics, new_registry
from accessfabric.session import events as ev

AUTH_FAILURES = frozenset({ErrorCode.AUTHENTICATION_FAILED, ErrorCode.IDENTITY_MISMATCH})

StatusSection = Callable[[], Any]
DiagnosticHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RouteView(Protocol):
    """What observability reads of the node's route execution (``RouteManager``)."""

    switches: RouteSwitches
    failed: int

    def observations(self) -> list[dict[str, object]]: ...


class _RouteCollector(Collector):
    def __init__(self, routes: RouteView) -> None:
        self.routes = routes

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "accessfabric_route_failures",
            "Streams whose every route failed.",
            value=self.routes.failed,
        )
        routes = self.routes.observations()
        healthy = GaugeMetricFamily(
            "accessfabric_routes", "Leased routes by health.", labels=["healthy"]
        )
        for state in (True, False):
            count = sum(1 for r in routes if bool(r.get("healthy")) is state)
            healthy.add_metric([str(state).lower()], count)
        yield healthy


class _SampleCollector(Collector):
    """Counters given as ``(name_total, labels, value)`` samples (the dialer's)."""

    def __init__(self, samples: Callable[[], list[tuple[str, dict[str, str], float]]]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for name, labels, value in self.samples():
            base = name.removesuffix("_total")
            family = families.get(base)
            if family is None:
                family = families[base] = CounterMetricFamily(
                    base, f"Endpoint dialing: {base.rsplit('_', 1)[-1]}.", labels=sorted(labels)
                )
            family.add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()


class _RefusedCollector(Collector):
    """``accessfabric_streams_refused_total{reason}`` from ``DataPlane.refused`` (bounded)."""

    def __init__(self, refused: Callable[[], dict[str, int]]) -> None:
        self.refused = refused

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "accessfabric_streams_refused",
            "Streams the data plane refused, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(self.refused().items()):
            family.add_metric([reason], count)
        yield family


class _AdmissionCollector(Collector):
    """``accessfabric_connections_refused_total{reason}`` and
    ``accessfabric_pending_handshakes`` from the node's :class:`Admission`."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "accessfabric_connections_refused",
            "Connections and sessions refused by the flood defences, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(self.admission.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily(
            "accessfabric_pending_handshakes",
            "Accepted connections whose TLS handshake has not ended.",
            value=self.admission.pending,
        )
        tenants = self.admission.tenants
        sessions = GaugeMetricFamily(
            "accessfabric_tenant_sessions",
            "Accepted sessions each tenant holds (node/tenant_admission.py).",
            labels=["tenant"],
        )
        for tenant, count in tenants.counts().items():
            sessions.add_metric([tenant or "-"], count)
        yield sessions
        refused_sessions = CounterMetricFamily(
            "accessfabric_tenant_sessions_refused",
            "Sessions refused by the per-tenant session cap.",
            labels=["tenant"],
        )
        for tenant, count in sorted(tenants.refused.items()):
            refused_sessions.add_metric([tenant or "-"], count)
        yield refused_sessions


class NodeObservability:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.metrics = FabricMetrics()
        self.registry = new_registry(self.metrics)
        self.carrier_loss = CarrierLossMetrics(self._live_probes)
        self.registry.register(self.carrier_loss)
        self.started = time.time()
        self._sessions: dict[SessionConnection, tuple[str, float]] = {}
        self._sections: dict[str, StatusSection] = {}
        self._diagnostics: dict[str, DiagnosticHandler] = {}
        self._runners: list[web.AppRunner] = []
        self._routes: RouteView | None = None
        self.metrics_url = ""
        self.admin_path: Path | None = None
        self.admin_actions: dict[str, Any] = {}
        """POST routes of the admin socket (path -> aiohttp handler), set before start."""
        self.node_name = ""
        self.peer_names: dict[str, str] = {}
        """Node id -> a name for people (``[[peers]] name``): a column in ``status``."""
        self.ready = False
        """``/readyz``: set by the runtime once started, cleared when it drains."""
        self.not_ready_reason = "starting"

    # ------------------------------------------------------------ feeding

    def track(self, connection: SessionConnection) -> None:
        """Count a session from its creation until it ends (``LocalNode.on_new_connection``)."""
        if connection in self._sessions:
            return
        self._sessions[connection] = ("out" if connection.info.dialer else "in", time.time())
        connection.on_event.append(self._on_event)
        self.metrics.track(connection.session, connection.info.kind)
        connection.when_closed(lambda _ended: self._finished(connection))

    def _finished(self, connection: SessionConnection) -> None:
        if self._sessions.pop(connection, None) is None:
            return  # counted out already (``close``)
        self.metrics.finished(connection.session)
        if connection.stats_probe is not None:
            self.carrier_loss.finished(connection.stats_probe, connection.info.kind)

    def _live_probes(self) -> list[tuple[CarrierStatsProbe, str]]:
        return [
            (connection.stats_probe, connection.info.kind)
            for connection in self._sessions
            if connection.stats_probe is not None
        ]

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.SessionTerminated) and event.error_code in AUTH_FAILURES:
            self.auth_failure("remote" if event.remote else "local")

    def auth_failure(self, reason: str) -> None:
        self.metrics.auth_failures[reason] += 1

    def watch_routes(self, routes: RouteView) -> None:
        """Export route switches and health, and show the route table in ``status``."""
        self._routes = routes
        self.registry.register(_RouteCollector(routes))
        self.registry.register(routes.switches)

    def watch_samples(self, samples: Callable[[], list[tuple[str, dict[str, str], float]]]) -> None:
        """Export counters that arrive as samples (``peer_dialer.dial_metric_samples``)."""
        self.registry.register(_SampleCollector(samples))

    def watch_refusals(self, refused: Callable[[], dict[str, int]]) -> None:
        """Export the data plane's refused streams by reason (``DataPlane.refused``)."""
        self.registry.register(_RefusedCollector(refused))

    def watch_admission(self, admission: Admission) -> None:
        """Export the flood defences' refusals; show them in ``status`` once there are any."""
        self.registry.register(_AdmissionCollector(admission))

        def section() -> dict[str, Any] | None:
            if not admission.refused:
                return None
            return {
                "pending_handshakes": admission.pending,
                "refused": [
                    {"reason": reason, "count": count}
                    for reason, count in sorted(admission.refused.items())
                ],
            }

        self.add_section("admission", section)

    def watch_relay(self, relay: RelayView, *, always: bool) -> None:
        """Export the relay's accounting; show the ``relay`` section ``always`` (a node with
        the relay role) or once the relay claimed, refused or skipped a stream."""
        self.registry.register(RelayMetrics(relay))

        def section() -> dict[str, Any] | None:
            return relay_status(relay) if always or relayed_anything(relay) else None

        self.add_section("relay", section)

    def connections(self) -> list[SessionConnection]:
        """Every tracked session (dialled and accepted)."""
        return list(self._sessions)

    def add_section(self, name: str, section: StatusSection) -> None:
        self._sections[name] = section

    def add_diagnostic(self, name: str, handler: DiagnosticHandler) -> None:
        """``GET /diag/<name>`` on the admin socket (``accessfabric diag``)."""
        self._diagnostics[name] = handler

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        sessions = []
        streams = []
        for connection, (direction, since) in list(self._sessions.items()):
            snapshot = connection.session.metrics()
            peer = connection.session.peer_node_id or "-"
            sessions.append(
                {
                    "peer": peer,
                    "name": self.peer_names.get(peer, "-"),
                    "direction": direction,
                    "carrier": connection.info.kind,
                    "address": str(connection.info.peer_address or "-"),
                    "state": snapshot.state,
                    "age_s": round(time.time() - since, 1),
                    "srtt_ms": None if snapshot.srtt is None else round(snapshot.srtt * 1e3, 3),
                    "bytes_out": sum(snapshot.bytes_out_by_class.values()),
                    "bytes_in": sum(snapshot.bytes_in_by_class.values()),
                    "streams": len(snapshot.streams),
                    "credit_stalls": snapshot.credit_stalls,
                    "session_credit_stalls": snapshot.session_credit_stalls,
                    "session_stall_s": round(snapshot.session_credit_stall_seconds, 3),
                    "unread": snapshot.unread_bytes,
                    "peer_pressure": None
                    if snapshot.peer_pressure is None
                    else list(snapshot.peer_pressure),
                    "pressure_cap": None
                    if snapshot.pressure_rate_cap is None
                    else round(snapshot.pressure_rate_cap),
                    "pressure_cap_give_ups": snapshot.pressure_cap_give_ups,
                    "pressure_cap_reengages": snapshot.pressure_cap_reengages,
                    "bulk_weight": snapshot.bulk_weight,
                }
            )
            for stream in snapshot.streams:
                streams.append(
                    {
                        "peer": peer,
                        "stream": stream.stream_id,
                        "service": stream.service,
                        "class": stream.traffic_class,
                        "state": stream.state,
                        "bytes_in": stream.bytes_in,
                        "bytes_out": stream.bytes_out,
                        "queued": stream.queued_bytes,
                        "unacked": stream.unacked_bytes,
                        "credit_stalls": stream.credit_stalls,
                        "session_credit_stalls": stream.session_credit_stalls,
                        "stall_s": round(stream.stall_seconds, 3),
                        "unread": stream.unread_bytes,
                    }
                )
        result: dict[str, Any] = {
            "node_id": self.node_id,
            "node_name": self.node_name,
            "uptime_s": round(time.time() - self.started, 1),
            "metrics_url": self.metrics_url,
            "sessions": sessions,
            "streams": streams,
            "routes": self._route_rows(),
            "leases": [],
        }
        for name, section in self._sections.items():
            value = section()
            if value is not None:
                result[name] = value
        return result

    def _route_rows(self) -> list[dict[str, Any]]:
        if self._routes is None:
            return []
        return [
            {
                "route": r.get("route_id"),
                "service": r.get("service"),
                "class": r.get("traffic_class"),
                "rank": r.get("rank") or "-",
                "epoch": r.get("epoch"),
                "path": r.get("hops"),
                "healthy": r.get("healthy"),
                "srtt_ms": r.get("srtt_ms"),
                "stalls": r.get("stalls"),
                "failures": r.get("failures"),
                "last_failure": r.get("last_failure") or "-",
                "last_switch": r.get("last_switch") or "-",
                "recovery_ms": r.get("recovery_ms"),
            }
            for r in self._routes.observations()
        ]

    # ------------------------------------------------------------ serving

    async def start(self, metrics_listen: HostPort | None, admin_socket: Path | None) -> None:
        if metrics_listen is not None:
            app = web.Application()
            app.router.add_get("/metrics", self._metrics)
            self._add_health(app)
            runner = await self._run(app)
            site = web.TCPSite(runner, metrics_listen.host, metrics_listen.port)
            await site.start()
            port = metrics_listen.port
            server = getattr(site, "_server", None)
            for sock in getattr(server, "sockets", None) or ():
                port = sock.getsockname()[1]
            self.metrics_url = f"http://{metrics_listen.host}:{port}/metrics"
        if admin_socket is not None:
            app = web.Application()
            app.router.add_get("/status", self._status)
            self._add_health(app)
            for path, handler in self.admin_actions.items():  # e.g. POST /ping (node/admin/ping.py)
                app.router.add_post(path, handler)
            app.router.add_get("/diag/{name}", self._diag)
            runner = await self._run(app)
            with contextlib.suppress(FileNotFoundError):
                admin_socket.unlink()
            old = os.umask(0o177)
            try:
                await web.UnixSite(runner, str(admin_socket)).start()
            finally:
                os.umask(old)
            os.chmod(admin_socket, 0o600)
            self.admin_path = admin_socket

    async def _run(self, app: web.Application) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _add_health(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)

    async def _healthz(self, _request: web.Request) -> web.Response:
        """Liveness: the node's event loop answers."""
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        """Readiness: started (listening, components up) and not draining."""
        if self.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {self.not_ready_reason}\n")

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _diag(self, request: web.Request) -> web.StreamResponse:
        handler = self._diagnostics.get(request.match_info["name"])
        if handler is None:
            raise web.HTTPNotFound(text="no such diagnostic\n")
        return await handler(request)

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        for connection in list(self._sessions):
            self._finished(connection)
        if self.admin_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.admin_path.unlink()
