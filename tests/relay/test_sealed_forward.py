"""A TCP forward through relays is sealed end to end by the node runtime (docs/sealing.md).

Real runtimes on loopback: source (``TcpForwarder`` on the node's stream opener) ->
relay -> destination (``service_host`` to a real local TCP server).  Every relay records
the DATA payloads it forwards; the plaintext marker the TCP client sends never shows up
there, and the bytes arrive intact — also when the relay dies mid-transfer and the stream
resumes on the alternate route.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from pathlib import Path

import pytest

from accessfabric.bench.relay_lab import issue_route, new_initiator
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.control.kernel.objects import NodeRecord
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.errors import ErrorCode
from accessfabric.identity.keys import NodeKey
from accessfabric.node.routing.route_switches import SwitchReason
from accessfabric.node.routing.routes import NoUsableRoute
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import SessionConnection, StreamResetError
from accessfabric.sealing import SealingError, SealInitiator
from accessfabric.sealing.records import CipherSuite
from accessfabric.services.host import node_opener
from accessfabric.services.tcp_forward import TcpForwarder, service_host
from accessfabric.session import events as ev
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import Fabric, build, built, kill

SERVICE = "files"
MARKER = b"PLAINTEXT-MARKER-rdp-ssh-http"
MiB = 1024 * 1024


class Recorder:
    """What a relay forwards: every DATA payload its sessions receive, per stream."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.streams: dict[tuple[int, int], bytearray] = defaultdict(bytearray)
        self.key_exchanges: list[bytes] = []
        runtime.data_plane.hooks.append(self._on_event)

    def _on_event(self, connection: SessionConnection, event: ev.Event) -> None:
        if type(event) is ev.StreamOpened:
            assert isinstance(event, ev.StreamOpened)
            self.key_exchanges.append(bytes(event.key_exchange))
        if type(event) is ev.DataReceived:
            assert isinstance(event, ev.DataReceived)
            self.streams[(id(connection), event.stream_id)] += bytes(event.data)

    @property
    def total(self) -> int:
        return sum(len(data) for data in self.streams.values())

    def saw(self, needle: bytes) -> bool:
        return any(needle in data for data in self.streams.values())


def payload(size: int) -> bytes:
    line = MARKER + b" "
    return (line * (size // len(line) + 1))[:size]


async def digest_server() -> asyncio.Server:
    """The hosted service's target: read to EOF, answer the SHA-256 (hex) and the marker."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        while data := await reader.read(256 * 1024):
            digest.update(data)
        writer.write(digest.hexdigest().encode() + b" " + MARKER)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def routes(fabric: Fabric, *chains: list[int]) -> list[LeasedRoute]:
    out = []
    for index, chain in enumerate(chains, start=1):
        hops = [fabric.source.node_id, *(fabric.relays[i].node_id for i in chain),
                fabric.destination.node_id]  # fmt: skip
        out.append(issue_route(fabric.authority, index, hops, services=(SERVICE,)))
    return out


async def forward(fabric: Fabric, target: asyncio.Server) -> TcpForwarder:
    port = target.sockets[0].getsockname()[1]
    fabric.destination.dispatcher.register(SERVICE, service_host("127.0.0.1", port))
    fabric.destination.access.allow[SERVICE] = frozenset({fabric.source.node_id})
    forwarder = TcpForwarder(node_opener(fabric.source), "127.0.0.1", 0, SERVICE)
    await forwarder.start()
    return forwarder


async def send_through(forwarder: TcpForwarder, data: bytes) -> tuple[str, bytes]:
    """Connect to the forward, send ``data``, half-close, return (hex digest, trailer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", forwarder.port)
    step = 256 * 1024
    for start in range(0, len(data), step):
        writer.write(data[start : start + step])
        await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    digest, _, trailer = answer.partition(b" ")
    return digest.decode(), trailer


@pytest.mark.parametrize("cipher", list(CipherSuite), ids=lambda suite: suite.label)
async def test_forwarded_tcp_through_a_relay_is_sealed(tmp_path: Path, cipher: CipherSuite) -> None:
    fabric = await build(tmp_path, relays=1)
    target = await digest_server()
    recorder = Recorder(fabric.relays[0])
    forwarder = await forward(fabric, target)
    assert fabric.source.routes.sealing is not None
    fabric.source.routes.sealing.cipher = cipher  # the opener's [sealing] cipher
    try:
        fabric.source.routes.set_routes(SERVICE, TrafficClass.RELIABLE, routes(fabric, [0]))
        data = payload(2 * MiB)
        digest, trailer = await send_through(forwarder, data)
        assert digest == hashlib.sha256(data).hexdigest()
        assert trailer == MARKER  # the reply came back intact too
        assert recorder.total > len(data)  # the relay did forward every (sealed) byte ...
        assert not recorder.saw(MARKER), "the relay saw plaintext"  # ... never the plaintext
        assert not recorder.saw(MARKER[:12])
        assert fabric.destination.data_plane.router.sealed == 1
        # the relay saw the opener's choice in the key exchange (version 4, suite byte)
        assert [blob[:2] for blob in recorder.key_exchanges] == [bytes((4, cipher.value))]
    finally:
        await forwarder.close()
        target.close()
        await fabric.stop()


async def test_sealed_forward_survives_relay_death(tmp_path: Path) -> None:
    fabric = await build(tmp_path, relays=2)
    target = await digest_server()
    recorders = [Recorder(relay) for relay in fabric.relays]
    forwarder = await forward(fabric, target)
    try:
        src = fabric.source
        src.routes.set_routes(SERVICE, TrafficClass.RELIABLE, routes(fabric, [0], [1]))
        data = payload(24 * MiB)
        killed = asyncio.Event()

        async def kill_midway() -> None:  # once relay 0 forwarded a third of the bytes
            while recorders[0].total < len(data) // 3:
                await asyncio.sleep(0.005)
            kill(fabric.relays[0])
            killed.set()

        killer = asyncio.create_task(kill_midway())
        digest, trailer = await send_through(forwarder, data)
        killer.cancel()
        assert killed.is_set()
        assert digest == hashlib.sha256(data).hexdigest()
        assert trailer == MARKER
        assert src.routes.switches.counts == {SwitchReason.SESSION_LOST: 1}
        assert fabric.destination.data_plane.router.adopted == 1
        assert fabric.destination.data_plane.router.sealed == 1  # one stream, sealed across resume
        for recorder in recorders:
            assert recorder.total > len(data) // 4
            assert not recorder.saw(MARKER[:12])
    finally:
        await forwarder.close()
        target.close()
        await fabric.stop()


async def test_unknown_destination_key_fails_closed(tmp_path: Path) -> None:
    fabric = await build(tmp_path, relays=1)
    recorder = Recorder(fabric.relays[0])
    try:
        src, dst = fabric.source, fabric.destination
        del src.sealing_keys._keys[dst.node_id]
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0]))
        with pytest.raises(NoUsableRoute, match="no sealing key known for destination node"):
            await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        assert recorder.total == 0  # nothing went out
    finally:
        await fabric.stop()


