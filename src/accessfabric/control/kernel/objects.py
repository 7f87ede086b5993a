"""The objects the authority signs: ``NodeRecord``, ``RouteLease``, ``ServiceLease``,
``AccessPolicy`` (the access grants a service host enforces, docs/control.md).

Each is a frozen value that validates itself on construction and knows its canonical body
(:meth:`encode_body` / :meth:`decode_body`); the signed envelope around the body is in
:mod:`accessfabric.control.kernel.signed`, the byte layouts in ``docs/control.md``.  Times are
Unix milliseconds (u64): every hop compares them with its own wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from itertools import pairwise
from typing import Any, ClassVar, Self

from accessfabric.control.kernel.codec import (
    MalformedError,
    Reader,
    Writer,
    canonical_node_id,
    check_u64,
)
from accessfabric.control.kernel.vocabulary import (
    Role,
    ServiceMode,
    check_name,
    check_trust_tier,
    classes_from_mask,
    classes_to_mask,
    roles_from_mask,
    roles_to_mask,
)
from accessfabric.identity.node_id import verify_public_key_matches
from accessfabric.wire.registry import TrafficClass

LEASE_ID_LENGTH = 16
KEY_LENGTH = 32
MAX_HOPS = 16
MAX_SCOPES = 32
MAX_SERVICES = 64
MAX_GRANTS = 64
"""Access grants in one :class:`AccessPolicy` (one tenant's grants; creation refuses more)."""
MAX_GRANT_SERVICES = 16
MAX_GRANT_NODES = 16
"""Node ids one grant may name as openers (``nodes``) or as hosts (``hosts``)."""
MAX_RECORD_FLOORS = 128
"""Record floors (roles revoked, records not yet expired) in one :class:`AccessPolicy`."""
GRANT_ID_LENGTH = 16


class ObjectType(IntEnum):
    """The type tag of a signed object (envelope byte 5, covered by the signature)."""

    NODE_RECORD = 1
    ROUTE_LEASE = 2
    SERVICE_LEASE = 3
    ACCESS_POLICY = 4


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _node_id(field: str, value: str) -> str:
    try:
        return canonical_node_id(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: {exc}") from None


def _check_times(issued_ms: int, expires_ms: int) -> None:
    check_u64("issued_ms", issued_ms)
    check_u64("expires_ms", expires_ms)
    if expires_ms <= issued_ms:
        raise ValueError("expires_ms must be after issued_ms")


def _node_ids(kind: str, ids: Iterable[str], limit: int) -> frozenset[str]:
    if isinstance(ids, str):
        raise TypeError(f"{kind} must be a collection of node ids, not one str")
    checked = frozenset(_node_id(kind, node_id) for node_id in ids)
    if len(checked) > limit:
        raise ValueError(f"at most {limit} {kind}")
    return checked


def _write_node_ids(out: Writer, ids: Iterable[str]) -> None:
    ordered = sorted(ids)
    out.uint(len(ordered), 1)
    for node_id in ordered:
        out.node_id(node_id)


def _read_node_ids(data: Reader) -> frozenset[str]:
    ids = [data.node_id() for _ in range(data.uint(1))]
    if any(a >= b for a, b in pairwise(ids)):
        raise MalformedError("a node id list is not in strictly ascending order")
    return frozenset(ids)


def _names(kind: str, names: Iterable[str], limit: int) -> frozenset[str]:
    if isinstance(names, str):
        raise TypeError(f"{kind}s must be a collection of names, not one str")
    checked = frozenset(check_name(kind, name) for name in names)
    if len(checked) > limit:
        raise ValueError(f"at most {limit} {kind}s")
    return checked


_INTERNED: dict[frozenset[Any], frozenset[Any]] = {}
_INTERN_LIMIT = 4096


def _interned(value: frozenset[Any]) -> frozenset[Any]:
    """One shared object per distinct small set (role sets, scope sets): a control plane
    holds a record per node, and an empty frozenset alone costs 216 bytes (issue 17:
    directory memory at 1M nodes)."""
    shared = _INTERNED.get(value)
    if shared is not None:
        return shared
    if len(_INTERNED) < _INTERN_LIMIT:
        _INTERNED[value] = value
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeRecord:
    """What the control plane vouches for about one node."""

    object_type: ClassVar[ObjectType] = ObjectType.NODE_RECORD

    node_id: str
    public_key: bytes
    sealing_public_key: bytes
    roles: frozenset[Role]
    tenant: str
    organisation_scopes: frozenset[str]
    trust_tier: int
    issued_ms: int
    expires_ms: int
    revision: int

    def __post_init__(self) -> None:
        _set(self, "node_id", _node_id("node_id", self.node_id))
        if len(self.public_key) != KEY_LENGTH or len(self.sealing_public_key) != KEY_LENGTH:
            raise ValueError(f"public keys are {KEY_LENGTH} raw bytes")
        if not verify_public_key_matches(self.node_id, self.public_key):
            raise ValueError(f"node id {self.node_id} does not derive from public_key")
        _set(self, "roles", _interned(frozenset(Role(role) for role in self.roles)))
        check_name("tenant", self.tenant)
        _set(
            self,
            "organisation_scopes",
            _interned(_names("organisation scope", self.organisation_scopes, MAX_SCOPES)),
        )
        check_trust_tier(self.trust_tier)
        _check_times(self.issued_ms, self.expires_ms)
        check_u64("revision", self.revision)

    def encode_body(self) -> bytes:
        out = Writer()
        out.node_id(self.node_id)
        out.fixed(self.public_key, KEY_LENGTH)
        out.fixed(self.sealing_public_key, KEY_LENGTH)
        out.uint(roles_to_mask(self.roles), 2)
        out.name(self.tenant)
        out.names(self.organisation_scopes)
        out.uint(self.trust_tier, 1)
        out.u64(self.issued_ms, self.expires_ms, self.revision)
        return out.to_bytes()

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        """Parse a body; :class:`MalformedError` or :class:`ValueError` if it is not one."""
        with Reader(body) as data:
            return cls(
                node_id=data.node_id(),
                public_key=data.take(KEY_LENGTH),
                sealing_public_key=data.take(KEY_LENGTH),
                roles=roles_from_mask(data.uint(2)),
                tenant=data.name(),
                organisation_scopes=frozenset(data.names()),
                trust_tier=data.uint(1),
                issued_ms=data.u64(),
                expires_ms=data.u64(),
                revision=data.u64(),
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteLease:
    """Permission to carry ``allowed_services`` in ``allowed_classes`` along ``hops``.

    ``tenant`` is the tenant of the source (``hops[0]``) the lease was issued to: relays
    limit and account by it (docs/relays.md, "Quotas and accounting").
    """

    object_type: ClassVar[ObjectType] = ObjectType.ROUTE_LEASE

    lease_id: bytes
    route_id: int
    epoch: int
    hops: tuple[str, ...]
    tenant: str
    allowed_services: frozenset[str]
    allowed_classes: frozenset[TrafficClass]
    issued_ms: int
    expires_ms: int
    fencing_token: int

    def __post_init__(self) -> None:
        if len(self.lease_id) != LEASE_ID_LENGTH:
            raise ValueError(f"lease_id is {LEASE_ID_LENGTH} bytes")
        check_u64("route_id", self.route_id)
        check_u64("epoch", self.epoch)
        hops = tuple(_node_id("hops", hop) for hop in self.hops)
        if not 1 <= len(hops) <= MAX_HOPS:
            raise ValueError(f"a route has 1..{MAX_HOPS} hops, got {len(hops)}")
        if len(set(hops)) != len(hops):
            raise ValueError("a route visits each node at most once")
        _set(self, "hops", hops)
        check_name("tenant", self.tenant)
        _set(self, "allowed_services", _names("service", self.allowed_services, MAX_SERVICES))
        _set(self, "allowed_classes", frozenset(TrafficClass(c) for c in self.allowed_classes))
        _check_times(self.issued_ms, self.expires_ms)
        check_u64("fencing_token", self.fencing_token)

    def encode_body(self) -> bytes:
        out = Writer()
        out.fixed(self.lease_id, LEASE_ID_LENGTH)
        out.u64(self.route_id, self.epoch)
        out.uint(len(self.hops), 1)
        for hop in self.hops:
            out.node_id(hop)
        out.name(self.tenant)
        out.names(self.allowed_services)
        out.uint(classes_to_mask(self.allowed_classes), 1)
        out.u64(self.issued_ms, self.expires_ms, self.fencing_token)
        return out.to_bytes()

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        with Reader(body) as data:
            lease_id = data.take(LEASE_ID_LENGTH)
            route_id = data.u64()
            epoch = data.u64()
            hops = tuple(data.node_id() for _ in range(data.uint(1)))
            return cls(
                lease_id=lease_id,
                route_id=route_id,
                epoch=epoch,
                hops=hops,
                tenant=data.name(),
                allowed_services=frozenset(data.names()),
                allowed_classes=classes_from_mask(data.uint(1)),
                issued_ms=data.u64(),
                expires_ms=data.u64(),
                fencing_token=data.u64(),
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceLease:
    """``replica`` serves ``service`` (as leader or one of several active replicas)."""

    object_type: ClassVar[ObjectType] = ObjectType.SERVICE_LEASE

    service: str
    replica: str
    mode: ServiceMode
    epoch: int
    issued_ms: int
    expires_ms: int
    fencing_token: int

    def __post_init__(self) -> None:
        check_name("service", self.service)
        _set(self, "replica", _node_id("replica", self.replica))
        _set(self, "mode", ServiceMode(self.mode))
        check_u64("epoch", self.epoch)
        _check_times(self.issued_ms, self.expires_ms)
        check_u64("fencing_token", self.fencing_token)

    def encode_body(self) -> bytes:
        out = Writer()
        out.name(self.service)
        out.node_id(self.replica)
        out.uint(self.mode, 1)
        out.u64(self.epoch, self.issued_ms, self.expires_ms, self.fencing_token)
        return out.to_bytes()

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        with Reader(body) as data:
            return cls(
                service=data.name(),
                replica=data.node_id(),
                mode=ServiceMode(data.uint(1)),
                epoch=data.u64(),
                issued_ms=data.u64(),
                expires_ms=data.u64(),
                fencing_token=data.u64(),
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessGrant:
    """Nodes of ``tenant`` holding one of ``roles`` (any role when empty) and at least
    ``min_trust_tier`` may open streams to ``services`` in ``classes`` until ``expires_ms``.

    ``nodes`` narrows the openers to those node ids (still of ``tenant``: the host checks
    the opener's record), ``hosts`` the service hosts that honour it (empty: any).
    Not signed alone: it travels inside the :class:`AccessPolicy` of a service host."""

    grant_id: bytes
    tenant: str
    roles: frozenset[Role]
    services: frozenset[str]
    classes: frozenset[TrafficClass]
    min_trust_tier: int
    expires_ms: int
    nodes: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if len(self.grant_id) != GRANT_ID_LENGTH:
            raise ValueError(f"grant_id is {GRANT_ID_LENGTH} bytes")
        check_name("tenant", self.tenant)
        _set(self, "roles", frozenset(Role(role) for role in self.roles))
        _set(self, "services", _names("service", self.services, MAX_GRANT_SERVICES))
        if not self.services:
            raise ValueError("a grant names at least one service")
        _set(self, "classes", frozenset(TrafficClass(c) for c in self.classes))
        if not self.classes:
            raise ValueError("a grant allows at least one traffic class")
        check_trust_tier(self.min_trust_tier)
        check_u64("expires_ms", self.expires_ms)
        _set(self, "nodes", _node_ids("nodes", self.nodes, MAX_GRANT_NODES))
        _set(self, "hosts", _node_ids("hosts", self.hosts, MAX_GRANT_NODES))

    def encode(self, out: Writer) -> None:
        out.fixed(self.grant_id, GRANT_ID_LENGTH)
        out.name(self.tenant)
        out.uint(roles_to_mask(self.roles), 2)
        out.names(self.services)
        out.uint(classes_to_mask(self.classes), 1)
        out.uint(self.min_trust_tier, 1)
        out.u64(self.expires_ms)
        _write_node_ids(out, self.nodes)
        _write_node_ids(out, self.hosts)

    @classmethod
    def decode(cls, data: Reader) -> Self:
        return cls(
            grant_id=data.take(GRANT_ID_LENGTH),
            tenant=data.name(),
            roles=roles_from_mask(data.uint(2)),
            services=frozenset(data.names()),
            classes=classes_from_mask(data.uint(1)),
            min_trust_tier=data.uint(1),
            expires_ms=data.u64(),
            nodes=_read_node_ids(data),
            hosts=_read_node_ids(data),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessPolicy:
    """The access grants ``host`` enforces, as of ``revision``; valid until ``expires_ms``.

    A newer policy (a higher ``revision``) replaces an older one whole: a grant revoked
    is a grant missing from the next policy.  ``revision`` only grows, so a node refuses
    an older policy replayed to it.

    ``record_floors`` maps node ids of the tenant to the lowest node-record revision the
    host may still believe: a role revoked from a node re-signs its record, and the
    floor makes the host refuse the older record it may hold (or be shown) at once,
    instead of when that record expires.  ``tenant_floor_ms`` (0: none) is the floor of
    the revocations that no longer fit ``record_floors``: the host believes no record
    issued before it (docs/control.md, Access grants)."""

    object_type: ClassVar[ObjectType] = ObjectType.ACCESS_POLICY

    host: str
    revision: int
    issued_ms: int
    expires_ms: int
    grants: tuple[AccessGrant, ...]
    record_floors: tuple[tuple[str, int], ...] = ()
    tenant_floor_ms: int = 0

    def __post_init__(self) -> None:
        _set(self, "host", _node_id("host", self.host))
        check_u64("revision", self.revision)
        check_u64("tenant_floor_ms", self.tenant_floor_ms)
        _check_times(self.issued_ms, self.expires_ms)
        _set(self, "grants", tuple(self.grants))
        if len(self.grants) > MAX_GRANTS:
            raise ValueError(f"at most {MAX_GRANTS} grants in one access policy")
        floors = {
            _node_id("record_floors", n): check_u64("floor", r) for n, r in self.record_floors
        }
        if len(floors) > MAX_RECORD_FLOORS:
            raise ValueError(f"at most {MAX_RECORD_FLOORS} record floors in one access policy")
        _set(self, "record_floors", tuple(sorted(floors.items())))

    def floor_of(self, node_id: str) -> int:
        """The lowest record revision of ``node_id`` the host may believe (0: any)."""
        for floored, revision in self.record_floors:
            if floored == node_id:
                return revision
        return 0

    def encode_body(self) -> bytes:
        out = Writer()
        out.node_id(self.host)
        out.u64(self.revision, self.issued_ms, self.expires_ms)
        out.uint(len(self.grants), 1)
        for grant in self.grants:
            grant.encode(out)
        out.uint(len(self.record_floors), 1)
        for node_id, revision in self.record_floors:
            out.node_id(node_id)
            out.u64(revision)
        if self.tenant_floor_ms:  # absent when 0: a policy without one reads as before
            out.u64(self.tenant_floor_ms)
        return out.to_bytes()

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        with Reader(body) as data:
            host = data.node_id()
            revision = data.u64()
            issued_ms = data.u64()
            expires_ms = data.u64()
            grants = tuple(AccessGrant.decode(data) for _ in range(data.uint(1)))
            floors = tuple((data.node_id(), data.u64()) for _ in range(data.uint(1)))
            if any(a[0] >= b[0] for a, b in pairwise(floors)):
                raise MalformedError("record floors are not in strictly ascending node id order")
            tenant_floor_ms = 0
            if not data.at_end:  # optional, last
                tenant_floor_ms = data.u64()
                if tenant_floor_ms == 0:
                    raise MalformedError("a tenant floor of 0 is written as none")
            return cls(
                host=host, revision=revision, issued_ms=issued_ms, expires_ms=expires_ms,
                grants=grants, record_floors=floors, tenant_floor_ms=tenant_floor_ms,
            )  # fmt: skip


SignedObject = NodeRecord | RouteLease | ServiceLease | AccessPolicy
