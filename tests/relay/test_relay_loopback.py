"""Source -> relay -> destination over real TCP on loopback, sealed; a relay dies mid-way."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from accessfabric.bench.relay_lab import SEALED_SINK, issue_route, new_initiator, send_sealed
from accessfabric.errors import ErrorCode
from accessfabric.node.dialing.address import HostPort
from accessfabric.node.relaying.relay import RESUME_POSITION_TIMEOUT
from accessfabric.node.routing.route_switches import SwitchReason
from accessfabric.node.routing.routes import NoUsableRoute
from accessfabric.node.serving.stream_router import REFUSED_LABELS
from accessfabric.node.streams.connection import FabricStream, StreamResetError
from accessfabric.node.streams.resumable import new_fabric_stream
from accessfabric.sealing import SealInitiator
from accessfabric.sealing.handshake import is_sealing_key_exchange, stream_context
from accessfabric.sealing.resume_proof import PROOF_SIZE, prove_resume
from accessfabric.session.snapshot import StreamSnapshot
from accessfabric.wire.limits import MAX_KEY_EXCHANGE
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import Fabric, built, kill

MiB = 1024 * 1024


async def test_sealed_bulk_survives_relay_death(tmp_path: Path) -> None:
    async with built(tmp_path, relays=2) as fabric:
        src, dst = fabric.source, fabric.destination
        src.routes.set_routes(SEALED_SINK, TrafficClass.BULK, fabric.routes([0], [1]))
        initiator, token = new_initiator(
            fabric.keys[src.node_id], fabric.keys[dst.node_id].sealing_public_key_bytes, SEALED_SINK
        )
        stream = await src.routes.open_stream(
            SEALED_SINK,
            TrafficClass.BULK,
            key_exchange=initiator.key_exchange,
            resume_token=token,
            resume_key=initiator.resume_key,
        )
        total = 48 * MiB
        killed = asyncio.Event()

        def progress(sent: int) -> None:
            if sent >= total * 2 // 5 and not killed.is_set():
                killed.set()
                kill(fabric.relays[0])

        sent_digest, confirmed = await send_sealed(stream, initiator, total, progress)
        assert killed.is_set()
        assert fabric.sink.digests == [sent_digest]
        assert confirmed == sent_digest
        assert fabric.sink.sizes == [total]
        assert src.routes.switches.counts == {SwitchReason.SESSION_LOST: 1}
        assert dst.data_plane.router.adopted == 1
        relayed = fabric.relays[1].data_plane.relay.counters()
        assert relayed["relayed"], relayed  # accounting, never payload


async def test_two_relays_in_a_row_echo(tmp_path: Path) -> None:
    async with built(tmp_path, relays=2, chained=True) as fabric:
        src = fabric.source
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0, 1]))
        stream = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        for n in range(20):
            stream.write(b"ping %d" % n)
            assert await stream.readexactly(len(b"ping %d" % n)) == b"ping %d" % n
        stream.close()
        assert await stream.read() == b""


async def test_relay_refuses_a_lease_that_does_not_name_it(tmp_path: Path) -> None:
    async with built(tmp_path, relays=2) as fabric:
        src = fabric.source
        # Route via relay 1, but sent to relay 0: relay 0 is not on the lease.
        (wrong,) = fabric.routes([1])
        lease = wrong.lease
        connection = await src.peers.session(fabric.relays[0].node_id)
        stream = await connection.open_stream(
            "echo", TrafficClass.INTERACTIVE, lease.route_id, route_lease=wrong.blob
        )
        stream.write(b"x")
        with pytest.raises(StreamResetError) as caught:
            await asyncio.wait_for(stream.read(), 5)
        assert caught.value.code == ErrorCode.ROUTE_REJECTED
        assert fabric.relays[0].data_plane.router.refused == {"hop_not_on_route": 1}


async def test_a_hop_cannot_reuse_its_sources_lease_for_a_stream_of_its_own(
    tmp_path: Path,
) -> None:
    """The relay before the destination passes the previous-hop check with the source's
    lease; a sealed stream it opens in its own name on that lease is refused."""
    async with built(tmp_path, relays=1) as fabric:
        relay, dst = fabric.relays[0], fabric.destination
        (route,) = fabric.routes([0])  # source -> relay -> destination
        initiator, token = new_initiator(
            fabric.keys[relay.node_id], fabric.keys[dst.node_id].sealing_public_key_bytes,
            SEALED_SINK,
        )  # fmt: skip
        connection = await relay.peers.session(dst.node_id)
        stream_id = connection.session.open_stream(
            SEALED_SINK, TrafficClass.BULK, route.lease.route_id, route_lease=route.blob,
            key_exchange=initiator.key_exchange, resume_token=token,
        )  # fmt: skip
        stream = new_fabric_stream(connection, stream_id, SEALED_SINK, TrafficClass.BULK)
        stream.write(bytes(initiator.sealer.seal(b"the relay's own request")))
        with pytest.raises(StreamResetError) as caught:
            await asyncio.wait_for(stream.read(), 5)
        assert caught.value.code == ErrorCode.AUTHENTICATION_FAILED
        assert dst.data_plane.router.refused == {"sealed opener not the route's source": 1}
        assert fabric.sink.digests == []
        # The source's own sealed stream on the same lease is served.
        src = fabric.source
        src.routes.set_routes(SEALED_SINK, TrafficClass.BULK, [route])
        own, own_token = new_initiator(
            fabric.keys[src.node_id], fabric.keys[dst.node_id].sealing_public_key_bytes,
            SEALED_SINK,
        )  # fmt: skip
        served = await src.routes.open_stream(
            SEALED_SINK, TrafficClass.BULK, key_exchange=own.key_exchange,
            resume_token=own_token, resume_key=own.resume_key,
        )  # fmt: skip
        sent, confirmed = await send_sealed(served, own, 64 * 1024)
        assert confirmed == sent and fabric.sink.digests == [sent]


async def test_expired_leases_say_why_no_route(tmp_path: Path) -> None:
    async with built(tmp_path, relays=1) as fabric:
        src = fabric.source
        routes = fabric.routes([0])
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, routes)
        src.routes.clock = lambda: routes[0].lease.expires_ms / 1000 + 5
        with pytest.raises(NoUsableRoute, match="expired"):
            await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)


async def test_a_stream_whose_first_path_never_reached_the_destination(tmp_path: Path) -> None:
    """The first path dies before the destination saw the stream (the relay cannot reach
    its next hop): the resume on the alternate is a new stream there, from byte 0."""
    async with built(tmp_path, relays=2, chained=True) as fabric:
        src, dst = fabric.source, fabric.destination
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0, 1], [0]))
        kill(fabric.relays[1])
        stream = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        stream.write(b"sent before the first path failed")
        assert await asyncio.wait_for(stream.readexactly(33), 10) == (
            b"sent before the first path failed"
        )
        stream.write(b"and after")
        assert await asyncio.wait_for(stream.readexactly(9), 5) == b"and after"
        stream.close()
        assert await asyncio.wait_for(stream.read(), 5) == b""
        assert src.routes.failovers == 1
        assert dst.data_plane.router.adopted == 0 and dst.data_plane.router.opened_on_resume == 1
        # relayed, so sealed: the resume brought the exchange
        assert dst.data_plane.router.sealed == 1


async def _resume_a_finished_stream(fabric: Fabric) -> FabricStream:
    """Finish an echo stream through relay 0, wait until the destination lets its end go,
    then resume it as a source that never heard from the destination would."""
    src, dst = fabric.source, fabric.destination
    (route,) = fabric.routes([0])
    src.routes.set_routes("echo", TrafficClass.INTERACTIVE, [route])
    stream = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
    stream.write(b"once")
    assert await asyncio.wait_for(stream.readexactly(4), 5) == b"once"
    stream.close()
    assert await asyncio.wait_for(stream.read(), 5) == b""
    token = stream.resume_token
    for _ in range(50):  # the sweep lets the finished end go
        if token not in dst.data_plane.ends.served:
            break
        await asyncio.sleep(0.1)
    assert token not in dst.data_plane.ends.served
    snapshot = StreamSnapshot(
        resume_token=token, service="echo", traffic_class=TrafficClass.INTERACTIVE,
        send_acked=0, send_buffer=(memoryview(b"once"),), send_end=False,
        recv_offset=0, recv_consumed=0, recv_ended=False,
    )  # fmt: skip
    connection = await src.peers.session(route.first_hop)
    stream_id = connection.session.resume_stream(snapshot, route.route_id, route_lease=route.blob)
    return new_fabric_stream(connection, stream_id, "echo", TrafficClass.INTERACTIVE)


async def test_a_resume_of_a_finished_stream_is_refused(tmp_path: Path) -> None:
    """The destination remembers the tokens of stream ends it let go: a late resume of one
    is refused, never served as a new stream (its first bytes were delivered once)."""
    async with built(tmp_path, relays=1) as fabric:
        dst = fabric.destination
        late = await _resume_a_finished_stream(fabric)
        with pytest.raises(StreamResetError) as reset:  # the relay passes the refusal on
            await asyncio.wait_for(late.read(), RESUME_POSITION_TIMEOUT / 2)
        assert reset.value.code == ErrorCode.STREAM_CLOSED  # refused, not "path failed"
        assert dst.data_plane.router.refused == {"unknown resume token": 1}
        assert dst.data_plane.router.opened_on_resume == 0


async def _refused_samples(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "accessfabric_streams_refused_total"
    }


async def test_refused_streams_are_on_metrics_with_bounded_reasons(tmp_path: Path) -> None:
    async with built(tmp_path, relays=1) as fabric:
        dst = fabric.destination
        await dst.observe.start(HostPort(host="127.0.0.1", port=0), None)
        late = await _resume_a_finished_stream(fabric)
        with pytest.raises(StreamResetError):
            await asyncio.wait_for(late.read(), RESUME_POSITION_TIMEOUT / 2)
        assert await _refused_samples(dst.observe.metrics_url) == {"unknown resume token": 1}
        # reasons may carry anything: the label set stays bounded, the rest is "other"
        for n in range(3 * REFUSED_LABELS):
            dst.data_plane.router._count_refused(f"made-up reason {n}: detail")
        samples = await _refused_samples(dst.observe.metrics_url)
        assert len(samples) == REFUSED_LABELS + 1
        assert samples["unknown resume token"] == 1
        assert samples["other"] == 3 * REFUSED_LABELS - (REFUSED_LABELS - 1)
        assert sum(samples.values()) == 1 + 3 * REFUSED_LABELS


async def test_a_second_path_open_needs_the_proof_its_key_exchange_gives(tmp_path: Path) -> None:
    """A relay that saw a sealed OPEN_STREAM whose first path then failed knows its token
    and key exchange, not the ephemeral secret: its own "second path" open is refused."""
    async with built(tmp_path, relays=1) as fabric:
        src, dst = fabric.source, fabric.destination
        (route,) = fabric.routes([0])
        dst_key = fabric.sealing_key(dst.node_id)
        assert dst_key is not None
        initiator, token = new_initiator(fabric.keys[src.node_id], dst_key, "echo")
        while is_sealing_key_exchange(initiator.key_exchange[PROOF_SIZE:]):
            # the bare exchange is read as proof + rest: a rest that happens to start with a
            # sealing version byte would be refused as "sealing", not as a missing exchange
            initiator, token = new_initiator(fabric.keys[src.node_id], dst_key, "echo")
        snapshot = StreamSnapshot(
            resume_token=token, service="echo", traffic_class=TrafficClass.INTERACTIVE,
            send_acked=0, send_buffer=(memoryview(b"hijacked"),), send_end=False,
            recv_offset=0, recv_consumed=0, recv_ended=False,
        )  # fmt: skip
        forged = prove_resume(
            b"\x00" * 32, 1, token=token, service="echo", route_id=route.route_id,
            route_lease=route.blob, start_offset=0,
        )  # fmt: skip
        connection = await src.peers.session(route.first_hop)
        for field in (forged + initiator.key_exchange, initiator.key_exchange):
            connection.session.resume_stream(
                snapshot, route.route_id, route_lease=route.blob, key_exchange=field
            )
            connection.schedule_flush()
        for _ in range(50):
            if sum(dst.data_plane.router.refused.values()) >= 2:
                break
            await asyncio.sleep(0.1)
        # a forged proof; the bare exchange (no proof): no sealing exchange after its "proof"
        assert dst.data_plane.router.refused == {
            "resume proof invalid": 1,
            "resume key exchange missing": 1,
        }
        assert dst.data_plane.router.opened_on_resume == 0
        assert token not in dst.data_plane.ends.served


async def test_a_resume_gone_in_its_own_batch_leaves_the_session_alone(tmp_path: Path) -> None:
    """A resume OPEN_STREAM and its RESET_STREAM arrive in one batch: the relay's session
    no longer has the stream when the relay claims it.  The relay skips that splice and
    counts it; the session, and every other stream on it, carries on."""
    async with built(tmp_path, relays=1) as fabric:
        src = fabric.source
        relay = fabric.relays[0]
        (route,) = fabric.routes([0])
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, [route])
        other = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        other.write(b"before")
        assert await asyncio.wait_for(other.readexactly(6), 5) == b"before"
        connection = await src.peers.session(route.first_hop)
        snapshot = StreamSnapshot(
            resume_token=b"\x07" * 16, service="echo", traffic_class=TrafficClass.INTERACTIVE,
            send_acked=0, send_buffer=(), send_end=False,
            recv_offset=0, recv_consumed=0, recv_ended=False,
        )  # fmt: skip
        stream_id = connection.session.resume_stream(
            snapshot, route.route_id, route_lease=route.blob
        )
        connection.session.reset_stream(stream_id)  # same flush: one batch at the relay
        connection.schedule_flush()
        for _ in range(50):
            if relay.data_plane.relay.counters()["gone"]:
                break
            await asyncio.sleep(0.1)
        assert relay.data_plane.relay.counters()["gone"] == 1
        assert not connection.is_closed
        other.write(b"after")
        assert await asyncio.wait_for(other.readexactly(5), 5) == b"after"
        other.close()
        assert await asyncio.wait_for(other.read(), 5) == b""


async def test_a_sealed_resume_from_zero_without_its_exchange_is_never_served_unsealed(
    tmp_path: Path,
) -> None:
    """A sealed stream whose exchange (with a large signed record) leaves no room beside
    the proof resumes from offset 0 with the proof alone.  On a one-hop route the
    destination must not take that for an unsealed stream: its service would read the
    sealed records as plaintext.  It is refused."""
    async with built(tmp_path, relays=1) as fabric:
        dst = fabric.destination
        opener = fabric.relays[0]  # a node peered with the destination: a one-hop route
        dst.access.allow[SEALED_SINK] = frozenset({opener.node_id})  # access is not the point
        route = issue_route(fabric.authority, 9, [opener.node_id, dst.node_id])
        token = secrets.token_bytes(16)
        initiator = SealInitiator(
            fabric.keys[opener.node_id].sealing_private_key(), opener.node_id,
            fabric.keys[dst.node_id].sealing_public_key_bytes,
            stream_context(SEALED_SINK, token),
            opener_record=b"r" * (MAX_KEY_EXCHANGE - 173 - len(opener.node_id)),
            max_exchange=MAX_KEY_EXCHANGE,  # an opener that leaves no room for the proof
            random_bytes=secrets.token_bytes, opened_ms=int(time.time() * 1000),
        )  # fmt: skip
        proof = prove_resume(
            initiator.resume_key, 1, token=token, service=SEALED_SINK,
            route_id=route.route_id, route_lease=route.blob, start_offset=0,
        )  # fmt: skip
        assert len(proof) + len(initiator.key_exchange) > MAX_KEY_EXCHANGE  # the proof alone
        snapshot = StreamSnapshot(
            resume_token=token, service=SEALED_SINK, traffic_class=TrafficClass.BULK,
            send_acked=0, send_buffer=(), send_end=False,
            recv_offset=0, recv_consumed=0, recv_ended=False,
        )  # fmt: skip
        connection = await opener.peers.session(dst.node_id)
        stream_id = connection.session.resume_stream(
            snapshot, route.route_id, route_lease=route.blob, key_exchange=proof
        )
        stream = new_fabric_stream(connection, stream_id, SEALED_SINK, TrafficClass.BULK)
        stream.write(bytes(initiator.sealer.seal(b"sealed payload")))
        stream.write(bytes(initiator.sealer.finish()))
        stream.close()
        with pytest.raises(StreamResetError) as reset:
            await asyncio.wait_for(stream.read(), 5)
        assert reset.value.code == ErrorCode.STREAM_CLOSED
        assert dst.data_plane.router.refused == {"resume key exchange missing": 1}
        assert dst.data_plane.router.opened_on_resume == 0
        assert fabric.sink.digests == []  # the service never read the sealed bytes


async def test_a_served_open_gone_in_its_own_batch_leaves_the_session_alone(
    tmp_path: Path,
) -> None:
    """A routed OPEN_STREAM and its RESET_STREAM arrive at the destination in one batch:
    its session no longer has the stream when the data plane serves it.  The session, and
    every other stream on it, carries on."""
    async with built(tmp_path, relays=1) as fabric:
        dst = fabric.destination
        opener = fabric.relays[0]  # a node peered with the destination: a one-hop route
        dst.access.allow[SEALED_SINK] = frozenset({opener.node_id})  # access is not the point
        route = issue_route(fabric.authority, 9, [opener.node_id, dst.node_id])
        connection = await opener.peers.session(dst.node_id)
        stream_id = connection.session.open_stream(
            "echo", TrafficClass.INTERACTIVE, route.route_id, route_lease=route.blob,
            resume_token=secrets.token_bytes(16),
        )  # fmt: skip
        connection.session.reset_stream(stream_id)  # same flush: one batch at the destination
        connection.schedule_flush()
        await asyncio.wait_for(connection.ping(), 5)  # the destination read the batch
        assert not connection.is_closed
        assert dst.data_plane.ends.served == {}
