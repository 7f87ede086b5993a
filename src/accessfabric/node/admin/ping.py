"""``accessfabric ping NODE``: ask the running node to ping another node and show the path.

The node (over its admin socket, ``POST /ping``) pings NODE along the path the
fabric would use:

* with a session to NODE already up: PING/PONG round trips on it and one round trip
  on NODE's built-in ``echo`` (``via direct``);
* else, with a control plane: a route lease to ``echo:<NODE>`` — NODE's own echo,
  which every node serves to the callers its access rules for ``echo`` admit (default
  deny) — planned like any service, through relays where needed; echo round trips
  end to end on that route, the first hop's PING RTT, the leased hops (``via
  relays (route N)``);
* else a session dialled over NODE's ranked endpoints (a ``[[peers]]`` entry or the
  directory), as in the first case.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from accessfabric.control.kernel.vocabulary import node_echo_service
from accessfabric.errors import ErrorCode
from accessfabric.node.routing.routes import NoUsableRoute, RouteUnusable
from accessfabric.node.streams.connection import StreamResetError
from accessfabric.wire.registry import TrafficClass

if TYPE_CHECKING:
    from accessfabric.control.kernel.leased_route import LeasedRoute
    from accessfabric.node.parts import NodeParts
    from accessfabric.node.streams.connection import SessionConnection
    from accessfabric.node.streams.resumable import ResumableStream
    from accessfabric.node.streams.sealed_stream import SealedStream

MAX_COUNT = 20
ECHO_PAYLOAD = b"accessfabric ping"


class PingError(Exception):
    """NODE cannot be pinged: one line for the user."""


class _RouteFailed(Exception):
    """The echo did not come back along one route (another may work)."""


def resolve(runtime: NodeParts, target: str) -> str:
    """A node id from a node id or a ``[[peers]] name``."""
    for peer in runtime.config.peers:
        if target in (peer.node_id, peer.name):
            return peer.node_id
    if target.startswith("afn1"):
        return target
    raise PingError(f"{target!r} is neither a node id nor the name of a [[peers]] entry")


def _routed_hops(runtime: NodeParts, node_id: str) -> list[str] | None:
    client = runtime.control_client
    if client is None:
        return None
    for service, traffic_class in sorted(client.wanted):
        for route in client.cached_route_leases(service, traffic_class):
            hops = list(route.lease.hops)
            if hops and hops[-1] == node_id:
                return hops
    return None


async def ping_node(runtime: NodeParts, target: str, count: int) -> dict[str, Any]:
    node_id = resolve(runtime, target)
    if node_id == runtime.node_id:
        raise PingError("that is this node")
    names = runtime.config.peer_names()
    if runtime.peers.current(node_id) is None and runtime.routes.source is not None:
        try:
            result = await _ping_routed(runtime, node_id, count)
        except NoUsableRoute as error:
            if node_id not in runtime.peers.peer_ids:
                raise PingError(f"no route to {node_id}: {error}") from None
        else:
            return {"node": node_id, "name": names.get(node_id, ""), **result}
    if node_id not in runtime.peers.peer_ids:
        hops = _routed_hops(runtime, node_id)
        known = f" (it is the destination of route {' -> '.join(hops)})" if hops else ""
        raise PingError(f"{node_id} is not a peer this node knows (no [[peers]] entry, not "
                        f"in its directory) and there is no control plane to lease a route to "
                        f"it{known}")  # fmt: skip
    try:
        connection = await asyncio.wait_for(runtime.peers.session(node_id), 15)
    except (OSError, ConnectionError, TimeoutError) as error:
        raise PingError(f"cannot reach {node_id}: {error}") from None
    rtts = [round(await asyncio.wait_for(connection.ping(), 10) * 1e3, 3) for _ in range(count)]
    stream = await connection.open_stream("echo")
    started = time.perf_counter()
    stream.write(ECHO_PAYLOAD)
    await asyncio.wait_for(stream.readexactly(len(ECHO_PAYLOAD)), 10)
    echo_ms = round((time.perf_counter() - started) * 1e3, 3)
    stream.close()
    return {
        "node": node_id,
        "name": names.get(node_id, ""),
        "path": [runtime.node_id, node_id],
        "hops": [_hop(runtime, runtime.node_id, node_id, connection)],
        "via": "direct",
        "route_id": None,
        "ping_rtts_ms": rtts,
        "echo_rtt_ms": echo_ms,
    }


def _hop(
    runtime: NodeParts, src: str, dst: str, connection: SessionConnection | None
) -> dict[str, Any]:
    """One hop of the path: carrier and address where this node holds the session."""
    return {
        "from": src,
        "to": dst,
        "carrier": connection.info.kind if connection is not None else "relayed",
        "address": str(connection.info.peer_address or "-") if connection is not None else "-",
    }


async def _ping_routed(runtime: NodeParts, node_id: str, count: int) -> dict[str, Any]:
    """Echo round trips end to end on a route lease to ``echo:<node id>`` (through the
    relays the control plane planned); :class:`NoUsableRoute` when none is leased."""
    service = node_echo_service(node_id)
    errors: list[str] = []
    try:
        for route in await runtime.routes.routes(service, TrafficClass.INTERACTIVE):
            try:
                stream = await runtime.routes.open_on_route(
                    route, service, TrafficClass.INTERACTIVE
                )
            except RouteUnusable as error:
                errors.append(f"route {route.route_id}: {error}")
                continue
            try:
                return await _echo_along(runtime, route, stream, count)
            except _RouteFailed as error:  # e.g. a relay on it died: the next route
                errors.append(f"route {route.route_id}: {error}")
            finally:
                stream.close()
    finally:  # a ping is one-off: its lease is not renewed in the background
        client = runtime.control_client
        if client is not None:
            client.wanted.discard((service, TrafficClass.INTERACTIVE))
    raise NoUsableRoute(f"every route to {service!r} failed: {'; '.join(errors)}")


async def _echo_along(
    runtime: NodeParts, route: LeasedRoute, stream: ResumableStream | SealedStream, count: int
) -> dict[str, Any]:
    async def round_trip() -> float:
        started = time.perf_counter()
        stream.write(ECHO_PAYLOAD)
        try:
            await asyncio.wait_for(stream.readexactly(len(ECHO_PAYLOAD)), 10)
        except StreamResetError as reset:
            code = getattr(reset.code, "name", str(reset.code))
            if reset.code == ErrorCode.ACCESS_DENIED:
                host = route.lease.hops[-1]
                raise PingError(
                    f"{host} refused the echo ({code}): a grant or [allow] for `echo` there "
                    "must admit this node"
                ) from None
            raise _RouteFailed(f"the echo stream was reset ({code})") from None
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as error:
            raise _RouteFailed(f"no echo: {error!r}") from None
        return round((time.perf_counter() - started) * 1e3, 3)

    echo_ms = await round_trip()  # opens the stream end to end (and seals it)
    rtts = [await round_trip() for _ in range(count)]
    hops = list(route.lease.hops)
    first = runtime.peers.current(hops[1])
    first_hop_ms = None
    if first is not None:
        first_hop_ms = round(await asyncio.wait_for(first.ping(), 10) * 1e3, 3)
    return {
        "path": hops,
        "hops": [
            _hop(runtime, src, dst, first if index == 0 else None)
            for index, (src, dst) in enumerate(itertools.pairwise(hops))
        ],
        "via": "relays" if len(hops) > 2 else "route",
        "route_id": route.route_id,
        "ping_rtts_ms": rtts,
        "echo_rtt_ms": echo_ms,
        "first_hop_rtt_ms": first_hop_ms,
    }


def ping_handler(runtime: NodeParts) -> Any:
    async def handle(request: web.Request) -> web.Response:
        target = request.query.get("node", "")
        try:
            count = min(max(int(request.query.get("count", "3")), 1), MAX_COUNT)
            return web.json_response(await ping_node(runtime, target, count))
        except ValueError:
            return web.json_response({"error": "count: a number"}, status=400)
        except PingError as error:
            return web.json_response({"error": str(error)}, status=404)

    return handle


def render_ping(result: dict[str, Any], node_name: str = "") -> str:
    """Like ping(8): the path, one line per round trip, then min/avg/max."""
    who = f"{result['node']}" + (f" ({result['name']})" if result.get("name") else "")
    routed = result.get("route_id") is not None
    via = f"{result['via']} (route {result['route_id']})" if routed else result["via"]
    lines = [f"ping {who} via {via}:"]
    for hop in result["hops"]:
        lines.append(f"  {hop['from']} -> {hop['to']}  {hop['carrier']} {hop['address']}")
    what = " end to end" if routed else ""
    rtts = result["ping_rtts_ms"]
    for index, rtt in enumerate(rtts, 1):
        lines.append(f"ping {index}: rtt {rtt:.2f} ms{what}")
    lines.append(f"echo: round trip {result['echo_rtt_ms']:.2f} ms")
    if result.get("first_hop_rtt_ms") is not None:
        lines.append(f"first hop: rtt {result['first_hop_rtt_ms']:.2f} ms")
    if rtts:
        trips = f"{len(rtts)} round trip{'s' if len(rtts) != 1 else ''}"
        lines.append(
            f"{trips}, rtt min/avg/max = {min(rtts):.2f}/"
            f"{sum(rtts) / len(rtts):.2f}/{max(rtts):.2f} ms"
        )
    return "\n".join(lines)
