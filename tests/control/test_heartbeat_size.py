"""Heartbeat payload size (issue 21: per-class throughput for the console rides in
heartbeats, so it must stay bounded at fleet scale).

* the per-class counters are at most one entry per traffic class, a few hundred bytes;
* a fleet device (one route, one stream) heartbeats in well under 2 KiB;
* the largest heartbeat a node can build — every list at the bound ``parse_facts``
  accepts, realistic field values (node ids, service names at the name limit) — still
  fits the control API's body limit with room to spare, and parses back.

The figures are printed (``-s``) and recorded in docs/control.md, *Heartbeat size*.
"""

from __future__ import annotations

import json

from accessfabric.control.client.facts import (
    CLASS_NAMES,
    MAX_ENDPOINT_HEALTH,
    MAX_ENDPOINTS,
    MAX_PEERS,
    MAX_ROUTE_REPORTS,
    MAX_SERVICES,
    MAX_STREAM_REPORTS,
    ClassBytes,
    EndpointHealth,
    HeartbeatFacts,
    PeerMeasurement,
    RelayUsage,
    RouteReport,
    ServiceCapacity,
    StreamReport,
    parse_facts,
)
from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey

NODE = NodeKey.generate().node_id
HOPS = tuple(NodeKey.generate().node_id for _ in range(8))
SERVICE = "s" * 63  # the longest service name (vocabulary.NAME)
BIG = 10**12


def _size(facts: HeartbeatFacts) -> tuple[int, int, int]:
    """Bytes of the heartbeat body, of its ``traffic`` part, of the per-class counters."""
    document = facts.to_json()
    traffic = document["traffic"]
    return (
        len(json.dumps(document).encode()),
        len(json.dumps(traffic).encode()),
        len(json.dumps(traffic["classes"]).encode()),
    )


def _classes() -> tuple[ClassBytes, ...]:
    return tuple(ClassBytes(traffic_class=c, bytes_in=BIG, bytes_out=BIG) for c in CLASS_NAMES)


def _route(hops: int, service: str = "fleet-echo") -> RouteReport:
    return RouteReport(
        route_id=(1 << 62) + 1, service=service, traffic_class="interactive", rank=1,
        hops=HOPS[:hops], healthy=True, srtt_ms=12.345, bytes=BIG,
        last_switch="first_hop_lost", recovery_ms=123.456,
    )  # fmt: skip


def _stream(service: str = "fleet-echo") -> StreamReport:
    return StreamReport(
        peer=NODE, service=service, traffic_class="interactive", state="half-closed-local",
        credit=BIG, bytes_in=BIG, bytes_out=BIG, queued=BIG, unacked=BIG, rtt_ms=12.345,
        blocked="scheduler",
    )  # fmt: skip


def test_per_class_counters_and_a_fleet_device_are_small() -> None:
    device = HeartbeatFacts(
        software_version="accessfabric-node", transports=("tcp_tls",),
        peers=(PeerMeasurement(node_id=NODE, rtt_ms=1.234),),
        class_bytes=_classes()[:2], route_reports=(_route(3),), stream_reports=(_stream(),),
    )  # fmt: skip
    total, traffic, classes = _size(device)
    print(f"\nfleet device: {total} B per heartbeat, traffic {traffic} B, classes {classes} B")
    assert total < 2048 and traffic < 1024
    every_class = HeartbeatFacts(class_bytes=_classes())
    _, _, classes = _size(every_class)
    print(f"every class at 10^12 bytes: {classes} B")
    assert len(every_class.to_json()["traffic"]["classes"]) == len(CLASS_NAMES)
    assert classes < 512


def test_the_largest_heartbeat_a_node_builds_fits_the_body_limit() -> None:
    worst = HeartbeatFacts(
        software_version="accessfabric-node", transports=("tcp_tls", "websocket", "quic"),
        endpoints=tuple(f"wss://[2001:db8::{i:x}]:65535/fabric" for i in range(MAX_ENDPOINTS)),
        peers=tuple(
            PeerMeasurement(node_id=NODE, rtt_ms=123.456, jitter_ms=1.5, loss=0.01,
                            bandwidth_mbps=940.5, queue_depth=12.0, retransmit_rate=0.001)
            for _ in range(MAX_PEERS)
        ),
        services=tuple(ServiceCapacity(name=SERVICE, capacity=1000, load=0.5)
                       for _ in range(MAX_SERVICES)),
        endpoint_health=tuple(
            EndpointHealth(transport="websocket", address="[2001:db8::1]:65535", node_id=NODE,
                           success_rate=0.5, latency_ms=12.5, dials=3.5,
                           consecutive_failures=2, backoff_remaining_s=1.5, age_s=30.0,
                           last_reason="ConnectionRefusedError: [Errno 111] refused")
            for _ in range(MAX_ENDPOINT_HEALTH)
        ),
        class_bytes=_classes(),
        route_reports=tuple(_route(8, SERVICE) for _ in range(MAX_ROUTE_REPORTS)),
        relay_usage=tuple(
            RelayUsage(tenant="t" * 63, traffic_class="bulk", streams=BIG, active=BIG,
                       bytes_from_source=BIG, bytes_to_source=BIG)
            for _ in range(MAX_ROUTE_REPORTS)
        ),
        stream_reports=tuple(_stream(SERVICE) for _ in range(MAX_STREAM_REPORTS)),
    )  # fmt: skip
    total, traffic, _ = _size(worst)
    limit = ControlConfig().max_body_bytes
    print(f"\nlargest: {total} B per heartbeat (limit {limit}), traffic {traffic} B")
    assert total < limit * 0.75
    assert parse_facts(worst.to_json()) == worst  # every list is within its bound
