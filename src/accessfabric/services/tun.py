"""A layer-3 TUN device for the VPN (``/dev/net/tun``, ``IFF_TUN | IFF_NO_PI``, root).

With ``offload=True`` the device is opened with ``IFF_VNET_HDR`` (every packet read or
written carries a 10-byte virtio-net header, :mod:`accessfabric.services.vnet`) and
:func:`probe_offloads` asks the kernel, through ``TUNSETOFFLOAD``, for checksum
offload, TSO4/6 and USO4/6, dropping what it refuses (USO needs Linux 6.2).  What the
kernel took is in :attr:`Tun.offloads`.  A kernel that refuses even checksum offload
leaves a plain device (no header), the mode older kernels and peers run in.

``queues > 1`` opens the device with ``IFF_MULTI_QUEUE``: one fd per queue; the kernel
spreads flows over the queues by their hash.  ``urgent_ports`` (with one queue) adds a
second queue for latency flows, steered by :mod:`accessfabric.services.tun_steering`;
a kernel that refuses the steering program leaves one queue and the reason in
:attr:`Tun.steering_error`.

The device lives as long as its file descriptors.  :func:`configure` sets its
address, MTU, routes and brings it up with ``ip``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from accessfabric.services.tun_steering import URGENT_QUEUE, attach_steering

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

OFFLOAD_NAMES = {
    TUN_F_CSUM: "csum",
    TUN_F_TSO4: "tso4",
    TUN_F_TSO6: "tso6",
    TUN_F_TSO_ECN: "tso_ecn",
    TUN_F_USO4: "uso4",
    TUN_F_USO6: "uso6",
}
_ATTEMPTS = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
    TUN_F_CSUM,
)


@dataclass(frozen=True, slots=True)
class Tun:
    fds: tuple[int, ...]
    name: str
    offloads: int = 0
    """``TUN_F_*`` bits the kernel accepted; 0 means no virtio-net header (plain mode)."""
    urgent_fd: int | None = None
    """The queue the kernel puts latency flows on (ICMP, DNS, interactive ports), if any."""
    steering_error: str | None = None
    """Why an asked-for urgent queue is missing (the kernel refused the program)."""

    @property
    def fd(self) -> int:
        return self.fds[0]

    @property
    def vnet_hdr(self) -> bool:
        return self.offloads != 0

    def offload_names(self) -> list[str]:
        return [name for bit, name in OFFLOAD_NAMES.items() if self.offloads & bit]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def _open_queue(name: str, flags: int) -> tuple[int, str]:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        reply = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd, reply[:16].rstrip(b"\0").decode()


def probe_offloads(fd: int) -> int:
    """The richest ``TUNSETOFFLOAD`` set the kernel accepts on ``fd`` (0: none)."""
    for bits in _ATTEMPTS:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, bits)
        except OSError:
            continue
        return bits
    return 0


def open_tun(
    name: str = "af%d",
    *,
    offload: bool = False,
    queues: int = 1,
    urgent_ports: Iterable[int] | None = None,
) -> Tun:
    """Open (create) the device; with ``offload``, the header and the offloads it takes;
    with ``urgent_ports`` and one queue, a steered second queue for latency flows."""
    if not 1 <= queues <= 16:
        raise ValueError("queues: 1..16")
    if urgent_ports is not None and queues == 1:
        return _open_steered(name, offload, urgent_ports)
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if queues > 1 else 0)
    if offload:
        fd, real = _open_queue(name, flags | IFF_VNET_HDR)
        offloads = probe_offloads(fd)
        if not offloads:  # no checksum offload: a plain device serves better
            os.close(fd)
            fd, real = _open_queue(name, flags)
    else:
        offloads = 0
        fd, real = _open_queue(name, flags)
    fds = [fd]
    try:
        for _ in range(queues - 1):
            extra, _name = _open_queue(real, flags | (IFF_VNET_HDR if offloads else 0))
            fds.append(extra)
            if offloads:
                fcntl.ioctl(extra, TUNSETOFFLOAD, offloads)
    except OSError:
        for opened in fds:
            os.close(opened)
        raise
    return Tun(fds=tuple(fds), name=real, offloads=offloads)


def _open_steered(name: str, offload: bool, urgent_ports: Iterable[int]) -> Tun:
    try:
        tun = open_tun(name, offload=offload, queues=2)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        # The name is taken by a one-queue device: open it as such (or say why not).
        tun = open_tun(name, offload=offload)
        return replace(tun, steering_error=f"device {tun.name} exists with one queue")
    try:
        attach_steering(tun.fd, urgent_ports)
    except OSError as error:
        os.close(tun.fds[URGENT_QUEUE])  # one queue, as without the option
        return replace(tun, fds=tun.fds[:URGENT_QUEUE], steering_error=str(error))
    return replace(tun, urgent_fd=tun.fds[URGENT_QUEUE])


def configure(tun: Tun, address: str | None, routes: Sequence[str] = (), mtu: int = 1500) -> None:
    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)

    ip("link", "set", tun.name, "mtu", str(mtu), "up")
    if address:
        ip("addr", "add", address, "dev", tun.name)
    for route in routes:
        ip("route", "replace", route, "dev", tun.name)
