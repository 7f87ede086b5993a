"""Limit checks: max frame size both ways, max concurrent streams."""

from __future__ import annotations

import os

from accessfabric.conformance.check import Target, check
from accessfabric.conformance.peer import CheckFailed, NotApplicable, raw_frame
from accessfabric.errors import ErrorCode

MAX_STREAMS_TRIED = 1024


@check("limits", "limits.max-frame-size", "DATA with exactly the peer's max frame size",
       "accepted and echoed")  # fmt: skip
async def max_frame_size(target: Target) -> str:
    async with target.session() as peer:
        assert peer.peer_ready is not None
        size = peer.peer_ready.max_frame_size - 8
        if size > peer.peer_ready.initial_stream_window:
            raise NotApplicable("the stream window is smaller than one full frame")
        payload = os.urandom(size)
        peer.open(1)
        peer.send(raw_frame(0x00, 0x01, 1, bytes(8) + payload))
        got = await peer.read_stream(1)
        if bytes(got.data) != payload:
            raise CheckFailed(f"{len(got.data)} bytes echoed, not {size}")
        return f"{size + 8}-byte payload echoed"


@check("limits", "limits.max-frame-size-plus-one", "a frame one byte over the peer's max "
       "frame size", "GOAWAY FRAME_SIZE_ERROR")  # fmt: skip
async def max_frame_size_plus_one(target: Target) -> str:
    async with target.session() as peer:
        assert peer.peer_ready is not None
        size = peer.peer_ready.max_frame_size + 1
        peer.open(1)
        peer.send(raw_frame(0x00, 0, 1, bytes(size)))
        return await peer.expect_goaway(ErrorCode.FRAME_SIZE_ERROR)


@check("limits", "limits.our-max-frame-size", "we offer a max frame size of 16384",
       "every frame the peer sends fits in 16384")  # fmt: skip
async def our_max_frame_size(target: Target) -> str:
    async with target.session(max_frame_size=16384) as peer:
        peer.decoder.set_max_frame_size(16384)
        payload = os.urandom(128 * 1024)
        peer.open(1)
        peer.write(1, payload, end=True)
        got = await peer.read_stream(1)
        if bytes(got.data) != payload:
            raise CheckFailed(f"{len(got.data)} bytes echoed, not {len(payload)}")
        return "128 KiB echoed in frames of at most 16384"


@check("limits", "limits.max-concurrent-streams", "one stream more than the peer's "
       "max concurrent streams", "RESET_STREAM REFUSED_STREAM on the extra stream")  # fmt: skip
async def max_concurrent_streams(target: Target) -> str:
    async with target.session() as peer:
        assert peer.peer_ready is not None
        allowed = peer.peer_ready.max_concurrent_streams
        if allowed >= MAX_STREAMS_TRIED:
            raise NotApplicable(f"the peer allows {allowed} streams")
        for index in range(allowed):
            peer.open(2 * index + 1)
        await peer.settle(rounds=1)
        refused = [s for s, got in peer.streams.items() if got.reset is not None]
        if refused:
            raise CheckFailed(f"streams {refused[:5]} refused within the limit of {allowed}")
        extra = 2 * allowed + 1
        peer.open(extra)
        return await peer.expect_reset(extra, ErrorCode.REFUSED_STREAM)
