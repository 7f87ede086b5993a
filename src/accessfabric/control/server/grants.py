"""Access grants: who may open streams to which services, and the signed policy of each host.

A grant admits the nodes of one tenant (optionally only those holding one of some roles,
and of at least a trust tier) to some services in some traffic classes, until it expires.
Grants are kept at ``/grants/<tenant>/<grant id>`` (JSON); every change of a tenant's
grants also writes ``/grant-versions/<tenant>``, whose ``mod_revision`` (a store-wide
revision, so it only grows) is the revision of that tenant's access policies.

A service host receives an :class:`AccessPolicy` signed by the authority: its tenant's
live grants that apply to it (a grant may name ``hosts``), for it alone (``host``), valid
for ``policy_ttl`` seconds.  The heartbeat reply carries the policy's version (its
``issued_ms``) always and the policy itself only when it differs from the one the host
reports holding.  A revoked grant is missing from the next one, so a revocation reaches
every host at its next heartbeat; a host that cannot reach the control plane keeps
enforcing the policy it holds until that expires, then refuses everyone (docs/control.md).

A role revoked from a node writes a **record floor** at ``/record-floors/<tenant>/<node>``
(the node's new record revision, kept until its superseded record expires) and moves the
tenant's grant version: the tenant's hosts get a policy naming the floor at their next
heartbeat and refuse the node's older record from then on.  A policy has room for
``MAX_RECORD_FLOORS``; past them the oldest is merged into the tenant's **tenant floor**
(``/tenant-record-floors/<tenant>``: no record issued before it is believed), see
:meth:`AccessGrants.floor_plan`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.objects import (
    MAX_GRANTS,
    MAX_RECORD_FLOORS,
    AccessGrant,
    AccessPolicy,
)
from accessfabric.control.kernel.signed import MAX_BODY_LENGTH
from accessfabric.control.kernel.vocabulary import Role, check_name
from accessfabric.control.server.store.base import Clock, Store
from accessfabric.identity.node_id import node_id_from_public_key
from accessfabric.wire.registry import TrafficClass

KEY_PREFIX = "/grants/"
VERSION_PREFIX = "/grant-versions/"
FLOOR_PREFIX = "/record-floors/"
TENANT_FLOOR_PREFIX = "/tenant-record-floors/"
FLOORS_RESERVE = MAX_RECORD_FLOORS * (40 + 8) + 8
"""Bytes of a policy kept for record floors (node id + revision each, and the tenant floor)
when grants are added."""
DEFAULT_POLICY_TTL = 300.0
MAX_GRANT_TTL = 366 * 24 * 3600.0
_NEVER_MS = 2**63


class GrantError(Exception):
    """A grant request cannot be served; ``code`` is stable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredGrant:
    grant: AccessGrant
    created_ms: int

    @property
    def grant_id(self) -> str:
        return self.grant.grant_id.hex()


def grant_json(stored: StoredGrant) -> dict[str, object]:
    grant = stored.grant
    return {
        "grant_id": stored.grant_id,
        "tenant": grant.tenant,
        "roles": sorted(role.value for role in grant.roles),
        "services": sorted(grant.services),
        "classes": sorted(c.name.lower() for c in grant.classes),
        "min_trust_tier": grant.min_trust_tier,
        "nodes": sorted(grant.nodes),
        "hosts": sorted(grant.hosts),
        "created_ms": stored.created_ms,
        "expires_ms": grant.expires_ms,
    }


def _encode(stored: StoredGrant) -> bytes:
    document = grant_json(stored)
    return json.dumps(document, sort_keys=True).encode()


def _decode(value: bytes) -> StoredGrant:
    document = json.loads(value)
    grant = AccessGrant(
        grant_id=bytes.fromhex(document["grant_id"]),
        tenant=document["tenant"],
        roles=frozenset(Role(role) for role in document["roles"]),
        services=frozenset(document["services"]),
        classes=frozenset(TrafficClass[name.upper()] for name in document["classes"]),
        min_trust_tier=int(document["min_trust_tier"]),
        expires_ms=int(document["expires_ms"]),
        nodes=frozenset(document.get("nodes", ())),
        hosts=frozenset(document.get("hosts", ())),
    )
    return StoredGrant(grant=grant, created_ms=int(document["created_ms"]))


