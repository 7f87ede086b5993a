"""``accessfabric control …``: run a control plane, and operate it.

Wire it into the main command with :func:`add_control_parser`; ``python -m
accessfabric.control.server.cli`` runs the same commands on their own.  Exit codes follow
:mod:`accessfabric.exit_codes` like every other command: a user mistake (or a request the
control plane refused) is one line on stderr and exit status 2, an unreachable control
plane 3; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from accessfabric.control.client.cli_errors import (
    EXIT_UNREACHABLE,
    EXIT_USER,
    Failed,
    Unreachable,
    UserError,
)
from accessfabric.exit_codes import Exit

_log = logging.getLogger("accessfabric.control")
DEFAULT_URL = "https://127.0.0.1:8600"
URL_ENV = "ACCESSFABRIC_CONTROL_URL"
ADMIN_ENV = "ACCESSFABRIC_ADMIN_TOKEN"
AUTHORITY_ENV = "ACCESSFABRIC_AUTHORITY_KEY"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``45s``, ``30m``, ``1h``, ``2d`` -> seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (examples: 90s, 30m, 1h, 2d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"bad listen address {text!r} (expected HOST:PORT)")
    return host.strip("[]"), int(port)


# ---- init and serve ----------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _cmd_init(args: argparse.Namespace) -> int:
    from accessfabric.control.server.plane import DataDirError, init_data_dir
    from accessfabric.control.server.store.base import StoreError
    from accessfabric.identity.errors import IdentityError

    try:
        authority, token = init_data_dir(args.data, store_url=args.store)
    except (DataDirError, IdentityError, OSError, ValueError, StoreError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        from accessfabric.json_output import print_json

        print_json(
            {"authority_key": authority.public_key_text, "admin_token": token, "data": args.data}
        )
        return 0
    print(f"authority public key (nodes pin it): {authority.public_key_text}")
    print(f"admin token (shown once; keep it secret): {token}")
    print(f"  export {ADMIN_ENV}={token}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from accessfabric.control.server.plane import (
        ControlConfig,
        ControlPlane,
        DataDirError,
        open_data_dir,
    )
    from accessfabric.control.server.server import ControlServer
    from accessfabric.identity.errors import IdentityError
    from accessfabric.observe.log_format import log_event

    configure_logging(json_lines=args.log_json, level=args.log_level)
    from accessfabric.control.server.store.base import StoreError

    try:
        authority, store = open_data_dir(args.data, store_url=args.store)
    except (DataDirError, IdentityError, OSError, ValueError, StoreError) as exc:
        raise UserError(str(exc)) from None
    config = ControlConfig(
        heartbeat_interval=args.heartbeat_interval,
        route_lease_ttl=args.route_lease_ttl,
        service_lease_ttl=args.service_lease_ttl,
        replica_ttl=args.replica_ttl,
        access_policy_ttl=args.access_policy_ttl,
        max_route_coordinators=args.max_route_coordinators,
    )
    host, port = args.listen
    plane = ControlPlane(store, authority, config=config)
    ssl_context = _serve_tls(args, host, authority)

    async def serve() -> None:
        server = ControlServer(
            plane, host, port, ssl_context=ssl_context,
            max_connections_per_address=args.max_connections_per_address,
            max_pending_handshakes_per_address=args.max_pending_handshakes_per_address,
        )  # fmt: skip
        try:
            await server.start()
        except OSError as exc:
            raise Failed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        except StoreError as exc:
            raise UserError(f"cannot load the control plane's state: {exc}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # before saying it serves
            loop.add_signal_handler(signum, stop.set)
        print(
            f"control plane serving on {server.url} (authority {authority.public_key_text})",
            flush=True,
        )
        # As ``node run`` does (node/host/gc_pauses.py): a full collection walks every
        # object but the frozen; the loaded state (registry, tokens) and the modules are
        # exempted once.  At 1000 devices, full passes stalled the loop 0.2-0.6 s each
        # (issue 17, ADR 0043 "garbage collector").
        gc.collect()
        gc.freeze()
        # ... and so are the survivors of each full collection as the fleet's state grows
        # (control/server/gc_survivors.py: 50-180 ms passes in a 1000-device start).
        from accessfabric.control.server.gc_survivors import FreezeSurvivors

        survivors = FreezeSurvivors(loop)
        log_event(_log, "control plane serving", url=server.url, data=args.data,
                  frozen=gc.get_freeze_count())  # fmt: skip
        await stop.wait()
        survivors.remove()
        log_event(_log, "control plane stopping")
        await server.stop()
        print("control plane stopped", flush=True)

    try:
        asyncio.run(serve())
    finally:
        store.close()
    return 0


def _serve_tls(args: argparse.Namespace, host: str, authority: Any) -> Any:
    """TLS pinned through the authority key (ADR 0017); plain HTTP only on loopback."""
    from accessfabric.control.kernel import api_tls

    if not args.insecure_http:
        return api_tls.server_context(authority)
    if not api_tls.is_loopback(host):
        raise UserError(
            f"--insecure-http is only allowed on a loopback address, not {host} "
            "(tokens would cross the network in clear text)"
        )
    return None


# ---- operator commands (over the API, with the admin token) -------------------------------


def _admin_request(args: argparse.Namespace, method: str, path: str, document: Any = None) -> Any:
    import http.client
    from urllib.parse import urlsplit

    from accessfabric.control.kernel import api_tls

    token = args.admin_token or os.environ.get(ADMIN_ENV)
    if not token:
        raise UserError(f"no admin token: pass --admin-token or set {ADMIN_ENV}")
    url = urlsplit(args.server)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise UserError(f"bad control plane URL {args.server!r} (expected https://HOST:PORT)")
    port = url.port or (443 if url.scheme == "https" else 80)
    data = None if document is None else json.dumps(document).encode()
    headers = {"Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    connection: http.client.HTTPConnection
    try:
        if url.scheme == "https":
            connection = api_tls.pinned_https_connection(
                url.hostname, port, _authority_key(args), timeout=10
            )
        elif api_tls.is_loopback(url.hostname):
            connection = http.client.HTTPConnection(url.hostname, port, timeout=10)
        else:
            raise UserError(
                f"refusing to send the admin token in clear text to {url.hostname}: use https://"
            )
        with contextlib.closing(connection):
            connection.request(method, url.path.rstrip("/") + path, body=data, headers=headers)
            response = connection.getresponse()
            body = response.read()
    except api_tls.ControlTlsError as exc:
        raise UserError(f"{args.server}: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise Unreachable(f"cannot reach the control plane at {args.server}: {reason}") from None
    if response.status >= 400:
        try:
            error = json.loads(body)["error"]
            message = f"{error['message']} ({error['code']})"
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status}"
        raise UserError(f"control plane refused: {message}")
    return json.loads(body)


def _authority_key(args: argparse.Namespace) -> bytes:
    from accessfabric.control.kernel.authority_key import parse_authority_key

    text = getattr(args, "authority_key", None) or os.environ.get(AUTHORITY_ENV)
    if not text:
        raise UserError(
            f"an https control plane URL needs the authority key to pin: pass --authority-key "
            f"(printed by 'control init') or set {AUTHORITY_ENV}"
        )
    try:
        return parse_authority_key(text)
    except ValueError as exc:
        raise UserError(f"--authority-key: {exc}") from None


def _cmd_token_create(args: argparse.Namespace) -> int:
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    reply = _admin_request(
        args,
        "POST",
        "/v1/admin/tokens",
        {"tenant": args.tenant, "roles": roles, "ttl_s": args.ttl, "uses": args.uses},
    )
    return _answer(args, reply, reply["token"])


def _split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _cmd_grant_create(args: argparse.Namespace) -> int:
    document: dict[str, Any] = {
        "tenant": args.tenant,
        "services": _split_list(args.services),
        "roles": _split_list(args.roles),
        "classes": _split_list(args.classes),
        "min_trust_tier": args.min_trust_tier,
        "nodes": _split_list(args.nodes),
        "hosts": _split_list(args.hosts),
    }
    if args.ttl is not None:
        document["ttl_s"] = args.ttl
    reply = _admin_request(args, "POST", "/v1/admin/grants", document)
    return _answer(args, reply, reply["grant_id"])


def format_grants(grants: list[dict[str, Any]]) -> str:
    lines = [f"{'GRANT':<32}  {'TENANT':<12}  {'ROLES':<14}  {'TIER':>4}  SERVICES (CLASSES)"]
    for grant in grants:
        lines.append(
            f"{grant['grant_id']:<32}  {grant['tenant']:<12}  "
            f"{','.join(grant['roles']) or 'any':<14}  {grant['min_trust_tier']:>4}  "
            f"{','.join(grant['services'])} ({','.join(grant['classes'])})"
            + "".join(
                f" {label}={','.join(grant[key])}"
                for key, label in (("nodes", "nodes"), ("hosts", "hosts"))
                if grant.get(key)
            )
        )
    return "\n".join(lines)


def _cmd_grant_list(args: argparse.Namespace) -> int:
    reply = _admin_request(args, "GET", "/v1/admin/grants")
    return _answer(args, reply, format_grants(reply["grants"]))


def _cmd_grant_revoke(args: argparse.Namespace) -> int:
    reply = _admin_request(args, "DELETE", f"/v1/admin/grants/{args.grant}")
    services = ",".join(reply["services"])
    return _answer(
        args, reply, f"revoked grant {reply['grant_id']} ({reply['tenant']}: {services})"
    )


def _answer(args: argparse.Namespace, reply: dict[str, Any], text: str) -> int:
    """Print the control plane's REPLY as JSON under ``--json``, else TEXT."""
    from accessfabric.json_output import print_answer, rfc3339

    if isinstance(reply.get("enrolled_at"), int | float):
        reply["enrolled"] = rfc3339(reply["enrolled_at"])
    print_answer(args.json, reply, text)
    return 0


