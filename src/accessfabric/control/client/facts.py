"""The capability facts a heartbeat carries, parsed from JSON with bounds.

:func:`parse_facts` turns the JSON object a node sends into a frozen :class:`HeartbeatFacts`
or raises :class:`FactsError` naming the field (``pressure.cpu: must be within 0..1``).
Every field is optional except none: a node sends what it knows; absent facts take
neutral defaults.  The bounds (lists, strings, numbers) keep one heartbeat small and every
stored value meaningful.  The same table is in ``docs/control.md`` and the OpenAPI schema.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from accessfabric.control.kernel.codec import canonical_node_id
from accessfabric.control.kernel.vocabulary import MAX_TRUST_TIER, check_name
from accessfabric.wire.registry import TrafficClass

MAX_PEERS = 256
MAX_SERVICES = 64
MAX_TRANSPORTS = 8
MAX_ENDPOINTS = 16
MAX_ENDPOINT_HEALTH = 64
MAX_COUNT = 1_000_000_000
MAX_STRING = 256
MAX_RTT_MS = 600_000.0
MAX_BANDWIDTH_MBPS = 1_000_000.0
MAX_QUEUE = 1_000_000_000
MAX_VERSION = (1 << 53) - 1
MAX_ROUTE_REPORTS = 64
MAX_BYTES = (1 << 62) - 1

TRANSPORTS = ("tcp_tls", "websocket", "quic", "https_fallback", "memory")
NAT_TYPES = ("none", "full_cone", "restricted", "port_restricted", "symmetric", "unknown")
NETWORK_TYPES = ("wired", "wifi", "cellular", "satellite", "unknown")
CLASS_NAMES = tuple(c.name.lower() for c in TrafficClass)


class FactsError(ValueError):
    """A heartbeat field is missing its shape or bounds; the message names the field."""


class PeerMeasurement(NamedTuple):
    """What a node measured on its link to one peer (a tuple: heartbeats carry many)."""

    node_id: str
    rtt_ms: float
    jitter_ms: float = 0.0
    loss: float = 0.0
    bandwidth_mbps: float = 100.0
    queue_depth: float = 0.0
    retransmit_rate: float = 0.0


_PEER_DEFAULTS = (0.0, 0.0, 100.0, 0.0, 0.0)
"""``PeerMeasurement``'s defaults after ``rtt_ms``: a row equal to them is stored as its RTT."""
_PEER_FIELDS = 6
_ROW = f"<{_PEER_FIELDS}d"


_SHARED_IDS: dict[str, str] = {}
_SHARED_IDS_LIMIT = 1 << 21
"""Node ids shared between peer tables: 2M ids, twice a 1M-node fleet.  Not
``sys.intern``: on Python 3.12 interned strings are immortal, and a heartbeat may name
any well-formed id, so an enrolled node could grow the control plane's memory without
end.  Full, the table starts over: older tables keep their strings, only the sharing
is lost (reviewer, issue 17)."""


def shared_id(node_id: str) -> str:
    """One string object per node id (bounded: ``_SHARED_IDS_LIMIT``)."""
    shared = _SHARED_IDS.get(node_id)
    if shared is None:
        if len(_SHARED_IDS) >= _SHARED_IDS_LIMIT:
            _SHARED_IDS.clear()
        shared = _SHARED_IDS.setdefault(node_id, node_id)
    return shared


