"""The node registry: enrollment, signed node records, role revocation.

A node is stored at ``/nodes/<node id>`` as JSON: the signed record blob (base64) and when
it enrolled.  Every change of a record (enrollment, re-enrollment, role revocation,
renewal) re-signs it with the next ``revision``, written by compare-and-swap, so the
revision a node reports in its heartbeat says whether it holds the current record.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.objects import NodeRecord
from accessfabric.control.kernel.rejections import SignedObjectRejected
from accessfabric.control.kernel.signed import open_signed
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.generations import PartitionGenerations
from accessfabric.control.server.store.base import Change, ChangeKind, Clock, Entry, Store
from accessfabric.control.server.tokens import EnrollmentTokens, TokenError
from accessfabric.identity.node_id import node_id_from_public_key

KEY_PREFIX = "/nodes/"
DEFAULT_RECORD_TTL = 7 * 24 * 3600.0
MOBILE_TRUST_TIER = 0
DEFAULT_TRUST_TIER = 2
MAX_CAS_ATTEMPTS = 16


class RegistryError(Exception):
    """A registry request cannot be served; ``code`` is stable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredNode:
    record: NodeRecord
    blob: bytes
    enrolled_at: float

    @property
    def node_id(self) -> str:
        return self.record.node_id

    def to_document(self) -> bytes:
        return json.dumps(
            {"record": base64.b64encode(self.blob).decode("ascii"), "enrolled_at": self.enrolled_at}
        ).encode()


def record_json(node: RegisteredNode) -> dict[str, Any]:
    """A node record as the API shows it: the fields, and the signed blob in base64."""
    record = node.record
    return {
        "node_id": record.node_id,
        "revision": record.revision,
        "roles": sorted(role.value for role in record.roles),
        "tenant": record.tenant,
        "trust_tier": record.trust_tier,
        "expires_ms": record.expires_ms,
        "record": base64.b64encode(node.blob).decode("ascii"),
    }


def trust_tier_for(roles: frozenset[Role]) -> int:
    """The trust tier a fresh enrollment gets: phones start unvetted (0), others at 2."""
    return MOBILE_TRUST_TIER if Role.MOBILE_EDGE in roles else DEFAULT_TRUST_TIER


