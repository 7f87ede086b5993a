"""``control agent`` and ``control lease``: the node side of the control API, standalone.

The agent enrolls (once, with ``--token``), registers ``--service`` replicas, then
heartbeats with the given facts until SIGINT/SIGTERM, logging the client's status line
when the control plane is unreachable.  ``lease`` asks for route leases and prints them.
Both keep their state in ``--state`` (the client's on-disk cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import replace
from typing import Any

from accessfabric.control.client.cli_errors import EXIT_UNREACHABLE, Unreachable, UserError
from accessfabric.control.client.client import (
    ControlClient,
    ControlRefused,
    ControlUnavailable,
    NoUsableLease,
    heartbeat_forever,
)
from accessfabric.control.client.facts import HeartbeatFacts, PeerMeasurement, ServiceCapacity
from accessfabric.control.kernel.authority_key import parse_authority_key
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.identity.errors import IdentityError
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.node_id import parse_node_id
from accessfabric.wire.registry import TrafficClass

_log = logging.getLogger("accessfabric.control.client.agent")


def _client(args: argparse.Namespace) -> ControlClient:
    try:
        authority = parse_authority_key(args.authority)
    except ValueError as exc:
        raise UserError(f"--authority: {exc}") from None
    try:
        key = NodeKey.load(args.key)
    except IdentityError as exc:
        raise UserError(str(exc)) from None
    urls = [url.strip() for url in str(args.server).split(",") if url.strip()]
    if not urls:
        raise UserError("--server: give the control plane URL (several: comma-separated)")
    return ControlClient(urls, key, authority, args.state)


def _peers(texts: list[str]) -> tuple[PeerMeasurement, ...]:
    peers = []
    for text in texts:
        node_id, _, rtt = text.partition("=")
        try:
            peers.append(PeerMeasurement(node_id=parse_node_id(node_id), rtt_ms=float(rtt)))
        except ValueError:
            raise UserError(f"--peer {text!r}: expected NODE_ID=RTT_MS") from None
    return tuple(peers)


def _refused(exc: ControlRefused) -> UserError:
    return UserError(f"control plane refused: {exc}")


def run_agent(args: argparse.Namespace) -> int:
    from accessfabric.observe.log_format import configure_logging

    configure_logging(json_lines=args.log_json, level=args.log_level)
    client = _client(args)
    base = HeartbeatFacts(
        software_version="accessfabric-control-agent",
        transports=("tcp_tls",),
        peers=_peers(args.peer),
        region=args.region,
        failure_domain=args.failure_domain,
        services=tuple(ServiceCapacity(name=name, capacity=100) for name in args.service),
    )

    async def main() -> int:
        async with client:
            record = client.record()
            if record is None:
                if not args.token:
                    raise UserError(f"{client.key.node_id} is not enrolled: pass --token")
                try:
                    record = await client.enroll(args.token)
                except ControlRefused as exc:
                    raise _refused(exc) from None
                except ControlUnavailable as exc:
                    raise Unreachable(str(exc)) from None
            roles = ",".join(sorted(r.value for r in record.roles))
            print(f"enrolled {record.node_id} tenant {record.tenant} roles {roles}", flush=True)
            for name in args.service:
                try:
                    reply = await client.register_service(name, args.service_mode)
                except ControlRefused as exc:
                    raise _refused(exc) from None
                except ControlUnavailable as exc:
                    raise Unreachable(str(exc)) from None
                print(f"serving {name} as {reply.get('me')}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await heartbeat_forever(client, lambda: replace(base), stop=stop)
            print("agent stopped", flush=True)
            return 0

    return asyncio.run(main())


def _route_json(route: LeasedRoute) -> dict[str, Any]:
    lease = route.lease
    return {
        "rank": route.rank,
        "route_id": lease.route_id,
        "epoch": lease.epoch,
        "fencing_token": lease.fencing_token,
        "hops": list(lease.hops),
        "expires_ms": lease.expires_ms,
    }


def run_lease(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        traffic_class = TrafficClass[args.traffic_class.upper()]
    except KeyError:
        names = ", ".join(c.name.lower() for c in TrafficClass)
        raise UserError(f"--class: one of {names}") from None

    async def main() -> int:
        async with client:
            if client.record() is None:
                raise UserError(f"{client.key.node_id} is not enrolled (run control agent)")
            try:
                routes = await client.route_leases(args.service, traffic_class)
            except ControlRefused as exc:
                raise _refused(exc) from None
            except NoUsableLease as exc:
                print(f"accessfabric control: error: {exc}", file=sys.stderr)
                return EXIT_UNREACHABLE
            status = client.status()
            if args.json:
                document = {
                    "routes": [_route_json(r) for r in routes],
                    "status": status.describe(),
                    "from_cache": status.reachable is False,
                }
                print(json.dumps(document, indent=2))
                return 0
            if status.reachable is False:
                print(f"(from cache) {status.describe()}")
            for route in routes:
                lease = route.lease
                print(
                    f"{route.rank or 'route'} route {lease.route_id} epoch {lease.epoch} "
                    f"fencing {lease.fencing_token}: {' -> '.join(lease.hops)}"
                )
            return 0

    return asyncio.run(main())