class PeerTable(tuple[Any, ...]):
    """Peer measurements packed for the control plane's heartbeat table (ADR 0038).

    The control plane holds every node's last measured links; as a tuple of
    :class:`PeerMeasurement` tuples they were ~790 B per node, the largest part of the
    directory's memory at 1M nodes.  A table is one tuple ``(*ids, numbers)``: the peer
    ids as references to shared strings (one per id: :func:`shared_id`)
    and the numbers packed in one ``bytes`` of doubles — only the RTTs when every other
    field of every row has its default (what most nodes send), else six per row
    (~200 B per node).  As a sequence it is the rows: reading one builds its
    :class:`PeerMeasurement` with the same floats, so it equals the tuple it was made
    from.  (A tuple subclass, not an object holding a tuple: one object header less per
    node.)
    """

    __slots__ = ()

    def __new__(cls, peers: Sequence[PeerMeasurement] = ()) -> PeerTable:
        ids = [shared_id(p.node_id) for p in peers]
        if all(tuple(p[2:]) == _PEER_DEFAULTS for p in peers):
            numbers = [float(p.rtt_ms) for p in peers]
        else:
            numbers = [float(v) for p in peers for v in p[1:]]
        return super().__new__(cls, (*ids, struct.pack(f"<{len(numbers)}d", *numbers)))

    @classmethod
    def of(cls, peers: Sequence[PeerMeasurement]) -> PeerTable:
        return peers if isinstance(peers, PeerTable) else cls(peers)

    def __len__(self) -> int:
        return tuple.__len__(self) - 1

    def ids(self) -> tuple[str, ...]:
        """The peers' node ids, in order (no rows built)."""
        return tuple.__getitem__(self, slice(0, -1))

    def _row(self, index: int) -> PeerMeasurement:
        count = tuple.__len__(self) - 1
        node_id = tuple.__getitem__(self, index)
        packed: bytes = tuple.__getitem__(self, count)
        if len(packed) == 8 * count:
            return PeerMeasurement(node_id, *struct.unpack_from("<d", packed, 8 * index))
        at = 8 * _PEER_FIELDS * index
        return PeerMeasurement(node_id, *struct.unpack_from(_ROW, packed, at))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self._row(i) for i in range(*index.indices(len(self))))
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("peer index out of range")
        return self._row(index)

    def __iter__(self) -> Iterator[PeerMeasurement]:
        return (self._row(i) for i in range(len(self)))

    def __contains__(self, item: object) -> bool:
        return any(row == item for row in self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PeerTable):
            return tuple.__eq__(self, other)
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PeerTable({list(self)!r})"


def peer_ids(peers: Sequence[PeerMeasurement]) -> tuple[str, ...]:
    """The node ids of ``peers`` (a :class:`PeerTable` gives them without building rows)."""
    return peers.ids() if isinstance(peers, PeerTable) else tuple(p.node_id for p in peers)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceCapacity:
    name: str
    capacity: int = 0
    """Concurrent streams the node will accept for the service (0: unknown)."""
    load: float = 0.0
    """Share of that capacity in use, 0..1."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointHealth:
    """The node's own dial health of one endpoint (its ranker's report, bounded)."""

    transport: str
    address: str
    node_id: str | None = None
    success_rate: float | None = None
    """Share of recent dials that succeeded, 0..1; None: no dial yet."""
    latency_ms: float | None = None
    dials: float = 0.0
    """Recent dials (decayed, so fractional)."""
    consecutive_failures: int = 0
    backoff_remaining_s: float = 0.0
    age_s: float = 0.0
    last_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "address": self.address,
            "node_id": self.node_id,
            "success_rate": self.success_rate,
            "latency_ms": self.latency_ms,
            "dials": self.dials,
            "consecutive_failures": self.consecutive_failures,
            "backoff_remaining_s": self.backoff_remaining_s,
            "age_s": self.age_s,
            "last_reason": self.last_reason,
        }


class ClassBytes(NamedTuple):
    """A node's stream bytes of one traffic class since it started (in, out)."""

    traffic_class: str
    bytes_in: int
    bytes_out: int


class RouteReport(NamedTuple):
    """One leased route as the source node sees it (``RouteManager.observations``)."""

    route_id: int
    service: str
    traffic_class: str
    rank: int
    hops: tuple[str, ...]
    healthy: bool
    srtt_ms: float | None
    bytes: int
    """Bytes (in + out) of the live streams this node runs on the route now."""
    last_switch: str
    recovery_ms: float | None


class RelayUsage(NamedTuple):
    """What a relay carried for one tenant in one class since it started."""

    tenant: str
    traffic_class: str
    streams: int
    active: int
    bytes_from_source: int
    bytes_to_source: int


class StreamReport(NamedTuple):
    """One live stream of the node (``accessfabric diag stream``), for the console."""

    peer: str
    service: str
    traffic_class: str
    state: str
    credit: int
    bytes_in: int
    bytes_out: int
    queued: int
    unacked: int
    rtt_ms: float | None
    blocked: str


