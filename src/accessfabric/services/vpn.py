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
import queue
import select
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from accessfabric.errors import ErrorCode, ProtocolError
from accessfabric.node.streams.connection import FabricStream, StreamResetError
from accessfabric.observe.log_format import log_event
from accessfabric.services.fabric import StreamOpener
from accessfabric.services.vnet import (
    GSO_UDP_L4,
    PLAIN_HEADER,
    VNET_HDR_SIZE,
    SegmentationError,
    VnetHeader,
    coalesce_udp,
    segment,
)
from accessfabric.services.vpn_wire import (
    PREAMBLE_SIZE,
    VPN_SERVICE,
    BatchDecoder,
    ClassRules,
    FlowClassifier,
    Record,
    VpnFormatError,
    destination,
    parse_preamble,
    preamble,
    source,
)
from accessfabric.session.scheduler import URGENT_CLASSES
from accessfabric.timeouts import cancel_and_wait
from accessfabric.wire.registry import TrafficClass

log = logging.getLogger(__name__)

READ_BURST = 512
"""Packets read from the TUN device per wake-up before yielding to the loop."""
OUTBOX_LIMIT = {TrafficClass.INTERACTIVE: 256 * 1024, TrafficClass.DNS: 64 * 1024}
DEFAULT_OUTBOX_LIMIT = 2 * 1024 * 1024
READ_CHUNK = 256 * 1024
TUN_READ = 65535 + VNET_HDR_SIZE
HEAD = 64
"""Bytes of a packet the classifier looks at (IP and transport headers)."""
REFUSAL_WINDOW = 1.0
"""Seconds after its preamble within which a v2 stream's reset can be a refusal of
``AFV2`` (at least; twice the session's smoothed RTT when that is longer: ADR 0034)."""
REPROBE_AFTER = 300.0
"""Seconds after a fallback to v1 records before the next new stream tries v2 again."""


@dataclass(slots=True)
class VpnCounters:
    packets_out: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    bytes_in: int = 0
    dropped: int = 0
    tun_write_errors: int = 0
    gso_out: int = 0
    """Super-packets (more than one segment) read from the device and sent as one record."""
    segmented: int = 0
    """Super-packets cut into segments in software (a device or peer without offloads)."""
    bad_records: int = 0
    coalesced: int = 0
    """UDP datagrams read one by one and sent inside a USO super-packet (GRO for UDP)."""
    by_class: dict[str, int] = field(default_factory=dict)


def software_segments(item: bytes | memoryview, counters: VpnCounters) -> list[bytes]:
    """Complete IP packets for a header + packet ``item`` (empty when it is malformed)."""
    header = VnetHeader.unpack(item)
    packet = bytes(item[VNET_HDR_SIZE:])
    if header.is_plain:
        return [packet]
    try:
        parts = segment(header, packet)
    except SegmentationError as error:
        counters.bad_records += 1
        log_event(log, "vpn: bad virtio-net header", logging.DEBUG, error=str(error))
        return []
    if len(parts) > 1:
        counters.segmented += 1
    return parts


