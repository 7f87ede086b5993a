"""The VPN's bytes on a fabric stream, and how packets are sorted onto streams.

Stream layout (client -> exit), documented in docs/services.md::

    preamble   "AFV1" | client id (8 bytes) | shard (u8)       -- once, client side only
    records    length (u16, big endian, 1..65535) | IP packet   -- repeated, both ways

or, from a client whose TUN device runs with offloads (``IFF_VNET_HDR``)::

    preamble   "AFV2" | client id (8 bytes) | shard (u8)
    records    length (u16) | virtio-net header (10 bytes) | IP packet (length bytes)

A v2 record may be a GSO super-packet (up to 64 KiB, cut into ``gso_size`` segments
by whoever puts it on a wire) or carry a partial checksum; the header says so
(:mod:`accessfabric.services.vnet`).  An end whose device cannot take that segments
it in software; an exit answers a v1 stream with v1 records only.

A write carries as many records as were queued since the last one (a *batch*);
records may straddle DATA frames, the reader reassembles them.  No JSON, no base64.

:class:`FlowClassifier` maps a packet to ``(traffic class, shard)`` by
:class:`ClassRules` (the ``[vpn]`` config table): DNS ports -> dns; SSH/RDP ports
and quiet flows of small packets (ICMP included) -> interactive; everything else -> reliable,
until a flow moves more than ``heavy_bytes`` within ``window`` seconds, which makes it
bulk (sticky while it keeps sending).  The shard is a hash of the flow's addresses,
protocol and ports, so one flow stays on one stream and a heavy flow never shares the
interactive stream; a flow turning bulk takes the least-used bulk shard.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from accessfabric.node.config.vpn_config import VpnClassConfig
from accessfabric.wire.registry import TrafficClass

MAGIC = b"AFV1"
MAGIC_VNET = b"AFV2"
PREAMBLE_SIZE = len(MAGIC) + 8 + 1
VNET_HDR_SIZE = 10
MAX_PACKET = 0xFFFF
VPN_SERVICE = "vpn"

DNS_PORTS = frozenset({53})
INTERACTIVE_PORTS = frozenset({22, 3389})
VPN_CLASSES = (
    TrafficClass.DNS,
    TrafficClass.INTERACTIVE,
    TrafficClass.RELIABLE,
    TrafficClass.BULK,
)


Record = bytes | memoryview
"""A record's item as decoded: a view of the stream's read, or bytes."""


class VpnFormatError(ValueError):
    """A malformed preamble or record."""


def preamble(client_id: bytes, shard: int, vnet: bool = False) -> bytes:
    if len(client_id) != 8 or not 0 <= shard < 256:
        raise ValueError("client id is 8 bytes, shard 0..255")
    return (MAGIC_VNET if vnet else MAGIC) + client_id + bytes((shard,))


def parse_preamble(data: bytes) -> tuple[bytes, int, bool]:
    """``(client id, shard, vnet records)``."""
    if len(data) != PREAMBLE_SIZE or data[:4] not in (MAGIC, MAGIC_VNET):
        raise VpnFormatError("not a VPN stream (bad preamble)")
    return data[4:12], data[12], data[:4] == MAGIC_VNET


def encode_batch(packets: Iterable[bytes]) -> bytes:
    """Records for ``packets`` (each 1..65535 bytes), ready to write as one batch."""
    parts: list[bytes] = []
    for packet in packets:
        size = len(packet)
        if not 0 < size <= MAX_PACKET:
            raise ValueError(f"packet of {size} bytes cannot be carried")
        parts.append(size.to_bytes(2, "big"))
        parts.append(packet)
    return b"".join(parts)


class BatchDecoder:
    """Reassemble records from stream reads of any size.

    With ``vnet`` (v2 records) each item returned is the virtio-net header followed by
    the packet, as a TUN device with ``IFF_VNET_HDR`` reads and writes it.

    Records that lie whole in one ``feed`` are returned as read-only views of its
    ``data`` (no copy: a 64 KiB super-packet goes from the stream's read to the
    device's ``write`` as it is); only a record cut across two reads is assembled,
    once, into ``bytes``.  ``data`` that is not ``bytes`` is copied first, so a
    caller may reuse its buffer.
    """

    def __init__(self, vnet: bool = False) -> None:
        self._buffer = bytearray()
        """The start of a record cut by the end of the last ``feed``."""
        self._extra = VNET_HDR_SIZE if vnet else 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Record]:
        view = memoryview(data if type(data) is bytes else bytes(data))
        packets: list[Record] = []
        offset, end = 0, len(view)
        extra = self._extra
        buffer = self._buffer
        if buffer:  # complete the record the last read cut
            if len(buffer) < 2:
                offset = min(end, 2 - len(buffer))
                buffer += view[:offset]
                if len(buffer) < 2:
                    return packets
            size = (buffer[0] << 8) | buffer[1]
            if size == 0:
                raise VpnFormatError("zero-length record")
            want = 2 + extra + size - len(buffer)
            if want > end - offset:
                buffer += view[offset:]
                return packets
            buffer += view[offset : offset + want]
            offset += want
            packets.append(bytes(memoryview(buffer)[2:]))
            self._buffer = buffer = bytearray()
        while end - offset >= 2:
            size = (view[offset] << 8) | view[offset + 1]
            if size == 0:
                raise VpnFormatError("zero-length record")
            stop = offset + 2 + extra + size
            if stop > end:
                break
            packets.append(view[offset + 2 : stop])
            offset = stop
        if offset < end:
            buffer += view[offset:]
        return packets

    @property
    def pending(self) -> int:
        return len(self._buffer)


def flow_key(packet: bytes) -> tuple[bytes, int, int, int]:
    """``(addresses, protocol, source port, destination port)``; ports are 0 when absent."""
    if not packet:
        return b"", 0, 0, 0
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        proto = packet[9]
        ihl = (packet[0] & 0x0F) * 4
        addresses = packet[12:20]
    elif version == 6 and len(packet) >= 40:
        proto = packet[6]
        ihl = 40
        addresses = packet[8:40]
    else:
        return b"", 0, 0, 0
    if proto in (6, 17) and len(packet) >= ihl + 4:
        return (
            addresses,
            proto,
            (packet[ihl] << 8) | packet[ihl + 1],
            (packet[ihl + 2] << 8) | packet[ihl + 3],
        )
    return addresses, proto, 0, 0


def destination(packet: bytes) -> bytes:
    """The destination address (4 or 16 bytes), b"" for what is not IP."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        return packet[16:20]
    if version == 6 and len(packet) >= 40:
        return packet[24:40]
    return b""


def source(packet: Record) -> Record:
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        return packet[12:16]
    if version == 6 and len(packet) >= 40:
        return packet[8:24]
    return b""


@dataclass(frozen=True, slots=True)
class ClassRules:
    """How packets become classes (``[vpn]`` in the node config, docs/config.md)."""

    dns_ports: frozenset[int] = DNS_PORTS
    interactive_ports: frozenset[int] = INTERACTIVE_PORTS
    small_packet: int = 256
    """A flow on other ports whose packets are all at most this many bytes ..."""
    small_flow_bytes: int = 16 * 1024
    """... and that moves at most this many bytes per window is interactive."""
    heavy_bytes: int = 1 << 20
    """A flow moving more than this within one window becomes bulk."""
    window: float = 1.0


def class_rules(config: VpnClassConfig) -> ClassRules:
    """The ``[vpn]`` config table as classifier rules."""
    return ClassRules(
        dns_ports=config.dns_ports,
        interactive_ports=config.interactive_ports,
        small_packet=config.small_packet,
        small_flow_bytes=config.small_flow_bytes,
        heavy_bytes=config.heavy_bytes,
        window=config.window,
    )


def base_class(proto: int, sport: int, dport: int, rules: ClassRules | None = None) -> TrafficClass:
    dns = rules.dns_ports if rules else DNS_PORTS
    interactive = rules.interactive_ports if rules else INTERACTIVE_PORTS
    if proto in (6, 17):
        if sport in dns or dport in dns:
            return TrafficClass.DNS
        if sport in interactive or dport in interactive:
            return TrafficClass.INTERACTIVE
        return TrafficClass.RELIABLE
    # Everything else, ICMP included, is of the ``reliable`` kind: interactive while its
    # packets are small and it moves little (a ping), bulk when heavy (an ICMP flood).
    return TrafficClass.RELIABLE


class _Flow:
    __slots__ = (
        "base", "bulk_shard", "heavy", "last_seen", "shard", "small", "window_bytes",
        "window_start",
    )  # fmt: skip

    def __init__(self, base: TrafficClass, shard: int, now: float) -> None:
        self.base = base
        self.shard = shard
        self.bulk_shard = shard
        self.heavy = False
        self.small = True
        self.window_start = now
        self.window_bytes = 0
        self.last_seen = now


class FlowClassifier:
    """Sort packets into ``(class, shard)``; remembers at most ``max_flows`` flows.

    A flow (addresses, protocol, ports) starts in its port's class (:func:`base_class`).
    One of the ``reliable`` kind is ``interactive`` while all its packets are small
    (``rules.small_packet``) and it moves little (``rules.small_flow_bytes`` per
    window), ``bulk`` once it moves more than ``rules.heavy_bytes`` within a window
    (sticky while it keeps a quarter of that), ``reliable`` otherwise.

    A flow's shard is a hash of its key, except that a flow turning bulk takes the bulk
    shard with the fewest bulk flows: with ``shards`` >= the number of heavy flows, no
    bulk flow shares a stream (and its outbox) with another.
    """

    def __init__(
        self,
        shards: int = 2,
        *,
        heavy_bytes: int | None = None,
        rules: ClassRules | None = None,
        max_flows: int = 4096,
    ) -> None:
        if shards < 1 or shards > 255:
            raise ValueError("shards must be 1..255")
        rules = rules or ClassRules()
        if heavy_bytes is not None:
            rules = replace(rules, heavy_bytes=heavy_bytes)
        self.rules = rules
        self.shards = shards
        self.heavy_bytes = rules.heavy_bytes
        self.window = rules.window
        self.max_flows = max_flows
        self._flows: dict[tuple[bytes, int, int, int], _Flow] = {}
        self._bulk_flows = [0] * shards
        self.promoted = 0
        """Flows that became bulk."""

    def classify(
        self, packet: bytes, now: float, size: int | None = None
    ) -> tuple[TrafficClass, int]:
        """``packet`` is the IP packet or at least its first 64 bytes; ``size`` its length."""
        key = flow_key(packet)
        if size is None:
            size = len(packet)
        flow = self._flows.get(key)
        if flow is None:
            if len(self._flows) >= self.max_flows:
                self._expire(now)
            addresses, proto, sport, dport = key
            shard = zlib.crc32(addresses + bytes((proto,)) + (sport << 16 | dport).to_bytes(4))
            flow = _Flow(base_class(proto, sport, dport, self.rules), shard % self.shards, now)
            self._flows[key] = flow
        flow.last_seen = now
        if flow.base is TrafficClass.RELIABLE:
            rules = self.rules
            if now - flow.window_start > self.window:
                if flow.heavy and flow.window_bytes <= self.heavy_bytes // 4:
                    flow.heavy = False
                    self._bulk_flows[flow.bulk_shard] -= 1
                flow.small = flow.small or flow.window_bytes <= rules.small_flow_bytes
                flow.window_start, flow.window_bytes = now, 0
            flow.window_bytes += size
            if not flow.heavy and flow.window_bytes > self.heavy_bytes:
                flow.heavy = True
                self.promoted += 1
                counts = self._bulk_flows
                flow.bulk_shard = min(
                    range(self.shards), key=lambda s: (counts[s], s != flow.shard)
                )
                counts[flow.bulk_shard] += 1
            if flow.heavy:
                return TrafficClass.BULK, flow.bulk_shard
            if flow.small:
                if size <= rules.small_packet and flow.window_bytes <= rules.small_flow_bytes:
                    return TrafficClass.INTERACTIVE, flow.shard
                flow.small = False
        return flow.base, flow.shard

    def _expire(self, now: float) -> None:
        idle = [k for k, f in self._flows.items() if now - f.last_seen > 4 * self.window]
        for key in idle:
            flow = self._flows.pop(key)
            if flow.heavy:
                self._bulk_flows[flow.bulk_shard] -= 1
        if len(self._flows) >= self.max_flows:
            self._flows.clear()
            self._bulk_flows = [0] * self.shards
