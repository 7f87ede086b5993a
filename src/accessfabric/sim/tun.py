"""Open a layer-3 TUN device with the stdlib only (``/dev/net/tun`` + ``TUNSETIFF``).

The device lives as long as its file descriptor: closing the fd removes it, so a
crashed test never leaves a TUN device behind.  A device opened in the root namespace
can be moved into another namespace (``ip link set DEV netns NS``); the fd keeps
working there, which is what :class:`~accessfabric.sim.link_emulator.TunBridge` uses.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16


@dataclass(frozen=True)
class TunDevice:
    """An open TUN device: ``fd`` carries raw IP packets (no packet-info header)."""

    fd: int
    name: str

    def close(self) -> None:
        os.close(self.fd)


def open_tun(name: str = "aftun%d", *, nonblocking: bool = True) -> TunDevice:
    """Create a TUN device (``IFF_TUN | IFF_NO_PI``); a ``%d`` in ``name`` lets the kernel
    pick a free number, so concurrent callers never collide."""
    encoded = name.encode()
    if not encoded or len(encoded) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} must be 1..{IFNAMSIZ - 1} bytes")
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0)
    fd = os.open(TUN_PATH, flags)
    try:
        request = struct.pack("16sH22x", encoded, IFF_TUN | IFF_NO_PI)
        reply = fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError as exc:
        os.close(fd)
        raise OSError(exc.errno, f"TUNSETIFF {name!r} failed: {exc.strerror}") from exc
    return TunDevice(fd=fd, name=reply[:IFNAMSIZ].rstrip(b"\0").decode())
