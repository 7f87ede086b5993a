"""Reading request bodies: size limit, JSON object, typed fields with clear 400s."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from accessfabric.control.server.api.errors import ApiError, bad_request

BODY_TIMEOUT = 10.0
"""Seconds a client may take to send a request body (a slow body holds a connection)."""


async def read_body(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body (up to ``limit`` bytes: 413 beyond), sent within ``timeout`` (default
    ``BODY_TIMEOUT``; 408 beyond)."""
    timeout = BODY_TIMEOUT if timeout is None else timeout
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(limit + 1 - len(body)):
                body += chunk
                if len(body) > limit:
                    raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the request body took over {timeout:g} s") from None
    return bytes(body)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 ``bad_json`` otherwise."""
    if not body:
        raise bad_request("bad_json", "the request body must be a JSON object")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise bad_request("bad_json", "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_request("bad_json", "the request body must be a JSON object")
    return value


def string_field(document: dict[str, Any], name: str, *, max_length: int = 1024) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise bad_request("bad_field", f"{name}: a non-empty string of <= {max_length} required")
    return value


def int_field(document: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request("bad_field", f"{name}: an integer within {low}..{high} required")
    return value


def number_field(
    document: dict[str, Any], name: str, default: float, low: float, high: float
) -> float:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request("bad_field", f"{name}: a number within {low:g}..{high:g} required")
    return float(value)


def string_list(document: dict[str, Any], name: str, limit: int) -> list[str]:
    value = document.get(name)
    if not isinstance(value, list) or not value or len(value) > limit:
        raise bad_request("bad_field", f"{name}: a list of 1..{limit} strings required")
    if not all(isinstance(item, str) and len(item) <= 64 for item in value):
        raise bad_request("bad_field", f"{name}: a list of 1..{limit} strings required")
    return value
