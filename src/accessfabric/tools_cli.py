"""Small operator commands: ``version``, ``completion``, ``config check``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from accessfabric.exit_codes import Exit


def cmd_version(args: argparse.Namespace) -> int:
    from accessfabric.version_info import version_info, version_text

    print(json.dumps(version_info(), indent=2) if args.json else version_text())
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from accessfabric.node.admin.commands import UsageError

    try:
        import shtab
    except ImportError:
        raise UsageError("needs shtab: pip install shtab") from None
    print(shtab.complete(args.build_parser(), shell=args.shell))
    return 0


def check_config(path: str) -> tuple[list[str], list[str], dict[str, Any]]:
    """(errors, warnings, summary) of a node config file and the key it names."""
    from accessfabric.identity.errors import IdentityError
    from accessfabric.identity.keys import NodeKey
    from accessfabric.node.config.config_checks import idle_warnings, self_peer_problems
    from accessfabric.node.config.node_config import ConfigError, load_node_config
    from accessfabric.node.dialing.dial import CarrierUnavailableError, carrier_available

    try:
        config = load_node_config(path)
    except ConfigError as error:
        return [str(error)], [], {}
    errors: list[str] = []
    summary: dict[str, Any] = {
        "config": config.source,
        "key": str(config.key_path),
        "listeners": [endpoint.url for endpoint in config.listen],
        "peers": len(config.peers),
        "services": [service.name for service in config.services],
        "forwards": [str(forward.listen) for forward in config.forwards],
        "control": config.control.url if config.control else None,
    }
    for index, endpoint in enumerate(config.listen):
        if not carrier_available(endpoint.carrier):
            errors.append(f"{path}: listen[{index}]: {CarrierUnavailableError(endpoint.carrier)}")
    try:
        key = NodeKey.load(config.key_path)
    except IdentityError as error:
        errors.append(f"{path}: key_path: {error}")
    else:
        summary["node_id"] = key.node_id
        errors.extend(self_peer_problems(config, key.node_id))
    warnings = idle_warnings(config)
    if config.control is not None:  # against the policy the node cached, if it has run
        from accessfabric.control.client.heartbeat_policy import heartbeat_mismatch
        from accessfabric.control.client.node_cache import NodeCache

        policy = NodeCache(config.control.state_dir).read("policy.json")
        mismatch = heartbeat_mismatch(config.control.heartbeat_interval, policy)
        if mismatch is not None:
            warnings.append(f"{path}: {mismatch.describe()}")
    return errors, warnings, summary


def cmd_config_check(args: argparse.Namespace) -> int:
    errors, warnings, summary = check_config(args.config)
    if args.json:
        document = {"ok": not errors, "errors": errors, "warnings": warnings, **summary}
        print(json.dumps(document, indent=2))
    else:
        for line in errors:
            print(f"accessfabric config check: error: {line}", file=sys.stderr)
        for line in warnings:
            print(f"accessfabric config check: warning: {line}", file=sys.stderr)
        if not errors:
            node = summary.get("node_id", "?")
            print(
                f"ok: {summary['config']}: node {node}, {len(summary['listeners'])} listener(s), "
                f"{summary['peers']} peer(s), {len(summary['services'])} service(s), "
                f"{len(summary['forwards'])} forward(s), control "
                f"{summary['control'] or 'none'}"
            )
    return int(Exit.USAGE) if errors else 0


def _admin_error(status: int, document: Any) -> str:
    """What a refused admin request says: its ``error``, else the HTTP status (and text)."""
    if isinstance(document, dict):
        return str(document.get("error", f"HTTP {status}"))
    return f"HTTP {status}: {document}" if document else f"HTTP {status}"


def cmd_ping(args: argparse.Namespace) -> int:
    from accessfabric.json_output import print_json
    from accessfabric.node.admin.commands import admin_socket
    from accessfabric.node.admin.ping import render_ping
    from accessfabric.node.admin.status import ask_admin

    query = {"node": args.node, "count": str(args.count)}
    status, document = ask_admin(
        admin_socket(None, args.config), "POST", "/ping", query, timeout=60.0
    )
    if status != 200 or not isinstance(document, dict):
        message = _admin_error(status, document)
        print(f"accessfabric ping: {message}", file=sys.stderr)
        if args.json:
            print_json({"ok": False, "error": message})
        return int(Exit.FAILED)
    if args.json:
        print_json({"ok": True, **document})
    else:
        print(render_ping(document))
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    """``accessfabric device``: the running node's own measured facts (its ``host``
    section); with ``--foreground`` the app wrapper tells the node its foreground state
    first (``POST /device`` on the admin socket)."""
    from accessfabric.json_output import print_json
    from accessfabric.node.admin.commands import UsageError, admin_socket
    from accessfabric.node.admin.status import ask_admin

    if not args.socket and not args.config:
        raise UsageError("give --config node.toml or --socket PATH")
    socket_path = admin_socket(args.socket, args.config)
    if args.foreground is None:
        status, document = ask_admin(socket_path, "GET", "/status")
        host = document.get("host", {}) if isinstance(document, dict) else document
    else:
        query = {"foreground": args.foreground}
        status, host = ask_admin(socket_path, "POST", "/device", query)
    if status != 200 or not isinstance(host, dict):
        print(f"accessfabric device: {_admin_error(status, host)}", file=sys.stderr)
        return int(Exit.FAILED)
    if args.json:
        print_json(host)
    else:
        width = max((len(key) for key in host), default=0)
        for key, value in host.items():
            print(f"{key.ljust(width)}  {'-' if value is None else value}")
    return 0


def cmd_netcheck(args: argparse.Namespace) -> int:
    import asyncio

    from accessfabric.json_output import print_json
    from accessfabric.node.admin.commands import UsageError
    from accessfabric.node.config.node_config import ConfigError, load_node_config
    from accessfabric.node.dialing.netcheck import netcheck, render_netcheck

    try:
        config = load_node_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    report = asyncio.run(netcheck(config, timeout=args.timeout))
    if args.json:
        print_json(report)
    else:
        print(render_netcheck(report))
    return 0 if report["ok"] else int(Exit.UNREACHABLE)


def add_tool_commands(commands: Any, build_parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Add ``version``, ``completion`` and ``config check``; ``build_parser`` makes the
    whole ``accessfabric`` parser (``completion`` prints it; the top-level CLI passes it in)."""
    from accessfabric.node.admin.commands import guarded

    version = commands.add_parser(
        "version", help="print the version, source commit and protocol versions"
    )
    version.add_argument("--json", action="store_true", help="print JSON")
    version.set_defaults(handler=cmd_version)

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script: "
        "`accessfabric completion bash > /etc/bash_completion.d/accessfabric`, "
        "or `source <(accessfabric completion bash)`.",
    )
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    completion.set_defaults(
        handler=guarded("completion", cmd_completion), build_parser=build_parser
    )

    ping = commands.add_parser(
        "ping",
        help="ping a node through the fabric (relays too) and show the path",
        description="Ask the node of --config (over its admin socket) to ping NODE: the "
        "path (hops with carrier and address), PING round trips and an echo round trip. "
        "Without a session to NODE, a node with a control plane leases a route to NODE's "
        "own echo and pings end to end through the relays on it (NODE's grants or "
        "[allow] for echo must admit this node). NODE is a node id or a [[peers]] name.",
    )
    ping.add_argument("node", metavar="NODE")
    ping.add_argument("--config", required=True, metavar="FILE", help="the running node's config")
    ping.add_argument("--count", type=int, default=3, help="PING round trips (default 3)")
    ping.add_argument("--json", action="store_true", help="print JSON")
    ping.set_defaults(handler=guarded("ping", cmd_ping))

    device = commands.add_parser(
        "device",
        help="show a running node's own facts; tell it its app's foreground state",
        description="Print the running node's measured facts (status's host section: "
        "CPU and run-queue wait, memory, descriptors, battery, network type, metered, NAT, "
        "foreground, the mobile relay gate). --foreground true|false|unknown first tells "
        "the node whether its app is in the foreground (an app wrapper's call: Linux "
        "reports no such state); with [device] relay_requires_foreground a background "
        "mobile-edge node takes no new relayed stream.",
    )
    device.add_argument("--config", metavar="FILE", help="node.toml (finds admin_socket)")
    device.add_argument("--socket", metavar="PATH", help="the admin socket itself")
    device.add_argument("--foreground", choices=["true", "false", "unknown"])
    device.add_argument("--json", action="store_true", help="print JSON")
    device.set_defaults(handler=guarded("device", cmd_device))

    check_net = commands.add_parser(
        "netcheck",
        help="check which peers and carriers answer from here, and how fast",
        description="For every [[peers]] endpoint: a pinned handshake, PINGs and an echo "
        "(in parallel); the control plane's /readyz; the nearest peer. Exit 0 when "
        "something answers, 3 when nothing does.",
    )
    check_net.add_argument("--config", required=True, metavar="FILE")
    check_net.add_argument("--timeout", type=float, default=5.0, metavar="S")
    check_net.add_argument("--json", action="store_true", help="print JSON")
    check_net.set_defaults(handler=guarded("netcheck", cmd_netcheck))

    config = commands.add_parser("config", help="check a node config")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    config_commands.required = True
    check = config_commands.add_parser(
        "check",
        help="check node.toml and its key without running the node (exit 0 ok, 2 errors)",
        description="Load the config as `node run` would, load its key, and check the "
        "whole: unknown keys, bad values, missing or unsafe key file, a [[peers]] entry "
        "with this node's own id, carriers this build lacks; warn about a node with "
        "nothing to do.",
    )
    check.add_argument("--config", required=True, metavar="FILE")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=guarded("config check", cmd_config_check))
