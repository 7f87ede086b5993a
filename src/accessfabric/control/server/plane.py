"""``ControlPlane``: one replica's state and components, wired together (no HTTP here).

The HTTP layer (:mod:`accessfabric.control.server.api`) translates requests into calls on this
object; tests and benchmarks call it directly.  Everything takes one injected clock, the
same one the store evaluates lease expiry with.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accessfabric.control.client.facts import HeartbeatFacts
from accessfabric.control.client.heartbeat_mac import ControlMacKeys
from accessfabric.control.client.requestsig import (
    DEFAULT_WINDOW,
    ReplayCache,
    SignedRequest,
    parse_timestamp,
)
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.admin import AdminCredentials
from accessfabric.control.server.coordinators import DEFAULT_MAX_COORDINATORS, RouteCoordinators
from accessfabric.control.server.directory import version_for
from accessfabric.control.server.drains import NodeDrains
from accessfabric.control.server.fleet_events import FleetEvents
from accessfabric.control.server.grants import DEFAULT_POLICY_TTL, AccessGrants
from accessfabric.control.server.heartbeats import HealthRules, HeartbeatTable
from accessfabric.control.server.leasing import RouteLeasing
from accessfabric.control.server.planning.policy import RoutePolicy
from accessfabric.control.server.read_through import NodeReadThrough
from accessfabric.control.server.registry import NodeRegistry, RegisteredNode, record_json
from accessfabric.control.server.replication import ReplicaSync, watchable
from accessfabric.control.server.route_tests import RouteTests
from accessfabric.control.server.services import ServiceDirectory
from accessfabric.control.server.store.base import Clock, Store
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.control.server.telemetry import (
    DEFAULT_REPORTS_PER_SECOND,
    ObserverViews,
    carry_detail,
    telemetry_every,
)
from accessfabric.control.server.traffic_history import TrafficHistory

AUTHORITY_FILE = "authority.key"
STORE_FILE = "control.db"
POLICY_VERSION = 1
REPLICATED_PERSIST_INTERVAL = 300.0
"""Seconds between writes of an end node's heartbeat digest when replicas share etcd
(ADR 0019); nodes that routes go through are written every 1.25 heartbeat intervals."""
_END_NODE_ROLES = frozenset({Role.MOBILE_EDGE, Role.OBSERVER})


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlConfig:
    """The control plane's timings and limits; the defaults work."""

    heartbeat_interval: float = 10.0
    route_lease_ttl: float = 300.0
    service_lease_ttl: float = 60.0
    access_policy_ttl: float = DEFAULT_POLICY_TTL
    """Seconds a host's signed access policy stays valid (how long it enforces the grants
    it holds while the control plane cannot be reached)."""
    replica_ttl: float = 15.0
    record_ttl: float = 7 * 24 * 3600.0
    request_window: float = DEFAULT_WINDOW
    persist_interval: float = 30.0
    snapshot_max_age: float = 1.0
    max_route_coordinators: int = DEFAULT_MAX_COORDINATORS
    """Route coordinators a replica keeps, least recently used dropped (ADR 0038): above
    the number of tenants requesting leases, or each request of one beyond rebuilds."""
    max_body_bytes: int = 256 * 1024
    telemetry_reports_per_second: float = DEFAULT_REPORTS_PER_SECOND
    """Detailed telemetry the fleet sends, per second (control/server/telemetry.py)."""
    policy: RoutePolicy = field(default_factory=RoutePolicy)

    def policy_document(self) -> dict[str, object]:
        """What every node caches as its policy (served in heartbeat responses)."""
        return {
            "version": POLICY_VERSION,
            "heartbeat_interval_s": self.heartbeat_interval,
            # silent this long, a node is late / unreachable (nodes check their own
            # [control] heartbeat_interval against them: control/client/heartbeat_policy.py)
            "late_after_s": HealthRules.for_interval(self.heartbeat_interval).late_after,
            "unreachable_after_s": HealthRules.for_interval(
                self.heartbeat_interval
            ).unreachable_after,
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


AUTHORITY_KEY = "/control/authority"
"""The store remembers which authority it belongs to: replicas with another key refuse it."""


def open_store(data: str | os.PathLike[str], store_url: str | None, *, clock: Clock) -> Store:
    """The store ``store_url`` names: ``None``/``sqlite`` = ``DATA/control.db``, or
    ``etcd://host:port,…[/namespace]`` (needs the ``etcd`` extra)."""
    if store_url is None or store_url == "sqlite":
        return SqliteStore(Path(data) / STORE_FILE, clock=clock)
    if store_url.startswith("etcd://"):
        try:
            from accessfabric.control.server.store.etcd import EtcdStore
        except ImportError as exc:
            raise DataDirError(str(exc)) from None
        return EtcdStore.from_url(store_url)
    raise DataDirError(f"unknown store {store_url!r}: use sqlite or etcd://host:port,…")


def bind_authority(store: Store, authority: Authority) -> None:
    """Record ``authority`` as the store's, or check it is the one recorded already.

    Raises :class:`DataDirError` when the store belongs to another authority (a replica
    started with the wrong key would sign records nobody else accepts).
    """
    text = authority.public_key_text.encode()
    result = store.put_if(AUTHORITY_KEY, text, 0)
    if result.succeeded or (result.current is not None and result.current.value == text):
        return
    other = result.current.value.decode() if result.current is not None else "?"
    raise DataDirError(
        f"the store belongs to authority {other}, not {authority.public_key_text}; "
        "give every replica a copy of the same authority.key"
    )


def init_data_dir(
    data: str | os.PathLike[str], *, store_url: str | None = None
) -> tuple[Authority, str]:
    """Create the authority key and the first admin credential in ``data`` (or ``store_url``).

    Returns the authority and the admin token (shown once).  Refuses an initialised dir.
    """
    directory = Path(data)
    key_path = directory / AUTHORITY_FILE
    if key_path.exists():
        raise DataDirError(f"{directory} is already initialised ({key_path} exists)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = open_store(directory, store_url, clock=time.time)
    try:
        if store.get(AUTHORITY_KEY) is not None:
            raise DataDirError(
                f"{store_url} already has a control plane; copy its authority.key into "
                f"{directory} and serve, instead of init"
            )
        authority = Authority.create(key_path)
        bind_authority(store, authority)
        token = AdminCredentials(store).create()
    finally:
        store.close()
    return authority, token


def open_data_dir(
    data: str | os.PathLike[str], *, clock: Clock = time.time, store_url: str | None = None
) -> tuple[Authority, Store]:
    directory = Path(data)
    key_path = directory / AUTHORITY_FILE
    if not key_path.exists():
        raise DataDirError(
            f"{directory} is not a control plane data directory (no {AUTHORITY_FILE}); "
            f"run: accessfabric control init --data {directory}"
        )
    authority = Authority.load(key_path)
    store = open_store(directory, store_url, clock=clock)
    if store_url is not None and store_url != "sqlite":
        try:
            bind_authority(store, authority)
        except BaseException:
            store.close()
            raise
    return authority, store


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
        self.replicated = watchable(store) is not None
        """Several replicas may share this store (etcd): heartbeats are shared soft state."""
        self.heartbeats = HeartbeatTable(
            store,
            clock=clock,
            rules=HealthRules.for_interval(cfg.heartbeat_interval),
            persist_interval=(
                max(cfg.persist_interval, REPLICATED_PERSIST_INTERVAL)
                if self.replicated
                else cfg.persist_interval
            ),
            share_interval=1.25 * cfg.heartbeat_interval if self.replicated else None,
            is_shared=self._routes_go_through,
            tenant_of=self._tenant_of,  # generations per partition (ADR 0043)
        )
        self.registry.on_change = self.heartbeats.changes.note  # directory deltas
        self.services = ServiceDirectory(store, authority, clock=clock, replica_ttl=cfg.replica_ttl)
        self.drains = NodeDrains(store, clock=clock, tenant_of=self._tenant_of)
        self.coordinators = RouteCoordinators(  # route planning per partition (ADR 0038)
            self.registry, self.heartbeats, self.services, policy=cfg.policy,
            snapshot_max_age=cfg.snapshot_max_age, drains=self.drains,
            max_coordinators=cfg.max_route_coordinators, clock=clock,
        )  # fmt: skip
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
            drains=self.drains,
            coordinators=self.coordinators,
        )
        self.grants = AccessGrants(
            store, authority, clock=clock, policy_ttl=cfg.access_policy_ttl,
            tenant_of=self._tenant_of, sole_writer=not self.replicated,
        )  # fmt: skip
        self.observer_views = ObserverViews(self.registry, self.heartbeats)  # GET /v1/telemetry
        self.replay = ReplayCache(cfg.request_window)
        self.traffic = TrafficHistory()
        self.events = FleetEvents()
        self.route_tests = RouteTests()
        self.mac_keys = ControlMacKeys(authority)
        self.sync: ReplicaSync | None = None
        self.node_reads: NodeReadThrough | None = None
        """With replicas (etcd): a node this replica has not learned yet is read from the
        store once, bounded (ADR 0042); see :meth:`node_for_request`."""
        self._loaded_revision = 0

    def _tenant_of(self, node_id: str) -> str | None:
        node = self.registry.get(node_id)
        return None if node is None else node.record.tenant

    def revoke_role(self, node_id: str, role: Role) -> RegisteredNode:
        """Take ``role`` from the node (a new record) and raise its record floor, so that its
        tenant's hosts refuse its older records from their next heartbeat on.

        The floor is written first (at the revision the new record will have): the two
        writes are separate, and a failure between them must not leave a record without
        the role and no floor (hosts would believe the old record, role and all, until it
        expires) while a retry answers ``role_not_held``.  A failure after the floor leaves
        the node's current record refused, and the retry finishes the revocation.

        A tenant with no room for another per-node floor gets a tenant floor instead
        (:meth:`AccessGrants.floor_plan`); every other node of the tenant whose record
        was issued before it is re-issued one first, so hosts keep believing honest nodes.

        Raises :class:`RegistryError`."""
        old = self.registry.get(node_id)
        if old is None or role not in old.record.roles:
            return self.registry.revoke_role(node_id, role)  # unknown_node, role_not_held
        record = old.record
        tenant = record.tenant
        tenant_floor = self.grants.floor_plan(tenant, node_id) or self.grants.tenant_floor(tenant)
        for other in self.registry.all() if tenant_floor else ():  # before hosts see it
            held = other.record
            if held.tenant == tenant and held.issued_ms < tenant_floor and other.node_id != node_id:
                self.registry.reissue(other.node_id)
        self.grants.raise_floor(
            tenant, node_id, record.revision + 1, record.expires_ms, record.issued_ms
        )
        node = self.registry.revoke_role(node_id, role)
        if node.record.revision != record.revision + 1:  # another change came between
            new = node.record  # the one between was issued before it
            self.grants.raise_floor(
                tenant, node_id, new.revision, new.expires_ms, new.issued_ms - 1
            )
        return node

    def _routes_go_through(self, node_id: str) -> bool:
        node = self.registry.get(node_id)
        return node is not None and bool(node.record.roles - _END_NODE_ROLES)

    def start_replication(self) -> None:
        """Watch the shared store for other replicas' writes (etcd only; needs a loop).

        Call right after :meth:`load`; the watch starts at the revision read before it.
        """
        store = watchable(self.store)
        if store is None or self.sync is not None:
            return
        sync = self.sync = ReplicaSync(self, store)
        self.node_reads = NodeReadThrough(
            self.store, self.registry, watched_revision=lambda: sync.since
        )
        sync.start(self._loaded_revision)

    async def stop_replication(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
            self.sync = None
            self.node_reads = None

    async def node_for_request(self, node_id: str) -> RegisteredNode | None:
        """The enrolled node ``node_id`` (canonical) a request names, or ``None``: the
        registry, and with replicas one bounded store read on a miss (an enrollment through
        another replica its watch has not delivered yet; ADR 0042)."""
        node = self.registry.get(node_id)
        if node is None and self.node_reads is not None:
            node = await self.node_reads.lookup(node_id)
        return node

    def store_status(self) -> dict[str, object]:
        """What ``GET /v1/status`` says about the store: backend, reachable, why not."""
        reason = self.unavailable_reason()
        return {
            "backend": "etcd" if self.replicated else "sqlite",
            "available": reason is None,
            "reason": reason,
        }

    def unavailable_reason(self) -> str | None:
        """Why this replica must not serve now (its store is unreachable), or ``None``."""
        if self.sync is not None and not self.sync.synced:
            return f"this control replica lost its store: {self.sync.reason}"
        return None

    def authenticate_mac(self, node: RegisteredNode, parts: SignedRequest) -> None:
        """Timestamp window, ``AF-MAC`` and replay checks of one request from ``node``.

        Raises :class:`~accessfabric.control.client.requestsig.RequestAuthError`.  The Ed25519
        path is :func:`accessfabric.control.server.api.auth.verify_signed` (batched on threads).
        """
        now = self.clock()
        timestamp_ms = parse_timestamp(parts.timestamp, now, self.config.request_window)
        tag = self.mac_keys.check(
            node.record, parts.method, parts.path, timestamp_ms, parts.body, parts.mac
        )
        self.replay.check_and_add(tag, now)

    def load(self) -> None:
        """Read the registry, persisted heartbeats, drains and services' tenants (once, when
        starting to serve)."""
        self._loaded_revision = self.store.revision()
        self.registry.load()
        self.heartbeats.load()
        self.drains.load()
        self.services.load()  # each service's tenant (ADR 0043)

    def ingest_heartbeat(self, node: RegisteredNode, facts: HeartbeatFacts) -> dict[str, Any]:
        """Take one authenticated heartbeat; the reply (health, current record, policy, and
        the node's signed access policy: the grants it enforces as a service host)."""
        now = self.clock()
        node_id = node.node_id
        every = telemetry_every(
            len(self.heartbeats),
            self.config.heartbeat_interval,
            self.config.telemetry_reports_per_second,
        )
        if every > 1:  # sampled: a heartbeat without detail keeps the last detail shown
            facts = carry_detail(self.heartbeats.get(node_id), facts)
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
        reply: dict[str, Any] = {
            "health": report.health.value,
            "reasons": list(report.reasons),
            "node_record": record,
            "directory_version": version_for(
                current, self.registry, self.heartbeats, now, self.drains
            ),
            "draining": self.drains.is_draining(node_id),
            "telemetry_every": every,
            "policy": self.config.policy_document(),
        }
        access, version = self.grants.current_policy(node_id, current.record.tenant)
        reply["access_policy_version"] = version
        if facts.access_policy_version != version:  # the body only when it changed
            reply["access_policy"] = base64.b64encode(access).decode("ascii")
        route_tests = self.route_tests.take(node_id, now)  # queued from the console
        if route_tests:
            reply["route_tests"] = route_tests
        return reply

    def tick(self) -> None:
        """Periodic work: persist heartbeats, fill vacant service leaderships."""
        self.heartbeats.flush()
        self.services.reconcile_all()
        self.events.observe(self, self.clock())

    async def tick_async(self) -> None:
        """:meth:`tick` for the server: with a networked store (etcd) the store calls run in
        a worker thread, so a slow or partitioned store never blocks the event loop for a
        deadline (heartbeats in memory, 503s and ``/v1/status`` keep being answered)."""
        if not self.replicated:
            self.tick()
            return
        batch = self.heartbeats.take_due()
        if batch:
            try:
                await asyncio.to_thread(self.store.put_many, batch)
            except BaseException:
                self.heartbeats.unwritten(batch)
                raise
        await asyncio.to_thread(self.services.reconcile_all)
        self.events.observe(self, self.clock())
