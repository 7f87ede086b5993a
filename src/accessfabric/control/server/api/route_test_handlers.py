"""Route tests from the console and per-hop RTTs (:mod:`accessfabric.control.server.route_tests`).

* ``POST /v1/admin/nodes/{node_id}/route-tests`` (admin): queue ``diag route`` on a node;
* ``GET /v1/admin/route-tests/{test_id}`` (admin): its state and result;
* ``POST /v1/route-tests/{test_id}`` (node): the node's result;
* ``POST /v1/leases/route/hops`` (node): per-hop RTTs of a route lease the caller holds.
"""

from __future__ import annotations

import base64
import binascii
import re

from aiohttp import web

from accessfabric.control.kernel.rejections import SignedObjectRejected
from accessfabric.control.kernel.verify import verify_route_lease
from accessfabric.control.kernel.vocabulary import check_name
from accessfabric.control.server.api.admin_handlers import path_node
from accessfabric.control.server.api.auth import authenticate_node, require_admin
from accessfabric.control.server.api.body import parse_json_object, read_body, string_field
from accessfabric.control.server.api.context import context
from accessfabric.control.server.api.errors import ApiError, bad_request
from accessfabric.control.server.route_tests import RouteTestError, hop_links
from accessfabric.wire.registry import TrafficClass

TEST_ID = re.compile(r"[0-9a-f]{16}")


def _test_id(request: web.Request) -> str:
    test_id = request.match_info["test_id"]
    if not TEST_ID.fullmatch(test_id):
        raise bad_request("bad_test_id", "a route test id is 16 hex digits")
    return test_id


async def create_route_test(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    node = path_node(plane, request)
    document = parse_json_object(await read_body(request, plane.config.max_body_bytes))
    try:
        service = check_name("service", string_field(document, "service", max_length=64))
        traffic_class = TrafficClass.from_name(str(document.get("traffic_class", "interactive")))
    except ValueError as exc:
        raise bad_request("bad_field", str(exc)) from None
    try:
        test = plane.route_tests.create(
            node.node_id, service, traffic_class.name.lower(), plane.clock()
        )
    except RouteTestError as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    return web.json_response(test.to_json(plane.clock()), status=201)


async def route_test(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    test = plane.route_tests.get(_test_id(request), plane.clock())
    if test is None:
        raise ApiError(404, "unknown_test", "no such route test (or it expired)")
    return web.json_response(test.to_json(plane.clock()))


async def finish_route_test(request: web.Request) -> web.Response:
    plane = context(request).plane
    node, body = await authenticate_node(request)
    test_id = _test_id(request)
    document = parse_json_object(body)
    try:
        plane.route_tests.finish(node.node_id, test_id, document, plane.clock())
    except RouteTestError as exc:
        raise ApiError(404 if exc.code == "unknown_test" else 409, exc.code, str(exc)) from None
    return web.json_response({"test_id": test_id, "state": "done"})


async def route_hops(request: web.Request) -> web.Response:
    """Per-hop RTTs of a route lease whose source is the caller (it proves it holds it)."""
    plane = context(request).plane
    node, body = await authenticate_node(request)
    document = parse_json_object(body)
    try:
        blob = base64.b64decode(string_field(document, "lease", max_length=16384), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("bad_field", "lease: the signed route lease, base64") from None
    now = plane.clock()
    try:
        lease = verify_route_lease(blob, plane.authority.public_key, now)
    except SignedObjectRejected as exc:
        raise bad_request("bad_lease", str(exc)) from None
    if lease.hops[0] != node.node_id:
        raise ApiError(403, "not_source", "only the source of a route may ask for its hops")
    return web.json_response(
        {"hops": list(lease.hops), "links": hop_links(plane.heartbeats, lease.hops, now)}
    )
