"""The ``accessfabric`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from accessfabric import __version__

if TYPE_CHECKING:
    from accessfabric.node.runtime import NodeComponent

BENCH_EXTRA_MODULES = frozenset({"h2", "aioquic"})
"""What the ``bench`` extra installs: baselines some suites compare against."""


def _cmd_bench(args: argparse.Namespace) -> int:
    from accessfabric.bench import BenchSetupError, load_suite
    from accessfabric.bench.progress import ProgressTicker

    try:
        with ProgressTicker(f"bench {args.suite}", interval=args.progress_interval):
            report = load_suite(args.suite)(args.quick)
    except BenchSetupError as error:
        print(f"accessfabric bench {args.suite}: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if error.name not in BENCH_EXTRA_MODULES:
            raise
        print(
            f"accessfabric bench {args.suite}: needs {error.name} for its baseline: "
            "pip install 'accessfabric[bench]'",
            file=sys.stderr,
        )
        return 2
    print(report.to_json() if args.json else report.to_table())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from accessfabric.demo.run import run_demo

    code: int = run_demo(args)
    return code


def _node_components() -> tuple[NodeComponent, ...]:
    """What ``node run`` hosts above the fabric: the services (node/ never imports them)."""
    from accessfabric.services.host import ServicesComponent

    return (ServicesComponent(),)


def build_parser() -> argparse.ArgumentParser:
    from accessfabric.bench import SUITES

    parser = argparse.ArgumentParser(
        prog="accessfabric",
        description="A distributed secure access fabric: nodes, sessions, relays, services.",
    )
    parser.add_argument("--version", action="version", version=f"accessfabric {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bench = commands.add_parser(
        "bench",
        help="run a benchmark suite beside its baseline",
        description="Run a benchmark suite; every figure is printed with the baseline "
        "measured in the same run, because only ratios are comparable on a noisy machine.",
    )
    bench.add_argument("suite", choices=sorted(SUITES), help="which suite to run")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--quick", action="store_true", help="a short run (under 30 s)")
    bench.add_argument(
        "--progress-interval", type=float, default=5.0, metavar="S",
        help="seconds between progress lines on stderr (default 5)",
    )  # fmt: skip
    bench.set_defaults(handler=_cmd_bench)

    demo = commands.add_parser(
        "demo",
        help="show the fabric working (what `make demo` runs)",
        description="On loopback, no configuration, no root: a control plane and five "
        "enrolled nodes, a bulk download and an interactive session through fabric node "
        "processes at once with a live view, then through relays on leased routes with "
        "relay-a killed midway; a summary; exit 0, nothing left running.",
    )
    from accessfabric.demo.run import add_demo_arguments

    add_demo_arguments(demo)
    demo.set_defaults(handler=_cmd_demo)

    from accessfabric.node.admin.commands import add_node_commands

    add_node_commands(commands, components=_node_components)
    from accessfabric.services.commands import add_service_commands

    add_service_commands(commands)
    from accessfabric.conformance.command import add_conformance_command

    add_conformance_command(commands)
    from accessfabric.control.server.cli import add_control_parser

    add_control_parser(commands)
    from accessfabric.service_unit import add_service_unit_commands

    add_service_unit_commands(commands)
    from accessfabric.tools_cli import add_tool_commands

    add_tool_commands(commands, build_parser)
    from accessfabric.console.commands import add_console_commands

    add_console_commands(commands)
    from accessfabric.node.admin.diag_commands import add_diag_commands

    sim = commands.add_parser("sim", help="simulations on loopback (fleet)")
    sim_commands = sim.add_subparsers(dest="sim_command", required=True)
    from accessfabric.sim.fleet import add_fleet_arguments, cmd_fleet

    fleet = sim_commands.add_parser(
        "fleet",
        help="N real devices against an entry pool, with a live view",
        description="Run N real devices (node runtimes in worker processes) against a "
        "control plane and an entry pool on loopback; see docs/fleet.md.",
    )
    add_fleet_arguments(fleet)
    fleet.set_defaults(handler=cmd_fleet)

    add_diag_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``accessfabric ... | head``): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    sys.exit(main())
