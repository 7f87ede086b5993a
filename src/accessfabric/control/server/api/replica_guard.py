"""503 instead of answers from stale state: a replica that lost its store serves nothing.

A control replica on etcd keeps a cache (registry, heartbeats) equal to the store through
a watch.  While that watch is broken (partition, quorum lost) the cache may be stale, so
every ``/v1/`` request except ``/v1/status`` answers ``503 store_unavailable`` with the
reason; nodes fail over to another replica.  A request that reaches the store and finds
it unreachable (``StoreUnavailableError``) gets the same answer.
"""

from __future__ import annotations

from aiohttp import web

from accessfabric.control.server.api.context import context
from accessfabric.control.server.api.errors import Handler, error_response
from accessfabric.control.server.store.base import StoreUnavailableError

RETRY_AFTER_S = "1"
_OPEN_PATHS = frozenset({"/v1/status"})


def unavailable(message: str) -> web.Response:
    response = error_response(503, "store_unavailable", message)
    response.headers["Retry-After"] = RETRY_AFTER_S
    return response


@web.middleware
async def replica_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/") and request.path not in _OPEN_PATHS:
        reason = context(request).plane.unavailable_reason()
        if reason is not None:
            return unavailable(reason)
    try:
        return await handler(request)
    except StoreUnavailableError as exc:
        return unavailable(f"this control replica cannot reach its store: {exc}")