def _rfc3339(epoch: float) -> str:
    import datetime

    when = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cmd_token_list(args: argparse.Namespace) -> int:
    tokens = _admin_request(args, "GET", "/v1/admin/tokens")["tokens"]
    if args.json:
        for token in tokens:
            token["created"] = _rfc3339(token["created_at"])
            token["expires"] = _rfc3339(token["expires_at"])
        print(json.dumps(tokens, indent=2))
        return 0
    if not tokens:
        print("no tokens")
        return 0
    rows = [("TOKEN ID", "TENANT", "ROLES", "USES LEFT", "EXPIRES")]
    for token in tokens:
        rows.append(
            (token["token_id"], token["tenant"], ",".join(token["roles"]) or "-",
             str(token["uses"]), _rfc3339(token["expires_at"]))
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    token_id = args.token_id
    if token_id.startswith("aft1_"):  # the whole token was pasted: take its id
        token_id = token_id.split("_")[1]
    reply = _admin_request(args, "DELETE", f"/v1/admin/tokens/{token_id}")
    return _answer(args, reply, f"revoked token {token_id}")


def _cmd_remove_node(args: argparse.Namespace) -> int:
    reply = _admin_request(args, "DELETE", f"/v1/admin/nodes/{args.node}")
    return _answer(
        args,
        reply,
        f"removed {reply['node_id']} (tenant {reply['tenant']}, roles "
        f"{','.join(reply['roles']) or 'none'}); its cached record stays valid until it expires",
    )


def _cmd_drain(args: argparse.Namespace) -> int:
    method = "DELETE" if args.undrain else "POST"
    reply = _admin_request(args, method, f"/v1/admin/nodes/{args.node}/drain")
    if reply.get("draining"):
        text = (
            f"draining {reply['node_id']}: no device is placed on it and no new route goes "
            "through it; it GOAWAYs each session once its streams finished (at most its "
            "drain_timeout) at its next heartbeat"
        )
    else:
        text = f"{reply['node_id']} is not drained: devices may be placed on it again"
    return _answer(args, reply, text)


def _age(value: float | None) -> str:
    if value is None:
        return "never"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.0f}h"


