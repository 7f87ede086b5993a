"""The ``forward``, ``vpn`` and ``status`` subcommands of ``accessfabric``."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from accessfabric.identity.errors import IdentityError
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.node_id import parse_node_id
from accessfabric.node.admin.commands import UsageError, admin_socket, guarded, run_on_node_loop
from accessfabric.node.config.node_config import (
    ConfigError,
    ForwardConfig,
    NodeConfig,
    PeerConfig,
    load_node_config,
)
from accessfabric.node.dialing.address import parse_endpoint_url, parse_host_port
from accessfabric.observe.log_format import configure_logging
from accessfabric.wire.registry import TrafficClass


def _config(
    args: argparse.Namespace, service: str, scratch: Path
) -> tuple[NodeConfig, NodeKey | None]:
    """The node to run: ``--config``'s, or an ephemeral node with one ``--peer`` hosting
    the service, whose key file and TLS certificate live in ``scratch`` (the caller
    removes it when the node stops)."""
    if args.config:
        try:
            return load_node_config(args.config), None
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    if not (args.peer and args.peer_id):
        raise UsageError("give --config node.toml, or --peer URL and --peer-id ID")
    try:
        endpoint = parse_endpoint_url(args.peer)
        peer_id = parse_node_id(args.peer_id)
    except ValueError as exc:
        raise UsageError(f"--peer/--peer-id: {exc}") from None
    key = NodeKey.generate()
    if args.key:  # the host admits node ids: a fresh key is only served by allow = ["*"]
        try:
            key = NodeKey.load(args.key)
        except IdentityError as exc:
            raise UsageError(f"--key: {exc}") from None
    peer = PeerConfig(node_id=peer_id, endpoints=(endpoint,), services=(service,))
    config = NodeConfig(
        key_path=scratch / "ephemeral.key", cert_dir=scratch / "tls", peers=(peer,),
        admin_socket=None, source="command line",
    )  # fmt: skip
    return config, key


def cmd_forward(args: argparse.Namespace) -> int:
    from accessfabric.node.runtime import run_node
    from accessfabric.services.host import ServicesComponent

    try:
        listen = parse_host_port(args.listen, allow_port_zero=True)
        traffic_class = TrafficClass.from_name(args.traffic_class) if args.traffic_class else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="accessfabric-forward-") as scratch:
        config, key = _config(args, args.service, Path(scratch))
        configure_logging(json_lines=args.log_json or config.log_json, level=logging.INFO)
        forward = ForwardConfig(listen=listen, service=args.service, traffic_class=traffic_class)
        component = ServicesComponent(extra_forwards=(forward,))
        try:
            return run_on_node_loop(run_node(config, key=key, components=(component,)))
        except OSError as exc:
            print(f"accessfabric forward: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 1


def cmd_status(args: argparse.Namespace) -> int:
    from accessfabric.node.admin.status import run_status

    code, text = run_status(admin_socket(args.socket, args.config), args.json)
    if code != 0:
        print(f"accessfabric status: {text}", file=sys.stderr)
        return code
    print(text)
    return code


def cmd_vpn_up(args: argparse.Namespace) -> int:
    from accessfabric.services.vpn_cli import vpn_up

    return vpn_up(args)


def add_service_commands(commands: Any) -> None:
    forward = commands.add_parser(
        "forward",
        help="forward a local TCP port to a service through the fabric",
        description="Listen on HOST:PORT; every accepted TCP connection becomes a fabric "
        "stream to SERVICE in its traffic class (rdp, ssh: interactive; others: reliable). "
        "FIN and RST propagate both ways. Runs the node of --config (its [[services]], "
        "[[forwards]], metrics and status socket too), or an ephemeral node that reaches "
        "the service on --peer.",
    )
    forward.add_argument("--listen", required=True, metavar="HOST:PORT")
    forward.add_argument("--service", required=True, metavar="NAME")
    forward.add_argument("--class", dest="traffic_class", metavar="CLASS", help="traffic class")
    forward.add_argument("--config", metavar="FILE", help="node.toml of the node to run")
    forward.add_argument("--peer", metavar="URL", help="without --config: the service's node")
    forward.add_argument("--peer-id", metavar="ID", help="without --config: its node id")
    forward.add_argument(
        "--key", metavar="PATH", help="without --config: this node's key (default: a fresh one)"
    )
    forward.add_argument(
        "--log-json", "--json", action="store_true", help="log one JSON object per line"
    )
    forward.set_defaults(handler=guarded("forward", cmd_forward))

    status = commands.add_parser(
        "status",
        help="show a running node's sessions, streams, routes, leases and services",
        description="Ask a running node over its admin socket (a unix socket, mode 0600) "
        "and print tables; --json prints the raw document.",
    )
    status.add_argument("--config", metavar="FILE", help="node.toml (finds admin_socket)")
    status.add_argument("--socket", metavar="PATH", help="the admin socket itself")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=guarded("status", cmd_status))

    vpn = commands.add_parser("vpn", help="carry IP packets over the fabric (TUN, root)")
    vpn_commands = vpn.add_subparsers(dest="vpn_command", metavar="SUBCOMMAND", required=True)
    up = vpn_commands.add_parser(
        "up",
        help="create a TUN device and tunnel it (client) or serve as an exit",
        description="Create a TUN device and carry IP packets in binary batches over "
        "fabric streams, classified (DNS, interactive, reliable, bulk) and sharded per "
        "class. --exit: serve the 'vpn' service and write packets into this node's network. "
        "The process runs the whole node of --config: its [[services]] and [[forwards]] too, "
        "and with [control] it registers every service it serves ('vpn' on an exit).",
    )
    from accessfabric.services.vpn_cli import add_vpn_arguments

    add_vpn_arguments(up)
    up.set_defaults(handler=guarded("vpn up", cmd_vpn_up))
