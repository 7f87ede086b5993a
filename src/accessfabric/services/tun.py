"""A layer-3 TUN device for the VPN (``/dev/net/tun``, ``IFF_TUN | IFF_NO_PI``, root).

The device lives as long as its file descriptor.  :func:`configure` sets its
address, MTU, routes and brings it up with ``ip``.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


@dataclass(frozen=True, slots=True)
class Tun:
    fd: int
    name: str

    def close(self) -> None:
        os.close(self.fd)


def open_tun(name: str = "af%d") -> Tun:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        reply = fcntl.ioctl(
            fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        )
    except OSError:
        os.close(fd)
        raise
    return Tun(fd=fd, name=reply[:16].rstrip(b"\0").decode())


def configure(tun: Tun, address: str | None, routes: Sequence[str] = (), mtu: int = 1500) -> None:
    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)

    ip("link", "set", tun.name, "mtu", str(mtu), "up")
    if address:
        ip("addr", "add", address, "dev", tun.name)
    for route in routes:
        ip("route", "replace", route, "dev", tun.name)
