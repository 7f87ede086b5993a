"""Handshake checks: HELLO/AUTH/SESSION_READY, versions, the AUTH proof and its binding."""

from __future__ import annotations

from accessfabric.conformance.check import Target, check
from accessfabric.conformance.peer import CheckFailed, raw_frame
from accessfabric.errors import ErrorCode
from accessfabric.identity import NodeKey
from accessfabric.session.auth import auth_transcript, signed_message
from accessfabric.wire import frames as fr
from accessfabric.wire.registry import PROTOCOL_VERSION, TrafficClass

AF = ErrorCode.AUTHENTICATION_FAILED


@check("handshake", "handshake.ok", "a correct handshake completes", "SESSION_READY")
async def handshake_ok(target: Target) -> str:
    async with target.session() as peer:
        ready = peer.peer_ready
        assert ready is not None and peer.peer_hello is not None
        if ready.version != PROTOCOL_VERSION:
            raise CheckFailed(f"SESSION_READY names version {ready.version}")
        if PROTOCOL_VERSION not in peer.peer_hello.versions:
            raise CheckFailed(f"HELLO offers {peer.peer_hello.versions}")
        await peer.expect_alive()
        return (
            f"version {ready.version}, max frame {ready.max_frame_size}, stream window "
            f"{ready.initial_stream_window}, session window {ready.initial_session_window}, "
            f"{ready.max_concurrent_streams} streams"
        )


@check("handshake", "handshake.no-common-version", "HELLO offering only version 1 (tls-unique)",
       "GOAWAY UNSUPPORTED_VERSION")  # fmt: skip
async def no_common_version(target: Target) -> str:
    async with target.connection() as peer:
        peer.send(peer.hello(versions=(1,)))
        return await peer.expect_goaway(ErrorCode.UNSUPPORTED_VERSION)


@check("handshake", "handshake.bad-signature", "AUTH whose signature does not verify",
       "GOAWAY AUTHENTICATION_FAILED")  # fmt: skip
async def bad_signature(target: Target) -> str:
    async with target.connection() as peer:
        peer.send(peer.hello())
        hello = await peer.expect_type(fr.Hello)
        del hello
        peer.send(fr.Auth(bytes(64)).to_bytes())
        return await peer.expect_goaway(AF)


@check("handshake", "handshake.reflected-auth", "AUTH signed with the acceptor's role label",
       "GOAWAY AUTHENTICATION_FAILED")  # fmt: skip
async def reflected_auth(target: Target) -> str:
    async with target.connection() as peer:
        peer.send(peer.hello())
        hello = await peer.expect_type(fr.Hello)
        transcript = auth_transcript(peer.local_hello, hello.to_bytes(), peer.binding)
        peer.send(fr.Auth(peer.key.sign(signed_message(transcript, False))).to_bytes())
        return await peer.expect_goaway(AF)


@check("handshake", "handshake.wrong-binding", "AUTH over a transcript with another "
       "channel binding (a relayed AUTH)", "GOAWAY AUTHENTICATION_FAILED")  # fmt: skip
async def wrong_binding(target: Target) -> str:
    async with target.connection() as peer:
        peer.send(peer.hello())
        hello = await peer.expect_type(fr.Hello)
        peer.send(peer.auth_for(hello, binding=bytes(32)))
        return await peer.expect_goaway(AF)


@check("handshake", "handshake.node-id-not-derived", "HELLO node id of another key",
       "GOAWAY AUTHENTICATION_FAILED")  # fmt: skip
async def node_id_not_derived(target: Target) -> str:
    async with target.connection() as peer:
        peer.send(peer.hello(node_id=NodeKey.generate().node_id))
        hello = await peer.expect_type(fr.Hello)
        peer.send(peer.auth_for(hello))
        return await peer.expect_goaway(AF)


@check("handshake", "handshake.frame-before-hello", "PING before HELLO",
       "GOAWAY PROTOCOL_ERROR")  # fmt: skip
async def frame_before_hello(target: Target) -> str:
    async with target.connection() as peer:
        peer.send(fr.Ping(1).to_bytes())
        return await peer.expect_goaway(ErrorCode.PROTOCOL_ERROR)


@check("handshake", "handshake.open-before-ready", "OPEN_STREAM after HELLO, before AUTH",
       "GOAWAY PROTOCOL_ERROR")  # fmt: skip
async def open_before_ready(target: Target) -> str:
    async with target.connection() as peer:
        peer.send(peer.hello(), fr.OpenStream(1, "echo", TrafficClass.RELIABLE).to_bytes())
        return await peer.expect_goaway(ErrorCode.PROTOCOL_ERROR)


@check("handshake", "handshake.session-ready-version", "SESSION_READY naming another version",
       "GOAWAY UNSUPPORTED_VERSION")  # fmt: skip
async def session_ready_version(target: Target) -> str:
    async with target.connection() as peer:
        peer.send(peer.hello())
        hello = await peer.expect_type(fr.Hello)
        peer.send(peer.auth_for(hello))
        await peer.expect_type(fr.Auth)
        peer.send(peer.session_ready(version=PROTOCOL_VERSION + 1))
        return await peer.expect_goaway(ErrorCode.UNSUPPORTED_VERSION)


@check("handshake", "handshake.session-ready-version-0", "SESSION_READY naming version 0 "
       "(decoded, then refused)", "GOAWAY UNSUPPORTED_VERSION")  # fmt: skip
async def session_ready_version_0(target: Target) -> str:
    async with target.connection() as peer:
        peer.send(peer.hello())
        hello = await peer.expect_type(fr.Hello)
        peer.send(peer.auth_for(hello))
        await peer.expect_type(fr.Auth)
        peer.send(raw_frame(0x12, 0, 0, bytes(2) + peer.session_ready()[11:]))
        return await peer.expect_goaway(ErrorCode.UNSUPPORTED_VERSION)


@check("handshake", "handshake.hello-twice", "a second HELLO after SESSION_READY",
       "GOAWAY PROTOCOL_ERROR")  # fmt: skip
async def hello_twice(target: Target) -> str:
    async with target.session() as peer:
        peer.send(raw_frame(0x10, 0, 0, peer.hello()[9:]))
        return await peer.expect_goaway(ErrorCode.PROTOCOL_ERROR)
