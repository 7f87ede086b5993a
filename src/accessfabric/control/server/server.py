"""The control plane's HTTP server: the aiohttp application and how it is run.

:func:`build_app` wires the handlers of :mod:`accessfabric.control.server.api` to a
:class:`~accessfabric.control.server.plane.ControlPlane`; :class:`ControlServer` runs it on a
host and port with a periodic tick (heartbeat persistence, service leader election) and
stops cleanly.  ADR 0008 says why aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter
from typing import Any

from aiohttp import web

from accessfabric.carriers.tls_site import AdmittedTlsSite, ConnectionCap, PeerErrorLog
from accessfabric.control.server.api import admin_handlers, node_handlers, route_test_handlers
from accessfabric.control.server.api.console_handlers import add_console_routes
from accessfabric.control.server.api.context import CONTEXT, ApiContext
from accessfabric.control.server.api.deadline import request_deadline
from accessfabric.control.server.api.errors import error_middleware
from accessfabric.control.server.api.openapi import openapi_document
from accessfabric.control.server.api.replica_guard import replica_guard
from accessfabric.control.server.api.verifier import BatchVerifier
from accessfabric.control.server.head_timer import HeadTimedRunner
from accessfabric.control.server.metrics import ControlMetrics
from accessfabric.control.server.plane import ControlPlane
from accessfabric.control.server.store.base import StoreError
from accessfabric.observe.log_rate import RateLimitedLog

_log = logging.getLogger("accessfabric.control.server.server")
DEFAULT_TICK = 0.5
HEADER_TIMEOUT = 10.0
"""Seconds a connection may take to send a complete request head, from accept or from
the first byte of a later one (slowloris; :mod:`.head_timer`)."""
IDLE_TIMEOUT = 30.0
"""Seconds a kept-alive connection may wait between requests: longer than the heartbeat
interval (10 s), so a node's heartbeats reuse one TLS connection (issue 17, ADR 0037);
the connections it keeps are capped as before (``MAX_CONNECTIONS...``)."""
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64


MAX_PENDING_HANDSHAKES = 1024
MAX_PENDING_HANDSHAKES_PER_ADDRESS = 64
MAX_CONNECTIONS = 4096
"""Connections past their TLS handshake, in total: one more is closed at once."""
MAX_CONNECTIONS_PER_ADDRESS = 256
"""The same from one source address (a NAT'd fleet heartbeats over keep-alive
connections: one each; a node behind a proxy shares the proxy's address)."""


class _HandshakeCaps:
    """Connections whose TLS handshake has not ended, capped in total and per address
    (one more is closed at accept); the refusals logged at a bounded rate."""

    def __init__(self, per_address: int = MAX_PENDING_HANDSHAKES_PER_ADDRESS) -> None:
        self.per_address = per_address
        self.pending: Counter[str] = Counter()
        self.total = 0
        self.refused = 0
        self._log = RateLimitedLog(_log)

    def admit(self, address: str) -> bool:
        if self.total >= MAX_PENDING_HANDSHAKES or self.pending[address] >= self.per_address:
            self.refused += 1
            self._log.log(
                (address, "pending handshakes"), logging.WARNING,
                "connection refused client=%s reason=pending handshakes", address,
                now=time.monotonic(),
            )  # fmt: skip
            return False
        self.total += 1
        self.pending[address] += 1
        return True

    def done(self, address: str, error: str | None) -> None:
        self.total -= 1
        self.pending[address] -= 1
        if self.pending[address] <= 0:
            del self.pending[address]


def _body_limit(max_bytes: int) -> Any:
    """Refuse a request whose Content-Length is over ``max_bytes`` before reading any of
    its body, and close the connection (no draining)."""

    @web.middleware
    async def body_limit(request: web.Request, handler: Any) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_bytes:
            raise web.HTTPRequestEntityTooLarge(
                max_size=max_bytes, actual_size=length, headers={"Connection": "close"}
            )
        response: web.StreamResponse = await handler(request)
        return response

    return body_limit


async def _healthz(request: web.Request) -> web.Response:
    """Liveness: the process and its event loop answer."""
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    """Readiness: the store answers (503 and the reason when it does not)."""
    plane = request.app[CONTEXT].plane
    try:
        revision = plane.store.revision()
    except Exception as error:  # any store failure means: do not send traffic here
        return web.Response(status=503, text=f"not ready: store: {type(error).__name__}\n")
    return web.Response(text=f"ready (store revision {revision})\n")


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def build_app(plane: ControlPlane, *, verify_threads: int = 2) -> web.Application:
    """The API application over ``plane`` (``verify_threads=0`` verifies on the loop)."""
    metrics = ControlMetrics(plane)
    app = web.Application(
        middlewares=[
            metrics.middleware,
            request_deadline,  # every request is answered (ADR 0042)
            error_middleware,
            _body_limit(plane.config.max_body_bytes),
            replica_guard,
        ],
        client_max_size=plane.config.max_body_bytes,
    )
    verifier = BatchVerifier(verify_threads)
    app[CONTEXT] = ApiContext(plane=plane, verifier=verifier)

    async def _close_verifier(app: web.Application) -> None:
        verifier.close()

    app.on_cleanup.append(_close_verifier)
    router = app.router
    router.add_get("/openapi.json", _openapi)
    router.add_get("/healthz", _healthz)  # for load balancers and orchestrators, no auth
    router.add_get("/readyz", _readyz)
    router.add_get("/metrics", metrics.handle)  # Prometheus, not part of the JSON API
    router.add_get("/v1/status", node_handlers.status)
    router.add_post("/v1/enroll", node_handlers.enroll)
    router.add_post("/v1/heartbeat", node_handlers.heartbeat)
    router.add_get("/v1/directory", node_handlers.directory)
    router.add_get("/v1/telemetry", node_handlers.telemetry)
    router.add_post("/v1/leases/route", node_handlers.route_leases)
    router.add_post("/v1/services/{service}/replicas", node_handlers.register_replica)
    router.add_delete("/v1/services/{service}/replicas", node_handlers.deregister_replica)
    router.add_get("/v1/services/{service}/leases", node_handlers.service_leases)
    router.add_get("/v1/admin/nodes", admin_handlers.list_nodes)
    router.add_post("/v1/admin/tokens", admin_handlers.create_token)
    router.add_post("/v1/admin/nodes/{node_id}/revoke-role", admin_handlers.revoke_role)
    router.add_get("/v1/admin/services", admin_handlers.list_services)
    router.add_get("/v1/admin/grants", admin_handlers.list_grants)
    router.add_post("/v1/admin/grants", admin_handlers.create_grant)
    router.add_delete("/v1/admin/grants/{grant_id}", admin_handlers.revoke_grant)
    router.add_get("/v1/admin/tokens", admin_handlers.list_tokens)
    router.add_delete("/v1/admin/tokens/{token_id}", admin_handlers.revoke_token)
    router.add_delete("/v1/admin/nodes/{node_id}", admin_handlers.remove_node)
    router.add_post("/v1/admin/nodes/{node_id}/drain", admin_handlers.drain_node)
    router.add_delete("/v1/admin/nodes/{node_id}/drain", admin_handlers.undrain_node)
    router.add_post("/v1/admin/nodes/{node_id}/route-tests", route_test_handlers.create_route_test)
    router.add_get("/v1/admin/route-tests/{test_id}", route_test_handlers.route_test)
    router.add_post("/v1/route-tests/{test_id}", route_test_handlers.finish_route_test)
    router.add_post("/v1/leases/route/hops", route_test_handlers.route_hops)
    add_console_routes(router)
    return app


class ControlServer:
    """Serves a :class:`ControlPlane` on ``host:port`` until :meth:`stop`."""

    def __init__(
        self,
        plane: ControlPlane,
        host: str = "127.0.0.1",
        port: int = 8600,
        *,
        tick_interval: float = DEFAULT_TICK,
        verify_threads: int = 2,
        ssl_context: ssl.SSLContext | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
        max_pending_handshakes_per_address: int = MAX_PENDING_HANDSHAKES_PER_ADDRESS,
    ) -> None:
        """``ssl_context``: serve HTTPS (``control serve`` always does, but on loopback
        with ``--insecure-http``; :mod:`accessfabric.control.kernel.api_tls`).  Connections
        past TLS are capped (``max_connections``, ``..._per_address``), closed when a
        request head is not complete ``header_timeout`` after accept or after its first
        byte, and closed when idle (no request under way) for ``idle_timeout``."""
        self.plane = plane
        self.host = host
        self.port = port
        self._tick_interval = tick_interval
        self._ssl_context = ssl_context
        self._header_timeout = header_timeout
        self.handshakes = _HandshakeCaps(max_pending_handshakes_per_address)
        self.connections = ConnectionCap(max_connections, max_connections_per_address, logger=_log)
        self._runner = HeadTimedRunner(
            build_app(plane, verify_threads=verify_threads),
            header_timeout=header_timeout,
            access_log=None,
            keepalive_timeout=max(idle_timeout, header_timeout),
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
            lingering_time=0,  # a refused body is not read to the end
            logger=PeerErrorLog(_log),
        )
        self._ticker: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        """Load state, listen, start ticking.  ``port=0`` picks a free port (see ``port``)."""
        self.plane.load()
        refresh = getattr(self.plane.store, "refresh_leases", None)
        if callable(refresh):
            refresh()  # holders could not keep alive while nobody served
        await self._runner.setup()
        site: web.TCPSite
        if self._ssl_context is not None:
            site = AdmittedTlsSite(
                self._runner, self.host, self.port, self._ssl_context, self.handshakes,
                self._header_timeout, established=self.connections,
            )  # fmt: skip
        else:
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick_forever())
        self.plane.start_replication()  # etcd: learn other replicas' writes

    async def _tick_forever(self) -> None:
        store_failing = False
        while True:
            await asyncio.sleep(self._tick_interval)
            if self.plane.unavailable_reason() is not None:
                continue  # the store is out of reach: a tick would only block the loop
            try:
                await self.plane.tick_async()
            except StoreError as exc:  # one line per outage, not one per tick
                if not store_failing:
                    _log.warning("control plane tick: store unavailable: %s", exc)
                store_failing = True
                continue
            except Exception:  # a store hiccup must not end the server
                _log.exception("control plane tick failed")
            store_failing = False

    async def stop(self) -> None:
        await self.plane.stop_replication()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self._runner.cleanup()
        self.plane.heartbeats.flush(force=True)
