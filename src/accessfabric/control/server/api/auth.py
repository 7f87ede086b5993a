"""Authenticating API requests: node-signed requests and the admin bearer token.

Node requests carry ``AF-Node``, ``AF-Timestamp`` and ``AF-Signature``
(:mod:`accessfabric.control.client.requestsig`); operators send ``Authorization: Bearer afadm1_…``.
"""

from __future__ import annotations

from aiohttp import web

from accessfabric.control.client.requestsig import (
    MAC_HEADER,
    NODE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RequestAuthError,
    SignedRequest,
    parse_timestamp,
)
from accessfabric.control.kernel.codec import canonical_node_id
from accessfabric.control.server.api.body import read_body
from accessfabric.control.server.api.context import ApiContext, context
from accessfabric.control.server.api.errors import ApiError
from accessfabric.control.server.api.verifier import VerifierBusy
from accessfabric.control.server.registry import RegisteredNode


def _unauthenticated(code: str, message: str) -> ApiError:
    return ApiError(401, code, message)


def signed_parts(request: web.Request, body: bytes) -> SignedRequest:
    """The auth headers of ``request``: ``AF-Signature`` or (heartbeats) ``AF-MAC``."""
    headers = request.headers
    node_id = headers.get(NODE_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    mac = headers.get(MAC_HEADER)
    if signature is not None and mac is not None:
        raise _unauthenticated(
            "ambiguous_auth", f"send {SIGNATURE_HEADER} or {MAC_HEADER}, not both"
        )
    if node_id is None or timestamp is None or (signature is None and mac is None):
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
        signature=signature or "",
        mac=mac or "",
    )


async def verify_signed(
    ctx: ApiContext, parts: SignedRequest, public_key: bytes, *, urgent: bool = False
) -> None:
    """Timestamp window, signature and replay checks; :class:`ApiError` 401 on failure,
    503 ``verifier_busy`` when too many signatures already wait.  ``urgent``: the
    request may use the verifier's reserve on the loop (a route lease)."""
    plane = ctx.plane
    now = plane.clock()
    if not parts.signature:
        raise _unauthenticated(
            "mac_not_allowed", f"{MAC_HEADER} is accepted on POST /v1/heartbeat only"
        )
    try:
        timestamp_ms = parse_timestamp(parts.timestamp, now, plane.config.request_window)
        signature = await ctx.verifier.verify(public_key, parts, timestamp_ms, urgent=urgent)
        plane.replay.check_and_add(signature, now)
    except RequestAuthError as exc:
        raise _unauthenticated(exc.code, str(exc)) from None
    except VerifierBusy as exc:
        raise ApiError(503, "verifier_busy", f"{exc}; try again") from None


async def authenticate_node(
    request: web.Request, *, urgent: bool = False
) -> tuple[RegisteredNode, bytes]:
    """The enrolled node that signed ``request`` (Ed25519 only), and the request body.
    ``urgent``: the signature may use the verifier's reserve on the loop (a route lease,
    which a device waits for to open a stream)."""
    node, body, _ = await authenticate_heartbeat(request, allow_mac=False, urgent=urgent)
    return node, body


async def authenticate_heartbeat(
    request: web.Request, *, allow_mac: bool = True, urgent: bool = False
) -> tuple[RegisteredNode, bytes, bool]:
    """The enrolled node that signed ``request``, the request body, and whether it was
    authenticated by ``AF-MAC`` (only where ``allow_mac``; else ``mac_not_allowed``)."""
    ctx = context(request)
    body = await read_body(request, ctx.plane.config.max_body_bytes)
    parts = signed_parts(request, body)
    try:
        node_id = canonical_node_id(parts.node_id)
    except (TypeError, ValueError):
        raise _unauthenticated("bad_node_id", f"{NODE_HEADER} is not a node id") from None
    node = await ctx.plane.node_for_request(node_id)  # with replicas: a bounded store read
    if node is None:
        raise _unauthenticated("unknown_node", f"node {node_id} is not enrolled")
    if parts.mac:
        if not allow_mac:
            raise _unauthenticated(
                "mac_not_allowed", f"{MAC_HEADER} is accepted on POST /v1/heartbeat only"
            )
        try:
            ctx.plane.authenticate_mac(node, parts)
        except RequestAuthError as exc:
            raise _unauthenticated(exc.code, str(exc)) from None
        return node, body, True
    await verify_signed(ctx, parts, node.record.public_key, urgent=urgent)
    return node, body, False


def require_admin(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthenticated(
            "admin_required", "this endpoint needs 'Authorization: Bearer <admin token>'"
        )
    if not context(request).plane.admin.check(token.strip()):
        raise _unauthenticated("bad_admin_token", "the admin token is not valid")
