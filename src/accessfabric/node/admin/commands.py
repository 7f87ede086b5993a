"""The node subcommands of ``accessfabric``: ``keygen``, ``node run``, ``node id``, ``smoke``.

Every user mistake (missing file, bad node id, bad URL, bad config) ends the
command with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from accessfabric.exit_codes import Exit
from accessfabric.identity.errors import IdentityError
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.node_id import parse_node_id
from accessfabric.json_output import print_json
from accessfabric.node.admin.smoke import EXIT_CODE_HELP, SmokeExit, classify_failure, run_smoke
from accessfabric.node.admin.status import AdminUnreachable
from accessfabric.node.config.config_checks import ConfigConflict, idle_warnings
from accessfabric.node.config.node_config import ConfigError, load_node_config
from accessfabric.node.dialing.address import parse_endpoint_url
from accessfabric.node.dialing.dial import CarrierUnavailableError, carrier_available
from accessfabric.node.host.key_lock import KeyInUseError
from accessfabric.observe.log_format import configure_logging, parse_log_level

if TYPE_CHECKING:
    from accessfabric.node.runtime import NodeComponent

USAGE_ERROR = 2
_T = TypeVar("_T")


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


def run_on_node_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """Run on uvloop when it is installed (the node's default loop), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: _T = uvloop.run(main)
    return result


def admin_socket(socket: str | None, config: str | None) -> Path:
    """The admin socket at ``socket``, else the one the node config ``config`` (None: the
    environment's) names; :class:`UsageError` when that config does not load."""
    if socket:
        return Path(socket)
    try:
        loaded = load_node_config(config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    assert loaded.admin_socket is not None
    return Path(loaded.admin_socket)


def _load_key(path: str) -> NodeKey:
    try:
        return NodeKey.load(path)
    except IdentityError as exc:
        raise UsageError(str(exc)) from None


# ---------------------------------------------------------------------------- handlers


def cmd_keygen(args: argparse.Namespace) -> int:
    key = NodeKey.generate()
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"{out}: directory {out.parent} does not exist")
    try:
        key.save(out, overwrite=args.force)
    except IdentityError as exc:
        message = str(exc)
        if "refusing to overwrite" in message:
            message = f"{out}: file exists; pass --force to replace it"
        raise UsageError(message) from None
    if args.json:
        print_json({"node_id": key.node_id, "key_path": str(out.resolve())})
    else:
        print(key.node_id)
    return 0


def cmd_node_id(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    if args.json:
        sealing = base64.b64encode(key.sealing_public_key_bytes).decode("ascii")
        print_json({"node_id": key.node_id, "sealing_key": sealing, "key_path": args.key})
    elif args.sealing_key:  # for other nodes' [[peers]] sealing_key / [sealing.keys]
        print(base64.b64encode(key.sealing_public_key_bytes).decode("ascii"))
    else:
        print(key.node_id)
    return 0


def cmd_node_run(args: argparse.Namespace) -> int:
    from accessfabric.node.runtime import run_node

    try:
        config = load_node_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    for endpoint in config.listen:
        if not carrier_available(endpoint.carrier):
            raise UsageError(
                f"{config.source}: listen: {CarrierUnavailableError(endpoint.carrier)}"
            )
    configure_logging(json_lines=args.log_json or config.log_json, level=args.log_level)
    key = _load_key(str(config.key_path))
    for warning in idle_warnings(config):
        logging.getLogger("accessfabric.node").warning("%s", warning)
    try:
        return run_on_node_loop(run_node(config, key=key, components=args.components()))
    except OSError as exc:  # a listener could not bind
        print(f"accessfabric node run: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1


def cmd_smoke(args: argparse.Namespace) -> int:
    try:
        endpoint = parse_endpoint_url(args.peer)
    except ValueError as exc:
        raise UsageError(f"--peer: {exc}") from None
    try:
        peer_id = parse_node_id(args.peer_id)
    except ValueError as exc:
        raise UsageError(f"--peer-id: {exc}") from None
    if not carrier_available(endpoint.carrier):
        raise UsageError(f"--peer: {CarrierUnavailableError(endpoint.carrier)}")
    key = _load_key(args.key) if args.key else None
    if args.timeout <= 0:
        raise UsageError("--timeout: must be a positive number of seconds")
    try:
        # Plain asyncio: uvloop's clock ticks in milliseconds, too coarse for loopback RTTs.
        result = asyncio.run(run_smoke(endpoint, peer_id, key, timeout=args.timeout))
    except Exception as error:
        code, message = classify_failure(error, endpoint)
        print(f"accessfabric smoke: {message}", file=sys.stderr)
        if args.json:
            print_json({"ok": False, "exit_code": int(code), "error": message})
        return int(code)
    if args.json:
        print_json(
            {
                "ok": True, "peer_node_id": result.peer_node_id, "endpoint": result.endpoint.url,
                "handshake_ms": round(result.handshake * 1e3, 3),
                "ping_rtts_ms": [round(rtt * 1e3, 3) for rtt in result.ping_rtts],
                "echo_bytes": result.echo_bytes, "echo_rtt_ms": round(result.echo_rtt * 1e3, 3),
            }
        )  # fmt: skip
        return int(SmokeExit.OK)
    for line in result.lines():
        print(line)
    return int(SmokeExit.OK)


def guarded(
    name: str, handler: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    """Turn :class:`UsageError` into one line on stderr and exit code 2, and
    :class:`AdminUnreachable` into one line and exit code 3."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except UsageError as exc:
            print(f"accessfabric {name}: {exc}", file=sys.stderr)
            return USAGE_ERROR
        except AdminUnreachable as exc:  # the running node's admin socket did not answer
            print(f"accessfabric {name}: {exc}", file=sys.stderr)
            return int(Exit.UNREACHABLE)
        except (KeyInUseError, ConfigConflict) as exc:  # node/host/key_lock.py, config_checks.py
            print(f"accessfabric {name}: {exc}", file=sys.stderr)
            return USAGE_ERROR

    return run


# ---------------------------------------------------------------------------- parser


_log_level = parse_log_level


def add_node_commands(
    commands: Any, components: Callable[[], tuple[NodeComponent, ...]] = tuple
) -> None:
    """Add ``keygen``, ``node`` and ``smoke`` to the ``accessfabric`` subparsers.

    ``components`` makes what ``node run`` hosts above the fabric (the services, which
    node/ does not import: the top-level CLI passes them in).
    """
    keygen = commands.add_parser(
        "keygen",
        help="create a node key file and print its node id",
        description="Create a new Ed25519 node key, write it to PATH with mode 0600 and "
        "print the node id derived from it.",
    )
    keygen.add_argument("--out", required=True, metavar="PATH", help="key file to write")
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    keygen.add_argument("--json", action="store_true", help="print JSON")
    keygen.set_defaults(handler=guarded("keygen", cmd_keygen))

    node = commands.add_parser(
        "node", help="run a node or show its id", description="Run a fabric node."
    )
    node_commands = node.add_subparsers(dest="node_command", metavar="SUBCOMMAND", required=True)
    run = node_commands.add_parser(
        "run",
        help="run the node until SIGTERM/SIGINT",
        description="Run a fabric node: listen, accept sessions, serve the built-in echo "
        "service, dial static peers. SIGTERM or SIGINT: GOAWAY every session, let open "
        "streams finish (drain_timeout, default 10 s), exit 0. Keys are described in "
        "docs/config.md; ACCESSFABRIC_* variables override the file.",
    )
    run.add_argument(
        "--config", metavar="FILE", help="node.toml (without it, ACCESSFABRIC_* variables only)"
    )
    run.add_argument(
        "--log-json", "--json", action="store_true", help="log one JSON object per line"
    )
    run.add_argument(
        "--log-level", type=_log_level, default=logging.INFO, metavar="LEVEL",
        help="debug, info (default), warning, error",
    )  # fmt: skip
    run.set_defaults(handler=guarded("node run", cmd_node_run), components=components)
    node_id = node_commands.add_parser(
        "id", help="print the node id of a key file", description="Print a key file's node id."
    )
    node_id.add_argument("--key", required=True, metavar="PATH", help="the node key file")
    node_id.add_argument(
        "--sealing-key", action="store_true",
        help="print the X25519 sealing public key (base64) instead, for other nodes' "
        "[[peers]] sealing_key or [sealing.keys]",
    )  # fmt: skip
    node_id.add_argument("--json", action="store_true", help="print JSON (id and sealing key)")
    node_id.set_defaults(handler=guarded("node id", cmd_node_id))

    smoke = commands.add_parser(
        "smoke",
        help="check that a node answers: handshake, 2 pings, 1 echo round trip",
        description="Open a fabric session to a node (pinning its node id), do two PING/PONG "
        "round trips and one DATA round trip on an 'echo' stream, print the RTTs.",
        epilog="exit codes:\n" + EXIT_CODE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    smoke.add_argument(
        "--peer", required=True, metavar="URL",
        help="tcp://HOST:PORT, wss://HOST:PORT/PATH, quic://HOST:PORT or https://HOST:PORT/PATH",
    )  # fmt: skip
    smoke.add_argument("--peer-id", required=True, metavar="ID", help="the node id to expect")
    smoke.add_argument(
        "--key", metavar="PATH", help="this side's key file (default: a fresh ephemeral key)"
    )
    smoke.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS",
        help="bound on the handshake and on each round trip (default 10)",
    )  # fmt: skip
    smoke.add_argument("--json", action="store_true", help="print JSON (also on failure)")
    smoke.set_defaults(handler=guarded("smoke", cmd_smoke))