BLOCKED_REASONS = ("-", "credit", "carrier", "pacing", "scheduler")
MAX_STREAM_REPORTS = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatFacts:
    """One heartbeat's facts, every field within its bounds."""

    protocol_versions: tuple[int, ...] = (1,)
    software_version: str = ""
    transports: tuple[str, ...] = ()
    nat_type: str = "unknown"
    reachable: bool = False
    endpoints: tuple[str, ...] = ()
    peers: Sequence[PeerMeasurement] = ()
    """A tuple as parsed; the control plane's heartbeat table keeps a :class:`PeerTable`."""
    cpu: float = 0.0
    memory: float = 0.0
    queue_depth: int = 0
    socket_pressure: float = 0.0
    sessions: int = 0
    """Sessions this node accepted (an entry's load for session placement)."""
    battery_percent: float | None = None
    charging: bool = False
    network_type: str = "unknown"
    metered: bool = False
    relay_opt_in: bool = False
    foreground: bool | None = None
    """The app's foreground state as its wrapper reported it (None: not reported)."""
    relay_max_mbps: float = 0.0
    relay_classes: tuple[str, ...] = ()
    services: tuple[ServiceCapacity, ...] = ()
    endpoint_health: tuple[EndpointHealth, ...] = ()
    trust_tier: int | None = None
    region: str = ""
    failure_domain: str = ""
    policy_version: int = 0
    directory_version: int = 0
    route_cache_version: int = 0
    record_revision: int = 0
    access_policy_version: int = 0
    """The ``issued_ms`` of the access policy the node holds (0: none)."""
    class_bytes: tuple[ClassBytes, ...] = ()
    route_reports: tuple[RouteReport, ...] = ()
    relay_usage: tuple[RelayUsage, ...] = ()
    stream_reports: tuple[StreamReport, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The facts in the request's JSON shape (what :func:`parse_facts` reads back)."""
        return {
            "versions": {
                "protocol": list(self.protocol_versions),
                "software": self.software_version,
            },
            "transports": list(self.transports),
            "nat": {
                "type": self.nat_type,
                "reachable": self.reachable,
                "endpoints": list(self.endpoints),
            },
            "peers": [
                {
                    "node_id": p.node_id,
                    "rtt_ms": p.rtt_ms,
                    "jitter_ms": p.jitter_ms,
                    "loss": p.loss,
                    "bandwidth_mbps": p.bandwidth_mbps,
                    "queue_depth": p.queue_depth,
                    "retransmit_rate": p.retransmit_rate,
                }
                for p in self.peers
            ],
            "pressure": {
                "cpu": self.cpu,
                "memory": self.memory,
                "queue_depth": self.queue_depth,
                "sockets": self.socket_pressure,
                "sessions": self.sessions,
            },
            "device": {
                "battery_percent": self.battery_percent,
                "charging": self.charging,
                "network_type": self.network_type,
                "metered": self.metered,
                "relay_opt_in": self.relay_opt_in,
                "foreground": self.foreground,
            },
            "relay": {
                "max_bandwidth_mbps": self.relay_max_mbps,
                "allowed_classes": list(self.relay_classes),
            },
            "services": [
                {"name": s.name, "capacity": s.capacity, "load": s.load} for s in self.services
            ],
            "endpoint_health": [e.to_json() for e in self.endpoint_health],
            **({"trust_tier": self.trust_tier} if self.trust_tier is not None else {}),
            "placement": {"region": self.region, "failure_domain": self.failure_domain},
            "cache_versions": {
                "policy": self.policy_version,
                "directory": self.directory_version,
                "route_cache": self.route_cache_version,
                "node_record": self.record_revision,
                "access_policy": self.access_policy_version,
            },
            "traffic": {
                "classes": [
                    {"class": c.traffic_class, "in": c.bytes_in, "out": c.bytes_out}
                    for c in self.class_bytes
                ],
                "routes": [r._asdict() | {"hops": list(r.hops)} for r in self.route_reports],
                "relay": [u._asdict() for u in self.relay_usage],
                "streams": [r._asdict() for r in self.stream_reports],
            },
        }


class _Fields:
    """Typed reads from one JSON object, with the field path in every error."""

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise FactsError(f"{path or 'body'}: must be a JSON object")
        self.data: dict[str, Any] = value
        self.path = path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def sub(self, key: str) -> _Fields:
        return _Fields(self.data.get(key, {}), self._name(key))

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FactsError(f"{self._name(key)}: must be a number")
        value = float(value)
        if not (math.isfinite(value) and low <= value <= high):
            raise FactsError(f"{self._name(key)}: must be within {low:g}..{high:g}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise FactsError(f"{self._name(key)}: must be an integer")
        if not low <= value <= high:
            raise FactsError(f"{self._name(key)}: must be within {low}..{high}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise FactsError(f"{self._name(key)}: must be true or false")
        return value

    def string(self, key: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or len(value) > MAX_STRING or not value.isprintable():
            raise FactsError(f"{self._name(key)}: must be a printable string of <= {MAX_STRING}")
        if choices is not None and value not in choices:
            raise FactsError(f"{self._name(key)}: must be one of {', '.join(choices)}")
        return value

    def items(self, key: str, limit: int) -> list[Any]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise FactsError(f"{self._name(key)}: must be a list")
        if len(value) > limit:
            raise FactsError(f"{self._name(key)}: at most {limit} items")
        return value

    def strings(
        self, key: str, limit: int, choices: tuple[str, ...] | None = None
    ) -> tuple[str, ...]:
        out = []
        for index, item in enumerate(self.items(key, limit)):
            where = f"{self._name(key)}[{index}]"
            if not isinstance(item, str) or len(item) > MAX_STRING or not item.isprintable():
                raise FactsError(f"{where}: must be a printable string of <= {MAX_STRING}")
            if choices is not None and item not in choices:
                raise FactsError(f"{where}: must be one of {', '.join(choices)}")
            out.append(item)
        return tuple(dict.fromkeys(out))


_PEER_NUMBERS = (
    # (field, default, upper bound); every one is >= 0
    ("rtt_ms", None, MAX_RTT_MS),
    ("jitter_ms", 0.0, MAX_RTT_MS),
    ("loss", 0.0, 1.0),
    ("bandwidth_mbps", 100.0, MAX_BANDWIDTH_MBPS),
    ("queue_depth", 0.0, float(MAX_QUEUE)),
    ("retransmit_rate", 0.0, 1.0),
)


def _peer(value: object, path: str) -> PeerMeasurement:
    """One peer measurement (the hot path of a heartbeat: no helper objects)."""
    if type(value) is not dict:
        raise FactsError(f"{path}: must be a JSON object")
    raw = value.get("node_id")
    try:
        node_id = canonical_node_id(raw) if isinstance(raw, str) else None
    except ValueError:
        node_id = None
    if node_id is None:
        raise FactsError(f"{path}.node_id: must be a node id")
    numbers = []
    for name, default, high in _PEER_NUMBERS:
        number = value.get(name, default)
        if number is None:
            raise FactsError(f"{path}.{name}: required")
        kind = type(number)
        if (kind is not float and kind is not int) or not 0.0 <= number <= high:
            raise FactsError(f"{path}.{name}: must be a number within 0..{high:g}")
        numbers.append(float(number))
    rtt, jitter, loss, bandwidth, queue, retransmit = numbers
    return PeerMeasurement(
        node_id=node_id,
        rtt_ms=rtt,
        jitter_ms=jitter,
        loss=loss,
        bandwidth_mbps=bandwidth,
        queue_depth=queue,
        retransmit_rate=retransmit,
    )


def _service(value: object, path: str) -> ServiceCapacity:
    f = _Fields(value, path)
    name = f.data.get("name")
    try:
        check_name("service", name)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise FactsError(f"{path}.name: {exc}") from None
    return ServiceCapacity(
        name=str(name),
        capacity=f.integer("capacity", 0, 0, MAX_QUEUE),
        load=f.number("load", 0.0, 0.0, 1.0),
    )


def _endpoint_health(value: object, path: str) -> EndpointHealth:
    f = _Fields(value, path)
    node_id: str | None = None
    if f.data.get("node_id") is not None:
        node_id = f.string("node_id", "")
    success: float | None = None
    if f.data.get("success_rate") is not None:
        success = f.number("success_rate", 0.0, 0.0, 1.0)
    latency: float | None = None
    if f.data.get("latency_ms") is not None:
        latency = f.number("latency_ms", 0.0, 0.0, MAX_RTT_MS)
    return EndpointHealth(
        transport=f.string("transport", ""),
        address=f.string("address", ""),
        node_id=node_id,
        success_rate=success,
        latency_ms=latency,
        dials=f.number("dials", 0.0, 0.0, float(MAX_COUNT)),
        consecutive_failures=f.integer("consecutive_failures", 0, 0, MAX_COUNT),
        backoff_remaining_s=f.number("backoff_remaining_s", 0.0, 0.0, MAX_RTT_MS),
        age_s=f.number("age_s", 0.0, 0.0, float(MAX_COUNT)),
        last_reason=f.string("last_reason", ""),
    )


def _class_bytes(value: object, path: str) -> ClassBytes:
    f = _Fields(value, path)
    return ClassBytes(
        traffic_class=f.string("class", "", CLASS_NAMES),
        bytes_in=f.integer("in", 0, 0, MAX_BYTES),
        bytes_out=f.integer("out", 0, 0, MAX_BYTES),
    )


def _route_report(value: object, path: str) -> RouteReport:
    f = _Fields(value, path)
    hops = f.strings("hops", 16)
    for index, hop in enumerate(hops):
        try:
            canonical_node_id(hop)
        except ValueError:
            raise FactsError(f"{path}.hops[{index}]: must be a node id") from None
    srtt: float | None = None
    if f.data.get("srtt_ms") is not None:
        srtt = f.number("srtt_ms", 0.0, 0.0, MAX_RTT_MS)
    recovery: float | None = None
    if f.data.get("recovery_ms") is not None:
        recovery = f.number("recovery_ms", 0.0, 0.0, MAX_RTT_MS)
    return RouteReport(
        route_id=f.integer("route_id", 0, 0, (1 << 63) - 1),
        service=f.string("service", ""),
        traffic_class=f.string("traffic_class", "reliable", CLASS_NAMES),
        rank=f.integer("rank", 0, 0, 255),
        hops=hops,
        healthy=f.boolean("healthy", True),
        srtt_ms=srtt,
        bytes=f.integer("bytes", 0, 0, MAX_BYTES),
        last_switch=f.string("last_switch", ""),
        recovery_ms=recovery,
    )


def _relay_usage(value: object, path: str) -> RelayUsage:
    f = _Fields(value, path)
    tenant = f.string("tenant", "")
    try:
        check_name("tenant", tenant)
    except ValueError as exc:
        raise FactsError(f"{path}.tenant: {exc}") from None
    return RelayUsage(
        tenant=tenant,
        traffic_class=f.string("traffic_class", "reliable", CLASS_NAMES),
        streams=f.integer("streams", 0, 0, MAX_BYTES),
        active=f.integer("active", 0, 0, MAX_BYTES),
        bytes_from_source=f.integer("bytes_from_source", 0, 0, MAX_BYTES),
        bytes_to_source=f.integer("bytes_to_source", 0, 0, MAX_BYTES),
    )


def _stream_report(value: object, path: str) -> StreamReport:
    f = _Fields(value, path)
    rtt: float | None = None
    if f.data.get("rtt_ms") is not None:
        rtt = f.number("rtt_ms", 0.0, 0.0, MAX_RTT_MS)
    return StreamReport(
        peer=f.string("peer", ""),
        service=f.string("service", ""),
        traffic_class=f.string("traffic_class", "reliable", CLASS_NAMES),
        state=f.string("state", ""),
        credit=f.integer("credit", 0, 0, MAX_BYTES),
        bytes_in=f.integer("bytes_in", 0, 0, MAX_BYTES),
        bytes_out=f.integer("bytes_out", 0, 0, MAX_BYTES),
        queued=f.integer("queued", 0, 0, MAX_BYTES),
        unacked=f.integer("unacked", 0, 0, MAX_BYTES),
        rtt_ms=rtt,
        blocked=f.string("blocked", "-", BLOCKED_REASONS),
    )


def _placement_name(f: _Fields, key: str) -> str:
    value = f.string(key, "")
    if value:
        try:
            check_name(key, value)
        except ValueError as exc:
            raise FactsError(f"{f.path}.{key}: {exc}") from None
    return value


def parse_facts(body: object) -> HeartbeatFacts:
    """The facts of a heartbeat request body; :class:`FactsError` naming the bad field."""
    top = _Fields(body, "")
    versions = top.sub("versions")
    protocol = versions.items("protocol", 8) if "protocol" in versions.data else [1]
    if not protocol or any(
        isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536 for v in protocol
    ):
        raise FactsError("versions.protocol: must be a non-empty list of integers 1..65535")
    nat, pressure, device = top.sub("nat"), top.sub("pressure"), top.sub("device")
    relay, placement, caches = top.sub("relay"), top.sub("placement"), top.sub("cache_versions")
    battery: float | None = None
    if device.data.get("battery_percent") is not None:
        battery = device.number("battery_percent", 0.0, 0.0, 100.0)
    peers = tuple(_peer(v, f"peers[{i}]") for i, v in enumerate(top.items("peers", MAX_PEERS)))
    services = tuple(
        _service(v, f"services[{i}]") for i, v in enumerate(top.items("services", MAX_SERVICES))
    )
    endpoint_health = tuple(
        _endpoint_health(v, f"endpoint_health[{i}]")
        for i, v in enumerate(top.items("endpoint_health", MAX_ENDPOINT_HEALTH))
    )
    traffic = top.sub("traffic")
    class_bytes = tuple(
        _class_bytes(v, f"traffic.classes[{i}]")
        for i, v in enumerate(traffic.items("classes", len(CLASS_NAMES)))
    )
    route_reports = tuple(
        _route_report(v, f"traffic.routes[{i}]")
        for i, v in enumerate(traffic.items("routes", MAX_ROUTE_REPORTS))
    )
    relay_usage = tuple(
        _relay_usage(v, f"traffic.relay[{i}]")
        for i, v in enumerate(traffic.items("relay", MAX_ROUTE_REPORTS))
    )
    stream_reports = tuple(
        _stream_report(v, f"traffic.streams[{i}]")
        for i, v in enumerate(traffic.items("streams", MAX_STREAM_REPORTS))
    )
    trust: int | None = None
    if top.data.get("trust_tier") is not None:
        trust = top.integer("trust_tier", 0, 0, MAX_TRUST_TIER)
    return HeartbeatFacts(
        protocol_versions=tuple(sorted(set(protocol))),
        software_version=versions.string("software", ""),
        transports=top.strings("transports", MAX_TRANSPORTS, TRANSPORTS),
        nat_type=nat.string("type", "unknown", NAT_TYPES),
        reachable=nat.boolean("reachable", False),
        endpoints=nat.strings("endpoints", MAX_ENDPOINTS),
        peers=peers,
        cpu=pressure.number("cpu", 0.0, 0.0, 1.0),
        memory=pressure.number("memory", 0.0, 0.0, 1.0),
        queue_depth=pressure.integer("queue_depth", 0, 0, MAX_QUEUE),
        socket_pressure=pressure.number("sockets", 0.0, 0.0, 1.0),
        sessions=pressure.integer("sessions", 0, 0, MAX_QUEUE),
        battery_percent=battery,
        charging=device.boolean("charging", False),
        network_type=device.string("network_type", "unknown", NETWORK_TYPES),
        metered=device.boolean("metered", False),
        relay_opt_in=device.boolean("relay_opt_in", False),
        foreground=None
        if device.data.get("foreground") is None
        else device.boolean("foreground", False),
        relay_max_mbps=relay.number("max_bandwidth_mbps", 0.0, 0.0, MAX_BANDWIDTH_MBPS),
        relay_classes=relay.strings("allowed_classes", len(CLASS_NAMES), CLASS_NAMES),
        services=services,
        endpoint_health=endpoint_health,
        trust_tier=trust,
        region=_placement_name(placement, "region"),
        failure_domain=_placement_name(placement, "failure_domain"),
        policy_version=caches.integer("policy", 0, 0, MAX_VERSION),
        directory_version=caches.integer("directory", 0, 0, MAX_VERSION),
        route_cache_version=caches.integer("route_cache", 0, 0, MAX_VERSION),
        record_revision=caches.integer("node_record", 0, 0, MAX_VERSION),
        access_policy_version=caches.integer("access_policy", 0, 0, MAX_VERSION),
        class_bytes=class_bytes,
        route_reports=route_reports,
        relay_usage=relay_usage,
        stream_reports=stream_reports,
    )
