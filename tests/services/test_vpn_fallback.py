"""Which stream resets make an offloading client fall back to v1 records, and how it
finds v2 again (ADR 0034).

The in-process tests run a real client node and exit node on loopback; the exit's
``vpn`` handler is scripted, and the node's real dispatcher turns its exceptions into
``INTERNAL_ERROR`` resets, exactly as it does for a real exit.  A datagram socketpair
stands in for the client's TUN fd.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from accessfabric.errors import ErrorCode
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, PeerConfig
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import FabricStream, StreamResetError
from accessfabric.observe.log_format import event_fields
from accessfabric.services.fabric import DirectStreamOpener
from accessfabric.services.vnet import PLAIN_HEADER
from accessfabric.services.vpn import REFUSAL_WINDOW, VpnClient, refused_v2
from accessfabric.services.vpn_wire import (
    PREAMBLE_SIZE,
    VPN_SERVICE,
    BatchDecoder,
    FlowClassifier,
    VpnFormatError,
    parse_preamble,
)
from accessfabric.wire.registry import TrafficClass
from tests.services.fabric_pair import LOOPBACK

from ..conditions import until

SHARDS = 2


def test_only_an_exits_prompt_internal_error_before_any_byte_on_a_v2_stream_refuses() -> None:
    old_exit = StreamResetError(5, ErrorCode.INTERNAL_ERROR, remote=True)
    prompt = {"age": 0.002, "window": REFUSAL_WINDOW}
    assert refused_v2(old_exit, wire_vnet=True, received=0, **prompt)
    assert not refused_v2(old_exit, wire_vnet=False, received=0, **prompt)  # already v1
    assert not refused_v2(old_exit, wire_vnet=True, received=12, **prompt)  # it answered
    # the same reset long after the preamble: a v2 exit's handler failed
    late = {"age": REFUSAL_WINDOW + 0.5, "window": REFUSAL_WINDOW}
    assert not refused_v2(old_exit, wire_vnet=True, received=0, **late)
    local = StreamResetError(5, ErrorCode.INTERNAL_ERROR, remote=False)
    assert not refused_v2(local, wire_vnet=True, received=0, **prompt)
    for code in (ErrorCode.CANCEL, ErrorCode.ACCESS_DENIED, ErrorCode.SERVICE_UNAVAILABLE):
        other = StreamResetError(5, code, remote=True)
        assert not refused_v2(other, wire_vnet=True, received=0, **prompt), code


def _udp(dport: int) -> bytes:
    """A plain UDP packet from the tunnel address, with the virtio-net header a device
    opened with offloads puts in front of it; 400 bytes of payload, so one to port 5201
    is ``reliable`` (not small), to 53 ``dns``, to 22 ``interactive``."""
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28 + 400, 1, 0x4000, 64, 17, 0,
        bytes((10, 99, 0, 2)), bytes((10, 0, 0, 1)),
    )  # fmt: skip
    return PLAIN_HEADER + head + struct.pack("!HHHH", 40000, dport, 408, 0) + bytes(400)


@dataclass
class ScriptedExit:
    """The exit's ``vpn`` handler.  ``refuse_v2``: fail on an ``AFV2`` preamble as an exit
    that predates v2 does (``VpnFormatError``); ``fail_ports``: fail a stream at once
    after its preamble (a bug in a v2 exit); ``failing``: set it to make every open
    stream's handler fail (``RuntimeError``, e.g. the device went away); ``echo``: send
    each packet back (so the client receives bytes)."""

    refuse_v2: bool = False
    fail_ports: set[int] = field(default_factory=set)
    echo: bool = False
    failing: asyncio.Event = field(default_factory=asyncio.Event)
    streams: list[bool] = field(default_factory=list)
    """``AFV2`` or not, per stream, in the order they came."""
    packets: list[tuple[bool, int]] = field(default_factory=list)
    """(v2 record, destination port) per packet received."""

    async def handle(self, stream: FabricStream) -> None:
        _, _, wire_vnet = parse_preamble(await stream.readexactly(PREAMBLE_SIZE))
        self.streams.append(wire_vnet)
        if wire_vnet and self.refuse_v2:
            raise VpnFormatError("not a VPN stream (bad preamble)")  # what AFV1-only code did
        decoder = BatchDecoder(wire_vnet)
        failing = asyncio.ensure_future(self.failing.wait())
        try:
            while True:
                reading = asyncio.ensure_future(stream.read(65536))
                await asyncio.wait({reading, failing}, return_when=asyncio.FIRST_COMPLETED)
                if failing.done():
                    reading.cancel()
                    raise RuntimeError("the exit's handler failed")
                data = reading.result()
                if not data:
                    return
                for record in decoder.feed(data):
                    packet = record[10:] if wire_vnet else record
                    port = int.from_bytes(packet[22:24], "big")
                    self.packets.append((wire_vnet, port))
                    if port in self.fail_ports:
                        raise RuntimeError("the exit's handler failed")
                    if self.echo:  # a record's length leaves out its virtio-net header
                        stream.write(len(packet).to_bytes(2, "big") + record)
        finally:
            failing.cancel()


@dataclass
class Lab:
    client: VpnClient
    exit: ScriptedExit

    def send(self, *dports: int) -> None:
        self.client._on_packets([_udp(port) for port in dports])  # as the device read them


@dataclass
class RoutedOpener:
    """Opens on the session after a pause, as an opener that sets up a route does (so
    streams the client opens at once are all opening together)."""

    inner: DirectStreamOpener

    async def open_stream(self, service: str, traffic_class: TrafficClass) -> FabricStream:
        await asyncio.sleep(0.01)
        return await self.inner.open_stream(service, traffic_class)


@asynccontextmanager
async def vpn_lab(tmp_path: Path) -> AsyncIterator[Lab]:
    client_key = NodeKey.generate()
    exit_node = NodeRuntime(
        NodeConfig(
            key_path=tmp_path / "x.key", cert_dir=tmp_path / "x", listen=(LOOPBACK,),
            allow={VPN_SERVICE: (client_key.node_id,)},  # default deny: the client only
        ),
        key=NodeKey.generate(),
    )  # fmt: skip
    await exit_node.start()
    peer = PeerConfig(node_id=exit_node.node_id, endpoints=(exit_node.listeners[0].endpoint,))
    client_node = NodeRuntime(
        NodeConfig(key_path=tmp_path / "c.key", cert_dir=tmp_path / "c", peers=(peer,)),
        key=client_key,
    )
    await client_node.start()
    scripted = ScriptedExit()
    exit_node.dispatcher.register(VPN_SERVICE, scripted.handle)
    ours, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    device.setblocking(False)
    opener = RoutedOpener(
        DirectStreamOpener(client_node.peers.session, {VPN_SERVICE: exit_node.node_id})
    )
    client = VpnClient(opener, ours.fileno(), shards=SHARDS, vnet=True)
    try:
        yield Lab(client, scripted)
    finally:
        await client.close()
        await client_node.shutdown()
        await exit_node.shutdown()
        ours.close()
        device.close()


async def test_a_late_internal_error_on_an_upload_only_stream_keeps_v2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A v2 exit's handler fails on a stream that has only uploaded (0 bytes back) long
    after the preamble: the dispatcher's INTERNAL_ERROR is a lost stream, not a refusal."""
    async with vpn_lab(tmp_path) as lab:
        lab.send(5201)
        await until(lambda: lab.exit.packets == [(True, 5201)], what="the first v2 packet")
        await asyncio.sleep(REFUSAL_WINDOW * 1.2)  # the preamble left before this began
        with caplog.at_level(logging.INFO, logger="accessfabric.services.vpn"):
            lab.exit.failing.set()
            await until(lambda: lab.client.status()["streams"] == 0, what="the stream reset")
        lost = [event_fields(r) for r in caplog.records if r.getMessage() == "vpn stream lost"]
        assert lost and "reset by peer: INTERNAL_ERROR" in lost[0]["error"]  # the old rule's
        status = lab.client.status()
        assert status["records"] == "v2" and status["wire_fallbacks"] == 0, status
        lab.exit.failing.clear()
        lab.send(5201)
        await until(lambda: len(lab.exit.packets) == 2, what="a packet on a new stream")
        assert lab.exit.streams == [True, True] and lab.exit.packets[1] == (True, 5201)


