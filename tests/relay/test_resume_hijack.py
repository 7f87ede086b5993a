"""A node that knows a sealed stream's resume token cannot take the stream over.

Real runtimes over TCP on loopback.  The attackers are relays of the fabric: one on the
stream's path (it saw the OPEN_STREAM: token, key exchange, lease), one off it, and the
relay a failover moved the stream to (it saw the genuine resume proof).  Each opens its
own RESUME OPEN_STREAM to the destination, with a lease on which it is the hop before
the destination, so the lease check passes: only the resume proof stands in the way.
Every attempt must be reset with AUTHENTICATION_FAILED (or STREAM_CLOSED for a fresh open
reusing the token) and the genuine stream must deliver every byte once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path

import pytest

from accessfabric.bench.relay_lab import SEALED_SINK, issue_route, new_initiator, payload_chunk
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.errors import ErrorCode
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import StreamResetError
from accessfabric.node.streams.resumable import ResumableStream, new_fabric_stream
from accessfabric.observe.log_format import event_fields
from accessfabric.sealing import SealingError, SealInitiator
from accessfabric.sealing.handshake import destination_resume_key, stream_context
from accessfabric.sealing.resume_proof import prove_resume
from accessfabric.session import events as ev
from accessfabric.session.snapshot import StreamSnapshot
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import Fabric, built, kill

CHUNKS = 8  # of 256 KiB: each phase sends 2 MiB


class SealedSender:
    """The source application: sealed chunks in phases, then the sealed end and reply."""

    def __init__(self, stream: ResumableStream, initiator: SealInitiator) -> None:
        self.stream = stream
        self.initiator = initiator
        self.digest = hashlib.sha256()
        self.sent = 0
        self._index = 0

    async def send(self, chunks: int) -> None:
        for _ in range(chunks):
            chunk = payload_chunk(self._index)
            self._index += 1
            self.digest.update(chunk)
            self.sent += len(chunk)
            self.stream.write(self.initiator.sealer.seal(chunk))
            await self.stream.drain()

    async def finish(self) -> str:
        """Close; return the digest the destination sealed back."""
        self.stream.write(self.initiator.sealer.finish())
        self.stream.close()
        plain: list[bytes] = []
        while data := await self.stream.read():
            plain += self.initiator.feed_reply(data)
        assert self.initiator.opener is not None, "no sealed reply"
        self.initiator.opener.check_end()
        return b"".join(plain).hex()


def seen_opens(runtime: NodeRuntime) -> list[ev.StreamOpened]:
    """Every OPEN_STREAM this node's sessions receive (what a malicious relay records)."""
    seen: list[ev.StreamOpened] = []

    def record(_connection: object, event: ev.Event) -> None:
        if isinstance(event, ev.StreamOpened):
            seen.append(event)

    runtime.data_plane.hooks.append(record)
    return seen


async def sighting(
    seen: list[ev.StreamOpened], token: bytes, *, resume: bool
) -> list[ev.StreamOpened]:
    """The opens of stream ``token`` the relay saw, once it saw one (fresh or resumed)."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in seen if e.resume_token == token and e.resume == resume]
        if found:
            return found
        assert time.monotonic() < deadline, "the relay never saw the stream"
        await asyncio.sleep(0.02)


async def served(destination: NodeRuntime, token: bytes) -> None:
    """Wait until the destination serves stream ``token`` (its OPEN_STREAM arrived)."""
    deadline = time.monotonic() + 10
    while token not in destination.data_plane.ends.served:
        assert time.monotonic() < deadline, "the stream never reached the destination"
        await asyncio.sleep(0.02)


async def attack(
    attacker: NodeRuntime,
    destination: NodeRuntime,
    seen: ev.StreamOpened,
    route: LeasedRoute,
    *,
    proof: bytes = b"",
    fresh: bool = False,
) -> StreamResetError:
    """Open the stream named by ``seen``'s token from ``attacker``; return the reset."""
    connection = await attacker.peers.session(destination.node_id)
    session = connection.session
    if fresh:
        stream_id = session.open_stream(
            seen.service, seen.traffic_class, route.route_id, key_exchange=seen.key_exchange,
            route_lease=route.blob, resume_token=seen.resume_token,
        )  # fmt: skip
    else:
        snapshot = StreamSnapshot(
            resume_token=seen.resume_token, service=seen.service,
            traffic_class=seen.traffic_class, send_acked=0, send_buffer=(), send_end=False,
            recv_offset=seen.start_offset, recv_consumed=seen.start_offset, recv_ended=False,
        )  # fmt: skip
        stream_id = session.resume_stream(
            snapshot, route.route_id, route_lease=route.blob, key_exchange=proof
        )
    stream = new_fabric_stream(connection, stream_id, seen.service, seen.traffic_class)
    with pytest.raises(StreamResetError) as caught:
        await asyncio.wait_for(stream.read(), 5)  # an adopted hijack would get no reset
    return caught.value


