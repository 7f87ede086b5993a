"""A takeover decided in the middle of a batch of frames from the old path's session.

A session hands the node every event of one ``receive_data`` call at once, after it
counted all of their bytes.  When the OPEN_STREAM with RESUME arrives on the session
that still carries the old hop stream (the relay before the destination is the same on
both paths), DATA for the old hop stream can follow it in the same batch: a session
sends its control frames (the OPEN_STREAM) before queued DATA.  The destination takes
the stream over while handling the OPEN_STREAM: its snapshot says it received those
bytes (``offset_in``), so the source will not send them again — they must still reach
the reader through the old hop stream.  (Seen as ``record N failed authentication`` on a
sealed 64 MiB echo after a network change: ~115 KB received on the old path never
reached the reader.)
"""

from __future__ import annotations

import asyncio

import pytest

from accessfabric.carriers.base import CarrierInfo
from accessfabric.errors import ErrorCode
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.node.streams.resumable import ResumableStream, session_stream
from accessfabric.session import events as ev
from accessfabric.session.snapshot import StreamSnapshot
from tests.session.pair import make_pair

TOKEN = b"t" * 16


def payload(start: int, size: int) -> bytes:
    return bytes((start + i) % 251 for i in range(size))


@pytest.mark.parametrize("end", [False, True], ids=["data", "data-and-end"])
async def test_bytes_behind_the_resume_open_in_one_batch_reach_the_reader(end: bool) -> None:
    pair = make_pair()
    peer, dest = pair.a, pair.b  # the source, or the relay before the destination
    info = CarrierInfo(kind="memory", dialer=False, peer_address="peer", channel_binding=b"")
    connection = SessionConnection(dest, info)
    served: list[ResumableStream] = []

    def on_event(event: ev.Event) -> None:  # what the destination's StreamRouter does
        if not isinstance(event, ev.StreamOpened):
            return
        hop = connection.stream(event.stream_id)
        assert hop is not None
        if not event.resume:  # serves it
            state = session_stream(connection, event.stream_id)
            served.append(ResumableStream(hop, state, event.resume_token))
            return
        wrapper = served[0]  # adopts it: taken over, the old hop stream still lives
        old_conn, old_id = wrapper.connection, wrapper.stream_id
        snapshot = wrapper.snapshot()
        connection.session.adopt_stream(event.stream_id, snapshot, event.start_offset)
        old_conn.session.reset_stream(old_id, ErrorCode.ROUTE_REJECTED)
        wrapper.rebind(hop, session_stream(connection, event.stream_id))
        offsets_in.append(snapshot.recv_offset)

    offsets_in: list[int] = []
    connection.on_event.append(on_event)

    old = peer.open_stream("web", resume_token=TOKEN)
    peer.send_data(old, payload(0, 1000))
    connection.data_received(peer.data_to_send(now=0.0))
    assert served, "the stream is served"

    # One batch: the resume OPEN_STREAM (control, sent first), then old-path DATA.
    resume = StreamSnapshot(
        resume_token=TOKEN, service="web", traffic_class=served[0].traffic_class,
        send_acked=1000, send_buffer=(memoryview(payload(1000, 3000 if end else 3500)),),
        send_end=end,
        recv_offset=0, recv_consumed=0, recv_ended=False,
    )  # fmt: skip
    peer.resume_stream(resume)
    peer.send_data(old, payload(1000, 3000), end_stream=end)
    connection.data_received(peer.data_to_send(now=0.0))
    assert offsets_in == [4000], "the destination announces it has all 4000 bytes"
    if not end:  # old-path bytes in a later batch are past the snapshot: the new path
        peer.send_data(old, payload(4000, 200))  # brings them
        connection.data_received(peer.data_to_send(now=0.0))

    # The peer resends from the announced offset on the new path.
    await asyncio.sleep(0)  # the destination's flush
    peer.receive_data(dest.data_to_send(now=0.0), 0.0)
    connection.data_received(peer.data_to_send(now=0.0))

    wrapper = served[0]
    want = payload(0, 4000 if end else 4500)
    got = b""
    while len(got) < len(want) and want.startswith(got):
        data = await asyncio.wait_for(wrapper.read(), 5)
        if not data:
            break
        got += data
    right = first_difference(got, want)
    assert got == want, f"the reader got {len(got)} bytes, the first {right} right"
    if end:
        assert await asyncio.wait_for(wrapper.read(), 5) == b"", "then the end of the stream"


def first_difference(got: bytes, want: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(got, want, strict=False)) if x != y), len(got))
