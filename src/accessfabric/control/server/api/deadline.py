"""Every API request is answered: a handler still waiting after ``REQUEST_DEADLINE`` seconds
is stopped with ``503 deadline_exceeded`` and where it waited is logged (ADR 0042).

Store calls carry their own deadline (etcd: 2 s each) and a body its read timeout (10 s);
this is the one bound over all of it, for an await nothing else bounds (a future never
resolved).  The log line names the route and the stack at the await that did not return,
so such a hang says where it is the first time it happens (a CI run once waited 300 s for
an enrollment without a trace).  Lines are rate-limited per route.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback

from aiohttp import web

from accessfabric.control.server.api.errors import Handler, error_response
from accessfabric.observe.log_format import log_event
from accessfabric.observe.log_rate import RateLimitedLog

_log = logging.getLogger("accessfabric.control.server.api")
REQUEST_DEADLINE = 30.0
"""Seconds a request may take from its head to its answer (below a client's minute)."""
RETRY_AFTER_S = "1"
_limited = RateLimitedLog(_log)


@web.middleware
async def request_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        async with asyncio.timeout(REQUEST_DEADLINE):
            return await handler(request)
    except TimeoutError as error:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        suppressed = _limited.admit(route, time.monotonic())
        if suppressed is not None:
            log_event(
                _log, "request deadline exceeded", logging.ERROR,
                method=request.method, route=route, deadline_s=REQUEST_DEADLINE,
                suppressed=suppressed,
                waited_at="".join(traceback.format_exception(error)).rstrip(),
            )  # fmt: skip
        response = error_response(
            503, "deadline_exceeded", f"no answer within {REQUEST_DEADLINE:g} s; try again"
        )
        response.headers["Retry-After"] = RETRY_AFTER_S
        return response
