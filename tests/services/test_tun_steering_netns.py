"""The steered urgent TUN queue (ADR 0071), on a real device in a namespace.

ICMP, ICMPv6 and TCP/UDP to the dns and interactive ports leave the kernel on the urgent
queue, everything else on queue 0; a ``TunPort`` hands the urgent packets on before the
bulk that was queued ahead of them.  With one queue (no steering) the same DNS query
comes after all of that bulk: what the queue is for.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from accessfabric.services.tun_steering import steering_program
from accessfabric.sim import Topology
from tests.services.netns_nodes import require_netns_and_tun

pytestmark = pytest.mark.netns
PROBE = Path(__file__).with_name("tun_steering_probe.py")
URGENT = {"udpv4:53", "udpv4:22", "tcpv4:22", "icmpv4", "udpv6:53", "icmpv6"}
BULK = {"udpv4:9999", "tcpv4:5201"}


def _probe(*argv: str) -> dict[str, Any]:
    with Topology(prefix="afq") as topo:
        topo.add_host("host")
        done = topo.run("host", [sys.executable, str(PROBE), *argv], timeout=60)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_latency_flows_leave_on_the_urgent_queue_and_are_read_first() -> None:
    require_netns_and_tun()
    result = _probe()
    assert result["steering_error"] is None
    bulk_queue, urgent_queue = result["queues"]["0"], result["queues"]["1"]
    assert set(bulk_queue) == BULK, result
    assert set(urgent_queue) >= URGENT and not BULK & set(urgent_queue), result
    assert bulk_queue.count("udpv4:9999") == 64
    order = result["order"]
    first_bulk = min(order.index(name) for name in BULK)
    assert all(order.index(name) < first_bulk for name in URGENT), order


def test_one_queue_reads_the_dns_query_behind_the_bulk() -> None:
    require_netns_and_tun()
    result = _probe("--single")
    assert list(result["queues"]) == ["0"]
    order = result["order"]
    assert order.index("udpv4:53") > order.index("udpv4:9999") + 63, order


def test_the_program_is_refused_bad_ports() -> None:
    with pytest.raises(ValueError, match="ports"):
        steering_program([0])
    with pytest.raises(ValueError, match="ports"):
        steering_program([65536])
    assert len(steering_program([53, 22])) % 8 == 0
