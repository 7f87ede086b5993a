"""``accessfabric service unit|install``: a systemd unit that runs ``node run`` as a service.

``Type=notify``: the node says ``READY=1`` once it listens (``node/host/sd_notify.py``),
so ``systemctl start`` returns when it really serves and dependent units wait for
it; ``systemctl reload`` sends SIGHUP (``node/reload.py``); ``systemctl stop``
sends SIGTERM and waits for the drain.  Exit code 2 (a mistake in the config or
a key in use) is not restarted: restarting cannot fix it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from accessfabric.exit_codes import Exit

UNIT_DIR = Path("/etc/systemd/system")
UNIT_TEMPLATE = """\
# Written by `accessfabric service install`; docs/node.md, "Running as a service".
[Unit]
Description=accessfabric node {name} ({config})
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={command} node run --config {config_arg}
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGTERM
TimeoutStopSec={stop_timeout}
Restart=on-failure
RestartSec=2
RestartPreventExitStatus={usage}
{user}NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
ProtectHome=read-only

[Install]
WantedBy=multi-user.target
"""


def render_unit(
    config: Path,
    *,
    name: str,
    python: str = sys.executable,
    user: str | None = None,
    stop_timeout: float = 30.0,
) -> str:
    """The unit text; ``stop_timeout`` should exceed the node's ``drain_timeout``."""
    command = f"{shlex.quote(python)} -m accessfabric"
    return UNIT_TEMPLATE.format(
        name=name, config=config, config_arg=shlex.quote(str(config)), command=command,
        stop_timeout=int(stop_timeout), usage=int(Exit.USAGE),
        user=f"User={user}\n" if user else "",
    )  # fmt: skip


def _unit_for(args: argparse.Namespace) -> tuple[str, str]:
    from accessfabric.node.admin.commands import UsageError
    from accessfabric.node.config.node_config import ConfigError, load_node_config

    config_path = Path(args.config).resolve()
    try:
        config = load_node_config(config_path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    name = args.name or config_path.stem
    if not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"--name: {name!r}: letters, digits, '-' and '_' only")
    text = render_unit(
        config_path, name=name, user=args.user, stop_timeout=config.drain_timeout + 20
    )
    return f"accessfabric-{name}.service", text


def cmd_service_unit(args: argparse.Namespace) -> int:
    _, text = _unit_for(args)
    print(text, end="")
    return 0


def cmd_service_install(args: argparse.Namespace) -> int:
    from accessfabric.node.admin.commands import UsageError

    unit_name, text = _unit_for(args)
    unit_dir = Path(args.unit_dir)
    if not unit_dir.is_dir():
        raise UsageError(f"--unit-dir: {unit_dir} is not a directory")
    path = unit_dir / unit_name
    try:
        path.write_text(text)
    except PermissionError:
        raise UsageError(f"cannot write {path}: permission denied (run as root)") from None
    step = f"systemctl daemon-reload && systemctl enable --now {unit_name}"
    if args.json:
        from accessfabric.json_output import print_json

        print_json({"unit": unit_name, "path": str(path), "next": step})
        return 0
    print(f"wrote {path}")
    print(f"next: {step}")
    return 0


def add_service_unit_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from accessfabric.node.admin.commands import guarded

    service = commands.add_parser(
        "service",
        help="run a node as a systemd service (Type=notify)",
        description="Print or install a systemd unit that runs `node run --config FILE` "
        "with Type=notify, reload on SIGHUP and a drain on stop.",
    )
    sub = service.add_subparsers(dest="service_command", metavar="SUBCOMMAND", required=True)
    for verb, handler, text in (
        ("unit", cmd_service_unit, "print the unit"),
        ("install", cmd_service_install, "write it to the unit directory"),
    ):
        parser = sub.add_parser(verb, help=text, description=text)
        parser.add_argument("--config", required=True, metavar="FILE", help="the node's node.toml")
        parser.add_argument("--name", help="unit name part (default: the config's file stem)")
        parser.add_argument("--user", help="run as this user (default root)")
        if verb == "install":
            parser.add_argument("--json", action="store_true", help="print JSON")
            parser.add_argument(
                "--unit-dir", default=str(UNIT_DIR), metavar="DIR",
                help=f"where to write it (default {UNIT_DIR})",
            )  # fmt: skip
        parser.set_defaults(handler=guarded(f"service {verb}", handler))
