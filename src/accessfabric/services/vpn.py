"""The VPN: IP packets from a TUN device in binary batches over classified, sharded streams.

* :class:`VpnClient` reads its TUN device, sorts each packet with a
  :class:`~accessfabric.services.vpn_wire.FlowClassifier` onto one of
  ``shards`` streams per class (opened on first use through the node's
  :class:`~accessfabric.services.fabric.StreamOpener`), and writes what the
  exit sends back into the device.
* :class:`VpnExit` serves the ``vpn`` service: packets from a client's streams
  go into its TUN device (and from there, with forwarding on, into its network);
  packets the device hands back go to the client whose tunnel address they are
  for, on the stream of their class and shard.

Each stream has an :class:`Outbox`: packets queued during one loop iteration leave
as one batch (one ``write``); while a stream is blocked by credit the outbox grows
up to ``limit`` bytes and then drops packets, as a router queue would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from accessfabric.errors import ErrorCode, ProtocolError
from accessfabric.node.connection import FabricStream
from accessfabric.node.log_format import log_event
from accessfabric.services.fabric import StreamOpener
from accessfabric.services.vpn_wire import (
    PREAMBLE_SIZE,
    VPN_SERVICE,
    BatchDecoder,
    FlowClassifier,
    destination,
    parse_preamble,
    preamble,
    source,
)
from accessfabric.wire.registry import TrafficClass

log = logging.getLogger(__name__)

READ_BURST = 512
"""Packets read from the TUN device per wake-up before yielding to the loop."""
OUTBOX_LIMIT = {TrafficClass.INTERACTIVE: 256 * 1024, TrafficClass.DNS: 64 * 1024}
DEFAULT_OUTBOX_LIMIT = 2 * 1024 * 1024
READ_CHUNK = 256 * 1024


@dataclass(slots=True)
class VpnCounters:
    packets_out: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    bytes_in: int = 0
    dropped: int = 0
    tun_write_errors: int = 0
    by_class: dict[str, int] = field(default_factory=dict)


class Outbox:
    """Records for one stream: batched per loop iteration, bounded, one writer task."""

    def __init__(self, stream: FabricStream, limit: int, counters: VpnCounters) -> None:
        self.stream = stream
        self.limit = limit
        self.counters = counters
        self._parts: list[bytes] = []
        self._size = 0
        self._wake = asyncio.Event()
        self.closed = False
        self._task = asyncio.create_task(self._run())

    def put(self, packet: bytes) -> None:
        size = len(packet)
        if self.closed or self._size + size > self.limit:
            self.counters.dropped += 1
            return
        self._parts.append(size.to_bytes(2, "big"))
        self._parts.append(packet)
        self._size += size + 2
        self._wake.set()

    async def _run(self) -> None:
        stream = self.stream
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._parts:
                    continue
                batch = b"".join(self._parts)
                self._parts.clear()
                self._size = 0
                stream.write(batch)
                await stream.drain()
        except (ConnectionError, ProtocolError) as error:
            log_event(log, "vpn stream ended", logging.DEBUG, error=str(error))
        finally:
            self.closed = True

    def close(self) -> None:
        self.closed = True
        self._task.cancel()

    def abort(self) -> None:
        """Stop and reset the stream: a tunnel carries datagrams, nothing is worth draining."""
        self.close()
        with contextlib.suppress(ConnectionError, ProtocolError):
            self.stream.reset(ErrorCode.CANCEL)


class TunPort:
    """Non-blocking reads of a TUN fd (``on_packets`` gets each burst) and writes to it."""

    def __init__(
        self, fd: int, on_packets: Callable[[list[bytes]], None], counters: VpnCounters
    ) -> None:
        self.fd = fd
        self.on_packets = on_packets
        self.counters = counters
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        packets: list[bytes] = []
        read = os.read
        fd = self.fd
        try:
            for _ in range(READ_BURST):
                packets.append(read(fd, 65535))
        except BlockingIOError:
            pass
        except OSError as error:
            log_event(log, "tun read failed", logging.WARNING, error=str(error))
        if packets:
            self.on_packets(packets)

    def write(self, packets: list[bytes]) -> None:
        write = os.write
        fd = self.fd
        counters = self.counters
        for packet in packets:
            try:
                write(fd, packet)
            except OSError:
                counters.tun_write_errors += 1
        counters.packets_in += len(packets)

    def close(self) -> None:
        self._loop.remove_reader(self.fd)


async def pump_to_tun(stream: FabricStream, port: TunPort, first: bytes = b"") -> None:
    """Decode records from ``stream`` and write the packets into the device until EOF."""
    decoder = BatchDecoder()
    counters = port.counters
    if first:
        port.write(decoder.feed(first))
    while True:
        data = await stream.read(READ_CHUNK)
        if not data:
            return
        counters.bytes_in += len(data)
        packets = decoder.feed(data)
        if packets:
            port.write(packets)


def _limit(traffic_class: TrafficClass) -> int:
    return OUTBOX_LIMIT.get(traffic_class, DEFAULT_OUTBOX_LIMIT)


class VpnClient:
    """The device side of the VPN: one TUN fd, streams opened on demand."""

    def __init__(
        self,
        opener: StreamOpener,
        fd: int,
        *,
        shards: int = 2,
        heavy_bytes: int = 1 << 20,
        service: str = VPN_SERVICE,
    ) -> None:
        self.opener = opener
        self.service = service
        self.client_id = os.urandom(8)
        self.classifier = FlowClassifier(shards, heavy_bytes=heavy_bytes)
        self.counters = VpnCounters()
        self.port = TunPort(fd, self._on_packets, self.counters)
        self._outboxes: dict[tuple[TrafficClass, int], Outbox] = {}
        self._opening: dict[tuple[TrafficClass, int], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _on_packets(self, packets: list[bytes]) -> None:
        now = time.monotonic()
        classify = self.classifier.classify
        counters = self.counters
        by_class = counters.by_class
        for packet in packets:
            key = classify(packet, now)
            counters.packets_out += 1
            counters.bytes_out += len(packet)
            name = key[0].name.lower()
            by_class[name] = by_class.get(name, 0) + len(packet)
            outbox = self._outboxes.get(key)
            if outbox is not None and not outbox.closed:
                outbox.put(packet)
                continue
            waiting = self._opening.get(key)
            if waiting is not None:
                if len(waiting) < 64:
                    waiting.append(packet)
                else:
                    counters.dropped += 1
                continue
            self._opening[key] = [packet]
            self._spawn(self._open(key))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, key: tuple[TrafficClass, int]) -> None:
        traffic_class, shard = key
        try:
            stream = await self.opener.open_stream(self.service, traffic_class)
            stream.write(preamble(self.client_id, shard))
        except (ConnectionError, ProtocolError, OSError, LookupError) as error:
            dropped = self._opening.pop(key, [])
            self.counters.dropped += len(dropped)
            log_event(log, "vpn: no stream", logging.WARNING, error=str(error) or "?")
            return
        outbox = Outbox(stream, _limit(traffic_class), self.counters)
        self._outboxes[key] = outbox
        for packet in self._opening.pop(key, []):
            outbox.put(packet)
        log_event(log, "vpn stream open", traffic_class=traffic_class.name.lower(), shard=shard)
        try:
            await pump_to_tun(stream, self.port)
        except (ConnectionError, ProtocolError) as error:
            log_event(log, "vpn stream lost", logging.INFO, error=str(error))
        finally:
            outbox.close()
            if self._outboxes.get(key) is outbox:
                del self._outboxes[key]

    def status(self) -> dict[str, object]:
        return {
            "role": "client",
            "streams": len(self._outboxes),
            "packets_out": self.counters.packets_out,
            "packets_in": self.counters.packets_in,
            "dropped": self.counters.dropped,
            "bulk_flows": self.classifier.promoted,
        }

    async def close(self) -> None:
        self.port.close()
        for outbox in self._outboxes.values():
            outbox.abort()  # so the node's drain does not wait for idle tunnel streams
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _ExitClient:
    def __init__(self) -> None:
        self.outboxes: dict[tuple[TrafficClass, int], Outbox] = {}

    def pick(self, key: tuple[TrafficClass, int]) -> Outbox | None:
        outbox = self.outboxes.get(key)
        if outbox is not None and not outbox.closed:
            return outbox
        for (cls, _), other in self.outboxes.items():  # same class on another shard
            if cls is key[0] and not other.closed:
                return other
        for other in self.outboxes.values():
            if not other.closed:
                return other
        return None


class VpnExit:
    """The exit side: the ``vpn`` service handler plus the TUN device it writes into."""

    def __init__(self, fd: int, *, shards: int = 2, heavy_bytes: int = 1 << 20) -> None:
        self.classifier = FlowClassifier(shards, heavy_bytes=heavy_bytes)
        self.counters = VpnCounters()
        self.port = TunPort(fd, self._on_packets, self.counters)
        self._clients: dict[bytes, _ExitClient] = {}
        self._addresses: dict[bytes, bytes] = {}  # tunnel source address -> client id

    async def handle(self, stream: FabricStream) -> None:
        """The dispatcher handler for ``vpn`` streams."""
        head = await stream.readexactly(PREAMBLE_SIZE)
        client_id, shard = parse_preamble(head)
        client = self._clients.setdefault(client_id, _ExitClient())
        outbox = Outbox(stream, _limit(stream.traffic_class), self.counters)
        client.outboxes[(stream.traffic_class, shard)] = outbox
        decoder = BatchDecoder()
        addresses = self._addresses
        try:
            while True:
                data = await stream.read(READ_CHUNK)
                if not data:
                    break
                self.counters.bytes_in += len(data)
                packets = decoder.feed(data)
                if packets:
                    addresses[source(packets[-1])] = client_id
                    self.port.write(packets)
        finally:
            outbox.close()
            if client.outboxes.get((stream.traffic_class, shard)) is outbox:
                del client.outboxes[(stream.traffic_class, shard)]
            if not client.outboxes:
                self._clients.pop(client_id, None)
        with contextlib.suppress(ConnectionError, ProtocolError):
            stream.close()

    def _on_packets(self, packets: list[bytes]) -> None:
        now = time.monotonic()
        counters = self.counters
        for packet in packets:
            client_id = self._addresses.get(destination(packet))
            client = self._clients.get(client_id) if client_id is not None else None
            outbox = client.pick(self.classifier.classify(packet, now)) if client else None
            if outbox is None:
                counters.dropped += 1
                continue
            counters.packets_out += 1
            counters.bytes_out += len(packet)
            outbox.put(packet)

    def status(self) -> dict[str, object]:
        return {
            "role": "exit",
            "clients": len(self._clients),
            "streams": sum(len(c.outboxes) for c in self._clients.values()),
            "packets_out": self.counters.packets_out,
            "packets_in": self.counters.packets_in,
            "dropped": self.counters.dropped,
        }

    async def close(self) -> None:
        self.port.close()
        for client in self._clients.values():
            for outbox in list(client.outboxes.values()):
                outbox.abort()