def format_nodes(nodes: list[dict[str, Any]]) -> str:
    header = ("NODE", "ROLES", "TENANT", "HEALTH", "LAST HEARTBEAT", "VERSIONS")
    rows = [header]
    for node in nodes:
        versions = node.get("versions", {})
        protocol = ",".join(str(v) for v in versions.get("protocol", []))
        software = versions.get("software", "")
        rows.append(
            (
                node["node_id"],
                ",".join(node["roles"]) or "-",
                node["tenant"],
                node["health"] + (", draining" if node.get("draining") else ""),
                _age(node.get("last_heartbeat_age_s")),
                f"p{protocol} {software}".strip() if protocol else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _cmd_nodes(args: argparse.Namespace) -> int:
    reply = _admin_request(args, "GET", "/v1/admin/nodes")
    if args.json:
        print(json.dumps(reply["nodes"], indent=2))
    elif not reply["nodes"]:
        print("no nodes enrolled")
    else:
        print(format_nodes(reply["nodes"]))
    return 0


def _cmd_revoke_role(args: argparse.Namespace) -> int:
    reply = _admin_request(
        args, "POST", f"/v1/admin/nodes/{args.node}/revoke-role", {"role": args.role}
    )
    roles = ",".join(reply["roles"]) or "none"
    return _answer(
        args,
        reply,
        f"revoked {args.role} from {reply['node_id']}: roles now {roles}, revision "
        f"{reply['revision']}",
    )


# ---- node-side commands -------------------------------------------------------------------


def _cmd_agent(args: argparse.Namespace) -> int:
    from accessfabric.control.client.agent import run_agent

    return run_agent(args)


def _cmd_lease(args: argparse.Namespace) -> int:
    from accessfabric.control.client.agent import run_lease

    return run_lease(args)


# ---- parser -------------------------------------------------------------------------------


def _operator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        metavar="URL",
        help=f"control plane URL (default ${URL_ENV} or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--admin-token",
        metavar="TOKEN",
        help=f"admin token printed by 'control init' (default ${ADMIN_ENV})",
    )
    parser.add_argument(
        "--authority-key",
        metavar="AFAUTH",
        help="authority public key that issued the server's TLS certificate, printed by "
        f"'control init' (default ${AUTHORITY_ENV})",
    )


def _operator_command(
    parser: argparse.ArgumentParser,
    handler: Callable[[argparse.Namespace], int],
    *,
    json_help: str = "print JSON",
    **defaults: Any,
) -> None:
    """``--json``, the operator options and HANDLER: the shape of every admin subcommand."""
    parser.add_argument("--json", action="store_true", help=json_help)
    _operator_options(parser)
    parser.set_defaults(handler=_guarded(handler), **defaults)


def _node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        metavar="URL",
        help=f"control plane URL (default ${URL_ENV} or {DEFAULT_URL})",
    )
    parser.add_argument("--key", required=True, metavar="PATH", help="node key file (keygen)")
    parser.add_argument(
        "--authority", required=True, metavar="AFAUTH", help="authority public key to pin"
    )
    parser.add_argument(
        "--state", required=True, metavar="DIR", help="cache directory (record, leases, ...)"
    )


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """``--log-json`` and ``--log-level``, as ``node run`` has them."""
    from accessfabric.observe.log_format import parse_log_level

    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    parser.add_argument(
        "--log-level", type=parse_log_level, default=logging.INFO, metavar="LEVEL",
        help="debug, info (default), warning, error",
    )  # fmt: skip


