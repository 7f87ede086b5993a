"""``ServiceAccess``: may this peer open a stream to this service here, now? Default deny.

A node serves a stream (direct, or the destination of a route lease) only if one of

* a static allow list (``[[services]] allow``, or ``[allow]`` for the built-in ``echo``
  and other services a node registers itself) names the opener's node id, or is ``*``;
* a grant in the node's :class:`~accessfabric.control.kernel.objects.AccessPolicy` (signed by the
  authority, delivered in heartbeat replies, cached on disk) admits the opener: its
  verified node record's tenant, one of the grant's roles (any, if none), a trust tier at
  least the grant's, the service and the traffic class, before the grant and the policy
  expire; a grant that names ``nodes`` admits only those, one that names ``hosts`` holds
  only on those; a record older than the policy's floor for its node (a role was revoked
  from it), or issued before the policy's tenant floor, is not believed

says yes.  Nothing else does: a node with neither serves nobody.  The opener's node
record comes from the session's HELLO (a direct peer sends its own), from a sealed
open's key exchange (a routed opener's), or from the directory; each is verified with
the authority key and must name the opener; a few thousand are remembered.

:meth:`ServiceAccess.refusal` returns why a stream is refused (None: allowed); the data
plane resets the stream with ``ACCESS_DENIED`` (docs/protocol.md) and counts it.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from accessfabric.control.kernel.objects import AccessPolicy, NodeRecord
from accessfabric.control.kernel.rejections import RejectReason, SignedObjectRejected
from accessfabric.control.kernel.verify import verify_access_policy, verify_node_record
from accessfabric.control.kernel.vocabulary import node_echo_service
from accessfabric.json_output import rfc3339
from accessfabric.wire.registry import TrafficClass

ANYONE = "*"
ECHO = "echo"
MAX_RECORDS = 4096
"""Verified node records of openers remembered at most (the oldest is forgotten first)."""


class ServiceAccess:
    def __init__(
        self,
        node_id: str,
        allow: Mapping[str, tuple[str, ...]],
        authority_key: bytes | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.own_echo = node_echo_service(node_id)
        self.allow = {service: frozenset(ids) for service, ids in allow.items()}
        self.authority_key = authority_key
        self.clock = clock
        self.policy: AccessPolicy | None = None
        self._records: OrderedDict[str, tuple[bytes, NodeRecord]] = OrderedDict()
        self.refused = 0
        self.served = 0

    # ------------------------------------------------------------ inputs

    def take_policy(self, blob: bytes) -> AccessPolicy:
        """Take a signed access policy (a newer revision replaces the one held).

        Raises :class:`SignedObjectRejected` (forged, expired, another host's, older)."""
        if self.authority_key is None:
            raise SignedObjectRejected(RejectReason.FORGED, "this node has no authority key")
        held = self.policy
        policy = verify_access_policy(
            blob, self.authority_key, self.clock(), host=self.node_id,
            min_revision=0 if held is None else held.revision,
        )  # fmt: skip
        if held is None or (policy.revision, policy.issued_ms) >= (held.revision, held.issued_ms):
            self.policy = held = policy
        return held

    def learn_record(self, blob: bytes, node_id: str | None = None) -> NodeRecord | None:
        """Remember an opener's node record if the authority signed it (and, when
        ``node_id`` is given, it is that node's); the record, or None."""
        if not blob or self.authority_key is None:
            return None
        held = self._records.get(node_id) if node_id else None
        if held is not None and held[0] == blob:
            self._records.move_to_end(held[1].node_id)
            return held[1]
        try:
            record = verify_node_record(bytes(blob), self.authority_key, self.clock())
        except (SignedObjectRejected, ValueError):
            return None
        if node_id is not None and record.node_id != node_id:
            return None
        known = self._records.get(record.node_id)
        if known is None or known[1].revision <= record.revision:
            self._records[record.node_id] = (bytes(blob), record)
        self._records.move_to_end(record.node_id)
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)
        return self._records[record.node_id][1]

    def learn_directory(self, directory: Mapping[str, Any]) -> None:
        """Learn the (verified) records of a directory's entries; one already held is
        not verified again."""
        for entry in directory.get("entries", []) or []:
            if not isinstance(entry, dict):
                continue
            text, node_id = entry.get("record"), entry.get("node_id")
            if isinstance(text, str) and isinstance(node_id, str):
                try:
                    self.learn_record(base64.b64decode(text, validate=True), node_id)
                except ValueError:
                    continue

    def record_of(self, node_id: str) -> NodeRecord | None:
        held = self._records.get(node_id)
        if held is None or held[1].expires_ms <= self.clock() * 1000:
            return None
        return held[1]

    # ------------------------------------------------------------ the decision

    def refusal(self, peer: str, service: str, traffic_class: TrafficClass) -> str | None:
        """None when ``peer`` may open ``service`` in ``traffic_class`` now, else why not.

        ``echo:<this node>`` (the route-leased echo ``ping`` uses across relays) is
        ``echo``: the same allow list and grants admit it."""
        if service == self.own_echo:
            service = ECHO
        listed = self.allow.get(service)
        if listed is not None and (ANYONE in listed or peer in listed):
            return None
        why = self._grant_refusal(peer, service, traffic_class)
        if why is None:
            return None
        if listed is not None:
            return f"not on the allow list of {service!r}, and {why}"
        return why

    def _grant_refusal(self, peer: str, service: str, traffic_class: TrafficClass) -> str | None:
        if self.authority_key is None:
            return f"no allow list names it for {service!r} (and no control plane grants)"
        policy = self.policy
        now_ms = int(self.clock() * 1000)
        if policy is None:
            return "no access policy from the control plane yet"
        if policy.expires_ms <= now_ms:
            return f"the access policy (revision {policy.revision}) expired"
        record = self.record_of(peer)
        if record is None:
            return "no valid node record for it (not enrolled, or its record is unknown here)"
        floor = policy.floor_of(peer)
        if record.revision < floor:  # a role was revoked: this record is superseded
            return f"its node record (revision {record.revision}) is superseded (floor {floor})"
        if record.issued_ms < policy.tenant_floor_ms:  # revocations past the per-node floors
            return (
                f"its node record (issued {record.issued_ms}) predates the tenant's record "
                f"floor ({policy.tenant_floor_ms})"
            )
        for grant in policy.grants:
            if (
                grant.expires_ms > now_ms
                and service in grant.services
                and traffic_class in grant.classes
                and grant.tenant == record.tenant
                and (not grant.roles or grant.roles & record.roles)
                and record.trust_tier >= grant.min_trust_tier
                and (not grant.nodes or peer in grant.nodes)
                and (not grant.hosts or self.node_id in grant.hosts)
            ):
                return None
        return (
            f"no grant admits tenant {record.tenant!r} "
            f"(roles {','.join(sorted(r.value for r in record.roles)) or '-'}, "
            f"tier {record.trust_tier}) to {service!r} ({traffic_class.name.lower()})"
        )

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The ``access`` section of ``accessfabric status``."""
        policy = self.policy
        now = self.clock()
        return {
            "static_allow": "; ".join(
                f"{service}: {','.join(sorted(ids)) or 'nobody'}"
                for service, ids in sorted(self.allow.items())
            )
            or "-",
            "policy_revision": None if policy is None else policy.revision,
            "policy_expires_in_s": None
            if policy is None
            else round(policy.expires_ms / 1000 - now),
            "grants": 0 if policy is None else len(policy.grants),
            "record_floors": 0 if policy is None else len(policy.record_floors),
            # the floor every record of the tenant must be issued after (a decision refuses
            # an older one, see _grant_refusal); None: the policy has none
            "tenant_floor": rfc3339(policy.tenant_floor_ms / 1000)
            if policy is not None and policy.tenant_floor_ms
            else None,
            "served": self.served,
            "refused": self.refused,
        }