class Outbox:
    """Records for one stream: batched per loop iteration, bounded, one writer task.

    ``put`` takes packets as the local device reads them (``local_vnet``: with a
    virtio-net header); the stream carries v2 records (``wire_vnet``) or v1 ones, and
    the outbox converts: a header of zeros for a plain packet on a v2 stream, software
    segmentation for a super-packet on a v1 stream.
    """

    def __init__(
        self,
        stream: FabricStream,
        limit: int,
        counters: VpnCounters,
        *,
        local_vnet: bool = False,
        wire_vnet: bool = False,
    ) -> None:
        self.stream = stream
        self.limit = limit
        self.counters = counters
        self.local_vnet = local_vnet
        self.wire_vnet = wire_vnet
        self._parts: list[bytes | memoryview] = []
        self._size = 0
        self._wake = asyncio.Event()
        self._draining = False
        self.urgent = stream.traffic_class in URGENT_CLASSES
        """DNS and interactive: :meth:`write_now` at the end of the read burst that
        queued it, not one loop turn later behind the bulk writers (ADR 0046)."""
        self.closed = False
        self._task = asyncio.create_task(self._run())

    def put(self, packet: bytes) -> None:
        if self.closed or self._size + len(packet) > self.limit:
            self.counters.dropped += 1
            return
        parts = self._parts
        if self.local_vnet:
            if self.wire_vnet:
                parts.append((len(packet) - VNET_HDR_SIZE).to_bytes(2, "big"))
                parts.append(packet)
                self._size += len(packet) + 2
            else:
                for piece in software_segments(packet, self.counters):
                    parts.append(len(piece).to_bytes(2, "big"))
                    parts.append(piece)
                    self._size += len(piece) + 2
        else:
            parts.append(len(packet).to_bytes(2, "big"))
            if self.wire_vnet:
                parts.append(PLAIN_HEADER)
                self._size += VNET_HDR_SIZE
            parts.append(packet)
            self._size += len(packet) + 2
        self._wake.set()

    def write_now(self) -> None:
        """Hand what is queued to the stream at once, unless the writer task waits for
        it to drain (then the task writes it when it may)."""
        if self._draining or not self._parts or self.closed:
            return
        try:
            self._write()
        except (ConnectionError, ProtocolError) as error:
            log_event(log, "vpn stream ended", logging.DEBUG, error=str(error))
            self.closed = True
            self._task.cancel()
            return
        self._wake.set()  # the task drains

    def _write(self) -> None:
        batch = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        self.stream.write(batch)

    async def _run(self) -> None:
        stream = self.stream
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._parts:
                    self._write()
                self._draining = True
                await stream.drain()
                self._draining = False
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