async def open_sealed(fabric: Fabric, routes: list[LeasedRoute]) -> tuple[SealedSender, bytes]:
    src, dst = fabric.source, fabric.destination
    src.routes.set_routes(SEALED_SINK, TrafficClass.BULK, routes)
    initiator, token = new_initiator(
        fabric.keys[src.node_id], fabric.keys[dst.node_id].sealing_public_key_bytes, SEALED_SINK
    )
    stream = await src.routes.open_stream(
        SEALED_SINK, TrafficClass.BULK, key_exchange=initiator.key_exchange,
        resume_token=token, resume_key=initiator.resume_key,
    )  # fmt: skip
    return SealedSender(stream, initiator), token


async def finish_intact(fabric: Fabric, sender: SealedSender) -> None:
    confirmed = await sender.finish()
    assert confirmed == sender.digest.hexdigest()
    assert fabric.sink.digests == [sender.digest.hexdigest()]
    assert fabric.sink.sizes == [sender.sent]


async def test_relays_knowing_the_token_cannot_take_a_sealed_stream_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="accessfabric.node.serving.admission")
    async with built(tmp_path, relays=2) as fabric:
        dst = fabric.destination
        on_path, off_path = fabric.relays
        primary, alternate = fabric.routes([0], [1])
        seen = seen_opens(on_path)
        sender, token = await open_sealed(fabric, [primary, alternate])
        await sender.send(CHUNKS)
        (opened,) = await sighting(seen, token, resume=False)  # the relay saw the token
        await served(dst, token)
        # The relay cannot read message 1 (it is encrypted to the destination's static
        # key), so the best resume key it has is one of a handshake of its own.
        relay_key = fabric.keys[on_path.node_id].sealing_private_key()
        context = stream_context(SEALED_SINK, token)
        with pytest.raises(SealingError):
            destination_resume_key(relay_key, opened.key_exchange, context)
        guessed = SealInitiator(
            relay_key,
            on_path.node_id,
            fabric.keys[dst.node_id].sealing_public_key_bytes,
            context,
            random_bytes=os.urandom,
            opened_ms=int(time.time() * 1000),
        ).resume_key
        forged = prove_resume(
            guessed, 1, token=token, service=SEALED_SINK, route_id=primary.route_id,
            route_lease=primary.blob, start_offset=0,
        )  # fmt: skip
        resets = [
            await attack(on_path, dst, opened, primary),  # token only, as before the fix
            await attack(on_path, dst, opened, primary, proof=forged),
            await attack(off_path, dst, opened, alternate),  # the token leaked elsewhere
            await attack(on_path, dst, opened, primary, fresh=True),  # replace, not resume
        ]
        assert [r.code for r in resets] == [ErrorCode.AUTHENTICATION_FAILED] * 3 + [
            ErrorCode.STREAM_CLOSED
        ]
        assert dst.data_plane.router.refused == {
            "resume proof missing": 2,
            "resume proof invalid": 1,
            "resume token in use": 1,
        }
        # One rate-limited line per (peer, kind of refusal) (ADR 0017): three here.
        reasons = [
            str(event_fields(r)["reason"]).split("resume refused: ", 1)[1]
            for r in caplog.records
            if r.getMessage() == "stream refused"
            and "resume refused: " in str(event_fields(r).get("reason", ""))
        ]
        assert len(reasons) == 3 and reasons[1].startswith("resume proof invalid"), reasons
        # The genuine stream never moved and delivers every byte once.
        await sender.send(CHUNKS)
        await finish_intact(fabric, sender)
        assert dst.data_plane.router.adopted == 0
        assert fabric.source.routes.failovers == 0
        assert sender.stream.resumes == 0


