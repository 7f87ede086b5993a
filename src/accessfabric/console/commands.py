"""``accessfabric console serve``: run the admin console (:func:`add_console_commands`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

URL_ENV = "ACCESSFABRIC_CONTROL_URL"
ADMIN_ENV = "ACCESSFABRIC_ADMIN_TOKEN"
DEFAULT_URL = "https://127.0.0.1:8600"
AUTHORITY_ENV = "ACCESSFABRIC_AUTHORITY_KEY"
DEFAULT_LISTEN = "127.0.0.1:8700"


class ConsoleSetupError(Exception):
    """A user mistake in the console's arguments (one line, exit 2)."""


def _admin_token(args: argparse.Namespace) -> str:
    if args.admin_token_file is not None:
        try:
            token = Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            raise ConsoleSetupError(f"--admin-token-file: {exc.strerror}: {exc.filename}") from None
    else:
        token = os.environ.get(ADMIN_ENV, "").strip()
    if not token.startswith("afadm1_"):
        raise ConsoleSetupError(
            f"an admin token (afadm1_…) is needed: --admin-token-file PATH or {ADMIN_ENV}"
        )
    return token


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConsoleSetupError("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConsoleSetupError(f"--tls-cert/--tls-key: {exc}") from None
    return context


def _authority_key(args: argparse.Namespace) -> bytes | None:
    """The authority key that pins an ``https://`` control API (ADR 0017)."""
    from accessfabric.control.kernel.authority_key import parse_authority_key

    text = args.authority_key or os.environ.get(AUTHORITY_ENV)
    if not text:
        if args.control.startswith("https:"):
            raise ConsoleSetupError(
                f"an https control URL needs --authority-key (or ${AUTHORITY_ENV}): the "
                "'afauth1...' text 'control init' printed"
            )
        return None
    try:
        return parse_authority_key(text)
    except ValueError as exc:
        raise ConsoleSetupError(f"--authority-key: {exc}") from None


async def _serve(args: argparse.Namespace) -> int:
    from accessfabric.console.app import Console, build_console_app
    from accessfabric.console.control_api import ControlApi
    from accessfabric.console.sessions import SessionSigner
    from accessfabric.node.dialing.address import parse_host_port

    try:
        listen = parse_host_port(args.listen, allow_port_zero=True)
    except ValueError as exc:
        raise ConsoleSetupError(f"--listen: {exc}") from None
    token = _admin_token(args)
    tls = _tls(args)
    console = Console(
        ControlApi(args.control, token, authority_key=_authority_key(args)),
        SessionSigner(token, args.session_ttl),
        served_by=args.served_by,
        tls=tls is not None,
    )
    runner = web.AppRunner(build_console_app(console), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, listen.host, listen.port, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(
            f"accessfabric console: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr
        )
        return 1
    addresses = runner.addresses
    port = int(addresses[0][1]) if addresses else listen.port
    scheme = "https" if tls else "http"
    print(f"console serving on {scheme}://{listen.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_serve(args))
    except ConsoleSetupError as exc:
        print(f"accessfabric console: {exc}", file=sys.stderr)
        return 2


def add_console_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    console = commands.add_parser(
        "console",
        help="the admin console (a web app; host it as the fabric service admin-console)",
        description="The admin console: nodes, routes with score reasons, services, live "
        "throughput, relays, events; token creation and role revocation. docs/console.md.",
    )
    sub = console.add_subparsers(dest="console_command", metavar="COMMAND", required=True)
    serve = sub.add_parser("serve", help="serve the console on HOST:PORT")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT ({DEFAULT_LISTEN})")
    serve.add_argument(
        "--control", default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"the control plane's URL (${URL_ENV}, {DEFAULT_URL})",
    )  # fmt: skip
    serve.add_argument(
        "--admin-token-file", type=Path, default=None,
        help=f"a file holding the admin token the console reads with (else ${ADMIN_ENV})",
    )  # fmt: skip
    serve.add_argument(
        "--authority-key", default=None,
        help=f"the authority key that issued the control API's TLS certificate (${AUTHORITY_ENV})",
    )  # fmt: skip
    serve.add_argument("--session-ttl", type=float, default=3600.0, help="login lifetime (s)")
    serve.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate")
    serve.add_argument("--tls-key", default=None, help="... and this key")
    serve.add_argument("--served-by", default="", help="a label shown in the footer")
    serve.set_defaults(handler=_cmd_serve)
