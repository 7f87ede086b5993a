"""virtio-net headers: partial checksums completed, TSO/USO super-packets segmented.

Packets are built by hand; every checksum is checked with a word-by-word RFC 1071 sum
written independently of the module's big-integer one.
"""

from __future__ import annotations

import struct

import pytest

from accessfabric.services.vnet import (
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    NEEDS_CSUM,
    SegmentationError,
    VnetHeader,
    checksum,
    complete_checksum,
    segment,
    transport_checksum,
)

SRC4, DST4 = bytes((10, 99, 0, 2)), bytes((10, 0, 0, 1))
SRC6 = bytes.fromhex("fd000000000000000000000000000002")
DST6 = bytes.fromhex("fd000000000000000000000000000001")


def slow_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4(proto: int, l4: bytes, ident: int = 7) -> bytes:
    head = bytearray(
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, 0, 64, proto, 0, SRC4, DST4)
    )
    head[10:12] = (~slow_sum(bytes(head)) & 0xFFFF).to_bytes(2, "big")
    return bytes(head) + l4


def ipv6(proto: int, l4: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, SRC6, DST6) + l4


def pseudo(packet: bytes) -> bytes:
    if packet[0] >> 4 == 4:
        return packet[12:20] + bytes((0, packet[9])) + (len(packet) - 20).to_bytes(2, "big")
    return packet[8:40] + (len(packet) - 40).to_bytes(4, "big") + bytes((0, 0, 0, packet[6]))


def transport_ok(packet: bytes) -> bool:
    l4 = 20 if packet[0] >> 4 == 4 else 40
    return slow_sum(pseudo(packet) + packet[l4:]) == 0xFFFF


def ip_header_ok(packet: bytes) -> bool:
    return packet[0] >> 4 == 6 or slow_sum(packet[:20]) == 0xFFFF


def tcp(seq: int, payload: bytes, flags: int = 0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", 40000, 5201, seq, 99, 5 << 4, flags, 512, 0, 0) + payload


def udp(payload: bytes) -> bytes:
    return struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0) + payload


def test_checksum_matches_word_sum() -> None:
    for size in (0, 1, 2, 3, 20, 1399, 1400, 65000):
        data = bytes((i * 7 + 3) & 0xFF for i in range(size))
        assert checksum(data) == ~slow_sum(data) & 0xFFFF
    assert checksum(b"\xff\xff") == 0


@pytest.mark.parametrize("make", [ipv4, ipv6], ids=["ipv4", "ipv6"])
def test_partial_checksum_completed(make: object) -> None:
    packet = make(6, tcp(1000, b"hello fabric"))  # type: ignore[operator]
    l4 = 20 if packet[0] >> 4 == 4 else 40
    partial = (slow_sum(pseudo(packet))).to_bytes(2, "big")  # what the kernel leaves
    packet = packet[: l4 + 16] + partial + packet[l4 + 18 :]
    assert not transport_ok(packet)
    header = VnetHeader(flags=NEEDS_CSUM, csum_start=l4, csum_offset=16)
    done = complete_checksum(header, packet)
    assert transport_ok(done)
    assert segment(header, packet) == [done]
    assert int.from_bytes(done[l4 + 16 : l4 + 18], "big") == transport_checksum(done, l4)


