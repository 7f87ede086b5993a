"""Service discovery: replicas of logical services, their TTL leases, and leader failover.

Store layout for service ``S``:

* ``/services/S/meta`` (no lease): ``{"mode", "tenant", "epoch"}``.  ``epoch`` only grows:
  a new leader is elected by a compare-and-swap on this key's ``mod_revision`` that sets
  ``epoch + 1``, so two followers racing for one vacancy cannot both win.
* ``/services/S/replicas/<node>``: one per live replica, attached to that replica's store
  lease (TTL ``replica_ttl``), kept alive by its heartbeats.
* ``/services/S/leader`` (leader-follower only): ``{"replica", "epoch"}``, attached to the
  leader's replica lease, so it disappears when the leader stops heartbeating.  Its
  ``mod_revision`` is the fencing token of the leader's service leases.

:meth:`ServiceDirectory.reconcile` fills a vacant leadership with the longest-registered
live replica; the server runs it on a timer and before answering about a service.  A
service lease never outlives the replica's store lease, so a deposed leader's last lease
has expired by the time a follower can be elected.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.objects import ServiceLease
from accessfabric.control.kernel.vocabulary import Role, ServiceMode, check_name, node_echo_target
from accessfabric.control.server.generations import PartitionGenerations
from accessfabric.control.server.store.base import (
    Change,
    ChangeKind,
    Clock,
    Entry,
    LeaseNotFoundError,
    Store,
)

KEY_PREFIX = "/services/"
DEFAULT_REPLICA_TTL = 15.0
MAX_CAS_ATTEMPTS = 16
MODE_NAMES = {
    ServiceMode.ACTIVE_ACTIVE: "active-active",
    ServiceMode.LEADER_FOLLOWER: "leader-follower",
}


class ServiceError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def parse_mode(text: str) -> ServiceMode:
    for mode, name in MODE_NAMES.items():
        if text == name:
            return mode
    raise ServiceError("bad_mode", f"mode must be one of {', '.join(MODE_NAMES.values())}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceMeta:
    mode: ServiceMode
    tenant: str
    epoch: int

    def encode(self) -> bytes:
        document = {"mode": MODE_NAMES[self.mode], "tenant": self.tenant, "epoch": self.epoch}
        return json.dumps(document).encode()

    @classmethod
    def decode(cls, data: bytes) -> ServiceMeta:
        document = json.loads(data)
        return cls(
            mode=parse_mode(document["mode"]), tenant=document["tenant"], epoch=document["epoch"]
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Replica:
    node_id: str
    registered_at: float
    lease_id: int
    fencing_token: int
    active: bool
    """Serves now: every replica in active-active, only the leader in leader-follower."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceView:
    name: str
    mode: ServiceMode
    tenant: str
    epoch: int
    replicas: tuple[Replica, ...]

    @property
    def active(self) -> tuple[Replica, ...]:
        return tuple(r for r in self.replicas if r.active)

    @property
    def leader(self) -> str | None:
        if self.mode is not ServiceMode.LEADER_FOLLOWER:
            return None
        return next((r.node_id for r in self.replicas if r.active), None)


def _meta_key(service: str) -> str:
    return f"{KEY_PREFIX}{service}/meta"


def _leader_key(service: str) -> str:
    return f"{KEY_PREFIX}{service}/leader"


def _replica_prefix(service: str) -> str:
    return f"{KEY_PREFIX}{service}/replicas/"