async def test_a_replayed_resume_proof_is_refused_after_a_genuine_failover(
    tmp_path: Path,
) -> None:
    async with built(tmp_path, relays=2) as fabric:
        dst = fabric.destination
        dying, new_path = fabric.relays
        primary, alternate = fabric.routes([0], [1])
        seen = seen_opens(new_path)
        sender, token = await open_sealed(fabric, [primary, alternate])
        await sender.send(CHUNKS)
        await served(dst, token)
        kill(dying)
        await sender.send(CHUNKS)
        (resumed,) = await sighting(seen, token, resume=True)
        deadline = time.monotonic() + 10
        while dst.data_plane.router.adopted < 1:
            assert time.monotonic() < deadline, "the genuine stream did not resume"
            await asyncio.sleep(0.02)
        proof = resumed.key_exchange  # the genuine proof, seen by the relay it went through
        assert proof, "the source's resume carried no proof"
        bumped = proof[:1] + (int.from_bytes(proof[1:9], "big") + 1).to_bytes(8, "big") + proof[9:]
        resets = [
            await attack(new_path, dst, resumed, alternate, proof=proof),  # replayed as is
            await attack(new_path, dst, resumed, alternate, proof=bumped),  # counter raised
        ]
        assert [r.code for r in resets] == [ErrorCode.AUTHENTICATION_FAILED] * 2
        refused = dst.data_plane.router.refused
        assert refused == {"resume proof replayed": 1, "resume proof invalid": 1}
        await sender.send(CHUNKS)
        await finish_intact(fabric, sender)
        assert dst.data_plane.router.adopted == 1
        assert fabric.source.routes.failovers == 1
        assert sender.stream.resumes == 1


class Wiretap:
    """What a relay keeps of stream ``token``: its OPEN_STREAM and the sealed bytes the
    source sent behind it (every DATA payload on the session the open arrived on)."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.opens: list[tuple[object, ev.StreamOpened]] = []
        self.data: dict[tuple[int, int], bytearray] = {}
        runtime.data_plane.hooks.append(self._on_event)

    def _on_event(self, connection: object, event: ev.Event) -> None:
        if isinstance(event, ev.StreamOpened):
            self.opens.append((connection, event))
        elif isinstance(event, ev.DataReceived):
            key = (id(connection), event.stream_id)
            self.data.setdefault(key, bytearray()).extend(event.data)

    def recording(self, token: bytes) -> tuple[ev.StreamOpened, bytes]:
        for connection, event in self.opens:
            if event.resume_token == token and not event.resume:
                return event, bytes(self.data.get((id(connection), event.stream_id), b""))
        raise AssertionError("the relay never saw the stream")


async def replay(
    relay: NodeRuntime,
    destination: NodeRuntime,
    opened: ev.StreamOpened,
    route: LeasedRoute,
    sealed: bytes,
) -> StreamResetError:
    """Open the recorded stream again from the relay and send its recorded records."""
    connection = await relay.peers.session(destination.node_id)
    stream_id = connection.session.open_stream(
        opened.service, opened.traffic_class, route.route_id,
        key_exchange=opened.key_exchange, route_lease=route.blob,
        resume_token=opened.resume_token,
    )  # fmt: skip
    stream = new_fabric_stream(connection, stream_id, opened.service, opened.traffic_class)
    stream.write(sealed)
    stream.close()
    with pytest.raises(StreamResetError) as caught:
        await asyncio.wait_for(stream.read(), 5)  # a served replay would get the sealed reply
    return caught.value


async def recorded_stream(
    fabric: Fabric, relay: NodeRuntime, route: LeasedRoute
) -> tuple[SealedSender, bytes, ev.StreamOpened, bytes]:
    """A sealed stream sent and finished intact over ``route``, as ``relay`` recorded it:
    the sender, its token, the OPEN_STREAM and the sealed bytes behind it."""
    tap = Wiretap(relay)
    sender, token = await open_sealed(fabric, [route])
    await sender.send(2)
    await finish_intact(fabric, sender)
    opened, sealed = tap.recording(token)
    return sender, token, opened, sealed


async def let_go(dst: NodeRuntime, token: bytes) -> None:
    """Wait for the destination's sweep to let the finished stream end go."""
    deadline = time.monotonic() + 10
    while token in dst.data_plane.ends.served:
        assert time.monotonic() < deadline, "the finished stream end was never let go"
        await asyncio.sleep(0.05)


