"""Credit checks: the peer enforces its credit and respects ours (stream and session).

Credit is counted in stream bytes (DATA payload after the 8-byte offset), as an
absolute offset per stream and a running total for the session.
"""

from __future__ import annotations

import os

from accessfabric.conformance.check import Target, check
from accessfabric.conformance.peer import CheckFailed, NotApplicable, ScriptedPeer
from accessfabric.errors import ErrorCode
from accessfabric.wire import frames as fr

SMALL = 16384  # our windows when we want the peer's echo to stall
ROUNDS = 400
MAX_STREAMS = 64
PUMP_TRIES = 4


@check("credit", "credit.peer-respects-stream-window", "our stream window of 16 KiB, "
       "64 KiB echoed", "at most 16 KiB before our STREAM_CREDIT, the rest after")  # fmt: skip
async def peer_respects_stream_window(target: Target) -> str:
    async with target.session(initial_stream_window=SMALL) as peer:
        peer.auto_credit = False
        payload = os.urandom(64 * 1024)
        peer.open(1)
        peer.write(1, payload, end=True)
        await peer.settle()
        got = peer.streams[1]
        if len(got.data) > SMALL:
            raise CheckFailed(f"the peer sent {len(got.data)} bytes on a {SMALL}-byte window")
        before = len(got.data)
        peer.send(fr.StreamCredit(1, len(payload)).to_bytes())
        got = await peer.read_stream(1)
        if bytes(got.data) != payload:
            raise CheckFailed(f"{len(got.data)} bytes came back, not {len(payload)}")
        return f"{before} bytes before the grant, all {len(payload)} after"


@check("credit", "credit.peer-respects-session-window",
       "our session window of 16 KiB, two streams of 32 KiB echoed",
       "at most 16 KiB in all before our session credit")  # fmt: skip
async def peer_respects_session_window(target: Target) -> str:
    async with target.session(initial_session_window=SMALL) as peer:
        peer.auto_credit = False
        peer.open(1)
        peer.open(3)
        one, three = os.urandom(32 * 1024), os.urandom(32 * 1024)
        peer.write(1, one, end=True)
        peer.write(3, three, end=True)
        await peer.settle()
        total = sum(len(peer.streams[s].data) for s in (1, 3))
        if total > SMALL:
            raise CheckFailed(f"the peer sent {total} bytes on a {SMALL}-byte session window")
        peer.send(fr.StreamCredit(0, 1 << 20).to_bytes())
        first, second = await peer.read_stream(1), await peer.read_stream(3)
        if bytes(first.data) != one or bytes(second.data) != three:
            raise CheckFailed("the echoed bytes differ after the session grant")
        return f"{total} bytes before the session grant, all after"


async def _fill_stream(peer: ScriptedPeer, stream_id: int) -> int:
    """Send on ``stream_id`` up to the credit (stream and session) until the peer grants no
    more; return the stream's limit.  The peer's echo stalls on our small window, so its
    consumption, and with it the credit, is bounded (by its send buffer)."""
    for _ in range(ROUNDS):
        limit, session = peer.stream_credit(stream_id), peer.session_credit
        room = min(limit - peer.sent.get(stream_id, 0), session - peer.session_sent)
        if room > 0:
            peer.send_data(stream_id, room)
        await peer.settle(rounds=3)
        if (peer.stream_credit(stream_id), peer.session_credit) == (limit, session) and (
            peer.sent.get(stream_id, 0) == limit or peer.session_sent == session
        ):
            return limit
    raise CheckFailed(f"the peer kept granting credit on stream {stream_id} for {ROUNDS} rounds")


@check("credit", "credit.stream-overrun", "one byte beyond the peer's stream credit",
       "RESET_STREAM FLOW_CONTROL_ERROR")  # fmt: skip
