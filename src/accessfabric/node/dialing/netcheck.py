"""``accessfabric netcheck``: which of a node's carriers and peers answer from here, how fast.

For every endpoint of every ``[[peers]]`` entry: a pinned handshake, two PINGs and
an echo round trip (the ``smoke`` check) with a short timeout, in parallel; the
control plane's ``/readyz``; the nearest peer by handshake time.  This node's own
addresses are listed, and with ``[nat] reflectors`` the NAT type is probed
(node/dialing/nat_probe.py: mapping from two entries, inbound reachability); without
reflectors it is reported as unknown rather than guessed.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from accessfabric.node.admin.smoke import classify_failure, run_smoke
from accessfabric.node.config.node_config import NodeConfig
from accessfabric.node.dialing.dial import carrier_available
from accessfabric.node.dialing.nat_probe import NatReport, probe_nat


async def _check_endpoint(endpoint: Any, node_id: str, timeout: float) -> dict[str, Any]:
    row: dict[str, Any] = {"peer": node_id, "endpoint": endpoint.url, "carrier": endpoint.carrier}
    if not carrier_available(endpoint.carrier):
        return {**row, "ok": False, "error": f"carrier {endpoint.carrier} not in this build"}
    try:
        result = await run_smoke(endpoint, node_id, None, timeout=timeout)
    except Exception as error:
        _, message = classify_failure(error, endpoint)
        return {**row, "ok": False, "error": message}
    return {
        **row, "ok": True, "handshake_ms": round(result.handshake * 1e3, 2),
        "rtt_ms": round(min(result.ping_rtts) * 1e3, 2),
    }  # fmt: skip


async def _check_control(url: str, timeout: float) -> dict[str, Any]:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url.rstrip("/") + "/readyz") as response,
        ):
            return {"url": url, "ok": response.status == 200, "status": response.status}
    except (OSError, aiohttp.ClientError, TimeoutError) as error:
        return {"url": url, "ok": False, "error": type(error).__name__}


def _local_addresses() -> list[str]:
    addresses: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addresses.add(str(info[4][0]))
    except OSError:
        pass
    return sorted(addresses)


async def netcheck(config: NodeConfig, timeout: float = 5.0) -> dict[str, Any]:
    checks = [
        _check_endpoint(endpoint, peer.node_id, timeout)
        for peer in config.peers
        for endpoint in peer.endpoints
    ]

    async def nat() -> NatReport | None:
        if not config.nat.reflectors:
            return None
        return await probe_nat(config.nat.reflectors, config.nat.timeout)

    results, report = await asyncio.gather(asyncio.gather(*checks), nat())
    rows = list(results)
    control = await _check_control(config.control.url, timeout) if config.control else None
    reachable = [row for row in rows if row["ok"]]
    nearest = min(reachable, key=lambda row: row["handshake_ms"]) if reachable else None
    names = config.peer_names()
    for row in rows:
        row["name"] = names.get(row["peer"], "")
    return {
        "endpoints": rows,
        "control": control,
        "nearest": nearest,
        "local_addresses": _local_addresses(),
        "nat": report.describe() if report is not None else "unknown (no [nat] reflectors)",
        "nat_type": report.type if report is not None else "unknown",
        "nat_reachable": report.reachable if report is not None else None,
        "ok": bool(reachable) or (not rows and bool(control and control["ok"])),
    }


def render_netcheck(report: dict[str, Any]) -> str:
    lines = ["endpoints:"]
    for row in report["endpoints"]:
        who = row["name"] or row["peer"][:14] + "…"
        if row["ok"]:
            lines.append(f"  ok    {who:16} {row['endpoint']:34} handshake "
                         f"{row['handshake_ms']:.2f} ms, rtt {row['rtt_ms']:.2f} ms")  # fmt: skip
        else:
            lines.append(f"  FAIL  {who:16} {row['endpoint']:34} {row['error']}")
    if not report["endpoints"]:
        lines.append("  (no [[peers]] endpoints)")
    control = report["control"]
    if control is not None:
        state = (
            "ready"
            if control["ok"]
            else f"NOT ready ({control.get('error') or control.get('status')})"
        )
        lines.append(f"control plane: {control['url']} {state}")
    nearest = report["nearest"]
    if nearest is not None:
        lines.append(f"nearest: {nearest['name'] or nearest['peer']} via {nearest['endpoint']}")
    lines.append(f"local addresses: {', '.join(report['local_addresses']) or '-'}")
    lines.append(f"NAT: {report['nat']}")
    return "\n".join(lines)
