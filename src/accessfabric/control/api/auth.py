"""Authenticating API requests: node-signed requests and the admin bearer token.

Node requests carry ``AF-Node``, ``AF-Timestamp`` and ``AF-Signature``
(:mod:`accessfabric.control.requestsig`); operators send ``Authorization: Bearer afadm1_…``.
"""

from __future__ import annotations

from aiohttp import web

from accessfabric.control.api.body import read_body
from accessfabric.control.api.context import ApiContext, context
from accessfabric.control.api.errors import ApiError
from accessfabric.control.codec import canonical_node_id
from accessfabric.control.registry import RegisteredNode
from accessfabric.control.requestsig import (
    NODE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RequestAuthError,
    SignedRequest,
    parse_timestamp,
)


def _unauthenticated(code: str, message: str) -> ApiError:
    return ApiError(401, code, message)


def signed_parts(request: web.Request, body: bytes) -> SignedRequest:
    headers = request.headers
    node_id = headers.get(NODE_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if node_id is None or timestamp is None or signature is None:
        raise _unauthenticated(
            "unsigned",
            f"this endpoint needs a node-signed request ({NODE_HEADER}, {TIMESTAMP_HEADER}, "
            f"{SIGNATURE_HEADER})",
        )
    return SignedRequest(
        method=request.method,
        path=request.raw_path,
        body=body,
        node_id=node_id,
        timestamp=timestamp,
        signature=signature,
    )


async def verify_signed(ctx: ApiContext, parts: SignedRequest, public_key: bytes) -> None:
    """Timestamp window, signature and replay checks; :class:`ApiError` 401 on failure."""
    plane = ctx.plane
    now = plane.clock()
    try:
        timestamp_ms = parse_timestamp(parts.timestamp, now, plane.config.request_window)
        signature = await ctx.verifier.verify(public_key, parts, timestamp_ms)
        plane.replay.check_and_add(signature, now)
    except RequestAuthError as exc:
        raise _unauthenticated(exc.code, str(exc)) from None


async def authenticate_node(request: web.Request) -> tuple[RegisteredNode, bytes]:
    """The enrolled node that signed ``request``, and the request body."""
    ctx = context(request)
    body = await read_body(request, ctx.plane.config.max_body_bytes)
    parts = signed_parts(request, body)
    try:
        node_id = canonical_node_id(parts.node_id)
    except (TypeError, ValueError):
        raise _unauthenticated("bad_node_id", f"{NODE_HEADER} is not a node id") from None
    node = ctx.plane.registry.get(node_id)
    if node is None:
        raise _unauthenticated("unknown_node", f"node {node_id} is not enrolled")
    await verify_signed(ctx, parts, node.record.public_key)
    return node, body


def require_admin(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthenticated(
            "admin_required", "this endpoint needs 'Authorization: Bearer <admin token>'"
        )
    if not context(request).plane.admin.check(token.strip()):
        raise _unauthenticated("bad_admin_token", "the admin token is not valid")
