"""Private addresses for the links of a topology: one IPv4 /30 and one IPv6 /64 per link.

The addresses exist only inside the namespaces of the topology, so two concurrent
topologies may use the same plan without ever seeing each other.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_V4_BASE = "10.231.0.0/16"
DEFAULT_V6_BASE = "fd00:af::/48"


@dataclass(frozen=True)
class LinkAddresses:
    """The two ends of one link: ``a`` is the end created first."""

    v4_a: ipaddress.IPv4Interface
    v4_b: ipaddress.IPv4Interface
    v6_a: ipaddress.IPv6Interface
    v6_b: ipaddress.IPv6Interface


class AddressPlan:
    """Hands out the ``index``-th /30 of ``v4_base`` and /64 of ``v6_base``."""

    def __init__(self, v4_base: str = DEFAULT_V4_BASE, v6_base: str = DEFAULT_V6_BASE) -> None:
        self.v4_base = ipaddress.IPv4Network(v4_base)
        self.v6_base = ipaddress.IPv6Network(v6_base)
        for base in (self.v4_base, self.v6_base):
            if not base.is_private:
                raise ValueError(f"{base} is not a private range; test links must stay private")
        if self.v6_base.prefixlen > 64:
            raise ValueError(f"{self.v6_base} is too small to hold /64 link subnets")

    @property
    def capacity(self) -> int:
        return min(self.v4_base.num_addresses // 4, 1 << (64 - self.v6_base.prefixlen))

    def link(self, index: int) -> LinkAddresses:
        if not 0 <= index < self.capacity:
            raise ValueError(f"link index {index} outside the address plan (max {self.capacity})")
        v4 = int(self.v4_base.network_address) + 4 * index
        v6 = int(self.v6_base.network_address) + (index << 64)
        return LinkAddresses(
            v4_a=ipaddress.IPv4Interface((v4 + 1, 30)),
            v4_b=ipaddress.IPv4Interface((v4 + 2, 30)),
            v6_a=ipaddress.IPv6Interface((v6 + 1, 64)),
            v6_b=ipaddress.IPv6Interface((v6 + 2, 64)),
        )
