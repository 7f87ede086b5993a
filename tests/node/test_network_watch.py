"""rtnetlink RTM_DELADDR parsing of ``node/dialing/network_watch.py`` (the netns test drives it
live: ``tests/relay/test_network_transition_netns.py``)."""

from __future__ import annotations

import ipaddress
import socket
import struct

from accessfabric.node.dialing.network_watch import RTM_DELADDR, probe_timeout, removed_addresses

RTM_NEWADDR = 20


def _message(kind: int, family: int, *attributes: tuple[int, bytes]) -> bytes:
    body = struct.pack("=BBBBI", family, 24, 0, 0, 3)
    for attr, value in attributes:
        size = 4 + len(value)
        body += struct.pack("=HH", size, attr) + value + b"\0" * (-size % 4)
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_removed_addresses_of_deladdr_messages_only() -> None:
    v4 = ipaddress.ip_address("10.231.0.13")
    v6 = ipaddress.ip_address("fd00:af:0:3::1")
    data = (
        _message(RTM_NEWADDR, socket.AF_INET, (2, ipaddress.ip_address("10.9.9.9").packed))
        + _message(RTM_DELADDR, socket.AF_INET, (1, v4.packed), (2, v4.packed), (3, b"wlan0\0"))
        + _message(RTM_DELADDR, socket.AF_INET6, (1, v6.packed))
    )
    assert removed_addresses(data) == {v4, v6}
    assert removed_addresses(data[:-3]) == {v4}  # a truncated message is ignored
    assert removed_addresses(b"") == set()


def test_probe_timeout_bounds() -> None:
    assert probe_timeout(None) == 1.0
    assert probe_timeout(0.5) == 2.0
    assert probe_timeout(10.0) == 3.0