class _ThreadedIo:
    """TUN reads and writes on threads: the syscalls (where the kernel forwards, segments
    and runs the receiving TCP stack) release the GIL and run on the other core while
    the event loop does the Python work.

    One reader per queue fd waits with ``poll`` and hands each burst to the loop
    (``call_soon_threadsafe``) with at most ``BURSTS_IN_FLIGHT`` bursts not yet
    processed; one writer drains a queue of packet lists in order, bounded by
    ``WRITE_BACKLOG`` packets (beyond that it drops, counted as ``dropped``).
    """

    BURSTS_IN_FLIGHT = 4
    WRITE_BACKLOG = 8192

    def __init__(self, port: TunPort) -> None:
        self.port = port
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._wake_r, self._wake_w = os.pipe()
        self._slots = threading.Semaphore(self.BURSTS_IN_FLIGHT)
        self._writes: queue.SimpleQueue[Sequence[Record] | None] = queue.SimpleQueue()
        self._queued = 0  # packets put (loop thread only)
        self._written = 0  # packets taken (writer thread only)
        self._threads = [
            threading.Thread(target=self._read_loop, args=(fd,), daemon=True, name=f"tun-read-{fd}")
            for fd in port.fds
        ]
        self._threads.append(
            threading.Thread(target=self._write_loop, daemon=True, name="tun-write")
        )
        for thread in self._threads:
            thread.start()

    def _read_loop(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        read = os.read
        while not self._stopped:
            if not self._slots.acquire(timeout=0.2):
                continue
            poller.poll()
            if self._stopped:
                return
            packets: list[bytes] = []
            try:
                for _ in range(READ_BURST):
                    packets.append(read(fd, TUN_READ))
            except BlockingIOError:
                pass
            except OSError as error:
                if self._stopped:
                    return
                log_event(log, "tun read failed", logging.WARNING, error=str(error))
            if not packets:
                self._slots.release()
                continue
            try:
                self._loop.call_soon_threadsafe(self._deliver, packets)
            except RuntimeError:  # the loop is closed
                return

    def _deliver(self, packets: list[bytes]) -> None:
        try:
            self.port.deliver(packets)
        finally:
            self._slots.release()

    def write(self, packets: Sequence[Record]) -> None:
        if self._queued - self._written > self.WRITE_BACKLOG:
            self.port.counters.dropped += len(packets)
            return
        self._queued += len(packets)
        self._writes.put(packets)

    def _write_loop(self) -> None:
        write = os.write
        counters = self.port.counters
        fd = self.port.fd
        while (packets := self._writes.get()) is not None:
            for packet in packets:
                try:
                    write(fd, packet)
                except OSError:
                    counters.tun_write_errors += 1
            counters.packets_in += len(packets)
            self._written += len(packets)

    def close(self) -> None:
        self._stopped = True
        os.write(self._wake_w, b"x")
        self._writes.put(None)
        for thread in self._threads:
            thread.join(timeout=2)
        os.close(self._wake_r)
        os.close(self._wake_w)


class TunPort:
    """Non-blocking reads of a TUN device's queues (``on_packets`` gets each burst), writes.

    ``vnet``: the device was opened with ``IFF_VNET_HDR``; what it reads and writes is a
    virtio-net header followed by the packet.  :meth:`write_records` takes records as a
    stream carried them (``wire_vnet``: v2) and converts for the device.

    ``urgent_fd``: the queue the kernel steers latency flows to (one of ``fd``); it is
    read before every burst of another queue, so a ping is not read behind the bulk
    super-packets queued before it (ADR 0071).
    """

    def __init__(
        self,
        fd: int | tuple[int, ...],
        on_packets: Callable[[list[bytes]], None],
        counters: VpnCounters,
        *,
        vnet: bool = False,
        threads: bool = False,
        uso: bool = False,
        urgent_fd: int | None = None,
    ) -> None:
        self.fds = (fd,) if isinstance(fd, int) else tuple(fd)
        self.fd = self.fds[0]
        if urgent_fd is not None and urgent_fd not in self.fds[1:]:
            raise ValueError("urgent_fd: one of the device's queues after the first")
        self.urgent_fd = urgent_fd
        self.vnet = vnet
        self.uso = vnet and uso
        """The kernel takes USO: UDP runs are coalesced on read, USO records written as they are."""
        self.on_packets = on_packets
        self.counters = counters
        self._loop = asyncio.get_running_loop()
        self._threaded: _ThreadedIo | None = None
        if threads:
            self._threaded = _ThreadedIo(self)
        else:
            for fd_ in self.fds:
                self._loop.add_reader(fd_, self._readable, fd_)

    def deliver(self, packets: list[bytes]) -> None:
        if self.vnet:
            if self.uso and len(packets) > 1:
                before = len(packets)
                packets = coalesce_udp(packets)
                if len(packets) < before:
                    merged = sum(1 for p in packets if p[1] == GSO_UDP_L4)
                    self.counters.coalesced += before - len(packets) + merged
            self.counters.gso_out += sum(1 for p in packets if p[1])
        self.on_packets(packets)

    def _readable(self, fd: int) -> None:
        urgent = self.urgent_fd
        if urgent is not None and fd != urgent:
            self._readable(urgent)  # latency flows first, then this burst
        packets: list[bytes] = []
        read = os.read
        try:
            for _ in range(READ_BURST):
                packets.append(read(fd, TUN_READ))
        except BlockingIOError:
            pass
        except OSError as error:
            log_event(log, "tun read failed", logging.WARNING, error=str(error))
        if packets:
            self.deliver(packets)

    def write(self, packets: Sequence[Record]) -> None:
        """Packets in the device's own format."""
        if self._threaded is not None:
            self._threaded.write(packets)
            return
        write = os.write
        fd = self.fd
        counters = self.counters
        for packet in packets:
            try:
                write(fd, packet)
            except OSError:
                counters.tun_write_errors += 1
        counters.packets_in += len(packets)

    def read_now(self) -> None:
        """Read what the device holds now, without waiting for the loop's poll (ADR 0057).

        After an urgent packet went into the device, its answer is often already there:
        the kernel forwards a written packet, and a host on the exit's network answers a
        ping, inside the ``write`` syscall.  Read in the same task step, it leaves before
        the rest of the loop turn (bulk records into the device) and the next poll.  On
        threads the reader waits in ``poll`` and reads it as it arrives (not changed)."""
        if self._threaded is None:
            for fd in self.fds:
                if fd != self.urgent_fd:  # read first by every other queue's read
                    self._readable(fd)

    def write_records(self, items: Sequence[Record], wire_vnet: bool) -> None:
        if wire_vnet and self.vnet and not self.uso:
            # A device whose kernel lacks USO cannot take a UDP super-packet: cut it here.
            if any(item[1] == GSO_UDP_L4 for item in items):
                items = [
                    piece
                    for item in items
                    for piece in (
                        [PLAIN_HEADER + p for p in software_segments(item, self.counters)]
                        if item[1] == GSO_UDP_L4
                        else [item]
                    )
                ]
            self.write(items)
        elif wire_vnet == self.vnet:
            self.write(items)
        elif self.vnet:  # a v1 record into a device with headers
            self.write([PLAIN_HEADER + item for item in items])
        else:  # a v2 record into a plain device: segment in software
            counters = self.counters
            packets: list[bytes] = []
            for item in items:
                packets.extend(software_segments(item, counters))
            self.write(packets)

    def head(self, packet: bytes) -> bytes:
        """The start of the IP packet (what the classifier reads)."""
        if self.vnet:
            return packet[VNET_HDR_SIZE : VNET_HDR_SIZE + HEAD]
        return packet

    def close(self) -> None:
        if self._threaded is not None:
            self._threaded.close()
            return
        for fd in self.fds:
            self._loop.remove_reader(fd)


class _Pump:
    """Decode records from a stream into the device until EOF; counts what the peer sent.

    ``opened``: when the preamble was written; ``window``: how long after that a reset
    may still be an exit's refusal of ``AFV2`` (:func:`refused_v2`).
    """

    def __init__(
        self, stream: FabricStream, port: TunPort, wire_vnet: bool, opened: float, window: float
    ) -> None:
        self.stream = stream
        self.port = port
        self.wire_vnet = wire_vnet
        self.opened = opened
        self.window = window
        self.received = 0

    def accepted(self, now: float) -> bool:
        """The exit took this v2 stream: it sent a byte, or did not reset it in time."""
        return self.wire_vnet and (self.received > 0 or now - self.opened >= self.window)

    async def run(self) -> None:
        """Write what each ``read`` returns into the device.  No yield between chunks:
        while the pump keeps up, what it finds buffered is what one carrier read decoded,
        at most the session window (1 MiB on a fast LAN path, ADR 0070; its stream's
        window bounds it otherwise); one yield per 256 KiB (ADR 0066) cost bulk 5-20 %
        in three of four alternating series without a measurable gain for the ping (ADR
        0070)."""
        decoder = BatchDecoder(self.wire_vnet)
        port, stream = self.port, self.stream
        counters = port.counters
        while True:
            data = await stream.read(READ_CHUNK)
            if not data:
                return
            self.received += len(data)
            counters.bytes_in += len(data)
            packets = decoder.feed(data)
            if packets:
                port.write_records(packets, self.wire_vnet)


def refusal_window(stream: FabricStream) -> float:
    """``max(2 x srtt, REFUSAL_WINDOW)`` on the stream's session (its first hop: through
    relays the floor covers the rest)."""
    try:
        srtt = stream.connection.session.rtt.srtt
    except (AttributeError, ConnectionError, ProtocolError):
        srtt = None
    return max(2 * (srtt or 0.0), REFUSAL_WINDOW)


def refused_v2(
    error: StreamResetError, wire_vnet: bool, received: int, age: float, window: float
) -> bool:
    """Whether a reset says "this exit does not know AFV2": an exit that predates it
    fails on the preamble and resets the stream (INTERNAL_ERROR) before sending a byte,
    one round trip after the preamble (``age`` < ``window``).  A new exit's dispatcher
    resets with the same code when its handler fails, which on a stream that only
    uploads can come much later, still with nothing received: not a refusal."""
    return (
        wire_vnet
        and error.remote
        and received == 0
        and error.code == ErrorCode.INTERNAL_ERROR
        and age < window
    )


def _offload_status(port: TunPort, counters: VpnCounters) -> dict[str, object]:
    return {
        "vnet_hdr": port.vnet,
        "queues": len(port.fds),
        "urgent_queue": port.urgent_fd is not None,
        "gso_out": counters.gso_out,
        "segmented": counters.segmented,
        "coalesced": counters.coalesced,
        "bad_records": counters.bad_records,
        "bytes_by_class": dict(counters.by_class),
    }


def _limit(traffic_class: TrafficClass) -> int:
    return OUTBOX_LIMIT.get(traffic_class, DEFAULT_OUTBOX_LIMIT)


class VpnClient:
    """The device side of the VPN: one TUN fd, streams opened on demand."""

    def __init__(
        self,
        opener: StreamOpener,
        fd: int | tuple[int, ...],
        *,
        shards: int = 2,
        heavy_bytes: int | None = None,
        rules: ClassRules | None = None,
        vnet: bool = False,
        threads: bool = False,
        uso: bool = False,
        urgent_fd: int | None = None,
        service: str = VPN_SERVICE,
    ) -> None:
        self.opener = opener
        self.wire_vnet = vnet
        """New streams carry v2 records; False while the exit refuses them (it predates AFV2)."""
        self.local_vnet = vnet
        self.wire_fallbacks = 0
        self.reprobe_after = REPROBE_AFTER
        """Seconds after the exit last refused v2 before a new stream tries it again."""
        self._refused_at = 0.0
        self._probe: _Pump | None = None
        self._probe_opening = False
        self._probe_timer: asyncio.TimerHandle | None = None
        self._pumps: dict[tuple[TrafficClass, int], _Pump] = {}
        self.service = service
        self.client_id = os.urandom(8)
        self.classifier = FlowClassifier(shards, heavy_bytes=heavy_bytes, rules=rules)
        self.counters = VpnCounters()
        self.port = TunPort(
            fd, self._on_packets, self.counters, vnet=vnet, threads=threads, uso=uso,
            urgent_fd=urgent_fd,
        )  # fmt: skip
        self._outboxes: dict[tuple[TrafficClass, int], Outbox] = {}
        self._opening: dict[tuple[TrafficClass, int], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _on_packets(self, packets: list[bytes]) -> None:
        now = time.monotonic()
        classify = self.classifier.classify
        counters = self.counters
        by_class = counters.by_class
        extra = VNET_HDR_SIZE if self.port.vnet else 0
        head = self.port.head
        urgent: list[Outbox] = []
        for packet in packets:
            size = len(packet) - extra
            key = classify(head(packet), now, size)
            counters.packets_out += 1
            counters.bytes_out += size
            name = key[0].name.lower()
            by_class[name] = by_class.get(name, 0) + size
            outbox = self._outboxes.get(key)
            if outbox is not None and not outbox.closed:
                outbox.put(packet)
                if outbox.urgent:
                    urgent.append(outbox)
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
        for outbox in urgent:
            outbox.write_now()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_probe(self) -> bool:
        """Whether this new stream is the probe that tries v2 again after a fallback
        (``reprobe_after`` seconds after the last refusal; one probe at a time)."""
        if self.wire_vnet or not self.local_vnet or self._probe is not None:
            return False
        if self._probe_opening or time.monotonic() - self._refused_at < self.reprobe_after:
            return False
        self._probe_opening = True
        return True

    async def _open(self, key: tuple[TrafficClass, int]) -> None:
        traffic_class, shard = key
        probe = self._take_probe()
        wire_vnet = self.wire_vnet or probe
        try:
            stream = await self.opener.open_stream(self.service, traffic_class)
            stream.write(preamble(self.client_id, shard, wire_vnet))
            opened = time.monotonic()
        except (ConnectionError, ProtocolError, OSError, LookupError) as error:
            if probe:
                self._probe_opening = False
            dropped = self._opening.pop(key, [])
            self.counters.dropped += len(dropped)
            log_event(log, "vpn: no stream", logging.WARNING, error=str(error) or "?")
            return
        outbox = Outbox(
            stream, _limit(traffic_class), self.counters,
            local_vnet=self.port.vnet, wire_vnet=wire_vnet,
        )  # fmt: skip
        self._outboxes[key] = outbox
        for packet in self._opening.pop(key, []):
            outbox.put(packet)
        log_event(
            log, "vpn stream open", traffic_class=traffic_class.name.lower(), shard=shard,
            records="v2" if wire_vnet else "v1",
        )  # fmt: skip
        pump = _Pump(stream, self.port, wire_vnet, opened, refusal_window(stream))
        self._pumps[key] = pump
        if probe:
            self._probe, self._probe_opening = pump, False
            self._probe_timer = asyncio.get_running_loop().call_later(
                pump.window, self._probe_settled, pump
            )
        try:
            await pump.run()
        except StreamResetError as error:
            age = time.monotonic() - opened
            if refused_v2(error, wire_vnet, pump.received, age, pump.window) and not any(
                other.accepted(opened + age) for other in self._pumps.values() if other is not pump
            ):
                self._fall_back(pump, age)
            else:
                log_event(log, "vpn stream lost", logging.INFO, error=str(error))
        except (ConnectionError, ProtocolError) as error:
            log_event(log, "vpn stream lost", logging.INFO, error=str(error))
        finally:
            outbox.close()
            if self._outboxes.get(key) is outbox:
                del self._outboxes[key]
            if self._pumps.get(key) is pump:
                del self._pumps[key]
            if self._probe is pump:  # ended before it settled either way: the next one tries
                self._probe = None
                if self._probe_timer is not None:
                    self._probe_timer.cancel()

    def _probe_settled(self, pump: _Pump) -> None:
        """The probe stream outlived its refusal window: the exit takes v2 records now."""
        if self._probe is not pump:
            return
        self._probe = None
        self.wire_vnet = True
        log_event(log, "vpn: exit takes v2 records again", logging.WARNING)

    def _fall_back(self, pump: _Pump, age: float) -> None:
        """An exit reset a v2 stream before answering, within the stream's refusal window,
        while no other v2 stream showed it takes v2: it predates AFV2 (docs/services.md).
        New streams carry v1 records (segmented here in software) until a probe
        ``reprobe_after`` seconds later finds v2 taken (ADR 0034)."""
        self._refused_at = time.monotonic()
        if self._probe is pump:  # the exit still refuses v2
            self._probe = None
            if self._probe_timer is not None:
                self._probe_timer.cancel()
            log_event(log, "vpn: exit still refuses v2 records", logging.INFO)
            return
        if self.wire_vnet:
            self.wire_vnet = False
            self.wire_fallbacks += 1
            log_event(
                log, "vpn: exit refused v2 records (it predates offloads); using v1",
                logging.WARNING, after_ms=round(age * 1e3, 1), reprobe_s=self.reprobe_after,
            )  # fmt: skip
        for other_key, other in list(self._outboxes.items()):  # reopen as v1 on demand
            if other.wire_vnet:
                other.abort()
                if self._outboxes.get(other_key) is other:
                    del self._outboxes[other_key]

    def status(self) -> dict[str, object]:
        return {
            "role": "client",
            "streams": len(self._outboxes),
            "packets_out": self.counters.packets_out,
            "packets_in": self.counters.packets_in,
            "dropped": self.counters.dropped,
            "bulk_flows": self.classifier.promoted,
            "records": "v2" if self.wire_vnet else "v1",
            "wire_fallbacks": self.wire_fallbacks,
            **_offload_status(self.port, self.counters),
        }

    async def close(self) -> None:
        self.port.close()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        for outbox in self._outboxes.values():
            outbox.abort()  # so the node's drain does not wait for idle tunnel streams
        await cancel_and_wait(self._tasks)


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

    def __init__(
        self,
        fd: int | tuple[int, ...],
        *,
        shards: int = 2,
        heavy_bytes: int | None = None,
        rules: ClassRules | None = None,
        vnet: bool = False,
        threads: bool = False,
        uso: bool = False,
        urgent_fd: int | None = None,
        v1_only: bool = False,
    ) -> None:
        self.v1_only = v1_only
        """Refuse v2 streams as an exit that predates AFV2 did (tests clients against one)."""
        self.classifier = FlowClassifier(shards, heavy_bytes=heavy_bytes, rules=rules)
        self.counters = VpnCounters()
        self.port = TunPort(
            fd, self._on_packets, self.counters, vnet=vnet, threads=threads, uso=uso,
            urgent_fd=urgent_fd,
        )  # fmt: skip
        self._clients: dict[bytes, _ExitClient] = {}
        self._addresses: dict[bytes, bytes] = {}  # tunnel source address -> client id

    async def handle(self, stream: FabricStream) -> None:
        """The dispatcher handler for ``vpn`` streams."""
        head = await stream.readexactly(PREAMBLE_SIZE)
        client_id, shard, wire_vnet = parse_preamble(head)
        if wire_vnet and self.v1_only:
            raise VpnFormatError("not a VPN stream (bad preamble)")  # what AFV1-only code did
        client = self._clients.setdefault(client_id, _ExitClient())
        outbox = Outbox(
            stream, _limit(stream.traffic_class), self.counters,
            local_vnet=self.port.vnet, wire_vnet=wire_vnet,
        )  # fmt: skip
        client.outboxes[(stream.traffic_class, shard)] = outbox
        decoder = BatchDecoder(wire_vnet)
        skip = VNET_HDR_SIZE if wire_vnet else 0
        addresses = self._addresses
        urgent = outbox.urgent
        try:
            while True:
                data = await stream.read(READ_CHUNK)
                if not data:
                    break
                self.counters.bytes_in += len(data)
                packets = decoder.feed(data)
                if packets:
                    addresses[bytes(source(packets[-1][skip : skip + HEAD]))] = client_id
                    self.port.write_records(packets, wire_vnet)
                    if urgent:  # the answer may be in the device already: send it now
                        self.port.read_now()
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
        by_class = counters.by_class
        extra = VNET_HDR_SIZE if self.port.vnet else 0
        head = self.port.head
        classify = self.classifier.classify
        urgent: list[Outbox] = []
        for packet in packets:
            start = head(packet)
            client_id = self._addresses.get(destination(start))
            client = self._clients.get(client_id) if client_id is not None else None
            if client is None:
                counters.dropped += 1
                continue
            size = len(packet) - extra
            key = classify(start, now, size)
            outbox = client.pick(key)
            if outbox is None:
                counters.dropped += 1
                continue
            counters.packets_out += 1
            counters.bytes_out += size
            name = key[0].name.lower()
            by_class[name] = by_class.get(name, 0) + size
            outbox.put(packet)
            if outbox.urgent:
                urgent.append(outbox)
        for outbox in urgent:
            outbox.write_now()

    def status(self) -> dict[str, object]:
        return {
            "role": "exit",
            "clients": len(self._clients),
            "streams": sum(len(c.outboxes) for c in self._clients.values()),
            "packets_out": self.counters.packets_out,
            "packets_in": self.counters.packets_in,
            "dropped": self.counters.dropped,
            **_offload_status(self.port, self.counters),
        }

    async def close(self) -> None:
        self.port.close()
        for client in self._clients.values():
            for outbox in list(client.outboxes.values()):
                outbox.abort()
