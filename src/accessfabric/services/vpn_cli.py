"""``accessfabric vpn up``: a node that tunnels a TUN device (client) or serves as an exit.

The process is the whole node: besides the VPN it runs the config's ``[[services]]`` and
``[[forwards]]`` like ``node run`` does, so what its control link advertises (every
service the dispatcher serves, ``vpn`` included on an exit) is what it serves.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from typing import TYPE_CHECKING

from accessfabric.observe.log_format import configure_logging, log_event
from accessfabric.services.host import ServicesComponent, node_opener
from accessfabric.services.tun import TUN_F_USO4, Tun, configure, open_tun
from accessfabric.services.vpn import VpnClient, VpnExit
from accessfabric.services.vpn_args import argument_problems, describe_setup_error
from accessfabric.services.vpn_wire import VPN_SERVICE, ClassRules, class_rules

if TYPE_CHECKING:
    from accessfabric.node.runtime import NodeRuntime

log = logging.getLogger(__name__)


class VpnComponent:
    """Runs with the node: opens and configures the TUN device, then the client or exit."""

    def __init__(
        self,
        *,
        exit_node: bool,
        name: str = "af%d",
        address: str | None = None,
        routes: tuple[str, ...] = (),
        shards: int = 2,
        heavy_bytes: int | None = None,
        forwarding: bool = False,
        offload: bool = True,
        queues: int = 1,
        urgent_queue: bool = True,
        rules: ClassRules | None = None,
        io_threads: bool = False,
        v1_only: bool = False,
    ) -> None:
        self.exit_node = exit_node
        self.v1_only = v1_only
        self.name = name
        self.address = address
        self.routes = routes
        self.shards = shards
        self.heavy_bytes = heavy_bytes
        self.forwarding = forwarding
        self.offload = offload
        self.queues = queues
        self.urgent_queue = urgent_queue
        self.rules = rules
        self.io_threads = io_threads
        self.tun: Tun | None = None
        self.vpn: VpnClient | VpnExit | None = None

    async def start(self, runtime: NodeRuntime) -> None:
        rules = self.rules or ClassRules()
        urgent_ports = rules.dns_ports | rules.interactive_ports if self.urgent_queue else None
        tun = self.tun = open_tun(
            self.name, offload=self.offload, queues=self.queues, urgent_ports=urgent_ports
        )
        log_event(
            log, "tun device open", device=tun.name, queues=len(tun.fds),
            offloads=",".join(tun.offload_names()) or ("refused" if self.offload else "off"),
            urgent_queue=tun.urgent_fd is not None,
        )  # fmt: skip
        if tun.steering_error is not None:
            log_event(
                log, "tun urgent queue unavailable (one queue for every flow)",
                logging.WARNING, error=tun.steering_error,
            )  # fmt: skip
        configure(tun, self.address, self.routes)
        if self.forwarding:
            subprocess.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        options = {
            "shards": self.shards, "heavy_bytes": self.heavy_bytes, "rules": self.rules,
            "vnet": tun.vnet_hdr, "threads": self.io_threads,
            "uso": bool(tun.offloads & TUN_F_USO4), "urgent_fd": tun.urgent_fd,
        }  # fmt: skip
        if self.exit_node:
            vpn_exit = VpnExit(tun.fds, v1_only=self.v1_only, **options)  # type: ignore[arg-type]
            runtime.dispatcher.register(VPN_SERVICE, vpn_exit.handle)
            self.vpn = vpn_exit
        else:
            self.vpn = VpnClient(node_opener(runtime), tun.fds, **options)  # type: ignore[arg-type]
        vpn = self.vpn
        runtime.observe.add_section("vpn", lambda: [{"device": self.tun_name, **vpn.status()}])

    @property
    def tun_name(self) -> str:
        return self.tun.name if self.tun is not None else "-"

    async def close(self) -> None:
        if self.vpn is not None:
            await self.vpn.close()
        if self.tun is not None:
            self.tun.close()
            self.tun = None


def add_vpn_arguments(up: argparse.ArgumentParser) -> None:
    up.add_argument("--config", required=True, metavar="FILE", help="node.toml of this node")
    up.add_argument("--exit", action="store_true", help="serve as the exit (the vpn service)")
    up.add_argument("--dev", default="af%d", metavar="NAME", help="TUN name (default af%%d)")
    up.add_argument("--address", metavar="CIDR", help="tunnel address, e.g. 10.99.0.2/24")
    up.add_argument(
        "--route", action="append", default=[], metavar="CIDR",
        help="send this prefix through the tunnel (repeatable; client)",
    )  # fmt: skip
    up.add_argument("--shards", type=int, default=2, help="streams per class (default 2)")
    up.add_argument(
        "--heavy-bytes", type=int, default=None, metavar="N",
        help="a flow moving more than N bytes within 1 s becomes bulk (default 1 MiB)",
    )  # fmt: skip
    up.add_argument("--forwarding", action="store_true", help="exit: set net.ipv4.ip_forward=1")
    up.add_argument(
        "--no-offload", dest="offload", action="store_false",
        help="plain TUN: no virtio-net header, no TSO/USO (default: offloads the kernel takes)",
    )  # fmt: skip
    up.add_argument(
        "--queues", type=int, default=1, metavar="N",
        help="TUN queues (IFF_MULTI_QUEUE, 1..16; default 1)",
    )  # fmt: skip
    up.add_argument(
        "--no-urgent-queue", dest="urgent_queue", action="store_false",
        help="one TUN queue for every flow (default with --queues 1: a second queue, "
        "steered by an eBPF program, for ICMP and the dns/interactive ports, read first)",
    )  # fmt: skip
    up.add_argument(
        "--io-threads", action="store_true",
        help="read and write the TUN device on threads (syscalls off the event loop)",
    )  # fmt: skip
    up.add_argument(
        "--v1-only", action="store_true",
        help="exit: refuse AFV2 streams, as an exit that predates offloads does "
        "(to try clients against one; they fall back to v1 records)",
    )  # fmt: skip
    up.add_argument(
        "--log-json", "--json", action="store_true", help="log one JSON object per line"
    )


def vpn_up(args: argparse.Namespace) -> int:
    from accessfabric.node.admin.commands import UsageError, run_on_node_loop
    from accessfabric.node.config.node_config import ConfigError, load_node_config
    from accessfabric.node.runtime import run_node

    try:
        config = load_node_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if not 1 <= args.shards <= 255:
        raise UsageError("--shards: 1..255")
    for problem in argument_problems(args.dev, args.address, args.route):
        raise UsageError(problem)
    if not 1 <= args.queues <= 16:
        raise UsageError("--queues: 1..16")
    if args.exit and any(service.name == VPN_SERVICE for service in config.services):
        raise UsageError(
            f"{config.source}: services: {VPN_SERVICE!r} is served by `vpn up --exit` "
            "itself; remove that [[services]] entry"
        )
    configure_logging(json_lines=args.log_json or config.log_json, level=logging.INFO)
    component = VpnComponent(
        exit_node=args.exit, name=args.dev, address=args.address, routes=tuple(args.route),
        shards=args.shards, heavy_bytes=args.heavy_bytes, forwarding=args.forwarding,
        offload=args.offload, queues=args.queues, urgent_queue=args.urgent_queue,
        rules=class_rules(config.vpn),
        io_threads=args.io_threads, v1_only=args.v1_only,
    )  # fmt: skip
    try:
        # One process per node runs everything its config says: the VPN (first: a TUN
        # that cannot be opened stops start-up before any forward listens), then the
        # [[services]] and [[forwards]] (docs/services.md, "One process per node").
        code: int = run_on_node_loop(run_node(config, components=(component, ServicesComponent())))
    except PermissionError as exc:
        print(f"accessfabric vpn up: needs root (CAP_NET_ADMIN): {exc}", file=sys.stderr)
        return 1
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"accessfabric vpn up: {describe_setup_error(exc, args.dev)}", file=sys.stderr)
        return 1
    return code
