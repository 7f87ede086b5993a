"""Access grants: who may open streams to which services, and the signed policy of each host.

A grant admits the nodes of one tenant (optionally only those holding one of some roles,
and of at least a trust tier) to some services in some traffic classes, until it expires.
Grants are kept at ``/grants/<tenant>/<grant id>`` (JSON); every change of a tenant's
grants also writes ``/grant-versions/<tenant>``, whose ``mod_revision`` (a store-wide
revision, so it only grows) is the revision of that tenant's access policies.

A service host receives, in every heartbeat reply, an :class:`AccessPolicy` signed by the
authority: its tenant's live grants, for it alone (``host``), valid for ``policy_ttl``
seconds.  A revoked grant is missing from the next one, so a revocation reaches every
host at its next heartbeat; a host that cannot reach the control plane keeps enforcing
the policy it holds until that expires, then refuses everyone (docs/control.md).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from accessfabric.control.authority import Authority
from accessfabric.control.objects import MAX_GRANTS, AccessGrant, AccessPolicy
from accessfabric.control.signed import MAX_BODY_LENGTH
from accessfabric.control.store.base import Clock, Store
from accessfabric.control.vocabulary import Role, check_name
from accessfabric.identity.node_id import node_id_from_public_key
from accessfabric.wire.registry import TrafficClass

KEY_PREFIX = "/grants/"
VERSION_PREFIX = "/grant-versions/"
DEFAULT_POLICY_TTL = 300.0
MAX_GRANT_TTL = 366 * 24 * 3600.0


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
    ) -> None:
        self._store = store
        self._authority = authority
        self._clock = clock
        self.policy_ttl = policy_ttl
        self._issued: dict[str, tuple[int, int, bytes]] = {}
        """host -> (revision, expires_ms, blob) of the last policy signed for it."""

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
    ) -> StoredGrant:
        """A new grant (``bad_grant`` if a field is invalid, ``too_many_grants`` when the
        tenant's policy would not fit one signed object)."""
        now_ms = int(self._clock() * 1000)
        if not 0 < ttl <= MAX_GRANT_TTL:
            raise GrantError("bad_grant", f"ttl must be 0 < ttl <= {MAX_GRANT_TTL:.0f} s")
        try:
            check_name("tenant", tenant)
            grant = AccessGrant(
                grant_id=secrets.token_bytes(16), tenant=tenant, roles=frozenset(roles),
                services=frozenset(services), classes=frozenset(classes),
                min_trust_tier=min_trust_tier, expires_ms=now_ms + int(ttl * 1000),
            )  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise GrantError("bad_grant", str(exc)) from None
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
        if len(trial.encode_body()) > MAX_BODY_LENGTH:
            raise GrantError(
                "too_many_grants", f"tenant {tenant!r}'s grants would not fit one access policy"
            )
        stored = StoredGrant(grant=grant, created_ms=now_ms)
        self._store.put_many(
            [
                (f"{KEY_PREFIX}{tenant}/{stored.grant_id}", _encode(stored)),
                (f"{VERSION_PREFIX}{tenant}", str(now_ms).encode()),
            ]
        )
        return stored

    def revoke(self, grant_id: str) -> StoredGrant:
        """Delete a grant (``unknown_grant`` if there is none with this id)."""
        for stored in self.all():
            if stored.grant_id == grant_id.strip().lower():
                tenant = stored.grant.tenant
                self._store.delete(f"{KEY_PREFIX}{tenant}/{stored.grant_id}")
                self._store.put(f"{VERSION_PREFIX}{tenant}", str(self._clock()).encode())
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
        """The tenant's grants that have not expired."""
        now_ms = int(self._clock() * 1000)
        entries = self._store.range(f"{KEY_PREFIX}{tenant}/").entries
        live = [_decode(e.value) for e in entries]
        return sorted((s for s in live if s.grant.expires_ms > now_ms), key=lambda s: s.created_ms)

    def revision(self, tenant: str) -> int:
        entry = self._store.get(f"{VERSION_PREFIX}{tenant}")
        return 0 if entry is None else entry.mod_revision

    # ---- policies ----------------------------------------------------------------------

    def policy_for(self, host: str, tenant: str) -> bytes:
        """The signed access policy of ``host`` (a node of ``tenant``): re-signed when the
        tenant's grants changed or half its lifetime has passed (the host checks each
        grant's own expiry)."""
        now_ms = int(self._clock() * 1000)
        revision = self.revision(tenant)
        held = self._issued.get(host)
        ttl_ms = int(self.policy_ttl * 1000)
        if held is not None and held[0] == revision and held[1] - now_ms > ttl_ms // 2:
            return held[2]
        policy = AccessPolicy(
            host=host, revision=revision, issued_ms=now_ms, expires_ms=now_ms + ttl_ms,
            grants=tuple(s.grant for s in self.grants(tenant)),
        )  # fmt: skip
        blob = self._authority.issue(policy)
        self._issued[host] = (revision, policy.expires_ms, blob)
        return blob
