"""Test harness: multi-host topologies in network namespaces and a user-space link emulator.

* :class:`Topology` -- hosts as namespaces, veth or emulated links, routes, ``tc tbf``
  rate limits and nftables loss (``netns.py``);
* :class:`DelayLine` -- sans-IO one-way delay / jitter / loss / rate (``delay_line.py``);
* :class:`TunBridge` -- two TUN fds joined by two delay lines (``link_emulator.py``).

Importing this package has no side effect; only a :class:`Topology` touches the system.
"""

from accessfabric.sim.availability import (
    NetnsUnavailable,
    netns_unavailable_reason,
    require_netns,
    tun_unavailable_reason,
)
from accessfabric.sim.commands import CommandError
from accessfabric.sim.delay_line import DelayLine, DelayLineStats
from accessfabric.sim.link_emulator import TunBridge
from accessfabric.sim.netns import Link, Topology
from accessfabric.sim.tun import TunDevice, open_tun

__all__ = [
    "CommandError",
    "DelayLine",
    "DelayLineStats",
    "Link",
    "NetnsUnavailable",
    "Topology",
    "TunBridge",
    "TunDevice",
    "netns_unavailable_reason",
    "open_tun",
    "require_netns",
    "tun_unavailable_reason",
]
