"""The control plane's HTTP server: the aiohttp application and how it is run.

:func:`build_app` wires the handlers of :mod:`accessfabric.control.api` to a
:class:`~accessfabric.control.plane.ControlPlane`; :class:`ControlServer` runs it on a
host and port with a periodic tick (heartbeat persistence, service leader election) and
stops cleanly.  ADR 0008 says why aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from accessfabric.control.api import admin_handlers, node_handlers
from accessfabric.control.api.console_handlers import add_console_routes
from accessfabric.control.api.context import CONTEXT, ApiContext
from accessfabric.control.api.errors import error_middleware
from accessfabric.control.api.replica_guard import replica_guard
from accessfabric.control.api.schema import openapi_document
from accessfabric.control.api.verifier import BatchVerifier
from accessfabric.control.metrics import ControlMetrics
from accessfabric.control.plane import ControlPlane
from accessfabric.control.store.base import StoreError

_log = logging.getLogger("accessfabric.control.server")
DEFAULT_TICK = 0.5


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
        middlewares=[metrics.middleware, error_middleware, replica_guard],
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
    router.add_post("/v1/leases/route", node_handlers.route_leases)
    router.add_post("/v1/services/{service}/replicas", node_handlers.register_replica)
    router.add_delete("/v1/services/{service}/replicas", node_handlers.deregister_replica)
    router.add_get("/v1/services/{service}/leases", node_handlers.service_leases)
    router.add_get("/v1/admin/nodes", admin_handlers.list_nodes)
    router.add_post("/v1/admin/tokens", admin_handlers.create_token)
    router.add_post("/v1/admin/nodes/{node_id}/revoke-role", admin_handlers.revoke_role)
    router.add_get("/v1/admin/services", admin_handlers.list_services)
    router.add_get("/v1/admin/tokens", admin_handlers.list_tokens)
    router.add_delete("/v1/admin/tokens/{token_id}", admin_handlers.revoke_token)
    router.add_delete("/v1/admin/nodes/{node_id}", admin_handlers.remove_node)
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
    ) -> None:
        self.plane = plane
        self.host = host
        self.port = port
        self._tick_interval = tick_interval
        self._runner = web.AppRunner(
            build_app(plane, verify_threads=verify_threads), access_log=None
        )
        self._ticker: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Load state, listen, start ticking.  ``port=0`` picks a free port (see ``port``)."""
        self.plane.load()
        refresh = getattr(self.plane.store, "refresh_leases", None)
        if callable(refresh):
            refresh()  # holders could not keep alive while nobody served
        await self._runner.setup()
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