class ServiceDirectory:
    """Registers replicas, keeps their leases alive, elects leaders, issues service leases."""

    def __init__(
        self,
        store: Store,
        authority: Authority,
        *,
        clock: Clock = time.time,
        replica_ttl: float = DEFAULT_REPLICA_TTL,
    ) -> None:
        self._store = store
        self._authority = authority
        self._clock = clock
        self.replica_ttl = replica_ttl
        self._kept_alive: dict[tuple[str, str], float] = {}
        self._generations = PartitionGenerations()
        """Moved by every change of a service's replicas or leader, per the service's
        tenant (a route coordinator rebuilds on its partition's: ADR 0043)."""
        self._tenants: dict[str, str] = {}
        """Per service this replica read or saw the meta of: its tenant (a service never
        changes tenant: :meth:`register` refuses ``tenant_conflict``).  Finds the partition
        of another replica's write of a key that does not carry it (:meth:`apply_change`)."""
        self.elections = 0  # leader elections, a follower taking over included (metrics)

    @property
    def generation(self) -> int:
        """Moves with every change of any service (the whole-fleet planner rebuilds on it)."""
        return self._generations.generation

    def tenant_generation(self, tenant: str) -> int:
        """Moves with every change of a service of ``tenant``, not of another's."""
        return self._generations.of(tenant)

    def moved(self, tenant: str | None) -> None:
        """Note a change of a service of ``tenant`` (``None``: of a tenant not known here:
        every partition's)."""
        self._generations.moved(tenant)

    def load(self) -> int:
        """Learn every service's tenant from the store (when starting to serve, and when a
        replica reads the store again after a break: what it missed counts for every
        partition); the number of services."""
        tenants: dict[str, str] = {}
        for entry in self._store.range(KEY_PREFIX).entries:
            service, _, part = entry.key.removeprefix(KEY_PREFIX).partition("/")
            if part == "meta":
                with contextlib.suppress(ValueError, KeyError, TypeError, ServiceError):
                    tenants[service] = ServiceMeta.decode(entry.value).tenant
        self._tenants = tenants
        self.moved(None)
        return len(tenants)

    def apply_change(self, change: Change, tenant_of_node: Callable[[str], str | None]) -> None:
        """Another replica's write of a service key, seen in the store's watch: move the
        generation of the service's tenant only (ADR 0043).

        The tenant is the meta's (``/services/S/meta`` carries it), else the one this
        replica knows for the service, else the tenant of the node the key or value
        names (a replica key ``/services/S/replicas/<node>``, a leader's ``replica``): a
        service's replicas are nodes of its tenant (:meth:`register`).  Only when none
        of them tells does the change count for every partition."""
        service, _, part = change.key.removeprefix(KEY_PREFIX).partition("/")
        tenant: str | None = None
        node_id: str | None = None
        if part == "meta" and change.kind is ChangeKind.PUT:
            with contextlib.suppress(ValueError, KeyError, TypeError, ServiceError):
                tenant = ServiceMeta.decode(change.value).tenant
        elif part.startswith("replicas/"):
            node_id = part.removeprefix("replicas/")
        elif part == "leader" and change.kind is ChangeKind.PUT:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                replica = json.loads(change.value).get("replica")
                node_id = replica if isinstance(replica, str) else None
        tenant = tenant if isinstance(tenant, str) else self._tenants.get(service)
        if tenant is None and node_id is not None:
            tenant = tenant_of_node(node_id)
        if tenant is not None:
            self._tenants[service] = tenant
        self.moved(tenant)

    def _meta(self, service: str, entry: Entry) -> ServiceMeta:
        """``entry``'s meta; remembers the service's tenant (:meth:`apply_change`)."""
        meta = ServiceMeta.decode(entry.value)
        self._tenants[service] = meta.tenant
        return meta

    # ---- registration -----------------------------------------------------------------

    def register(
        self,
        service: str,
        node_id: str,
        roles: frozenset[Role],
        tenant: str,
        mode: ServiceMode,
        now: float | None = None,
    ) -> ServiceView:
        """Make ``node_id`` a replica of ``service`` (or renew it); the service as it is now."""
        when = self._clock() if now is None else now
        try:
            check_name("service", service)
        except ValueError as exc:
            raise ServiceError("bad_service", str(exc)) from None
        if node_echo_target(service) is not None:
            raise ServiceError(
                "reserved_service",
                f"{service!r} names a node's built-in echo: no node registers it",
            )
        if Role.SERVICE_HOST not in roles:
            raise ServiceError(
                "role_required", f"node {node_id} has no service-host role: it cannot serve"
            )
        meta = self._ensure_meta(service, mode, tenant)
        if meta.mode is not mode:
            raise ServiceError(
                "mode_conflict",
                f"service {service!r} is {MODE_NAMES[meta.mode]}, not {MODE_NAMES[mode]}",
            )
        self._renew_or_create(service, node_id, when, meta.tenant)
        return self.reconcile(service)

    def _ensure_meta(self, service: str, mode: ServiceMode, tenant: str) -> ServiceMeta:
        entry = self._store.get(_meta_key(service))
        if entry is None:
            meta = ServiceMeta(mode=mode, tenant=tenant, epoch=1)
            result = self._store.put_if(_meta_key(service), meta.encode(), 0)
            if result.succeeded:
                self._tenants[service] = tenant
                self.moved(tenant)
                return meta
            entry = result.current
            assert entry is not None
        meta = self._meta(service, entry)
        if meta.tenant != tenant:
            raise ServiceError("tenant_conflict", f"service {service!r} belongs to another tenant")
        return meta

    def _renew_or_create(self, service: str, node_id: str, now: float, tenant: str) -> None:
        key = _replica_prefix(service) + node_id
        entry = self._store.get(key)
        if entry is not None and entry.lease_id is not None:
            try:
                self._store.keepalive(entry.lease_id)
                self._kept_alive[(service, node_id)] = now
                return
            except LeaseNotFoundError:
                pass
        lease = self._store.grant_lease(self.replica_ttl)
        document = {"registered_at": now}
        self._store.put(key, json.dumps(document).encode(), lease=lease)
        self._kept_alive[(service, node_id)] = now
        self.moved(tenant)

    def renew(self, node_id: str, services: tuple[str, ...], now: float | None = None) -> None:
        """A heartbeat from ``node_id`` listing ``services``: keep its replica leases alive.

        Keepalives are written at most every third of the TTL.  A listed service whose
        replica lease lapsed is re-registered (as a follower, if it has a leader).
        """
        when = self._clock() if now is None else now
        for service in services:
            last = self._kept_alive.get((service, node_id))
            if last is not None and when - last < self.replica_ttl / 3:
                continue
            meta_entry = self._store.get(_meta_key(service))
            if meta_entry is None:
                continue
            tenant = self._meta(service, meta_entry).tenant
            self._renew_or_create(service, node_id, when, tenant)
            self.reconcile(service)

    def deregister(self, service: str, node_id: str) -> None:
        entry = self._store.get(_replica_prefix(service) + node_id)
        if entry is not None and entry.lease_id is not None:
            with contextlib.suppress(LeaseNotFoundError):
                self._store.revoke(entry.lease_id)
        self._kept_alive.pop((service, node_id), None)
        meta_entry = self._store.get(_meta_key(service))
        self.moved(None if meta_entry is None else self._meta(service, meta_entry).tenant)
        self.reconcile(service)

    # ---- election ---------------------------------------------------------------------

    def reconcile(self, service: str) -> ServiceView:
        """Elect a leader if the post is vacant (CAS on the epoch); the service as it is."""
        for _ in range(MAX_CAS_ATTEMPTS):
            view = self.view(service)
            if view is None:
                raise ServiceError("unknown_service", f"service {service!r} is not registered")
            if view.mode is not ServiceMode.LEADER_FOLLOWER or view.leader is not None:
                return view
            if not view.replicas:
                return view
            candidate = min(view.replicas, key=lambda r: (r.registered_at, r.node_id))
            meta_entry = self._store.get(_meta_key(service))
            assert meta_entry is not None
            meta = self._meta(service, meta_entry)
            bumped = ServiceMeta(mode=meta.mode, tenant=meta.tenant, epoch=meta.epoch + 1)
            cas = self._store.put_if(_meta_key(service), bumped.encode(), meta_entry.mod_revision)
            if not cas.succeeded:
                continue  # someone else moved the epoch: look again
            document = {"replica": candidate.node_id, "epoch": bumped.epoch}
            try:
                self._store.put_if(
                    _leader_key(service),
                    json.dumps(document).encode(),
                    0,
                    lease=candidate.lease_id,
                )
            except LeaseNotFoundError:
                continue  # the candidate expired meanwhile
            self.moved(meta.tenant)
            self.elections += 1
        raise ServiceError("contended", f"service {service!r} is contended; try again")

    def reconcile_all(self) -> None:
        for name in self.names():
            try:
                self.reconcile(name)
            except ServiceError:
                continue

    # ---- reading ----------------------------------------------------------------------

    def names(self) -> list[str]:
        names = set()
        for entry in self._store.range(KEY_PREFIX).entries:
            rest = entry.key.removeprefix(KEY_PREFIX)
            if rest.endswith("/meta"):
                names.add(rest.removesuffix("/meta"))
        return sorted(names)

    def view(self, service: str) -> ServiceView | None:
        entries = {e.key: e for e in self._store.range(f"{KEY_PREFIX}{service}/").entries}
        meta_entry = entries.get(_meta_key(service))
        if meta_entry is None:
            return None
        meta = self._meta(service, meta_entry)
        leader_entry = entries.get(_leader_key(service))
        leader: dict[str, object] = {} if leader_entry is None else json.loads(leader_entry.value)
        prefix = _replica_prefix(service)
        replicas = []
        for key, entry in entries.items():
            if not key.startswith(prefix) or entry.lease_id is None:
                continue
            node_id = key.removeprefix(prefix)
            replicas.append(self._replica(meta, node_id, entry, leader, leader_entry))
        replicas.sort(key=lambda r: (r.registered_at, r.node_id))
        epoch = int(leader.get("epoch", meta.epoch))  # type: ignore[call-overload]
        return ServiceView(
            name=service, mode=meta.mode, tenant=meta.tenant, epoch=epoch, replicas=tuple(replicas)
        )

    @staticmethod
    def _replica(
        meta: ServiceMeta,
        node_id: str,
        entry: Entry,
        leader: dict[str, object],
        leader_entry: Entry | None,
    ) -> Replica:
        registered_at = float(json.loads(entry.value)["registered_at"])
        assert entry.lease_id is not None
        if meta.mode is ServiceMode.ACTIVE_ACTIVE:
            return Replica(
                node_id=node_id,
                registered_at=registered_at,
                lease_id=entry.lease_id,
                fencing_token=entry.create_revision,
                active=True,
            )
        is_leader = leader.get("replica") == node_id and leader_entry is not None
        return Replica(
            node_id=node_id,
            registered_at=registered_at,
            lease_id=entry.lease_id,
            fencing_token=leader_entry.mod_revision if is_leader and leader_entry else 0,
            active=is_leader,
        )

    def active_map(self) -> dict[str, tuple[str, ...]]:
        """Service name -> replicas serving now (what the route planner routes to)."""
        out: dict[str, tuple[str, ...]] = {}
        for name in self.names():
            view = self.view(name)
            if view is not None and view.active:
                out[name] = tuple(r.node_id for r in view.active)
        return out

    # ---- leases -----------------------------------------------------------------------

    def issue(self, view: ServiceView, max_ttl: float, now: float | None = None) -> list[bytes]:
        """Signed service leases of the active replicas; none outlives its replica lease."""
        when = self._clock() if now is None else now
        blobs = []
        for replica in view.active:
            try:
                remaining = self._store.time_to_live(replica.lease_id)
            except LeaseNotFoundError:
                continue
            ttl = min(max_ttl, remaining)
            if ttl <= 0.001:
                continue
            now_ms = int(when * 1000)
            lease = ServiceLease(
                service=view.name,
                replica=replica.node_id,
                mode=view.mode,
                epoch=view.epoch,
                issued_ms=now_ms,
                expires_ms=now_ms + max(1, int(ttl * 1000)),
                fencing_token=replica.fencing_token,
            )
            blobs.append(self._authority.issue(lease))
        return blobs
