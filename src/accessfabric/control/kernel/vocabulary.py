"""The closed vocabularies signed objects draw from: roles, service modes, names, tiers.

Roles and traffic classes travel as bit masks (bit ``n`` = code ``n``), so a set has
exactly one encoding.  Names (tenants, organisation scopes, services) are short lower-case
ASCII, so they need no Unicode normalisation to compare or encode canonically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import IntEnum, StrEnum

from accessfabric.wire.registry import TrafficClass

MAX_TRUST_TIER = 3
"""Trust tiers run from 0 (unvetted, e.g. a volunteer phone) to 3 (operator-owned core)."""
MAX_NAME_LENGTH = 63
NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9._:/-]{0,62})")
NODE_ECHO_PREFIX = "echo:"
"""``echo:<node id>``: the built-in echo of one node, served by that node to callers its
access rules for ``echo`` admit; the service a route lease names for ``accessfabric ping``
across relays (docs/adr/0022).  No node registers a service by that name."""


def node_echo_service(node_id: str) -> str:
    """The service name of ``node_id``'s own echo (``echo:<node id>``)."""
    return NODE_ECHO_PREFIX + node_id


def node_echo_target(service: str) -> str | None:
    """The node whose own echo ``service`` names, else ``None``."""
    return service[len(NODE_ECHO_PREFIX) :] if service.startswith(NODE_ECHO_PREFIX) else None


class Role(StrEnum):
    """The role vocabulary of the node record (seed plan, Node Roles)."""

    MOBILE_EDGE = "mobile-edge"
    ENTRY = "entry"
    RELAY = "relay"
    EXIT = "exit"
    SERVICE_HOST = "service-host"
    CONTROL_PLANE = "control-plane"
    ROUTE_COORDINATOR = "route-coordinator"
    STORAGE = "storage"
    OBSERVER = "observer"
    UPDATE_CACHE = "update-cache"

    @classmethod
    def parse(cls, text: str) -> Role:
        """A role from its name (as typed on the command line); :class:`ValueError` if unknown."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(role.value for role in cls)
            raise ValueError(f"unknown role {text!r} (choose from {choices})") from None


ROLE_BITS: dict[Role, int] = {role: 1 << index for index, role in enumerate(Role)}
"""Bit of each role in the encoded mask: declaration order, mobile-edge = bit 0."""
_ALL_ROLE_BITS = sum(ROLE_BITS.values())


class ServiceMode(IntEnum):
    """How a service's replicas share it."""

    ACTIVE_ACTIVE = 1
    LEADER_FOLLOWER = 2


def roles_to_mask(roles: Iterable[Role]) -> int:
    mask = 0
    for role in roles:
        mask |= ROLE_BITS[Role(role)]
    return mask


def roles_from_mask(mask: int) -> frozenset[Role]:
    """The roles of ``mask``; :class:`ValueError` if it sets a bit no role has."""
    if mask & ~_ALL_ROLE_BITS:
        raise ValueError(f"role mask {mask:#06x} sets undefined bits")
    return frozenset(role for role, bit in ROLE_BITS.items() if mask & bit)


def classes_to_mask(classes: Iterable[TrafficClass]) -> int:
    mask = 0
    for traffic_class in classes:
        mask |= 1 << TrafficClass(traffic_class)
    return mask


def classes_from_mask(mask: int) -> frozenset[TrafficClass]:
    """The traffic classes of ``mask``; :class:`ValueError` on undefined bits."""
    known = sum(1 << c for c in TrafficClass)
    if mask & ~known:
        raise ValueError(f"traffic class mask {mask:#04x} sets undefined bits")
    return frozenset(c for c in TrafficClass if mask & (1 << c))


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid tenant / scope / service name, else :class:`ValueError`.

    1 to 63 characters of ``a-z 0-9 . _ : / -``, starting with a letter or digit.
    """
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(
            f"bad {kind} {name!r}: use 1-{MAX_NAME_LENGTH} characters of a-z, 0-9 and . _ : / -"
            ", starting with a letter or digit"
        )
    return name


def check_trust_tier(tier: int) -> int:
    if isinstance(tier, bool) or not isinstance(tier, int) or not 0 <= tier <= MAX_TRUST_TIER:
        raise ValueError(f"trust tier must be an integer 0..{MAX_TRUST_TIER}, got {tier!r}")
    return tier
