"""virtio-net headers (``IFF_VNET_HDR``): GSO super-packets, partial checksums, segmentation.

A TUN device opened with ``IFF_VNET_HDR`` prefixes every packet with a 10-byte
``struct virtio_net_hdr`` (virtio 1.0, little endian)::

    flags u8 | gso_type u8 | hdr_len u16 | gso_size u16 | csum_start u16 | csum_offset u16

With ``TUNSETOFFLOAD`` the kernel hands userspace TCP (TSO) and UDP (USO) *super-packets*
of up to 64 KiB whose payload is cut into ``gso_size`` segments on the wire, and packets
whose transport checksum is *partial* (``NEEDS_CSUM``: the checksum field holds the
pseudo-header sum, the rest is to be summed from ``csum_start`` and stored at
``csum_start + csum_offset``).  A TUN opened with the header accepts such packets written
back as they are.  :func:`segment` does in software what the kernel would, for a
device (or a peer) that cannot take them: one complete IP packet per segment, every
checksum computed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VNET_HDR_SIZE = 10
_HDR = struct.Struct("<BBHHHH")

NEEDS_CSUM = 0x01
DATA_VALID = 0x02
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO (IP fragmentation): never enabled, never produced here
GSO_TCPV6 = 4
GSO_UDP_L4 = 5  # USO
GSO_ECN = 0x80

MAX_SEGMENTS = 256
"""More segments than this in one super-packet is refused: a peer's record must not turn
into unbounded work (64 KiB at the smallest sane MSS of 536 is 123 segments)."""

PLAIN_HEADER = bytes(VNET_HDR_SIZE)
"""A header saying: complete packet, no segmentation."""

_TCP_FIN_PSH = 0x09
_TCP_CWR = 0x80


class SegmentationError(ValueError):
    """A header that does not describe its packet (bad offsets, unknown GSO type)."""


@dataclass(frozen=True, slots=True)
class VnetHeader:
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        return _HDR.pack(
            self.flags,
            self.gso_type,
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> VnetHeader:
        if len(data) < VNET_HDR_SIZE:
            raise SegmentationError("virtio-net header is 10 bytes")
        return cls(*_HDR.unpack_from(data))

    @property
    def is_plain(self) -> bool:
        return not self.flags & NEEDS_CSUM and self.gso_type & ~GSO_ECN == GSO_NONE


def ones_sum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """The 16-bit ones' complement sum of ``data`` (big-endian words), plus ``start``.

    ``2**16 ≡ 1 (mod 0xFFFF)``, so the sum of the words is the whole buffer read as
    one big integer, modulo 0xFFFF (one C-level operation instead of a loop).
    """
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = int.from_bytes(data, "big") + start
    if not total:
        return 0
    rest = total % 0xFFFF
    return rest or 0xFFFF


def checksum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """The Internet checksum (RFC 1071) of ``data`` with ``start`` already summed in."""
    return ~ones_sum(data, start) & 0xFFFF


def _pseudo_sum(packet: bytes | bytearray, version: int, proto: int, length: int) -> int:
    if version == 4:
        addresses = int.from_bytes(packet[12:20], "big")
    else:
        addresses = int.from_bytes(packet[8:40], "big")
    return ones_sum(b"", addresses % 0xFFFF + proto + length)


def transport_checksum(packet: bytes | bytearray, l4_offset: int) -> int:
    """The TCP/UDP checksum of ``packet`` as it should be (the field itself counted as 0)."""
    version = packet[0] >> 4
    proto = packet[9] if version == 4 else packet[6]
    field = l4_offset + (16 if proto == 6 else 6)
    body = bytearray(packet[l4_offset:])
    body[field - l4_offset : field - l4_offset + 2] = b"\0\0"
    value = checksum(body, _pseudo_sum(packet, version, proto, len(body)))
    if proto == 17 and value == 0:
        return 0xFFFF
    return value


def _ip_layout(packet: bytes | bytearray) -> tuple[int, int, int]:
    """(IP version, transport protocol, transport offset); no IPv6 extension headers."""
    if not packet:
        raise SegmentationError("empty packet")
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        return 4, packet[9], (packet[0] & 0x0F) * 4
    if version == 6 and len(packet) >= 40:
        return 6, packet[6], 40
    raise SegmentationError("not an IPv4/IPv6 packet")


def _set_ip_length(header: bytearray, version: int, total: int, ip_id_delta: int) -> None:
    if version == 4:
        header[2:4] = total.to_bytes(2, "big")
        ident = (int.from_bytes(header[4:6], "big") + ip_id_delta) & 0xFFFF
        header[4:6] = ident.to_bytes(2, "big")
        header[10:12] = b"\0\0"
        ihl = (header[0] & 0x0F) * 4
        header[10:12] = checksum(header[:ihl]).to_bytes(2, "big")
    else:
        header[4:6] = (total - 40).to_bytes(2, "big")


def complete_checksum(header: VnetHeader, packet: bytes) -> bytes:
    """``packet`` with a ``NEEDS_CSUM`` partial checksum completed."""
    if not header.flags & NEEDS_CSUM:
        return packet
    start, field = header.csum_start, header.csum_start + header.csum_offset
    if field + 2 > len(packet) or start > field:
        raise SegmentationError("checksum offsets outside the packet")
    value = checksum(memoryview(packet)[start:])
    out = bytearray(packet)
    out[field : field + 2] = value.to_bytes(2, "big")
    return bytes(out)


def segment(header: VnetHeader, packet: bytes) -> list[bytes]:
    """Complete IP packets, as the kernel would put them on a wire, for one TUN read."""
    gso = header.gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        return [complete_checksum(header, packet)]
    if header.gso_size == 0:
        raise SegmentationError("GSO packet without a segment size")
    if len(packet) > header.gso_size * MAX_SEGMENTS:
        raise SegmentationError(f"more than {MAX_SEGMENTS} segments")
    version, proto, l4 = _ip_layout(packet)
    if gso in (GSO_TCPV4, GSO_TCPV6):
        if proto != 6 or len(packet) < l4 + 20 or (gso == GSO_TCPV4) != (version == 4):
            raise SegmentationError("TSO header on a packet that is not TCP of that family")
        return _segment_tcp(packet, version, l4, header.gso_size)
    if gso == GSO_UDP_L4:
        if proto != 17 or len(packet) < l4 + 8:
            raise SegmentationError("USO header on a packet that is not UDP")
        return _segment_udp(packet, version, l4, header.gso_size)
    raise SegmentationError(f"GSO type {header.gso_type} is not supported")


def _segment_tcp(packet: bytes, version: int, l4: int, size: int) -> list[bytes]:
    data_offset = (packet[l4 + 12] >> 4) * 4
    payload_at = l4 + data_offset
    if data_offset < 20 or payload_at > len(packet):
        raise SegmentationError("bad TCP header length")
    ip_header = packet[:l4]
    tcp_header = packet[l4:payload_at]
    seq = int.from_bytes(tcp_header[4:8], "big")
    flags = tcp_header[13]
    payload = memoryview(packet)[payload_at:]
    count = max(1, -(-len(payload) // size))
    out: list[bytes] = []
    for index in range(count):
        chunk = payload[index * size : (index + 1) * size]
        ip = bytearray(ip_header)
        _set_ip_length(ip, version, l4 + data_offset + len(chunk), index)
        tcp = bytearray(tcp_header)
        tcp[4:8] = ((seq + index * size) & 0xFFFFFFFF).to_bytes(4, "big")
        segment_flags = flags
        if index < count - 1:
            segment_flags &= ~_TCP_FIN_PSH
        if index > 0:
            segment_flags &= ~_TCP_CWR
        tcp[13] = segment_flags
        tcp[16:18] = b"\0\0"
        body = bytes(tcp) + chunk
        value = checksum(body, _pseudo_sum(ip, version, 6, len(body)))
        tcp[16:18] = value.to_bytes(2, "big")
        out.append(bytes(ip) + bytes(tcp) + chunk)
    return out


def _segment_udp(packet: bytes, version: int, l4: int, size: int) -> list[bytes]:
    ip_header = packet[:l4]
    ports = packet[l4 : l4 + 4]
    payload = memoryview(packet)[l4 + 8 :]
    count = max(1, -(-len(payload) // size))
    out: list[bytes] = []
    for index in range(count):
        chunk = payload[index * size : (index + 1) * size]
        ip = bytearray(ip_header)
        _set_ip_length(ip, version, l4 + 8 + len(chunk), index)
        body = bytearray(ports + (8 + len(chunk)).to_bytes(2, "big") + b"\0\0")
        body += chunk
        value = checksum(body, _pseudo_sum(ip, version, 17, len(body))) or 0xFFFF
        body[6:8] = value.to_bytes(2, "big")
        out.append(bytes(ip) + bytes(body))
    return out


MAX_COALESCED = 64
"""Datagrams per coalesced UDP super-packet (the kernel's UDP GSO limit is 64)."""


def _udp_l4(item: bytes) -> int:
    """The IP header length of a datagram that may open a run (20 or 40), 0 if it cannot.

    IPv4 without options or fragments, or IPv6 without extension headers; UDP; a plain
    virtio-net header (no GSO).
    """
    ip = VNET_HDR_SIZE
    if len(item) < ip + 28 or item[1] != GSO_NONE:
        return 0
    first = item[ip]
    if first == 0x45:
        if item[ip + 9] != 17 or item[ip + 6] & 0x3F or item[ip + 7]:
            return 0  # not UDP, MF set or a fragment offset
        return 20
    if first >> 4 == 6 and len(item) >= ip + 48 and item[ip + 6] == 17:
        return 40
    return 0


def coalesce_udp(items: list[bytes]) -> list[bytes]:
    """Runs of same-size UDP datagrams of one flow as USO super-packets (GRO for UDP).

    ``items`` are header + packet as a TUN device with ``IFF_VNET_HDR`` reads them.  A
    run is consecutive datagrams of one flow (same addresses, ports, TOS/traffic class,
    TTL/hop limit, DF, flow label) whose payloads have the size of the first, except
    the last, which may be shorter; IPv4 ids must count up by one unless DF is set
    (segmentation renumbers them).  A run of two or more becomes one packet with
    ``GSO_UDP_L4``, ``gso_size`` = the payload size, and a partial checksum (the
    pseudo-header sum, ``NEEDS_CSUM``), which :func:`segment` (or the kernel) cuts back
    into the same datagrams.

    Called for every datagram a TUN device reads (iperf3 and most UDP senders do not
    batch with ``UDP_SEGMENT``): a datagram that continues a run is matched against the
    first in place (``bytes.startswith`` at an offset, no slice), ADR 0065.
    """
    out: list[bytes] = []
    index, count = 0, len(items)
    ip = VNET_HDR_SIZE
    while index < count:
        first = items[index]
        l4 = _udp_l4(first)
        if not l4:
            out.append(first)
            index += 1
            continue
        # What every datagram of the run repeats: for IPv4 the version and header
        # length (0x45), the TOS, then flags (DF, no fragment), TTL and protocol, then
        # addresses and ports; for IPv6 version, traffic class and flow label, then next
        # header, hop limit, addresses and ports.  Lengths, ids and checksums differ.
        ends_at = ip + 12 if l4 == 20 else ip + 8
        ends = first[ends_at : ip + l4 + 4]
        if index + 1 == count or not items[index + 1].startswith(ends, ends_at):
            out.append(first)  # the next datagram is another flow's: no run starts here
            index += 1
            continue
        headers = ip + l4 + 8
        size = len(first) - headers
        if l4 == 20:
            near, near_at = first[ip : ip + 2], ip
            far, far_at = first[ip + 6 : ip + 10], ip + 6
            dont_fragment = bool(first[ip + 6] & 0x40)
        else:
            near, near_at = first[ip : ip + 4], ip
            far, far_at = first[ip + 6 : ip + 8], ip + 6
            dont_fragment = True
        ident = (first[ip + 4] << 8) | first[ip + 5]
        limit = min(count, index + MAX_COALESCED)
        room = 0xFFFF - l4 - 8 - size
        stop = index + 1
        while stop < limit and size > 0:
            item = items[stop]
            payload = len(item) - headers
            if (
                payload > size
                or payload <= 0
                or item[1] != GSO_NONE
                or not item.startswith(ends, ends_at)
                or not item.startswith(near, near_at)
                or not item.startswith(far, far_at)
                or payload > room
            ):
                break
            if not dont_fragment and (item[ip + 4] << 8 | item[ip + 5]) != (
                (ident + stop - index) & 0xFFFF
            ):
                break
            room -= payload
            stop += 1
            if payload < size:
                break
        if stop - index < 2:
            out.append(first)
            index += 1
            continue
        total = 0xFFFF - l4 - 8 - room
        out.append(_udp_super_packet(items[index:stop], l4, size, total))
        index = stop
    return out


def _udp_super_packet(run: list[bytes], l4: int, size: int, total: int) -> bytes:
    first = run[0]
    ip = bytearray(first[VNET_HDR_SIZE : VNET_HDR_SIZE + l4])
    length = 8 + total
    if l4 == 20:
        ip[2:4] = (20 + length).to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = checksum(ip).to_bytes(2, "big")
        addresses = int.from_bytes(ip[12:20], "big")
    else:
        ip[4:6] = length.to_bytes(2, "big")
        addresses = int.from_bytes(ip[8:40], "big")
    partial = ones_sum(b"", addresses % 0xFFFF + 17 + length)
    start = VNET_HDR_SIZE + l4
    udp = first[start : start + 4] + length.to_bytes(2, "big") + partial.to_bytes(2, "big")
    header = _HDR.pack(NEEDS_CSUM, GSO_UDP_L4, l4 + 8, size, l4, 6)
    return b"".join([header, ip, udp, *[item[start + 8 :] for item in run]])
