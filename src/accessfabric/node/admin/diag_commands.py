"""``accessfabric diag route SERVICE``, ``diag stream`` and ``diag memory``: ask a running node
over its admin socket (:mod:`accessfabric.node.admin.diagnostics`); tables, or ``--json``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from accessfabric.json_output import print_answer
from accessfabric.node.admin.commands import admin_socket, guarded
from accessfabric.node.admin.memory_diag import DEFAULT_TOP, MAX_TOP
from accessfabric.node.admin.status import ask_admin, table

TIMEOUT = 60.0


def _ask(args: argparse.Namespace, path: str, query: dict[str, str]) -> tuple[int, Any]:
    return ask_admin(admin_socket(args.socket, args.config), "GET", path, query, timeout=TIMEOUT)


def _fail(message: str, code: int) -> int:
    print(f"accessfabric diag: {message}", file=sys.stderr)
    return code


def _route_rows(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "rank": "primary" if r["rank"] == 0 else f"alternate-{r['rank']}",
            "path": r["hops"],
            "ok": "yes" if r["ok"] else "NO",
            "hop_rtt_ms": r["hop_rtt_ms"],
            "beyond_hop1_ms": r.get("beyond_hop1_ms"),
            "end_to_end_ms": r["end_to_end_ms"],
            "ping_loss": r["ping_loss"],
            "burst_mbps": r["burst_mbps"],
            "failing_hop": r["failing_hop"],
            "error": r["error"] or "-",
        }
        for r in routes
    ]


def cmd_diag_route(args: argparse.Namespace) -> int:
    query = {"service": args.service, "class": args.traffic_class, "burst": str(args.burst)}
    status, document = _ask(args, "/diag/route", query)
    if status == 400:
        return _fail(str(document), 2)
    if not isinstance(document, dict):
        return _fail(f"the node answered {status}: {document}", 1)
    heading = f"routes to {document['service']} ({document['class']}):"
    if document.get("error"):
        rows = [f"  none: {document['error']}"]
    else:
        rows = table(_route_rows(document["routes"]))
    print_answer(args.json, document, "\n".join([heading, *rows]))
    if status != 200:
        return 1
    return 0 if any(r["ok"] for r in document["routes"]) else 1


def cmd_diag_stream(args: argparse.Namespace) -> int:
    status, document = _ask(args, "/diag/streams", {})
    if status != 200 or not isinstance(document, dict):
        return _fail(f"the node answered {status}: {document}", 1)
    print_answer(args.json, document, "\n".join(table(document["streams"])))
    return 0


def cmd_diag_memory(args: argparse.Namespace) -> int:
    action = "start" if args.start else "stop" if args.stop else "report"
    status, document = _ask(args, "/diag/memory", {"action": action, "top": str(args.top)})
    if status == 400:
        return _fail(str(document), 2)
    if status != 200 or not isinstance(document, dict):
        return _fail(f"the node answered {status}: {document}", 1)
    heap = document.get("c_heap") or {}
    lines = [
        f"rss {document['rss_bytes']} B, C heap in use {heap.get('in_use_bytes', '-')} B "
        f"free {heap.get('free_bytes', '-')} B, tracing {'on' if document['tracing'] else 'off'}"
    ]
    if "traced_bytes" in document:
        lines.append(f"traced since start: {document['traced_bytes']} B")
        lines += table(document["sites"])
    if "types" in document:
        lines += table(document["types"])
    print_answer(args.json, document, "\n".join(lines))
    return 0


def add_diag_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    diag = commands.add_parser(
        "diag",
        help="probe a service's routes, list live streams, show memory (ask a running node)",
        description="Per-route and per-stream diagnostics of a running node, over its "
        "admin socket. docs/console.md#diagnostics.",
    )
    sub = diag.add_subparsers(dest="diag_command", metavar="COMMAND", required=True)
    route = sub.add_parser(
        "route",
        help="probe the primary and each alternate route to SERVICE",
        description="On each route: the first hop's session and PINGs (RTT, loss), a probe "
        "stream acknowledged end to end (RTT beyond hop 1), each later hop's RTT as that "
        "hop measures and reports it (hop_rtt_source), optionally a burst (throughput); "
        "the failing hop. The probe's bytes (CRLF, then the burst's zeros) reach the "
        "service.",
    )
    route.add_argument("service", help="the logical service")
    route.add_argument("--class", dest="traffic_class", default="interactive", help="class")
    route.add_argument("--burst", type=int, default=0, metavar="BYTES",
                       help="also time this many bytes (0: no burst)")  # fmt: skip
    stream = sub.add_parser(
        "stream",
        help="live streams: class, credit, bytes, RTT and why blocked",
        description="Every live stream of the node's sessions with its class, credit, "
        "bytes, queued and unacknowledged bytes, the session's RTT and what blocks it "
        "(credit, carrier, pacing, scheduler).",
    )
    memory = sub.add_parser(
        "memory",
        help="RSS, C heap, object counts; with --start, the top allocation sites",
        description="Where the node's memory goes: RSS, glibc's heap, the commonest object "
        "types and, once tracing was started (--start; it costs memory and CPU until "
        "--stop), the Python heap traced since then by allocation site. A report holds "
        "the node's event loop while it walks the heap.",
    )
    toggle = memory.add_mutually_exclusive_group()
    toggle.add_argument("--start", action="store_true", help="start tracing allocations")
    toggle.add_argument("--stop", action="store_true", help="stop tracing allocations")
    memory.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N",
                        help=f"rows per table (1..{MAX_TOP})")  # fmt: skip
    handlers = ((route, cmd_diag_route), (stream, cmd_diag_stream), (memory, cmd_diag_memory))
    for parser, handler in handlers:
        parser.add_argument("--config", metavar="FILE", help="node.toml (finds admin_socket)")
        parser.add_argument("--socket", metavar="PATH", help="the admin socket itself")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(handler=guarded("diag", handler))