def _another_reliable_stream(shards: int) -> int:
    """A port whose packets ride another ``reliable`` stream than port 5201's."""
    classifier = FlowClassifier(shards)
    first = classifier.classify(_udp(5201)[10:], 0.0)
    return next(
        port for port in range(5202, 6000) if classifier.classify(_udp(port)[10:], 0.0) != first
    )


async def test_an_immediate_internal_error_falls_back_and_a_later_probe_finds_v2(
    tmp_path: Path,
) -> None:
    async with vpn_lab(tmp_path) as lab:
        lab.exit.refuse_v2 = True  # as an exit that predates v2
        lab.send(5201)
        await until(lambda: lab.client.status()["wire_fallbacks"] == 1, what="the fallback")
        assert lab.client.status()["records"] == "v1"
        lab.send(53)  # a new stream (dns class), within the back-off: v1, carried
        await until(lambda: (False, 53) in lab.exit.packets, what="a v1 packet")
        assert lab.exit.streams == [True, False]

        lab.client.reprobe_after = 0.0  # the back-off (REPROBE_AFTER) has passed
        lab.send(5201, 22)  # two new streams at once: one probe (v2, still refused), one v1
        await until(lambda: (False, 22) in lab.exit.packets, what="the v1 one")
        await until(lambda: len(lab.exit.streams) == 4, what="the probe")
        await until(lambda: lab.client.status()["streams"] == 2, what="the probe refused")
        assert sorted(lab.exit.streams[2:]) == [False, True]
        status = lab.client.status()
        assert status["records"] == "v1" and status["wire_fallbacks"] == 1, status

        lab.exit.refuse_v2 = False  # the exit was upgraded
        lab.send(5201)  # a probe again, taken
        await until(lambda: (True, 5201) in lab.exit.packets, what="a v2 packet")
        await until(
            lambda: lab.client.status()["records"] == "v2",
            timeout=REFUSAL_WINDOW + 5, what="v2 records again",
        )  # fmt: skip
        other = _another_reliable_stream(SHARDS)
        lab.send(other)  # and new streams carry v2 again
        await until(lambda: (True, other) in lab.exit.packets, what="a v2 packet, new stream")
        assert lab.exit.streams[4:] == [True, True]
        assert lab.client.status()["wire_fallbacks"] == 1


async def test_a_prompt_internal_error_while_another_v2_stream_is_answered_keeps_v2(
    tmp_path: Path,
) -> None:
    """Once the exit answered on a v2 stream (still open), a prompt INTERNAL_ERROR on a
    new v2 stream is that exit failing, not refusing AFV2: only the first streams, before
    any answer, can make the client fall back."""
    async with vpn_lab(tmp_path) as lab:
        lab.exit.echo = True
        lab.exit.fail_ports.add(53)
        lab.send(5201)
        await until(lambda: lab.client.counters.packets_in == 1, what="the echo")
        opened = time.monotonic()
        lab.send(53)  # a new stream, failed right after its first record
        await until(lambda: (True, 53) in lab.exit.packets, what="the second stream")
        await until(lambda: lab.client.status()["streams"] == 1, what="its reset")
        assert time.monotonic() - opened < REFUSAL_WINDOW  # prompt: the old rule fell back
        status = lab.client.status()
        assert status["records"] == "v2" and status["wire_fallbacks"] == 0, status