async def stream_overrun(target: Target) -> str:
    """A stalled echo stream filled to its credit, then one byte more.  A peer whose
    stream window outgrew its session window (auto-tuning) first gets bulk traffic on
    another stream, which grows the session window, and a fresh try."""
    async with target.session(initial_stream_window=SMALL) as peer:
        stream_id, pump = 1, 8 * 1024 * 1024
        for _ in range(PUMP_TRIES):
            peer.manual_credit.add(stream_id)  # its echo stalls on our window
            peer.open(stream_id)
            limit = await _fill_stream(peer, stream_id)
            if peer.session_sent < peer.session_credit:
                peer.send_data(stream_id, 1)
                detail = await peer.expect_reset(stream_id, ErrorCode.FLOW_CONTROL_ERROR)
                return f"stream limit {limit} (try {stream_id // 4 + 1}): {detail}"
            peer.send(fr.ResetStream(stream_id, ErrorCode.CANCEL).to_bytes())
            await _pump(peer, stream_id + 2, pump)
            stream_id, pump = stream_id + 4, pump * 2
        raise NotApplicable("the session credit always ran out before the stream credit")


async def _pump(peer: ScriptedPeer, stream_id: int, size: int) -> None:
    """``size`` bytes through an echo stream with credit granted as they come back."""
    peer.open(stream_id)
    sent = 0
    while sent < size:
        room = min(
            peer.stream_credit(stream_id) - sent, peer.session_credit - peer.session_sent,
            size - sent,
        )  # fmt: skip
        if room > 0:
            peer.send_data(stream_id, room, end=sent + room == size)
            sent += room
        else:
            await peer.expect_type(fr.Frame)
    got = await peer.read_stream(stream_id)
    if len(got.data) != size:
        raise CheckFailed(f"the pump stream echoed {len(got.data)} of {size} bytes")


@check("credit", "credit.session-overrun", "one byte beyond the peer's session credit",
       "GOAWAY FLOW_CONTROL_ERROR")  # fmt: skip
async def session_overrun(target: Target) -> str:
    async with target.session(initial_stream_window=SMALL) as peer:
        peer.auto_credit = False
        assert peer.peer_ready is not None
        streams = min(peer.peer_ready.max_concurrent_streams, MAX_STREAMS)
        for index in range(streams):
            stream_id = 2 * index + 1
            peer.open(stream_id)
            await _fill_stream(peer, stream_id)
            if peer.session_sent >= peer.session_credit:
                break
        else:
            return await _overrun_in_one_frame(peer, 2 * streams + 1)
        if peer.sent.get(stream_id, 0) >= peer.stream_credit(stream_id):
            stream_id += 2
            peer.open(stream_id)
        peer.send_data(stream_id, 1)
        detail = await peer.expect_goaway(ErrorCode.FLOW_CONTROL_ERROR)
        return f"session credit {peer.session_credit} over {stream_id // 2 + 1} streams: {detail}"


async def _overrun_in_one_frame(peer: ScriptedPeer, stream_id: int) -> str:
    """A peer that returns session credit as bytes arrive (ADR 0014) never runs out of it
    while streams stall; one DATA frame larger than the credit it has left overruns it,
    when one frame may be that large (the peer's session window is under two frames)."""
    assert peer.peer_ready is not None
    await peer.settle()
    remaining = peer.session_credit - peer.session_sent
    largest = min(peer.peer_ready.max_frame_size - 8, peer.peer_ready.initial_stream_window)
    if remaining + 1 > largest:
        raise NotApplicable(
            f"the peer returns session credit as bytes arrive and has {remaining} bytes of "
            f"it left, more than one frame on a new stream carries ({largest})"
        )
    peer.open(stream_id)
    peer.send(fr.Data(stream_id, 0, os.urandom(remaining + 1)).to_bytes())
    detail = await peer.expect_goaway(ErrorCode.FLOW_CONTROL_ERROR)
    return f"session credit returned on arrival; one frame of {remaining + 1} bytes: {detail}"


@check("credit", "credit.lower-grant-ignored", "STREAM_CREDIT below the current limit, "
       "and a repeated one", "ignored")  # fmt: skip
async def lower_grant_ignored(target: Target) -> str:
    async with target.session() as peer:
        peer.open(1)
        peer.send(
            fr.StreamCredit(1, 1).to_bytes(), fr.StreamCredit(1, 1).to_bytes(),
            fr.StreamCredit(0, 1).to_bytes(), fr.Data(1, 0, b"still echoed", True).to_bytes(),
        )  # fmt: skip
        got = await peer.read_stream(1)
        if bytes(got.data) != b"still echoed":
            raise CheckFailed(f"echo returned {bytes(got.data)!r}")
        return "ignored; the stream still echoes"
