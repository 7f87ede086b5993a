"""Stream checks: ids, services, the state table and its codes (docs/protocol.md)."""

from __future__ import annotations

import os

from accessfabric.conformance.check import Target, check
from accessfabric.conformance.peer import CheckFailed
from accessfabric.errors import ErrorCode
from accessfabric.wire import frames as fr

ECHO_BYTES = 256 * 1024


@check("streams", "stream.echo", "an echo stream: 256 KiB, END_STREAM",
       "the same bytes back, then END_STREAM")  # fmt: skip
async def echo(target: Target) -> str:
    async with target.session() as peer:
        payload = os.urandom(ECHO_BYTES)
        peer.open(1)
        peer.write(1, payload, end=True)
        got = await peer.read_stream(1)
        if got.reset is not None:
            raise CheckFailed(f"the echo stream was reset ({got.reset})")
        if bytes(got.data) != payload:
            raise CheckFailed(f"{len(got.data)} bytes came back, not the {len(payload)} sent")
        return f"{len(payload)} bytes echoed"


@check("streams", "stream.close-stream-end", "ending with CLOSE_STREAM(final offset)",
       "the echo ends too")  # fmt: skip
async def close_stream_end(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.write(1, b"hello")
        peer.send(fr.CloseStream(1, 5).to_bytes())
        got = await peer.read_stream(1)
        if got.reset is not None or bytes(got.data) != b"hello":
            raise CheckFailed(f"got {bytes(got.data)!r}, reset {got.reset}")
        return "echoed and ended"


@check("streams", "stream.two-streams", "two echo streams interleaved",
       "each gets its own bytes back")  # fmt: skip
async def two_streams(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.open(3)
        peer.send(
            fr.Data(1, 0, b"one").to_bytes(), fr.Data(3, 0, b"three").to_bytes(),
            fr.Data(1, 3, b"-1", True).to_bytes(), fr.Data(3, 5, b"-3", True).to_bytes(),
        )  # fmt: skip
        first, second = await peer.read_stream(1), await peer.read_stream(3)
        if (bytes(first.data), bytes(second.data)) != (b"one-1", b"three-3"):
            raise CheckFailed(f"got {bytes(first.data)!r} and {bytes(second.data)!r}")
        return "both echoed"


@check("streams", "stream.unknown-service", "OPEN_STREAM to a service the peer lacks",
       "RESET_STREAM SERVICE_UNAVAILABLE, or ACCESS_DENIED when the peer's access policy "
       "does not admit this prober to it (checked first, for every service name)")  # fmt: skip
async def unknown_service(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1, "no-such-service-here")
        return await peer.expect_reset(
            1, ErrorCode.SERVICE_UNAVAILABLE, also=(ErrorCode.ACCESS_DENIED,)
        )


@check("streams", "stream.wrong-parity", "the dialer opens an even stream id",
       "GOAWAY INVALID_STREAM_ID")  # fmt: skip
async def wrong_parity(target: Target) -> str:
    async with target.session() as peer:
        peer.open(2)
        return await peer.expect_goaway(ErrorCode.INVALID_STREAM_ID)


@check("streams", "stream.id-not-increasing", "OPEN_STREAM 5, then OPEN_STREAM 3",
       "GOAWAY INVALID_STREAM_ID")  # fmt: skip
async def id_not_increasing(target: Target) -> str:
    async with target.session() as peer:
        peer.open(5)
        peer.open(3)
        return await peer.expect_goaway(ErrorCode.INVALID_STREAM_ID)


@check("streams", "stream.never-opened", "DATA on stream 7, never opened",
       "GOAWAY INVALID_STREAM_ID")  # fmt: skip
async def never_opened(target: Target) -> str:
    async with target.session() as peer:
        peer.send(fr.Data(7, 0, b"x").to_bytes())
        return await peer.expect_goaway(ErrorCode.INVALID_STREAM_ID)


@check("streams", "stream.credit-on-unopened-peer-stream", "STREAM_CREDIT on stream 2, "
       "which the acceptor never opened", "GOAWAY INVALID_STREAM_ID")  # fmt: skip
async def credit_unopened(target: Target) -> str:
    async with target.session() as peer:
        peer.send(fr.StreamCredit(2, 1 << 20).to_bytes())
        return await peer.expect_goaway(ErrorCode.INVALID_STREAM_ID)


@check("streams", "stream.data-gap", "DATA at offset 10 on a fresh stream",
       "RESET_STREAM PROTOCOL_ERROR")  # fmt: skip
async def data_gap(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.send(fr.Data(1, 10, b"late").to_bytes())
        return await peer.expect_reset(1, ErrorCode.PROTOCOL_ERROR)


@check("streams", "stream.data-after-end", "DATA after our END_STREAM",
       "RESET_STREAM STREAM_CLOSED")  # fmt: skip
async def data_after_end(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.send(fr.Data(1, 0, b"ab", True).to_bytes(), fr.Data(1, 2, b"cd").to_bytes())
        return await peer.expect_reset(1, ErrorCode.STREAM_CLOSED)


@check("streams", "stream.ended-twice", "END_STREAM, then CLOSE_STREAM at the same offset",
       "RESET_STREAM STREAM_CLOSED")  # fmt: skip
async def ended_twice(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.send(fr.Data(1, 0, b"ab", True).to_bytes(), fr.CloseStream(1, 2).to_bytes())
        return await peer.expect_reset(1, ErrorCode.STREAM_CLOSED)


@check("streams", "stream.close-wrong-final", "CLOSE_STREAM with a final offset beyond "
       "what was sent", "RESET_STREAM PROTOCOL_ERROR")  # fmt: skip
async def close_wrong_final(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.send(fr.Data(1, 0, b"abc").to_bytes(), fr.CloseStream(1, 5).to_bytes())
        return await peer.expect_reset(1, ErrorCode.PROTOCOL_ERROR)


@check("streams", "stream.ack-beyond-sent", "ACK of bytes the peer never sent",
       "RESET_STREAM PROTOCOL_ERROR")  # fmt: skip
async def ack_beyond_sent(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.send(fr.Ack(1, 1000, 0).to_bytes())
        return await peer.expect_reset(1, ErrorCode.PROTOCOL_ERROR)


@check("streams", "stream.frames-after-reset", "DATA, ACK, CLOSE_STREAM after our "
       "RESET_STREAM", "ignored (session credit still counted)")  # fmt: skip
async def frames_after_reset(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.send(
            fr.ResetStream(1, ErrorCode.CANCEL).to_bytes(), fr.Data(1, 0, b"late").to_bytes(),
            fr.Ack(1, 0, 0).to_bytes(), fr.CloseStream(1, 4).to_bytes(),
            fr.ResetStream(1, ErrorCode.CANCEL).to_bytes(),
        )  # fmt: skip
        await peer.expect_alive()
        return "ignored"


@check("streams", "stream.duplicate-data", "the same DATA twice (a resend)",
       "the bytes are delivered once")  # fmt: skip
async def duplicate_data(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        frame = fr.Data(1, 0, b"once").to_bytes()
        peer.send(frame, frame, fr.Data(1, 4, b"", True).to_bytes())
        got = await peer.read_stream(1)
        if bytes(got.data) != b"once" or got.reset is not None:
            raise CheckFailed(f"echo returned {bytes(got.data)!r}, reset {got.reset}")
        return "delivered once"
