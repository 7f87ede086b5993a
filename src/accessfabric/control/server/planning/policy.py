"""Who may carry traffic where: role positions, tenant isolation and mobile-relay rules.

A route is ``source -> hop_1 -> ... -> replica``.  The positions and the roles
that may fill them:

=========================  ==========================================
position                   roles that may fill it
=========================  ==========================================
first hop (dialled by the  ``entry`` or ``relay``
source)
middle hop                 ``relay``
last hop before replica    ``relay`` or ``exit`` (or ``entry`` when it
                           is also the first hop)
replica                    ``service-host`` listed for the service;
                           dialled directly only when it is also ``entry``
=========================  ==========================================

Every other role (observer, storage, control-plane, route-coordinator,
update-cache, a bare mobile-edge) never carries traffic.  On top of roles, a
hop must belong to the source's tenant or be ``shared``; a mobile hop must have
opted in to relaying and, unless the policy says otherwise, be charging or
above the battery floor and not on a metered network; its trust tier must
reach the policy's minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

from accessfabric.control.server.planning.model import MAX_TRUST_TIER, NodeFacts, Role

ENTRY = 1
RELAY = 2
EXIT = 4
SERVICE_HOST = 8

_ROLE_BITS = {
    Role.ENTRY: ENTRY,
    Role.RELAY: RELAY,
    Role.EXIT: EXIT,
    Role.SERVICE_HOST: SERVICE_HOST,
}

FIRST_HOP = ENTRY | RELAY
MIDDLE_HOP = RELAY
LAST_HOP = RELAY | EXIT
ANY_CARRIER = ENTRY | RELAY | EXIT

HOP_CAP = 6
"""The largest ``max_hops`` a policy may ask for (the search is bounded by it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutePolicy:
    """Hard rules: a node that breaks one is never on a route (there is no score for it).

    Defaults follow the seed plan's security controls: mobile relay is opt-in,
    and an opted-in phone still relays only while charging or above 30 %
    battery and never on a metered network.
    """

    max_hops: int = 4
    """Links from the source to the replica (so at most ``max_hops - 1`` relays)."""
    allow_mobile_relays: bool = True
    """Fleet-wide switch; each mobile node must also have opted in."""
    min_relay_battery_percent: float = 30.0
    """A mobile relay not charging must have at least this much battery."""
    allow_low_battery_relays: bool = False
    allow_metered_relays: bool = False
    min_trust_tier: int = 0
    """The lowest trust tier allowed to carry traffic (relays, entries, exits)."""
    allow_shared_nodes: bool = True
    """Whether provider-owned / explicitly shared nodes may carry a tenant's traffic."""

    def __post_init__(self) -> None:
        if not (1 <= self.max_hops <= HOP_CAP):
            raise ValueError(f"max_hops must be within 1..{HOP_CAP}, got {self.max_hops}")
        if not (0 <= self.min_trust_tier <= MAX_TRUST_TIER):
            raise ValueError(f"min_trust_tier must be within 0..{MAX_TRUST_TIER}")


def role_bits(node: NodeFacts) -> int:
    """The routing roles of ``node`` as bits (ENTRY, RELAY, EXIT, SERVICE_HOST)."""
    bits = 0
    for role in node.roles:
        bits |= _ROLE_BITS.get(role, 0)
    return bits


def carrier_refusal(node: NodeFacts, policy: RoutePolicy) -> str | None:
    """Why ``node`` may never carry traffic as a hop under ``policy`` (tenant aside), or None."""
    if not role_bits(node) & ANY_CARRIER:
        return "has no entry, relay or exit role"
    if node.draining:
        return "drained by the operator"
    if node.trust_tier < policy.min_trust_tier:
        return f"trust tier {node.trust_tier} is below the policy minimum {policy.min_trust_tier}"
    if node.is_mobile:
        mobile = node.mobile
        if not policy.allow_mobile_relays:
            return "mobile relays are disabled by policy"
        if mobile is None or not mobile.relay_opt_in:
            return "mobile node has not opted in to relaying"
        low = not mobile.charging and mobile.battery_percent < policy.min_relay_battery_percent
        if low and not policy.allow_low_battery_relays:
            return (
                f"mobile battery {mobile.battery_percent:.0f} % is below "
                f"{policy.min_relay_battery_percent:.0f} % and not charging"
            )
        if mobile.metered and not policy.allow_metered_relays:
            return "mobile node is on a metered network"
    return None


def tenant_allows(node: NodeFacts, tenant: str, policy: RoutePolicy) -> bool:
    """Whether ``node`` may carry or serve traffic of ``tenant``."""
    return node.tenant == tenant or (node.shared and policy.allow_shared_nodes)
