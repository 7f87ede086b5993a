"""Run inside a network namespace (root): which queue of a steered TUN gets which packet,
and in which order a :class:`TunPort` hands them on.  Prints one JSON object.

Two rounds, each on a fresh device (``--single`` opens it with one queue, no steering):
the host sends 64 bulk UDP datagrams (port 9999) and a TCP SYN to port 5201, then a DNS
datagram, a datagram to port 22, a TCP SYN to port 22 and ICMP echoes over IPv4 and IPv6,
all to addresses routed into the device.  ``queues`` reads each queue fd directly and
names the packets found there; ``order`` lets a ``TunPort`` read them as the VPN does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys

from accessfabric.services.tun import Tun, configure, open_tun
from accessfabric.services.vnet import VNET_HDR_SIZE
from accessfabric.services.vpn import TunPort, VpnCounters

PEER4 = "10.77.0.2"
PEER6 = "fd77::2"
BULK = 64


def _name(packet: bytes) -> str:
    ip = packet[VNET_HDR_SIZE:]
    if ip[0] >> 4 == 4:
        proto, header = ip[9], (ip[0] & 0x0F) * 4
        family = "v4"
    else:
        proto, header = ip[6], 40
        family = "v6"
    if proto in (1, 58):
        return f"icmp{family}" if ip[header] in (8, 128) else f"icmp{family}-other"
    transport = {6: "tcp", 17: "udp"}.get(proto, str(proto))
    return f"{transport}{family}:{struct.unpack_from('!H', ip, header + 2)[0]}"


def _echo(family: int, address: str) -> None:
    kind = 8 if family == socket.AF_INET else 128
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    with socket.socket(family, socket.SOCK_RAW, proto) as raw:
        raw.sendto(struct.pack("!BBHHH", kind, 0, 0, 1, 1) + b"ping", (address, 0))


def _syn(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sock.connect((address, port))
    return sock


def _send_all() -> list[socket.socket]:
    keep = []
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(BULK):
        udp.sendto(b"b" * 1200, (PEER4, 9999))
    keep.append(_syn(PEER4, 5201))
    udp.sendto(b"d" * 40, (PEER4, 53))
    udp.sendto(b"s" * 40, (PEER4, 22))
    keep.append(_syn(PEER4, 22))
    _echo(socket.AF_INET, PEER4)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp6:
        udp6.sendto(b"d", (PEER6, 53))
    _echo(socket.AF_INET6, PEER6)
    keep.append(udp)
    return keep


def _open(single: bool) -> Tun:
    tun = open_tun("afsteer%d", offload=True, urgent_ports=None if single else (53, 22))
    configure(tun, "10.77.0.1/24")
    subprocess.run(["ip", "-6", "addr", "add", "fd77::1/64", "dev", tun.name, "nodad"], check=True)
    return tun


def _drain(fd: int) -> list[str]:
    names = []
    while True:
        try:
            names.append(_name(os.read(fd, 70000)))
        except BlockingIOError:
            return names


async def _order(tun: Tun) -> list[str]:
    delivered: list[str] = []
    got_all = asyncio.Event()

    def on_packets(packets: list[bytes]) -> None:
        delivered.extend(_name(packet) for packet in packets)
        if sum(name == "udpv4:9999" for name in delivered) == BULK:
            got_all.set()

    keep = _send_all()  # before the port reads: everything waits in the queues
    port = TunPort(tun.fds, on_packets, VpnCounters(), vnet=True, urgent_fd=tun.urgent_fd)
    try:
        await asyncio.wait_for(got_all.wait(), 10)
        await asyncio.sleep(0)  # the urgent queue's own reader, had it been behind
    finally:
        port.close()
        for sock in keep:
            sock.close()
    return delivered


def main() -> None:
    single = "--single" in sys.argv
    tun = _open(single)
    keep = _send_all()
    queues = {str(index): _drain(fd) for index, fd in enumerate(tun.fds)}
    for sock in keep:
        sock.close()
    tun.close()
    tun = _open(single)
    try:
        order = asyncio.run(_order(tun))
    finally:
        tun.close()
    print(json.dumps({"queues": queues, "order": order, "steering_error": tun.steering_error}))


if __name__ == "__main__":
    main()
