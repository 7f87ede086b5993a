"""VPN stream format (v1 and v2 records, preambles) and the packet classifier."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from accessfabric.node.config.node_config import ConfigError, load_node_config
from accessfabric.services.vnet import GSO_TCPV4, NEEDS_CSUM, VnetHeader
from accessfabric.services.vpn_wire import (
    BatchDecoder,
    ClassRules,
    FlowClassifier,
    VpnFormatError,
    class_rules,
    encode_batch,
    parse_preamble,
    preamble,
)
from accessfabric.wire.registry import TrafficClass


def packet(proto: int, sport: int, dport: int, size: int) -> bytes:
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, proto, 0, bytes((10, 99, 0, 2)),
        bytes((10, 0, 0, 1)),
    )  # fmt: skip
    return head + struct.pack("!HH", sport, dport) + bytes(size - 24)


def test_preambles() -> None:
    client = bytes(range(8))
    assert parse_preamble(preamble(client, 3)) == (client, 3, False)
    assert parse_preamble(preamble(client, 3, vnet=True)) == (client, 3, True)
    assert preamble(client, 3, vnet=True).startswith(b"AFV2")
    with pytest.raises(VpnFormatError):
        parse_preamble(b"AFV3" + client + b"\x00")


def test_v2_records_split_anywhere() -> None:
    header = VnetHeader(NEEDS_CSUM, GSO_TCPV4, 40, 1448, 20, 16).pack()
    big = packet(6, 40000, 5201, 60000)
    small = packet(17, 40000, 53, 80)
    items = [header + big, bytes(10) + small]
    stream = b"".join(len(i[10:]).to_bytes(2, "big") + i for i in items)
    for cut in (1, 2, 11, 12, 5000, len(stream) - 1):
        decoder = BatchDecoder(vnet=True)
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert got == items and decoder.pending == 0


def test_v1_records_round_trip() -> None:
    packets = [packet(17, 1, 2, 100), packet(6, 3, 4, 1400)]
    decoder = BatchDecoder()
    assert decoder.feed(encode_batch(packets)) == packets


def test_classes_from_packets() -> None:
    classifier = FlowClassifier(2, rules=ClassRules(heavy_bytes=100_000))
    assert classifier.classify(packet(17, 40000, 53, 80), 0.0)[0] is TrafficClass.DNS
    assert classifier.classify(packet(6, 40001, 22, 1400), 0.0)[0] is TrafficClass.INTERACTIVE
    # small packets of a quiet flow on another port: interactive
    chat = packet(6, 40002, 7000, 120)
    assert classifier.classify(chat, 0.0)[0] is TrafficClass.INTERACTIVE
    # a large packet makes that flow reliable for the rest of its window
    assert classifier.classify(packet(6, 40002, 7000, 1400), 0.1)[0] is TrafficClass.RELIABLE
    assert classifier.classify(chat, 0.2)[0] is TrafficClass.RELIABLE
    # a quiet new window makes it interactive again
    assert classifier.classify(chat, 1.5)[0] is TrafficClass.INTERACTIVE
    # a flow moving more than heavy_bytes becomes bulk; a super-packet counts in full
    head = packet(6, 40003, 5201, 1400)[:64]
    assert classifier.classify(head, 2.0, 60_000)[0] is TrafficClass.RELIABLE
    assert classifier.classify(head, 2.1, 60_000)[0] is TrafficClass.BULK
    assert classifier.promoted == 1


def _echo(src: bytes, dst: bytes, kind: int = 8, size: int = 84) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 1, 0, src, dst)
    return head + bytes((kind, 0, 0, 0, 0, 7, 0, 1)) + bytes(size - 28)


def _echo6(kind: int = 128) -> bytes:
    head = struct.pack("!IHBB16s16s", 6 << 28, 64, 58, 64, bytes(15) + b"\x02", bytes(15) + b"\x01")
    return head + bytes((kind, 0, 0, 0, 0, 7, 0, 1)) + bytes(56)


def test_a_ping_beside_a_bulk_flow_between_the_same_hosts_is_interactive() -> None:
    """ADR 0066: the ping under iperf3 shares its addresses with the bulk flow; its flow
    key (protocol 1, no ports) keeps it apart, both ways and however long it runs."""
    client, server = bytes((10, 99, 0, 2)), bytes((10, 0, 0, 1))
    classifier = FlowClassifier(2, rules=ClassRules(heavy_bytes=100_000))
    bulk = packet(6, 40000, 5201, 1400)[:64]
    for step in range(200):  # 2 s, a ping each way per 10 ms step beside 60 KB of TCP
        now = step * 0.01
        assert classifier.classify(bulk, now, 60_000)[0] in (
            TrafficClass.RELIABLE,
            TrafficClass.BULK,
        )
        assert classifier.classify(_echo(client, server), now)[0] is TrafficClass.INTERACTIVE
        reply = _echo(server, client, kind=0)
        assert classifier.classify(reply, now)[0] is TrafficClass.INTERACTIVE
    assert classifier.classify(bulk, 2.0, 60_000)[0] is TrafficClass.BULK
    assert classifier.classify(_echo6(), 2.0)[0] is TrafficClass.INTERACTIVE
    assert classifier.classify(_echo6(129), 2.0)[0] is TrafficClass.INTERACTIVE


def test_an_icmp_flood_does_not_ride_the_interactive_class() -> None:
    """ICMP is held to the small-flow rule: large echoes, or a stream of small ones moving
    more than ``small_flow_bytes`` per window, leave ``interactive`` (they would otherwise
    ride strict priority ahead of every bulk byte); a heavy flood is bulk."""
    client, server = bytes((10, 99, 0, 2)), bytes((10, 0, 0, 1))
    classifier = FlowClassifier(2, rules=ClassRules(heavy_bytes=100_000))
    assert classifier.classify(_echo(client, server, size=1400), 0.0)[0] is TrafficClass.RELIABLE
    flood = [classifier.classify(_echo(server, client), i * 0.0001)[0] for i in range(2000)]
    assert flood[0] is TrafficClass.INTERACTIVE
    assert flood[-1] is TrafficClass.BULK
    assert flood.index(TrafficClass.RELIABLE) <= 16 * 1024 // 84 + 1


def test_the_small_acks_of_a_busy_flow_are_not_interactive() -> None:
    """The server's ACKs of an iperf3 upload are small packets, but a flow of them moves
    more than ``small_flow_bytes`` per window: it leaves the interactive class."""
    classifier = FlowClassifier(2, rules=ClassRules(small_flow_bytes=16 * 1024))
    ack = packet(6, 5201, 40000, 52)
    classes = [classifier.classify(ack, i * 0.001)[0] for i in range(400)]
    assert classes[0] is TrafficClass.INTERACTIVE
    assert classes[-1] is TrafficClass.RELIABLE
    assert classes.index(TrafficClass.RELIABLE) <= 16 * 1024 // 52 + 1


def test_vpn_table_in_node_config(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('key_path = "k"\n[vpn]\ndns_ports = [53, 853]\nheavy_bytes = 4096\n')
    rules = class_rules(load_node_config(path).vpn)
    assert rules.dns_ports == {53, 853} and rules.heavy_bytes == 4096
    classifier = FlowClassifier(1, rules=rules)
    assert classifier.classify(packet(6, 40000, 853, 100), 0.0)[0] is TrafficClass.DNS
    path.write_text('key_path = "k"\n[vpn]\ndns_ports = [0]\n')
    with pytest.raises(ConfigError, match=r"vpn\.dns_ports"):
        load_node_config(path)
    path.write_text('key_path = "k"\n[vpn]\nbogus = 1\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_node_config(path)


def test_bulk_flows_take_separate_shards() -> None:
    classifier = FlowClassifier(2, rules=ClassRules(heavy_bytes=10_000))
    # two flows whose hash puts them on the same shard
    by_shard: dict[int, list[int]] = {}
    for port in range(40000, 40100):
        by_shard.setdefault(classifier.classify(packet(6, port, 5201, 100), 0.0)[1], []).append(
            port
        )
    same = next(ports for ports in by_shard.values() if len(ports) >= 2)[:2]
    shards = set()
    for port in same:
        head = packet(6, port, 5201, 1400)[:64]
        traffic_class, shard = classifier.classify(head, 0.5, 60_000)
        assert traffic_class is TrafficClass.BULK
        shards.add(shard)
    assert shards == {0, 1}  # no bulk flow queues behind the other


def test_records_are_views_of_the_read_and_survive_a_reused_buffer() -> None:
    packets = [packet(17, 1, 2, 100), packet(6, 3, 4, 1400), packet(6, 5, 6, 60)]
    stream = encode_batch(packets)
    whole = BatchDecoder().feed(stream)
    assert whole == packets
    assert all(isinstance(r, memoryview) and r.obj is stream for r in whole)  # no copy
    byte_by_byte = BatchDecoder()
    got = [r for i in range(len(stream)) for r in byte_by_byte.feed(stream[i : i + 1])]
    assert got == packets and byte_by_byte.pending == 0
    reused = bytearray(stream)
    decoder = BatchDecoder()
    records = decoder.feed(reused)
    reused[:] = bytes(len(reused))  # the caller reuses its buffer
    assert records == packets