@pytest.mark.parametrize(
    ("make", "gso"), [(ipv4, GSO_TCPV4), (ipv6, GSO_TCPV6)], ids=["tso4", "tso6"]
)
def test_tso_super_packet_segmented(make: object, gso: int) -> None:
    payload = bytes(range(256)) * 240 + b"tail"  # 61444 bytes: 43 full segments + a short one
    packet = make(6, tcp(0xFFFFF000, payload, flags=0x19))  # type: ignore[operator]  # ACK|PSH|FIN
    l4 = 20 if gso == GSO_TCPV4 else 40
    header = VnetHeader(
        flags=NEEDS_CSUM, gso_type=gso, hdr_len=l4 + 20, gso_size=1400,
        csum_start=l4, csum_offset=16,
    )  # fmt: skip
    parts = segment(header, packet)
    assert len(parts) == 44
    rebuilt = b""
    for index, part in enumerate(parts):
        assert ip_header_ok(part) and transport_ok(part)
        body = part[l4 + 20 :]
        assert len(body) == (1400 if index < 43 else len(payload) - 43 * 1400)
        seq = int.from_bytes(part[l4 + 4 : l4 + 8], "big")
        assert seq == (0xFFFFF000 + index * 1400) & 0xFFFFFFFF
        flags = part[l4 + 13]
        assert flags == (0x19 if index == 43 else 0x10)
        if gso == GSO_TCPV4:
            assert int.from_bytes(part[2:4], "big") == len(part)
            assert int.from_bytes(part[4:6], "big") == 7 + index
        else:
            assert int.from_bytes(part[4:6], "big") == len(part) - 40
        rebuilt += body
    assert rebuilt == payload


def test_uso_super_packet_segmented() -> None:
    payload = b"x" * 3000
    packet = ipv4(17, udp(payload))
    header = VnetHeader(
        flags=NEEDS_CSUM, gso_type=GSO_UDP_L4, hdr_len=28, gso_size=1200,
        csum_start=20, csum_offset=6,
    )  # fmt: skip
    parts = segment(header, packet)
    assert [len(p) - 28 for p in parts] == [1200, 1200, 600]
    for part in parts:
        assert ip_header_ok(part) and transport_ok(part)
        assert int.from_bytes(part[24:26], "big") == len(part) - 20


def test_bad_headers_refused() -> None:
    packet = ipv4(17, udp(b"x" * 100))
    with pytest.raises(SegmentationError):
        segment(VnetHeader(gso_type=GSO_TCPV4, gso_size=1400), packet)
    with pytest.raises(SegmentationError):
        segment(VnetHeader(gso_type=GSO_UDP, gso_size=1400), packet)
    with pytest.raises(SegmentationError):
        segment(VnetHeader(gso_type=GSO_UDP_L4, gso_size=0), packet)
    big = ipv4(6, tcp(1, bytes(60000)))
    with pytest.raises(SegmentationError, match="segments"):  # bounded work per record
        segment(VnetHeader(gso_type=GSO_TCPV4, gso_size=8), big)
    with pytest.raises(SegmentationError):
        complete_checksum(VnetHeader(flags=NEEDS_CSUM, csum_start=20, csum_offset=200), packet)


def test_header_round_trip() -> None:
    header = VnetHeader(NEEDS_CSUM, GSO_TCPV4, 52, 1448, 20, 16)
    assert VnetHeader.unpack(header.pack()) == header
    assert len(header.pack()) == 10
    assert VnetHeader().is_plain and not header.is_plain


def test_udp_runs_coalesced_and_cut_back() -> None:
    from accessfabric.services.vnet import PLAIN_HEADER, coalesce_udp

    def datagram(ident: int, payload: bytes, dport: int = 5201) -> bytes:
        body = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
        packet = bytearray(ipv4(17, body, ident))
        packet[26:28] = transport_checksum(bytes(packet), 20).to_bytes(2, "big")
        assert transport_ok(bytes(packet))
        return bytes(packet)

    run = [datagram(100 + i, bytes([i]) * 1372) for i in range(5)]
    run.append(datagram(105, b"end" * 100))  # shorter: closes the run
    other = datagram(106, b"x" * 1372, dport=53)  # another flow
    tail = [datagram(107 + i, b"y" * 1372, dport=53) for i in range(2)]
    items = [PLAIN_HEADER + p for p in [*run, other, *tail]]
    merged = coalesce_udp(items)
    assert len(merged) == 2  # the run of six, then the other flow's run of three
    header = VnetHeader.unpack(merged[0])
    assert header.gso_type == GSO_UDP_L4 and header.gso_size == 1372
    assert header.flags == NEEDS_CSUM and (header.csum_start, header.csum_offset) == (20, 6)
    assert ip_header_ok(merged[0][10:])
    assert segment(header, merged[0][10:]) == run
    assert segment(VnetHeader.unpack(merged[1]), merged[1][10:]) == [other, *tail]
    # a lone datagram and a gap in the IP ids are left alone
    lone = [PLAIN_HEADER + datagram(1, b"a" * 50), PLAIN_HEADER + datagram(9, b"a" * 50)]
    assert coalesce_udp(lone) == lone


