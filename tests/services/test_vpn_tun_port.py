"""TunPort conversions between stream records and a device's format, on real fds.

A datagram socketpair stands in for the TUN fd (one ``write``, one datagram), so each
test reads back exactly what the port handed the "device".
"""

from __future__ import annotations

import socket
import struct

from accessfabric.services.vnet import GSO_UDP_L4, PLAIN_HEADER, VnetHeader, coalesce_udp
from accessfabric.services.vpn import TunPort, VpnCounters


def _udp(ident: int, payload: bytes) -> bytes:
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), ident, 0x4000, 64, 17, 0,
        bytes((10, 99, 0, 2)), bytes((10, 0, 0, 1)),
    )  # fmt: skip
    return head + struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0) + payload


def _written(device: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(device.recv(70000))
        except BlockingIOError:
            return out


async def test_uso_record_cut_for_a_device_without_uso() -> None:
    ours, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    device.setblocking(False)
    with ours, device:
        datagrams = [_udp(i, bytes([i]) * 1000) for i in range(4)]
        (record,) = coalesce_udp([PLAIN_HEADER + d for d in datagrams])
        assert record[1] == GSO_UDP_L4
        counters = VpnCounters()
        port = TunPort(ours.fileno(), lambda packets: None, counters, vnet=True, uso=False)
        try:
            port.write_records([record], wire_vnet=True)
            got = _written(device)
        finally:
            port.close()
        assert len(got) == 4 and all(g[:10] == PLAIN_HEADER for g in got)
        assert [VnetHeader.unpack(g).is_plain for g in got] == [True] * 4
        assert [len(g) - 10 for g in got] == [len(d) for d in datagrams]
        assert [g[10 + 28 :] for g in got] == [d[28:] for d in datagrams]
        assert counters.segmented == 1


async def test_uso_device_takes_the_record_whole_and_plain_device_gets_segments() -> None:
    record = coalesce_udp([PLAIN_HEADER + _udp(i, b"z" * 500) for i in range(3)])[0]
    for vnet, uso, expected in ((True, True, [record]), (False, False, None)):
        ours, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        device.setblocking(False)
        with ours, device:
            port = TunPort(ours.fileno(), lambda p: None, VpnCounters(), vnet=vnet, uso=uso)
            try:
                port.write_records([record], wire_vnet=True)
                got = _written(device)
            finally:
                port.close()
        if expected is not None:
            assert got == expected
        else:  # plain device: three complete datagrams, no header
            assert [len(g) for g in got] == [528, 528, 528]
            assert all(g[0] == 0x45 for g in got)


async def test_v1_record_gets_a_zero_header_on_a_header_device() -> None:
    ours, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    device.setblocking(False)
    with ours, device:
        packet = _udp(1, b"hello")
        port = TunPort(ours.fileno(), lambda p: None, VpnCounters(), vnet=True, uso=True)
        try:
            port.write_records([packet], wire_vnet=False)
            assert _written(device) == [PLAIN_HEADER + packet]
        finally:
            port.close()


async def test_reads_coalesce_a_burst_of_one_flow() -> None:
    import asyncio

    ours, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, device:
        ours.setblocking(False)
        got: list[list[bytes]] = []
        counters = VpnCounters()
        for i in range(5):  # queued before the reader runs: one burst
            device.send(PLAIN_HEADER + _udp(i, b"q" * 1200))
        port = TunPort(ours.fileno(), got.append, counters, vnet=True, uso=True)
        try:
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.01)
        finally:
            port.close()
        assert len(got) == 1 and len(got[0]) == 1
        assert got[0][0][1] == GSO_UDP_L4
        assert counters.coalesced == 5 and counters.gso_out == 1