class AccessGrants:
    """Creates, lists and revokes grants; issues each host's signed access policy."""

    def __init__(
        self,
        store: Store,
        authority: Authority,
        *,
        clock: Clock = time.time,
        policy_ttl: float = DEFAULT_POLICY_TTL,
        tenant_of: Callable[[str], str | None] = lambda node_id: None,
        sole_writer: bool = False,
    ) -> None:
        """``tenant_of``: the tenant of an enrolled node (None: not enrolled), so that a
        grant names only nodes of its own tenant.  ``sole_writer``: no other replica
        writes this store (SQLite), so each tenant's policy revision is kept in memory
        between this object's own writes instead of read from the store for every
        heartbeat (ADR 0043); with a shared store (etcd) it is read every time."""
        self._store = store
        self._authority = authority
        self._clock = clock
        self.policy_ttl = policy_ttl
        self._tenant_of = tenant_of
        self._revisions: dict[str, int] | None = {} if sole_writer else None
        """tenant -> :meth:`revision`, when this object is the store's sole writer."""
        self._lists: dict[str, tuple[int, list[StoredGrant]]] = {}
        """tenant -> (revision, its stored grants by creation), when the sole writer: a
        heartbeat storm of new hosts signs one policy each from one store read (issue 17)."""
        self._issued: dict[str, tuple[int, int, int, bytes]] = {}
        """host -> (revision, issued_ms, expires_ms, blob) of the last policy signed for it."""
        self._floor_parts: dict[str, tuple[int, int, int, tuple[tuple[str, int], ...]]] = {}
        """tenant -> (revision, valid until ms, tenant floor, floors): :meth:`_policy_floors`."""

    # ---- grants ------------------------------------------------------------------------

    def create(
        self,
        tenant: str,
        services: Iterable[str],
        *,
        roles: Iterable[Role] = (),
        classes: Iterable[TrafficClass] = tuple(TrafficClass),
        min_trust_tier: int = 0,
        ttl: float = MAX_GRANT_TTL,
        nodes: Iterable[str] = (),
        hosts: Iterable[str] = (),
    ) -> StoredGrant:
        """A new grant (``bad_grant`` if a field is invalid, ``tenant_conflict`` when a node it
        names is not an enrolled node of ``tenant``, ``too_many_grants`` when the tenant's
        policy would not fit one signed object)."""
        now_ms = int(self._clock() * 1000)
        if not 0 < ttl <= MAX_GRANT_TTL:
            raise GrantError("bad_grant", f"ttl must be 0 < ttl <= {MAX_GRANT_TTL:.0f} s")
        try:
            check_name("tenant", tenant)
            grant = AccessGrant(
                grant_id=secrets.token_bytes(16), tenant=tenant, roles=frozenset(roles),
                services=frozenset(services), classes=frozenset(classes),
                min_trust_tier=min_trust_tier, expires_ms=now_ms + int(ttl * 1000),
                nodes=frozenset(nodes), hosts=frozenset(hosts),
            )  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise GrantError("bad_grant", str(exc)) from None
        for node_id in sorted(grant.nodes | grant.hosts):  # never across tenants
            held = self._tenant_of(node_id)
            if held != tenant:
                where = "is not enrolled" if held is None else f"is of tenant {held!r}"
                raise GrantError(
                    "tenant_conflict", f"node {node_id} {where}: a grant of {tenant!r} "
                    "names only that tenant's nodes",
                )  # fmt: skip
        self._forget_expired(tenant, now_ms)
        live = self.grants(tenant)
        if len(live) >= MAX_GRANTS:
            raise GrantError("too_many_grants", f"tenant {tenant!r} has {MAX_GRANTS} grants")
        trial = AccessPolicy(
            host=node_id_from_public_key(self._authority.public_key),
            revision=0,
            issued_ms=now_ms,
            expires_ms=now_ms + 1,
            grants=(*[s.grant for s in live], grant),
        )
        if len(trial.encode_body()) + FLOORS_RESERVE > MAX_BODY_LENGTH:
            raise GrantError(
                "too_many_grants", f"tenant {tenant!r}'s grants would not fit one access policy"
            )
        stored = StoredGrant(grant=grant, created_ms=now_ms)
        try:
            self._store.put_many(
                [
                    (f"{KEY_PREFIX}{tenant}/{stored.grant_id}", _encode(stored)),
                    (f"{VERSION_PREFIX}{tenant}", str(now_ms).encode()),
                ]
            )
        finally:
            self._version_written(tenant)
        return stored

    def revoke(self, grant_id: str) -> StoredGrant:
        """Delete a grant (``unknown_grant`` if there is none with this id)."""
        for stored in self.all():
            if stored.grant_id == grant_id.strip().lower():
                tenant = stored.grant.tenant
                try:
                    self._store.delete(f"{KEY_PREFIX}{tenant}/{stored.grant_id}")
                    self._store.put(f"{VERSION_PREFIX}{tenant}", str(self._clock()).encode())
                finally:
                    self._version_written(tenant)
                return stored
        raise GrantError("unknown_grant", f"no grant {grant_id!r}")

    def _forget_expired(self, tenant: str, now_ms: int) -> None:
        """Delete the tenant's expired grants (hosts ignore them already)."""
        for entry in self._store.range(f"{KEY_PREFIX}{tenant}/").entries:
            if _decode(entry.value).grant.expires_ms <= now_ms:
                self._store.delete(entry.key)

    def all(self) -> list[StoredGrant]:
        entries = self._store.range(KEY_PREFIX).entries
        return sorted((_decode(e.value) for e in entries), key=lambda s: s.created_ms)

    def grants(self, tenant: str) -> list[StoredGrant]:
        """The tenant's grants that have not expired.

        The sole writer keeps each tenant's list between its own writes (keyed by the
        tenant's revision, dropped at each write: :meth:`_version_written`), as it keeps
        the revision: a policy signed for each of 1000 new hosts read the grants from
        the store 1000 times (issue 17).  Expiry is applied at each call; deleting
        expired grants (:meth:`_forget_expired`) changes nothing this list shows."""
        now_ms = int(self._clock() * 1000)
        stored: list[StoredGrant] | None = None
        if self._revisions is not None:
            revision = self.revision(tenant)
            held = self._lists.get(tenant)
            if held is not None and held[0] == revision:
                stored = held[1]
            else:
                stored = self._read_grants(tenant)
                self._lists[tenant] = (revision, stored)
        if stored is None:
            stored = self._read_grants(tenant)
        return [s for s in stored if s.grant.expires_ms > now_ms]

    def _read_grants(self, tenant: str) -> list[StoredGrant]:
        entries = self._store.range(f"{KEY_PREFIX}{tenant}/").entries
        return sorted((_decode(e.value) for e in entries), key=lambda s: s.created_ms)

    def revision(self, tenant: str) -> int:
        """The store revision of ``tenant``'s last grant or floor change (0: none)."""
        cached = None if self._revisions is None else self._revisions.get(tenant)
        if cached is not None:
            return cached
        entry = self._store.get(f"{VERSION_PREFIX}{tenant}")
        revision = 0 if entry is None else entry.mod_revision
        if self._revisions is not None:
            self._revisions[tenant] = revision
        return revision

    def _version_written(self, tenant: str) -> None:
        if self._revisions is not None:
            self._revisions.pop(tenant, None)  # read again from the store next time
            self._lists.pop(tenant, None)  # a write that failed half-way moved no revision

    # ---- record floors (roles revoked) -------------------------------------------------

    def raise_floor(
        self, tenant: str, node_id: str, revision: int, until_ms: int, superseded_ms: int
    ) -> None:
        """From now on ``tenant``'s hosts believe no record of ``node_id`` older than
        ``revision`` (kept until ``until_ms``, when every older record has expired;
        ``superseded_ms``: when the newest of them was issued); the tenant's policies
        change, so each host gets it at its next heartbeat.

        When the tenant has no room for another floor, the oldest is merged into the
        tenant floor first (:meth:`floor_plan`)."""
        now_ms = int(self._clock() * 1000)
        tenant_floor = self.floor_plan(tenant, node_id) or self.tenant_floor(tenant)
        live = self._live_floors(tenant, now_ms)
        held = live.get(node_id)
        if held is not None:
            revision, until_ms = max(revision, held[0]), max(until_ms, held[1])
            superseded_ms = max(superseded_ms, held[2])
        gone = self._expired_floors(tenant, now_ms)
        gone += [
            f"{FLOOR_PREFIX}{tenant}/{other}"
            for other, floor in live.items()
            if floor[2] < tenant_floor and other != node_id  # the tenant floor covers it
        ]
        document = {"revision": revision, "until_ms": until_ms, "superseded_ms": superseded_ms}
        items = [
            (f"{FLOOR_PREFIX}{tenant}/{node_id}", json.dumps(document).encode()),
            (f"{VERSION_PREFIX}{tenant}", str(now_ms).encode()),
        ]
        if tenant_floor > self.tenant_floor(tenant):
            items.append((f"{TENANT_FLOOR_PREFIX}{tenant}", str(tenant_floor).encode()))
        try:
            self._store.put_many(items)
        finally:
            self._version_written(tenant)
        for key in gone:
            self._store.delete(key)

    def floor_plan(self, tenant: str, node_id: str) -> int | None:
        """The new tenant floor that raising ``node_id``'s floor needs, or None.

        A policy holds at most ``MAX_RECORD_FLOORS`` per-node floors.  With no room for
        another, the oldest (the one whose superseded record was issued first, at ``s``)
        is merged into the tenant floor ``T = s + 1``: no record of the tenant issued
        before ``T`` is believed, which covers the merged node's older records (and any
        floor whose superseded record is older still).  Honest nodes whose current
        record was issued before ``T`` must be re-issued one
        (:meth:`~accessfabric.control.server.plane.ControlPlane.revoke_role` does)."""
        now_ms = int(self._clock() * 1000)
        current = self.tenant_floor(tenant)
        live = self._live_floors(tenant, now_ms)
        kept = {n: f for n, f in live.items() if f[2] >= current or n == node_id}
        if node_id in kept or len(kept) < MAX_RECORD_FLOORS:
            return None
        oldest = min(floor[2] for floor in kept.values())
        return max(current, min(oldest + 1, now_ms))

    def _policy_floors(
        self, tenant: str, revision: int, now_ms: int
    ) -> tuple[int, tuple[tuple[str, int], ...]]:
        """(tenant floor, (node id, floor revision) of the live record floors it does not
        cover) for ``tenant``'s policies, read from the store once per grant revision (a
        floor is written with the revision's bump) and again when one of them expires: a
        fleet's start signs every host's first policy, and read per host these two store
        reads were most of signing one on the control plane's loop (issue 17, ADR 0056)."""
        held = self._floor_parts.get(tenant)
        if held is not None and held[0] == revision and now_ms < held[1]:
            return held[2], held[3]
        tenant_floor = self.tenant_floor(tenant)
        live = self._live_floors(tenant, now_ms)
        floors = tuple(
            (node_id, floor[0])
            for node_id, floor in live.items()
            if floor[2] >= tenant_floor  # else the tenant floor covers it
        )
        until_ms = min((floor[1] for floor in live.values()), default=_NEVER_MS)
        self._floor_parts[tenant] = (revision, until_ms, tenant_floor, floors)
        return tenant_floor, floors

    def tenant_floor(self, tenant: str) -> int:
        """The tenant floor (ms): no record of the tenant issued before it is believed."""
        entry = self._store.get(f"{TENANT_FLOOR_PREFIX}{tenant}")
        return 0 if entry is None else int(entry.value)

    def _expired_floors(self, tenant: str, now_ms: int) -> list[str]:
        return [
            entry.key
            for entry in self._store.range(f"{FLOOR_PREFIX}{tenant}/").entries
            if json.loads(entry.value)["until_ms"] <= now_ms
        ]

    def _live_floors(self, tenant: str, now_ms: int) -> dict[str, tuple[int, int, int]]:
        """node id -> (revision, until_ms, superseded_ms) of the tenant's live floors (a
        floor written without ``superseded_ms`` counts as superseded at ``until_ms``, capped
        at now: merging it may re-issue more records, never believe an old one)."""
        prefix = f"{FLOOR_PREFIX}{tenant}/"
        live: dict[str, tuple[int, int, int]] = {}
        for entry in self._store.range(prefix).entries:
            document = json.loads(entry.value)
            until_ms = int(document["until_ms"])
            if until_ms > now_ms:
                superseded = int(document.get("superseded_ms", min(until_ms, now_ms)))
                live[entry.key[len(prefix) :]] = (int(document["revision"]), until_ms, superseded)
        return live

    def floors(self, tenant: str) -> dict[str, tuple[int, int]]:
        """node id -> (floor revision, until_ms) of the tenant's live record floors."""
        now_ms = int(self._clock() * 1000)
        return {n: (f[0], f[1]) for n, f in self._live_floors(tenant, now_ms).items()}

    # ---- policies ----------------------------------------------------------------------

    def policy_for(self, host: str, tenant: str) -> bytes:
        """The signed access policy of ``host`` (see :meth:`current_policy`)."""
        return self.current_policy(host, tenant)[0]

    def current_policy(self, host: str, tenant: str) -> tuple[bytes, int]:
        """(blob, version) of ``host``'s signed access policy (a node of ``tenant``), the
        version being its ``issued_ms``: re-signed when the tenant's grants or record
        floors changed or half its lifetime has passed (the host checks each grant's own
        expiry).  A host that reports holding this version needs no body."""
        now_ms = int(self._clock() * 1000)
        revision = self.revision(tenant)
        held = self._issued.get(host)
        ttl_ms = int(self.policy_ttl * 1000)
        if held is not None and held[0] == revision and held[2] - now_ms > ttl_ms // 2:
            return held[3], held[1]
        grants = tuple(
            s.grant for s in self.grants(tenant) if not s.grant.hosts or host in s.grant.hosts
        )
        tenant_floor, floors = self._policy_floors(tenant, revision, now_ms)
        issued_ms = max(now_ms, held[1] + 1) if held is not None else now_ms
        policy = AccessPolicy(
            host=host, revision=revision, issued_ms=issued_ms, expires_ms=issued_ms + ttl_ms,
            grants=grants, record_floors=floors, tenant_floor_ms=tenant_floor,
        )  # fmt: skip
        blob = self._authority.issue(policy)
        self._issued[host] = (revision, issued_ms, policy.expires_ms, blob)
        return blob, issued_ms