async def test_destination_refuses_an_unsealed_relayed_open(tmp_path: Path) -> None:
    async with built(tmp_path, relays=1) as fabric:
        src, dst = fabric.source, fabric.destination
        (route,) = fabric.routes([0])
        # What an old or misconfigured source would send: no sealing key exchange.
        stream = await src.routes._open_on(
            route, "echo", TrafficClass.INTERACTIVE,
            key_exchange=b"", resume_token=b"", resume_key=b"",
        )  # fmt: skip
        stream.write(b"must not reach the service in clear")
        with pytest.raises(StreamResetError) as refused:
            await asyncio.wait_for(stream.read(), 10)
        assert refused.value.code == ErrorCode.REFUSED_STREAM
        assert dst.data_plane.router.refused == {"unsealed relayed stream": 1}
        assert dst.data_plane.router.sealed == 0


async def test_destination_refuses_an_opener_whose_key_it_does_not_know(tmp_path: Path) -> None:
    async with built(tmp_path, relays=1) as fabric:
        src, dst = fabric.source, fabric.destination
        del dst.sealing_keys._keys[src.node_id]
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0]))
        stream = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        stream.write(b"hello")
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(stream.read(), 10)
        assert dst.data_plane.router.refused == {"sealing": 1}


async def _open_with_exchange(fabric: Fabric, initiator: SealInitiator, token: bytes,
                              key_exchange: bytes) -> Exception:  # fmt: skip
    """Open a sealed echo stream through the relay whose OPEN_STREAM carries
    ``key_exchange`` (what a relay that rewrote the opener's would forward), seal a record
    with ``initiator``; the error the opener gets."""
    stream = await fabric.source.routes.open_stream(
        "echo", TrafficClass.INTERACTIVE, key_exchange=key_exchange, resume_token=token,
        resume_key=initiator.resume_key,
    )  # fmt: skip
    stream.write(initiator.sealer.seal(b"hello"))
    try:
        while data := await asyncio.wait_for(stream.read(), 10):
            initiator.feed_reply(data)
    except (ConnectionError, SealingError) as error:
        return error
    raise AssertionError("the stream ended cleanly")


async def test_a_relay_that_flips_the_cipher_suite_breaks_the_stream(tmp_path: Path) -> None:
    """Downgrade protection on real runtimes: the suite is in the Noise protocol name and
    prologue, so the destination cannot read the flipped exchange's message 1 and refuses
    the stream (``AUTHENTICATION_FAILED``, counted as ``sealing``)."""
    async with built(tmp_path, relays=1) as fabric:
        src, dst = fabric.source, fabric.destination
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0]))
        dst_key = fabric.sealing_key(dst.node_id)
        assert dst_key is not None
        initiator, token = new_initiator(
            fabric.keys[src.node_id], dst_key, "echo", CipherSuite.AES_256_GCM
        )
        flipped = bytes((4, CipherSuite.CHACHA20_POLY1305)) + initiator.key_exchange[2:]
        error = await _open_with_exchange(fabric, initiator, token, flipped)
        assert isinstance(error, StreamResetError)
        assert error.code == ErrorCode.AUTHENTICATION_FAILED
        assert dst.data_plane.router.sealed == 0  # never served: Noise message 1 does not verify
        assert dst.data_plane.router.refused == {"sealing": 1}