def test_ipv6_udp_run_coalesced_and_cut_back() -> None:
    from accessfabric.services.vnet import PLAIN_HEADER, coalesce_udp

    def datagram(payload: bytes) -> bytes:
        body = struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0) + payload
        packet = bytearray(ipv6(17, body))
        packet[46:48] = transport_checksum(bytes(packet), 40).to_bytes(2, "big")
        assert transport_ok(bytes(packet))
        return bytes(packet)

    run = [datagram(bytes([i]) * 1200) for i in range(3)] + [datagram(b"last")]
    merged = coalesce_udp([PLAIN_HEADER + p for p in run])
    assert len(merged) == 1
    header = VnetHeader.unpack(merged[0])
    assert (header.gso_type, header.gso_size, header.hdr_len) == (GSO_UDP_L4, 1200, 48)
    assert (header.csum_start, header.csum_offset) == (40, 6)
    assert segment(header, merged[0][10:]) == run


@pytest.mark.parametrize("version", [4, 6])
def test_a_run_breaks_on_every_header_byte_it_repeats(version: int) -> None:
    """Two datagrams differing in one header byte coalesce exactly when that byte is one
    segmentation rewrites (lengths, IPv4 id with DF set, checksums); any other byte
    (version, TOS/traffic class, flow label, DF, TTL/hop limit, protocol, addresses,
    ports) keeps them apart.  The run's matching compares in place (ADR 0065)."""
    from accessfabric.services.vnet import PLAIN_HEADER, coalesce_udp

    payload = udp(b"p" * 1000)
    if version == 4:
        first = bytearray(ipv4(17, payload, ident=7))
        first[6] = 0x40  # DF: the ids need not count up
        rewritten = {2, 3, 4, 5, 10, 11, 24, 25, 26, 27}
    else:
        first = bytearray(ipv6(17, payload))
        rewritten = {4, 5, 44, 45, 46, 47}
    headers = 28 if version == 4 else 48
    for offset in range(headers):
        second = bytearray(first)
        second[offset] ^= 0x01
        merged = coalesce_udp([PLAIN_HEADER + bytes(first), PLAIN_HEADER + bytes(second)])
        assert (len(merged) == 1) == (offset in rewritten), offset
    merged = coalesce_udp([PLAIN_HEADER + bytes(first)] * 2)
    assert len(merged) == 1 and VnetHeader.unpack(merged[0]).gso_type == GSO_UDP_L4


def test_interleaved_flows_are_left_alone_and_runs_after_them_coalesce() -> None:
    """A datagram whose successor is another flow's opens no run (the successor's
    addresses and ports are compared first, ADR 0065); a run after them still forms."""
    from accessfabric.services.vnet import PLAIN_HEADER, coalesce_udp

    def datagram(dport: int, ident: int) -> bytes:
        return PLAIN_HEADER + ipv4(
            17, struct.pack("!HHHH", 40000, dport, 508, 0) + b"d" * 500, ident
        )

    interleaved = [datagram(5201 + i % 2, i // 2) for i in range(6)]
    assert coalesce_udp(interleaved) == interleaved
    run = [datagram(5201, 10 + i) for i in range(3)]
    merged = coalesce_udp([*interleaved, *run])
    assert merged[:6] == interleaved and len(merged) == 7
    header = VnetHeader.unpack(merged[6])
    assert (header.gso_type, header.gso_size) == (GSO_UDP_L4, 500)
    parts = segment(header, merged[6][10:])
    assert [part[:4] + part[6:24] + part[28:] for part in parts] == [
        item[10:14] + item[16:34] + item[38:] for item in run
    ]  # the same datagrams but for the checksums segmentation computes