async def test_a_relay_cannot_replay_a_finished_sealed_stream(tmp_path: Path) -> None:
    """Noise IK's first message is replayable: the relay holds the open and every sealed
    record of the opener's direction, which derive the very same keys again.  The
    destination must not serve the stream a second time, neither right after it finished,
    nor once it let the stream end go, nor after twice the resume window."""
    async with built(tmp_path, relays=1) as fabric:
        dst, (relay,), (route,) = fabric.destination, fabric.relays, fabric.routes([0])
        sender, token, opened, sealed = await recorded_stream(fabric, relay, route)
        assert len(sealed) > sender.sent  # every sealed record, up to the final one
        resets = [await replay(relay, dst, opened, route, sealed)]  # the end just finished
        await let_go(dst, token)
        resets.append(await replay(relay, dst, opened, route, sealed))
        # Long after the resume window, the lease (an hour) still lets the relay send it.
        dst.data_plane.ends.forget_retired(time.monotonic() + 3 * dst.data_plane.resume_window)
        resets.append(await replay(relay, dst, opened, route, sealed))
        assert [r.code for r in resets] == [ErrorCode.STREAM_CLOSED] * 3
        assert dst.data_plane.router.refused == {"stream replayed": 3}
        assert fabric.sink.digests == [sender.digest.hexdigest()]  # the service ran once
        # Past the lease's expiry the relay cannot send the open at all: the token may go.
        dst.data_plane.ends.forget_retired(time.monotonic() + 2 * 3600)
        assert token not in dst.data_plane.ends.retired_tokens


async def test_a_relay_cannot_replay_a_finished_sealed_stream_on_a_renewed_lease(
    tmp_path: Path,
) -> None:
    """The lease that carried the stream expired and the destination forgot the token; the
    relay attaches the source's renewed lease for the same route to the recorded open."""
    async with built(tmp_path, relays=1) as fabric:
        dst, (relay,), (route,) = fabric.destination, fabric.relays, fabric.routes([0])
        sender, token, opened, sealed = await recorded_stream(fabric, relay, route)
        await let_go(dst, token)
        # Two hours on: the first lease (1 h) expired and the token is forgotten; the
        # source's renewed lease for the same route is valid.
        renewed = issue_route(
            fabric.authority, route.route_id, list(route.lease.hops),
            tenant=route.lease.tenant, ttl=3 * 3600,
        )  # fmt: skip
        later = time.time() + 2 * 3600
        dst.data_plane.router.checker.clock = lambda: later
        dst.data_plane.ends.forget_retired(time.monotonic() + 2 * 3600)
        assert token not in dst.data_plane.ends.retired_tokens
        reset = await replay(relay, dst, opened, renewed, sealed)
        assert reset.code == ErrorCode.STREAM_CLOSED
        assert dst.data_plane.router.refused.get("stale sealed open") == 1
        assert fabric.sink.digests == [sender.digest.hexdigest()]  # the service ran once