class NodeRegistry:
    """Enrolled nodes, cached in memory and kept in a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        authority: Authority,
        *,
        clock: Clock = time.time,
        record_ttl: float = DEFAULT_RECORD_TTL,
    ) -> None:
        self._store = store
        self._authority = authority
        self._clock = clock
        self.record_ttl = record_ttl
        self.tokens = EnrollmentTokens(store, clock=clock)
        self._nodes: dict[str, RegisteredNode] = {}
        self._entries: dict[str, dict[str, RegisteredNode]] = {}
        """Nodes holding the entry role, by tenant: a device's directory partition."""
        self._tenants: dict[str, dict[str, RegisteredNode]] = {}
        """Every node by tenant: the partition other directory views are built from."""
        self.generation = 0
        """Bumped by every change this process makes or loads (the planner rebuilds on it)."""
        self._tenant_generations: dict[str, int] = {}
        """Per tenant: :attr:`generation` at its last change (one int per tenant ever
        enrolled into since the load; tenants are the operator's tokens, not a peer's)."""
        self._loaded_generation = 0
        """:attr:`generation` at the last :meth:`load` (every partition changed)."""
        self._known_changes = PartitionGenerations()
        """Per tenant: changes of nodes this replica held before (replaced, removed), not
        the first store of a new node (:meth:`tenant_known_generation`)."""
        self.version = 0
        """The store revision of the newest node record seen: part of the directory's version."""
        self.on_change: Callable[[str, str], None] | None = None
        """Called with (node id, tenant) when a record is stored, replaced or removed (the
        control plane notes it in the directory change log: directory deltas)."""

    def load(self) -> int:
        """Read every stored node (at start-up); the number loaded."""
        self._nodes.clear()
        self._entries.clear()
        self._tenants.clear()
        for entry in self._store.range(KEY_PREFIX).entries:
            node = self._decode(entry)
            self._nodes[node.node_id] = node
            self._index(None, node)
            self.version = max(self.version, entry.mod_revision)
        self.generation += 1
        self._tenant_generations.clear()
        self._loaded_generation = self.generation
        self._known_changes.moved(None)
        return len(self._nodes)

    def apply_change(self, change: Change) -> bool:
        """Fold a change another replica wrote (seen in the store's watch); ``True`` if the
        cache moved.  A record older than or equal to the cached one is ignored, so a
        replica's own writes coming back through the watch change nothing."""
        node_id = change.key.removeprefix(KEY_PREFIX)
        if change.kind is ChangeKind.DELETE:
            gone = self._nodes.pop(node_id, None)
            if gone is None:
                return False
            self._index(gone, None)
            self._noted(node_id, gone.record.tenant)
            self._changed(gone.record.tenant)
            self.version = max(self.version, change.revision)
            return True
        try:
            node = self._decode_value(change.value)
        except (ValueError, KeyError, TypeError, SignedObjectRejected):
            return False  # not signed by our authority: never trusted
        current = self._nodes.get(node.node_id)
        if current is not None and current.record.revision >= node.record.revision:
            return False
        self._remember(node, change.revision)
        return True

    def _decode(self, entry: Entry) -> RegisteredNode:
        return self._decode_value(entry.value)

    def _decode_value(self, value: bytes) -> RegisteredNode:
        document = json.loads(value)
        blob = base64.b64decode(document["record"])
        record = open_signed(blob, NodeRecord, self._authority.public_key)
        return RegisteredNode(record=record, blob=blob, enrolled_at=float(document["enrolled_at"]))

    def get(self, node_id: str) -> RegisteredNode | None:
        return self._nodes.get(node_id)

    def entries_of(self, tenant: str) -> list[RegisteredNode]:
        """The nodes of ``tenant`` holding the entry role (a device's partition)."""
        return list(self._entries.get(tenant, {}).values())

    def entry_count(self, tenant: str) -> int:
        return len(self._entries.get(tenant, ()))

    def of_tenant(self, tenant: str) -> list[RegisteredNode]:
        """Every node of ``tenant`` (a directory partition), without scanning the fleet."""
        return list(self._tenants.get(tenant, {}).values())

    def _index(self, old: RegisteredNode | None, new: RegisteredNode | None) -> None:
        if old is not None:
            if Role.ENTRY in old.record.roles:
                self._entries.get(old.record.tenant, {}).pop(old.node_id, None)
            members = self._tenants.get(old.record.tenant)
            if members is not None:
                members.pop(old.node_id, None)
                if not members:
                    del self._tenants[old.record.tenant]
        if new is not None:
            if Role.ENTRY in new.record.roles:
                self._entries.setdefault(new.record.tenant, {})[new.node_id] = new
            self._tenants.setdefault(new.record.tenant, {})[new.node_id] = new

    def all(self) -> list[RegisteredNode]:
        return sorted(self._nodes.values(), key=lambda node: node.node_id)

    def __len__(self) -> int:
        return len(self._nodes)

    def _sign(
        self,
        *,
        public_key: bytes,
        sealing_public_key: bytes,
        roles: frozenset[Role],
        tenant: str,
        scopes: frozenset[str],
        trust_tier: int,
        revision: int,
        now: float,
    ) -> tuple[NodeRecord, bytes]:
        now_ms = int(now * 1000)
        record = NodeRecord(
            node_id=node_id_from_public_key(public_key),
            public_key=public_key,
            sealing_public_key=sealing_public_key,
            roles=roles,
            tenant=tenant,
            organisation_scopes=scopes,
            trust_tier=trust_tier,
            issued_ms=now_ms,
            expires_ms=now_ms + int(self.record_ttl * 1000),
            revision=revision,
        )
        return record, self._authority.issue(record)

    def enroll(
        self, token: str, public_key: bytes, sealing_public_key: bytes, now: float | None = None
    ) -> RegisteredNode:
        """Redeem ``token`` for the key's node; a signed record with the token's grant.

        Raises the token's :class:`~accessfabric.control.server.tokens.TokenError`, or
        :class:`RegistryError` when an enrolled node asks to join another tenant.
        """
        return self.enroll_once(token, public_key, sealing_public_key, now)[0]

    def enroll_once(
        self, token: str, public_key: bytes, sealing_public_key: bytes, now: float | None = None
    ) -> tuple[RegisteredNode, bool]:
        """:meth:`enroll`, and whether it was a retry answered with the record stored
        already (nothing changed: the API records no second ``node_enrolled`` event)."""
        when = self._clock() if now is None else now
        node_id = node_id_from_public_key(public_key)
        current = self._store.get(KEY_PREFIX + node_id)
        if current is not None:
            existing = self._decode(current)
            if existing.record.public_key != public_key:  # pragma: no cover - id derives from key
                raise RegistryError("conflict", "node id collision")
            if self._retried(existing, token, sealing_public_key, when):
                return existing, True
        grant = self.tokens.redeem(token, when)
        for _ in range(MAX_CAS_ATTEMPTS):
            revision, enrolled_at = 1, when
            if current is not None:
                existing = self._decode(current)
                if existing.record.tenant != grant.tenant:
                    raise RegistryError(
                        "tenant_conflict",
                        f"node {node_id} is enrolled in tenant {existing.record.tenant!r}; "
                        f"a token of tenant {grant.tenant!r} cannot move it",
                    )
                revision, enrolled_at = existing.record.revision + 1, existing.enrolled_at
            record, blob = self._sign(
                public_key=public_key,
                sealing_public_key=sealing_public_key,
                roles=grant.roles,
                tenant=grant.tenant,
                scopes=frozenset(),
                trust_tier=trust_tier_for(grant.roles),
                revision=revision,
                now=when,
            )
            node = RegisteredNode(record=record, blob=blob, enrolled_at=enrolled_at)
            expected = 0 if current is None else current.mod_revision
            result = self._store.put_if(KEY_PREFIX + node_id, node.to_document(), expected)
            if result.succeeded:
                self._remember(node, result.revision)
                return node, False
            current = result.current
        raise RegistryError("contended", f"node {node_id} is being changed; try again")

    def _retried(
        self, existing: RegisteredNode, token: str, sealing_public_key: bytes, now: float
    ) -> bool:
        """Whether this enrollment repeats one whose reply was lost: the node enrolled with
        this token's grant since the token was made, with the same keys, and its record
        holds for another minute.  Then the same record is the answer and no use is spent
        (issue 17: under load a device's enroll timed out after the control plane had
        redeemed it, its retry spent a second use, and the last devices of the fleet found
        the token used up)."""
        record = existing.record
        if record.sealing_public_key != sealing_public_key or record.expires_ms < (now + 60) * 1000:
            return False
        try:
            grant = self.tokens.peek(token, now)
        except TokenError:
            return False
        return (
            record.tenant == grant.tenant
            and record.roles == grant.roles
            and existing.enrolled_at >= grant.created_at
        )

    def tenant_generation(self, tenant: str) -> int:
        """Moves whenever a node of ``tenant`` is stored, replaced or removed (and on
        :meth:`load`), not when another tenant's does: a route coordinator rebuilds its
        partition on it (ADR 0038).  Never repeats a value for another content: it is
        :attr:`generation` at the tenant's last change, or at the load when the tenant
        has not changed since."""
        return self._tenant_generations.get(tenant, self._loaded_generation)

    def tenant_known_generation(self, tenant: str) -> int:
        """Like :meth:`tenant_generation`, but not moved by the first record of a node this
        replica did not hold: such a node is in no route planner snapshot yet (a snapshot
        holds nodes with a recent heartbeat), and its heartbeats move the heartbeat
        table's generation.  A route coordinator rebuilds on this one, so an enrollment
        storm does not rebuild its snapshot for every lease request (ADR 0043)."""
        return self._known_changes.of(tenant)

    def _changed(self, tenant: str, *, new_node: bool = False) -> None:
        self.generation += 1
        self._tenant_generations[tenant] = self.generation
        if not new_node:
            self._known_changes.moved(tenant)

    def _noted(self, node_id: str, tenant: str) -> None:
        if self.on_change is not None:
            self.on_change(node_id, tenant)

    def _remember(self, node: RegisteredNode, revision: int) -> None:
        previous = self._nodes.get(node.node_id)
        self._index(previous, node)
        self._nodes[node.node_id] = node
        self._noted(node.node_id, node.record.tenant)
        self._changed(node.record.tenant, new_node=previous is None)
        if previous is not None and previous.record.tenant != node.record.tenant:
            self._known_changes.moved(previous.record.tenant)  # it left that partition
        self.version = max(self.version, revision)

    def _reissue(self, node_id: str, roles: frozenset[Role] | None, now: float) -> RegisteredNode:
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = self._store.get(KEY_PREFIX + node_id)
            if entry is None:
                raise RegistryError("unknown_node", f"node {node_id} is not enrolled")
            old = self._decode(entry).record
            record, blob = self._sign(
                public_key=old.public_key,
                sealing_public_key=old.sealing_public_key,
                roles=old.roles if roles is None else roles,
                tenant=old.tenant,
                scopes=old.organisation_scopes,
                trust_tier=old.trust_tier,
                revision=old.revision + 1,
                now=now,
            )
            enrolled_at = self._decode(entry).enrolled_at
            node = RegisteredNode(record=record, blob=blob, enrolled_at=enrolled_at)
            result = self._store.put_if(
                KEY_PREFIX + node_id, node.to_document(), entry.mod_revision
            )
            if result.succeeded:
                self._remember(node, result.revision)
                return node
        raise RegistryError("contended", f"node {node_id} is being changed; try again")

    def revoke_role(self, node_id: str, role: Role, now: float | None = None) -> RegisteredNode:
        """Take ``role`` from the node: a new record, revision + 1 (idempotent on no change)."""
        when = self._clock() if now is None else now
        node = self._nodes.get(node_id)
        if node is None:
            raise RegistryError("unknown_node", f"node {node_id} is not enrolled")
        if role not in node.record.roles:
            raise RegistryError(
                "role_not_held",
                f"node {node_id} does not hold role {role.value} "
                f"(it holds: {', '.join(sorted(node.record.roles)) or 'none'})",
            )
        return self._reissue(node_id, node.record.roles - {role}, when)

    def reissue(self, node_id: str, now: float | None = None) -> RegisteredNode:
        """Re-sign the node's record as it is (revision + 1, a fresh lifetime)."""
        return self._reissue(node_id, None, self._clock() if now is None else now)

    def remove(self, node_id: str) -> RegisteredNode:
        """Forget a node: its record leaves the store and the directory; its signed API
        requests fail from now on (``unknown_node``).  A record other nodes cached stays
        valid until it expires: revoke its roles first when that matters."""
        node = self._nodes.get(node_id)
        if node is None and self._store.get(KEY_PREFIX + node_id) is None:
            raise RegistryError("unknown_node", f"node {node_id} is not enrolled")
        revision = self._store.revision()
        self._store.delete(KEY_PREFIX + node_id)
        self._nodes.pop(node_id, None)
        self._index(node, None)
        if node is not None:
            self._noted(node_id, node.record.tenant)
            self._changed(node.record.tenant)
        else:
            self.generation += 1
        self.version = max(self.version, revision + 1)
        if node is None:
            raise RegistryError("unknown_node", f"node {node_id} is not enrolled")
        return node

    def renew_if_due(self, node_id: str, now: float | None = None) -> RegisteredNode | None:
        """Re-sign a record with less than a third of its lifetime left; ``None`` if unknown."""
        when = self._clock() if now is None else now
        node = self._nodes.get(node_id)
        if node is None:
            return None
        remaining = node.record.expires_ms / 1000 - when
        if remaining > self.record_ttl / 3:
            return node
        return self._reissue(node_id, None, when)
