"""Every error the API returns: JSON ``{"error": {"status", "code", "message"}}``.

The middleware turns :class:`ApiError` and aiohttp's own HTTP errors (404, 405, 413) into
that shape; anything else is a bug and answers 500 with no detail (and is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

_log = logging.getLogger("accessfabric.control.server.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """A request the API refuses, with its HTTP status and a stable ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


def bad_request(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def error_response(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"status": status, "code": code, "message": message}}
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "request body too large"
        return error_response(exc.status, code, message)
    except Exception:
        _log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error (logged on the control plane)")
