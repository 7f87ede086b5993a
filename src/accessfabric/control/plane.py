"""``ControlPlane``: one replica's state and components, wired together (no HTTP here).

The HTTP layer (:mod:`accessfabric.control.api`) translates requests into calls on this
object; tests and benchmarks call it directly.  Everything takes one injected clock, the
same one the store evaluates lease expiry with.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accessfabric.control.admin import AdminCredentials
from accessfabric.control.authority import Authority
from accessfabric.control.directory import directory_version
from accessfabric.control.facts import HeartbeatFacts
from accessfabric.control.fleet_events import FleetEvents
from accessfabric.control.heartbeat_mac import ControlMacKeys
from accessfabric.control.heartbeats import HealthRules, HeartbeatTable
from accessfabric.control.leasing import RouteLeasing
from accessfabric.control.planning.policy import RoutePolicy
from accessfabric.control.registry import NodeRegistry, RegisteredNode, record_json
from accessfabric.control.requestsig import (
    DEFAULT_WINDOW,
    ReplayCache,
    SignedRequest,
    parse_timestamp,
)
from accessfabric.control.services import ServiceDirectory
from accessfabric.control.store.base import Clock, Store
from accessfabric.control.store.sqlite import SqliteStore
from accessfabric.control.traffic_history import TrafficHistory
from accessfabric.control.vocabulary import Role

AUTHORITY_FILE = "authority.key"
STORE_FILE = "control.db"
POLICY_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlConfig:
    """The control plane's timings and limits; the defaults work."""

    heartbeat_interval: float = 10.0
    route_lease_ttl: float = 300.0
    service_lease_ttl: float = 60.0
    replica_ttl: float = 15.0
    record_ttl: float = 7 * 24 * 3600.0
    request_window: float = DEFAULT_WINDOW
    persist_interval: float = 30.0
    snapshot_max_age: float = 1.0
    max_body_bytes: int = 256 * 1024
    policy: RoutePolicy = field(default_factory=RoutePolicy)

    def policy_document(self) -> dict[str, object]:
        """What every node caches as its policy (served in heartbeat responses)."""
        return {
            "version": POLICY_VERSION,
            "heartbeat_interval_s": self.heartbeat_interval,
            "route_lease_ttl_s": self.route_lease_ttl,
            "service_lease_ttl_s": self.service_lease_ttl,
            "replica_ttl_s": self.replica_ttl,
            "request_window_s": self.request_window,
            "allow_mobile_relays": self.policy.allow_mobile_relays,
            "allow_metered_relays": self.policy.allow_metered_relays,
            "min_relay_battery_percent": self.policy.min_relay_battery_percent,
        }


class DataDirError(Exception):
    """The control plane's data directory is missing, incomplete or already initialised."""


def init_data_dir(data: str | os.PathLike[str]) -> tuple[Authority, str]:
    """Create the authority key and the first admin credential in ``data``.

    Returns the authority and the admin token (shown once).  Refuses an initialised dir.
    """
    directory = Path(data)
    key_path = directory / AUTHORITY_FILE
    if key_path.exists():
        raise DataDirError(f"{directory} is already initialised ({key_path} exists)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    authority = Authority.create(key_path)
    with SqliteStore(directory / STORE_FILE) as store:
        token = AdminCredentials(store).create()
    return authority, token


def open_data_dir(
    data: str | os.PathLike[str], *, clock: Clock = time.time
) -> tuple[Authority, SqliteStore]:
    directory = Path(data)
    key_path = directory / AUTHORITY_FILE
    if not key_path.exists():
        raise DataDirError(
            f"{directory} is not a control plane data directory (no {AUTHORITY_FILE}); "
            f"run: accessfabric control init --data {directory}"
        )
    authority = Authority.load(key_path)
    return authority, SqliteStore(directory / STORE_FILE, clock=clock)


class ControlPlane:
    """Registry, heartbeats, services, route leasing and admin credentials of one replica."""

    def __init__(
        self,
        store: Store,
        authority: Authority,
        *,
        config: ControlConfig | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.authority = authority
        self.config = config or ControlConfig()
        self.clock = clock
        cfg = self.config
        self.admin = AdminCredentials(store, clock=clock)
        self.registry = NodeRegistry(store, authority, clock=clock, record_ttl=cfg.record_ttl)
        self.heartbeats = HeartbeatTable(
            store,
            clock=clock,
            rules=HealthRules.for_interval(cfg.heartbeat_interval),
            persist_interval=cfg.persist_interval,
        )
        self.services = ServiceDirectory(store, authority, clock=clock, replica_ttl=cfg.replica_ttl)
        self.leasing = RouteLeasing(
            store,
            authority,
            self.registry,
            self.heartbeats,
            self.services,
            clock=clock,
            lease_ttl=cfg.route_lease_ttl,
            policy=cfg.policy,
            snapshot_max_age=cfg.snapshot_max_age,
        )
        self.replay = ReplayCache(cfg.request_window)
        self.traffic = TrafficHistory()
        self.events = FleetEvents()
        self.mac_keys = ControlMacKeys(authority)

    def authenticate_mac(self, node: RegisteredNode, parts: SignedRequest) -> None:
        """Timestamp window, ``AF-MAC`` and replay checks of one request from ``node``.

        Raises :class:`~accessfabric.control.requestsig.RequestAuthError`.  The Ed25519
        path is :func:`accessfabric.control.api.auth.verify_signed` (batched on threads).
        """
        now = self.clock()
        timestamp_ms = parse_timestamp(parts.timestamp, now, self.config.request_window)
        tag = self.mac_keys.check(
            node.record, parts.method, parts.path, timestamp_ms, parts.body, parts.mac
        )
        self.replay.check_and_add(tag, now)

    def load(self) -> None:
        """Read the registry and persisted heartbeats (once, when starting to serve)."""
        self.registry.load()
        self.heartbeats.load()

    def ingest_heartbeat(self, node: RegisteredNode, facts: HeartbeatFacts) -> dict[str, Any]:
        """Take one authenticated heartbeat; the reply (health, current record, policy)."""
        now = self.clock()
        node_id = node.node_id
        self.heartbeats.record(node_id, facts, now)
        self.traffic.record(node_id, facts, now)
        self.events.route_reports(node_id, facts.route_reports, now)
        if facts.services and Role.SERVICE_HOST in node.record.roles:
            self.services.renew(node_id, tuple(s.name for s in facts.services), now)
        current = self.registry.renew_if_due(node_id, now) or node
        report = self.heartbeats.health(node_id, now, current.record.revision)
        record = record_json(current)
        if facts.record_revision == current.record.revision:
            del record["record"]  # the node holds it already
        return {
            "health": report.health.value,
            "reasons": list(report.reasons),
            "node_record": record,
            "directory_version": directory_version(self.registry, self.heartbeats, now),
            "policy": self.config.policy_document(),
        }

    def tick(self) -> None:
        """Periodic work: persist heartbeats, fill vacant service leaderships."""
        self.heartbeats.flush()
        self.services.reconcile_all()
        self.events.observe(self, self.clock())
