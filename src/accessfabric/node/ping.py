"""``accessfabric ping NODE``: ask the running node to ping another node and show the path.

The node (over its admin socket, ``POST /ping``) takes its session to NODE — the
one it has, or a new one dialled over NODE's ranked endpoints — and measures
PING/PONG round trips and one round trip on NODE's built-in ``echo`` service.
The answer names the path: this node, the carrier and address of the session,
NODE.  A NODE this node reaches only through relays (a route lease whose
destination it is) is named with the leased hops; an end-to-end ping along
them needs a lease for NODE itself, which the control plane does not issue yet.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from accessfabric.node.parts import NodeParts

MAX_COUNT = 20
ECHO_PAYLOAD = b"accessfabric ping"


class PingError(Exception):
    """NODE cannot be pinged: one line for the user."""


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
    if node_id not in runtime.peers.peer_ids:
        hops = _routed_hops(runtime, node_id)
        if hops:
            raise PingError(
                f"{node_id} is reached only through relays ({' -> '.join(hops)}); "
                "a ping along a route lease is not supported yet"
            )
        raise PingError(f"{node_id} is not a peer this node knows (no [[peers]] entry, not "
                        "in its directory)")  # fmt: skip
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
    names = runtime.config.peer_names()
    hop = {
        "from": runtime.node_id,
        "to": node_id,
        "carrier": connection.info.kind,
        "address": str(connection.info.peer_address or "-"),
    }
    return {
        "node": node_id,
        "name": names.get(node_id, ""),
        "path": [runtime.node_id, node_id],
        "hops": [hop],
        "via": "direct",
        "ping_rtts_ms": rtts,
        "echo_rtt_ms": echo_ms,
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
    who = f"{result['node']}" + (f" ({result['name']})" if result.get("name") else "")
    lines = [f"ping {who} via {result['via']}:"]
    for hop in result["hops"]:
        lines.append(f"  {hop['from']} -> {hop['to']}  {hop['carrier']} {hop['address']}")
    for index, rtt in enumerate(result["ping_rtts_ms"], 1):
        lines.append(f"ping {index}: rtt {rtt:.2f} ms")
    lines.append(f"echo: round trip {result['echo_rtt_ms']:.2f} ms")
    return "\n".join(lines)
