"""``accessfabric conformance URL --peer-id ID``: exit 0 all passed, 1 a check failed,
2 a usage error, 3 the peer is unreachable."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from typing import Any

from accessfabric.conformance.check import CORE_GROUPS, GROUPS, Target
from accessfabric.conformance.runner import FAILED, json_report, run_all, select, text_report
from accessfabric.identity.node_id import parse_node_id
from accessfabric.node.dialing.address import parse_endpoint_url

UNREACHABLE = 3


def cmd_conformance(args: argparse.Namespace) -> int:
    def usage(message: str) -> int:
        print(f"accessfabric conformance: {message}", file=sys.stderr)
        return 2

    try:
        endpoint = parse_endpoint_url(args.url)
    except ValueError as exc:
        return usage(f"URL: {exc}")
    if endpoint.carrier != "tcp":
        return usage(f"URL: the runner speaks TCP+TLS only (tcp://HOST:PORT), not {args.url}")
    try:
        peer_id = parse_node_id(args.peer_id)
    except ValueError as exc:
        return usage(f"--peer-id: {exc}")
    if args.timeout <= 0:
        return usage("--timeout: must be a positive number of seconds")
    groups = list(CORE_GROUPS) if args.core else (args.group or list(GROUPS))
    target = Target(endpoint.host, endpoint.port, peer_id, args.timeout)
    try:
        asyncio.run(_reachable(target))
    except (OSError, ssl.SSLError, TimeoutError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        print(f"accessfabric conformance: unreachable: {args.url}: {reason}", file=sys.stderr)
        return UNREACHABLE
    results = asyncio.run(run_all(target, select(groups)))
    print(json_report(target, args.url, groups, results) if args.json else text_report(results))
    return 1 if any(r.status == FAILED for r in results) else 0


async def _reachable(target: Target) -> None:
    peer = await target.connect()
    await peer.close()


def add_conformance_command(commands: Any) -> None:
    parser = commands.add_parser(
        "conformance",
        help="check a remote fabric implementation against docs/protocol.md",
        description="Run the protocol conformance checks (h2spec-style) against a remote "
        "Fabric Data Session implementation over TCP+TLS: handshake, framing, PING, "
        "streams, credit, GOAWAY and limits, each with the code the spec requires. "
        "Stream checks use the peer's 'echo' service. Prints 'N passed, M failed'.",
        epilog="exit codes: 0 every check passed (skips allowed), 1 a check failed, "
        "2 usage error, 3 unreachable",
    )
    parser.add_argument("url", metavar="URL", help="tcp://HOST:PORT of the peer")
    parser.add_argument("--peer-id", required=True, metavar="ID", help="the node id to expect")
    parser.add_argument("--json", action="store_true", help="print one JSON report")
    parser.add_argument(
        "--group", action="append", choices=GROUPS, metavar="GROUP",
        help=f"run only this group (repeatable): {', '.join(GROUPS)}",
    )  # fmt: skip
    parser.add_argument(
        "--core", action="store_true", help=f"the core groups only: {', '.join(CORE_GROUPS)}"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS",
        help="bound on each wait for the peer (default 5)",
    )  # fmt: skip
    parser.set_defaults(handler=cmd_conformance)