def configure_logging(*, json_lines: bool, level: int) -> None:
    from accessfabric.observe.log_format import configure_logging as configure

    configure(json_lines=json_lines, level=level)


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="sqlite (default: DIR/control.db) or etcd://host:port,host:port[/namespace] "
        "for several replicas sharing one etcd cluster (docs/control.md)",
    )


def add_control_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``control`` and its subcommands to the main command's subparsers."""
    control: argparse.ArgumentParser = subparsers.add_parser(
        "control",
        help="run and operate the control plane",
        description="The control plane enrolls nodes, collects heartbeats, keeps the peer "
        "directory, plans routes and signs short-lived route and service leases.",
    )
    commands = control.add_subparsers(dest="control_command", metavar="COMMAND", required=True)

    init = commands.add_parser(
        "init",
        help="create the authority key and the first admin token",
        description="Create DIR with the authority key and a store; print the authority "
        "public key (nodes pin it) and an admin token (shown once).",
    )
    init.add_argument("--data", required=True, metavar="DIR", help="data directory to create")
    init.add_argument("--json", action="store_true", help="print JSON")

    _store_option(init)
    init.set_defaults(handler=_guarded(_cmd_init))

    serve = commands.add_parser(
        "serve",
        help="serve the control API",
        description="Serve the HTTP/JSON control API over TLS (OpenAPI at /openapi.json) "
        "until SIGINT or SIGTERM.  The TLS certificate is made at start and signed by the "
        "authority key, which clients pin (ADR 0017).",
    )
    serve.add_argument("--data", required=True, metavar="DIR", help="data directory (init)")
    _store_option(serve)
    serve.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 8600),
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8600)",
    )
    serve.add_argument(
        "--insecure-http",
        action="store_true",
        help="serve plain HTTP instead of TLS (only on a loopback address, for development)",
    )
    serve.add_argument("--heartbeat-interval", type=parse_duration, default=10.0, metavar="T")
    serve.add_argument("--route-lease-ttl", type=parse_duration, default=300.0, metavar="T")
    serve.add_argument("--service-lease-ttl", type=parse_duration, default=60.0, metavar="T")
    serve.add_argument("--replica-ttl", type=parse_duration, default=15.0, metavar="T")
    serve.add_argument(
        "--access-policy-ttl", type=parse_duration, default=300.0, metavar="T",
        help="how long a host's signed grants stay valid without the control plane "
        "(default 5m)",
    )  # fmt: skip
    serve.add_argument(
        "--max-connections-per-address", type=_positive_int, default=256, metavar="N",
        help="established connections one source address may hold (default 256; a fleet "
        "behind one NAT needs one per node)",
    )  # fmt: skip
    serve.add_argument(
        "--max-pending-handshakes-per-address", type=_positive_int, default=64, metavar="N",
        help="TLS handshakes one source address may have under way (default 64)",
    )  # fmt: skip
    serve.add_argument(
        "--max-route-coordinators", type=_positive_int, default=256, metavar="N",
        help="route coordinators (one per tenant requesting leases) a replica keeps "
        "(default 256; set it above your tenant count)",
    )  # fmt: skip
    add_log_options(serve)
    serve.set_defaults(handler=_guarded(_cmd_serve))

    token = commands.add_parser("token", help="enrollment tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    create = token_commands.add_parser(
        "create",
        help="create an enrollment token (printed once)",
        description="Create a token that enrolls nodes into TENANT with ROLES.",
    )
    create.add_argument("--tenant", required=True, help="tenant the nodes join")
    create.add_argument(
        "--roles", required=True, help="comma-separated roles, e.g. relay,exit (see docs)"
    )
    create.add_argument(
        "--ttl", type=parse_duration, default=3600.0, metavar="T", help="validity (default 1h)"
    )
    create.add_argument("--uses", type=int, default=1, metavar="N", help="enrollments (default 1)")
    _operator_command(create, _cmd_token_create, json_help="print the token's details as JSON")

    nodes = commands.add_parser(
        "nodes",
        help="list enrolled nodes with roles, health and versions",
        description="Node id, roles, tenant, health, age of the last heartbeat, versions.",
    )
    _operator_command(nodes, _cmd_nodes)

    grant = commands.add_parser(
        "grant",
        help="access grants: which nodes may reach which services",
        description="Services are default deny: a host serves a stream only to a node a "
        "grant admits (docs/control.md, Access grants).",
    )
    grant_commands = grant.add_subparsers(dest="grant_command", metavar="COMMAND", required=True)
    grant_create = grant_commands.add_parser(
        "create",
        help="admit a tenant's nodes (optionally only some roles) to services",
        description="Admit nodes of TENANT (holding one of ROLES, if given, and of at "
        "least the trust tier; only NODES, if given) to SERVICES, in CLASSES (default all), "
        "on every host of TENANT (only HOSTS, if given).  Named nodes must be enrolled "
        "nodes of TENANT.",
    )
    grant_create.add_argument("--tenant", required=True, help="tenant of the admitted nodes")
    grant_create.add_argument(
        "--services", required=True, help="comma-separated services, e.g. web,ssh"
    )
    grant_create.add_argument("--roles", help="comma-separated roles (default: any role)")
    grant_create.add_argument("--classes", help="comma-separated traffic classes (default all)")
    grant_create.add_argument(
        "--nodes", help="comma-separated node ids of TENANT: only these may open (default: any)"
    )
    grant_create.add_argument(
        "--hosts", help="comma-separated node ids of TENANT's hosts it holds on (default: all)"
    )
    grant_create.add_argument(
        "--min-trust-tier", type=int, default=0, metavar="N", help="0..3 (default 0)"
    )
    grant_create.add_argument(
        "--ttl", type=parse_duration, metavar="T", help="validity (default one year)"
    )
    _operator_command(grant_create, _cmd_grant_create, json_help="print the grant as JSON")
    grant_list = grant_commands.add_parser("list", help="list every grant")
    _operator_command(grant_list, _cmd_grant_list)
    grant_revoke = grant_commands.add_parser(
        "revoke",
        help="revoke a grant (hosts stop honouring it at their next heartbeat)",
    )
    grant_revoke.add_argument("grant", metavar="GRANT", help="grant id (32 hex digits)")
    _operator_command(grant_revoke, _cmd_grant_revoke)
    listing = token_commands.add_parser(
        "list", help="list enrollment tokens (without secrets)",
        description="Token id, tenant, roles, uses left and expiry (RFC 3339, UTC).",
    )  # fmt: skip
    _operator_command(listing, _cmd_token_list)
    revoke_token = token_commands.add_parser(
        "revoke", help="revoke an enrollment token",
        description="Delete the token: it can no longer enroll a node (already enrolled "
        "nodes keep their records).",
    )  # fmt: skip
    revoke_token.add_argument("token_id", metavar="TOKEN_ID", help="from token list (or the token)")
    _operator_command(revoke_token, _cmd_token_revoke)

    remove = commands.add_parser(
        "remove-node", help="remove a node from the registry and the directory",
        description="Delete NODE's record: it leaves the peer directory and its signed "
        "requests are refused. Records other nodes cached stay valid until they expire "
        "(revoke its roles first when that matters).",
    )  # fmt: skip
    remove.add_argument("node", metavar="NODE", help="node id")
    _operator_command(remove, _cmd_remove_node)

    revoke = commands.add_parser(
        "revoke-role",
        help="take a role from a node",
        description="Re-sign NODE's record without ROLE (next revision); nodes learn it "
        "from heartbeat replies and the peer directory.",
    )
    revoke.add_argument("node", metavar="NODE", help="node id")
    revoke.add_argument("role", metavar="ROLE", help="role to revoke")
    _operator_command(revoke, _cmd_revoke_role)

    for name, undrain in (("drain", False), ("undrain", True)):
        drain = commands.add_parser(
            name,
            help="end a node's drain" if undrain else "drain a node: devices move to other entries",
            description=(
                "End NODE's drain: devices may be placed on it again (none moves back)."
                if undrain
                else "Take NODE out of service without stopping it: the control plane "
                "places no device on it and routes nothing new through it; at its next "
                "heartbeat the node refuses new sessions and GOAWAYs each session once "
                "its streams finished (at most its drain_timeout). docs/fleet.md#drain."
            ),
        )
        drain.add_argument("node", metavar="NODE", help="node id")
        _operator_command(drain, _cmd_drain, undrain=undrain)

    agent = commands.add_parser(
        "agent",
        help="enroll a node and heartbeat (the node side, standalone)",
        description="Enroll with --token (once), then heartbeat until SIGINT/SIGTERM, "
        "reporting the given facts; optionally serve --service as a replica.",
    )
    _node_options(agent)
    agent.add_argument("--token", help="enrollment token (needed the first time)")
    agent.add_argument(
        "--peer", action="append", default=[], metavar="NODE_ID=RTT_MS", help="measured link"
    )
    agent.add_argument("--region", default="", help="placement region")
    agent.add_argument("--failure-domain", default="", help="placement failure domain")
    agent.add_argument("--service", action="append", default=[], metavar="NAME", help="serve")
    agent.add_argument(
        "--service-mode", default="active-active", choices=["active-active", "leader-follower"]
    )
    add_log_options(agent)
    agent.set_defaults(handler=_guarded(_cmd_agent))

    lease = commands.add_parser(
        "lease",
        help="get route leases to a service (from the cache when unreachable)",
        description="Ask for route leases from this node to SERVICE and print them with "
        "their reasons; when the control plane is unreachable, print valid cached leases "
        "and the client's status.",
    )
    _node_options(lease)
    lease.add_argument("--service", required=True, help="logical service name")
    lease.add_argument("--class", dest="traffic_class", default="interactive", help="class")
    lease.add_argument("--json", action="store_true", help="print JSON")
    lease.set_defaults(handler=_guarded(_cmd_lease))
    return control


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a control subcommand, turning user mistakes into one line on stderr."""
    try:
        return handler(args)
    except UserError as exc:
        print(f"accessfabric control: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except Unreachable as exc:
        print(f"accessfabric control: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Failed as exc:
        print(f"accessfabric control: error: {exc}", file=sys.stderr)
        return int(Exit.FAILED)
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    return functools.partial(run_handler, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="accessfabric")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_control_parser(subparsers)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