async def test_an_unknown_cipher_suite_is_refused_as_sealing(tmp_path: Path) -> None:
    async with built(tmp_path, relays=1) as fabric:
        src, dst = fabric.source, fabric.destination
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0]))
        dst_key = fabric.sealing_key(dst.node_id)
        assert dst_key is not None
        initiator, token = new_initiator(fabric.keys[src.node_id], dst_key, "echo")
        unknown = b"\x04\x09" + initiator.key_exchange[2:]
        error = await _open_with_exchange(fabric, initiator, token, unknown)
        assert isinstance(error, StreamResetError)
        assert error.code == ErrorCode.AUTHENTICATION_FAILED
        assert dst.data_plane.router.refused == {"sealing": 1}  # not served unsealed


def signed_record(authority: Authority, key: NodeKey) -> bytes:
    now_ms = int(time.time() * 1000)
    record = NodeRecord(
        node_id=key.node_id,
        public_key=key.public_key_bytes,
        sealing_public_key=key.sealing_public_key_bytes,
        roles=frozenset({Role.MOBILE_EDGE}),
        tenant="acme",
        organisation_scopes=frozenset(),
        trust_tier=1,
        issued_ms=now_ms - 1000,
        expires_ms=now_ms + 600_000,
        revision=1,
    )
    return authority.issue(record)


async def test_the_opener_sends_its_signed_record_when_the_destination_never_saw_it(
    tmp_path: Path,
) -> None:
    """Least knowledge: a service host's directory need not list the phone that opens a
    stream to it, so a sealed open carries the opener's authority-signed node record."""
    async with built(tmp_path, relays=1) as fabric:
        src, dst = fabric.source, fabric.destination
        del dst.sealing_keys._keys[src.node_id]
        assert src.routes.sealing is not None
        src_key = fabric.keys[src.node_id]
        src.routes.sealing.own_record = lambda: signed_record(fabric.authority, src_key)
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0]))
        stream = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        stream.write(b"hello")
        assert await asyncio.wait_for(stream.read(5), 10) == b"hello"
        assert dst.sealing_keys.get(src.node_id) == src_key.sealing_public_key_bytes
        assert dst.data_plane.router.sealed == 1
        stream.close()


async def test_a_record_from_another_authority_teaches_the_destination_nothing(
    tmp_path: Path,
) -> None:
    async with built(tmp_path, relays=1) as fabric:
        src, dst = fabric.source, fabric.destination
        del dst.sealing_keys._keys[src.node_id]
        assert src.routes.sealing is not None
        forger = Authority(NodeKey.generate())
        src_key = fabric.keys[src.node_id]
        src.routes.sealing.own_record = lambda: signed_record(forger, src_key)
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0]))
        stream = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        stream.write(b"hello")
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(stream.read(), 10)
        assert dst.sealing_keys.get(src.node_id) is None
        assert dst.data_plane.router.refused == {"sealing": 1}


async def test_one_hop_routes_follow_the_switch(tmp_path: Path) -> None:
    async with built(tmp_path, relays=1) as fabric:
        src, dst = fabric.source, fabric.destination
        src.peers.set_peer(dst.node_id, [dst.listeners[0].endpoint])
        (direct,) = [issue_route(fabric.authority, 7, [src.node_id, dst.node_id])]
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, [direct])
        sealed = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        sealed.write(b"one hop, sealed by default")
        assert await sealed.readexactly(26) == b"one hop, sealed by default"
        assert dst.data_plane.router.sealed == 1
        assert src.routes.sealing is not None
        src.routes.sealing.one_hop = False
        plain = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        plain.write(b"one hop, plain")
        assert await plain.readexactly(14) == b"one hop, plain"
        assert dst.data_plane.router.sealed == 1  # the second one was not sealed
        sealed.close()
        plain.close()


async def test_an_unsealed_one_hop_stream_never_resumes_through_a_relay(tmp_path: Path) -> None:
    fabric = await build(tmp_path, relays=1)
    recorder = Recorder(fabric.relays[0])
    try:
        src, dst = fabric.source, fabric.destination
        src.peers.set_peer(dst.node_id, [dst.listeners[0].endpoint])
        assert src.routes.sealing is not None
        src.routes.sealing.one_hop = False
        src.routes.resume_window = 1.5
        direct = issue_route(fabric.authority, 7, [src.node_id, dst.node_id])
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, [direct])
        stream = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        stream.write(b"plain, one hop")
        assert await stream.readexactly(14) == b"plain, one hop"
        # the direct lease is gone, only a relayed route is left; the session dies
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0]))
        session = src.peers.current(dst.node_id)
        assert session is not None
        session.abort()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(stream.read(), 10)
        for _ in range(100):
            if src.routes.failed:
                break
            await asyncio.sleep(0.05)
        assert src.routes.failed == 1  # gave up: the only route left crosses a relay
        assert src.routes.failovers == 0
        assert recorder.total == 0  # the relay never got the unsealed stream
    finally:
        await fabric.stop()
