"""The console's aiohttp application: login, pages, JSON for the live views, actions.

Every path but ``/login`` and the stylesheet needs a session cookie
(:mod:`accessfabric.console.sessions`); pages redirect to ``/login``, ``/api/*`` answers
401.  Actions are POSTs that must carry the session's CSRF token and must not come from
another site (``Origin`` or ``Sec-Fetch-Site``).  Every response carries a strict Content
Security Policy (no inline script, nothing from another origin) and ``no-store``.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from accessfabric.console import pages
from accessfabric.console.control_api import ControlApi, ControlApiError
from accessfabric.console.sessions import COOKIE, ConsoleSession, LoginLimiter, SessionSigner
from accessfabric.identity.node_id import parse_node_id

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_BODY = 16 * 1024
PUBLIC_PATHS = frozenset({"/login", "/static/console.css"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make form POSTs send Origin: null
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    """The console's state: the control API client, the session signer, who serves."""

    def __init__(
        self, api: ControlApi, signer: SessionSigner, *, served_by: str = "", tls: bool = False
    ) -> None:
        self.api = api
        self.signer = signer
        self.served_by = served_by
        self.tls = tls
        self.limiter = LoginLimiter()

    # ---------------------------------------------------------------- middleware

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await self._guarded(request, handler)
        except web.HTTPException as exc:
            response = exc
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        if request.method == "POST" and self._cross_site(request):
            raise web.HTTPForbidden(text="cross-site request refused\n")
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        session = self.signer.check(request.cookies.get(COOKIE))
        if session is None:
            if request.path.startswith("/api/") or request.method == "POST":
                raise web.HTTPUnauthorized(text="log in first\n")
            raise web.HTTPSeeOther("/login")
        if request.method == "POST":
            form = await request.post()
            sent = form.get("csrf")
            if not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
                raise web.HTTPForbidden(text="missing or wrong CSRF token\n")
        request[SESSION_KEY] = session
        return await handler(request)

    @staticmethod
    def _cross_site(request: web.Request) -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return True
        origin = request.headers.get("Origin")
        if origin is None:
            return False
        return origin != f"{request.scheme}://{request.host}"

    # ---------------------------------------------------------------- pages

    def _page(self, request: web.Request, title: str, body: str, active: str) -> web.Response:
        session: ConsoleSession = request[SESSION_KEY]
        html = pages.layout(title, body, csrf=session.csrf, served_by=self.served_by, active=active)
        return web.Response(text=html, content_type="text/html")

    async def _fetch(self, path: str) -> dict[str, Any]:
        try:
            return await self.api.get(path)
        except ControlApiError as exc:
            raise web.HTTPBadGateway(text=f"control plane: {exc.code}: {exc}\n") from None

    async def login_form(self, request: web.Request) -> web.Response:
        return web.Response(
            text=pages.login_page(served_by=self.served_by), content_type="text/html"
        )

    async def login(self, request: web.Request) -> web.Response:
        client = request.remote or "-"
        now = time.monotonic()
        if not self.limiter.allowed(client, now):
            page = pages.login_page("Too many failed logins; wait a minute.", self.served_by)
            return web.Response(status=429, text=page, content_type="text/html")
        form = await request.post()
        token = str(form.get("token", ""))[:256].strip()
        try:
            ok = bool(token) and await self.api.token_is_admin(token)
        except ControlApiError as exc:
            return web.Response(
                status=502, text=pages.login_page(f"Control plane: {exc}", self.served_by),
                content_type="text/html",
            )  # fmt: skip
        if not ok:
            self.limiter.failed(client, now)
            return web.Response(
                status=401, text=pages.login_page("That is not an admin token.", self.served_by),
                content_type="text/html",
            )  # fmt: skip
        cookie, _ = self.signer.issue()
        response = web.HTTPSeeOther("/nodes")
        response.set_cookie(
            COOKIE, cookie, max_age=int(self.signer.ttl), httponly=True, samesite="Strict",
            secure=self.tls, path="/",
        )  # fmt: skip
        return response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    async def index(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/nodes")

    async def nodes(self, request: web.Request) -> web.Response:
        fleet = await self._fetch("/v1/admin/fleet")
        session: ConsoleSession = request[SESSION_KEY]
        return self._page(
            request, "Nodes", pages.nodes_page(fleet["nodes"], session.csrf), "/nodes"
        )

    async def routes(self, request: web.Request) -> web.Response:
        document = await self._fetch("/v1/admin/routes")
        session: ConsoleSession = request[SESSION_KEY]
        body = pages.routes_page(document["routes"], session.csrf)
        return self._page(request, "Routes", body, "/routes")

    async def route_test_page(self, request: web.Request) -> web.Response:
        test_id = _test_id(request)
        test = await self._fetch(f"/v1/admin/route-tests/{test_id}")
        return self._page(request, "Route test", pages.route_test_page(test), "/routes")

    async def services(self, request: web.Request) -> web.Response:
        document = await self._fetch("/v1/admin/service-leases")
        body = pages.services_page(document["services"])
        return self._page(request, "Services", body, "/services")

    async def traffic(self, request: web.Request) -> web.Response:
        return self._page(request, "Traffic", pages.traffic_page(), "/traffic")

    async def streams(self, request: web.Request) -> web.Response:
        document = await self._fetch("/v1/admin/streams")
        body = pages.streams_page(document["nodes"])
        return self._page(request, "Streams", body, "/streams")

    async def relays(self, request: web.Request) -> web.Response:
        document = await self._fetch("/v1/admin/relays")
        return self._page(request, "Relays", pages.relays_page(document["relays"]), "/relays")

    async def events(self, request: web.Request) -> web.Response:
        document = await self._fetch("/v1/admin/events")
        return self._page(request, "Events", pages.events_page(document["events"]), "/events")

    async def tokens(self, request: web.Request) -> web.Response:
        session: ConsoleSession = request[SESSION_KEY]
        return self._page(request, "Tokens", pages.tokens_page(session.csrf), "/tokens")

    # ---------------------------------------------------------------- actions

    async def create_token(self, request: web.Request) -> web.Response:
        session: ConsoleSession = request[SESSION_KEY]
        form = await request.post()
        try:
            body = {
                "tenant": str(form.get("tenant", "")),
                "roles": [str(r) for r in form.getall("roles", [])],
                "ttl_s": float(str(form.get("ttl_s", "3600"))),
                "uses": int(str(form.get("uses", "1"))),
            }
            created = await self.api.post("/v1/admin/tokens", body)
        except ValueError:
            page = pages.tokens_page(session.csrf, error="lifetime and uses must be numbers")
            return self._page(request, "Tokens", page, "/tokens")
        except ControlApiError as exc:
            page = pages.tokens_page(session.csrf, error=f"refused: {exc.code}: {exc}")
            return self._page(request, "Tokens", page, "/tokens")
        log.info("console: token created for tenant %s", created.get("tenant"))
        return self._page(request, "Tokens", pages.tokens_page(session.csrf, created), "/tokens")

    async def revoke_role(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            node_id = parse_node_id(request.match_info["node_id"])
        except ValueError:
            raise web.HTTPBadRequest(text="not a node id\n") from None
        try:
            await self.api.post(
                f"/v1/admin/nodes/{node_id}/revoke-role", {"role": str(form.get("role", ""))}
            )
        except ControlApiError as exc:
            raise web.HTTPConflict(text=f"refused: {exc.code}: {exc}\n") from None
        raise web.HTTPSeeOther("/nodes")

    async def drain(self, request: web.Request) -> web.Response:
        """Drain the node (``undrain=1``: end its drain) through the control API."""
        form = await request.post()
        try:
            node_id = parse_node_id(request.match_info["node_id"])
        except ValueError:
            raise web.HTTPBadRequest(text="not a node id\n") from None
        path = f"/v1/admin/nodes/{node_id}/drain"
        undrain = form.get("undrain") == "1"
        try:
            await (self.api.delete(path) if undrain else self.api.post(path, {}))
        except ControlApiError as exc:
            raise web.HTTPConflict(text=f"refused: {exc.code}: {exc}\n") from None
        log.info("console: node %s %s", node_id, "undrained" if undrain else "drained")
        raise web.HTTPSeeOther("/nodes")

    async def start_route_test(self, request: web.Request) -> web.Response:
        """Queue ``diag route`` on the route's source; show the test's page."""
        form = await request.post()
        try:
            node_id = parse_node_id(str(form.get("source", "")))
        except ValueError:
            raise web.HTTPBadRequest(text="not a node id\n") from None
        body = {
            "service": str(form.get("service", ""))[:64],
            "traffic_class": str(form.get("class", "interactive"))[:16],
        }
        try:
            test = await self.api.post(f"/v1/admin/nodes/{node_id}/route-tests", body)
        except ControlApiError as exc:
            raise web.HTTPConflict(text=f"refused: {exc.code}: {exc}\n") from None
        log.info("console: route test %s queued on %s", test.get("test_id"), node_id)
        raise web.HTTPSeeOther(f"/route-tests/{test['test_id']}")

    # ---------------------------------------------------------------- live JSON

    async def api_route_test(self, request: web.Request) -> web.Response:
        test_id = _test_id(request)
        return web.json_response(await self._fetch(f"/v1/admin/route-tests/{test_id}"))

    async def api_traffic(self, request: web.Request) -> web.Response:
        return web.json_response(await self._fetch("/v1/admin/traffic"))

    async def api_events(self, request: web.Request) -> web.Response:
        return web.json_response(await self._fetch("/v1/admin/events"))

    async def static(self, request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        if name not in ("console.css", "console.js"):
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name)


SESSION_KEY = "af_console_session"
TEST_ID = re.compile(r"[0-9a-f]{16}")


def _test_id(request: web.Request) -> str:
    test_id = request.match_info["test_id"]
    if not TEST_ID.fullmatch(test_id):
        raise web.HTTPNotFound()
    return test_id


def build_console_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[console.guard], client_max_size=MAX_BODY)
    r = app.router
    r.add_get("/login", console.login_form)
    r.add_post("/login", console.login)
    r.add_post("/logout", console.logout)
    r.add_get("/", console.index)
    r.add_get("/nodes", console.nodes)
    r.add_get("/routes", console.routes)
    r.add_get("/services", console.services)
    r.add_get("/traffic", console.traffic)
    r.add_get("/streams", console.streams)
    r.add_get("/relays", console.relays)
    r.add_get("/events", console.events)
    r.add_get("/tokens", console.tokens)
    r.add_post("/tokens", console.create_token)
    r.add_post("/nodes/{node_id}/revoke-role", console.revoke_role)
    r.add_post("/nodes/{node_id}/drain", console.drain)
    r.add_post("/routes/test", console.start_route_test)
    r.add_get("/route-tests/{test_id}", console.route_test_page)
    r.add_get("/api/route-tests/{test_id}", console.api_route_test)
    r.add_get("/api/traffic", console.api_traffic)
    r.add_get("/api/events", console.api_events)
    r.add_get("/static/{name}", console.static)

    async def _close(app: web.Application) -> None:
        await console.api.close()

    app.on_cleanup.append(_close)
    return app
