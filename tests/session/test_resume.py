"""Cut a session mid-transfer and resume the stream on a new pair from the last ACK."""

from __future__ import annotations

import hashlib
import random

from accessfabric.session import Session, StreamSnapshot, StreamState
from accessfabric.session import events as ev
from accessfabric.wire import TrafficClass
from tests.session.pair import Pair, make_pair


def _feed(session: Session, chunks: list[bytes], data: bytes, sid: int) -> None:
    while chunks and session.send_buffer_available(sid) >= len(chunks[0]):
        chunk = chunks.pop(0)
        session.send_data(sid, chunk, end_stream=not chunks)


def _deliver(pair: Pair, got: dict[str, bytearray], rounds: int, cut_after: int | None) -> int:
    """Move bytes; with ``cut_after`` stop after that many bytes reached b (mid-flight)."""
    for _ in range(rounds):
        to_b = pair.a.data_to_send(max_bytes=50_000, now=0.0)
        to_a = pair.b.data_to_send(max_bytes=50_000, now=0.0)
        if not to_b and not to_a:
            return 0
        for event in pair.b.receive_data(to_b, pair.now):
            if isinstance(event, ev.DataReceived):
                got["b"] += event.data
                pair.b.acknowledge_received(event.stream_id, len(event.data))
        if cut_after is not None and len(got["b"]) >= cut_after:
            return 1  # the reply in to_a is lost with the dead session
        for event in pair.a.receive_data(to_a, pair.now):
            if isinstance(event, ev.DataReceived):
                got["a"] += event.data
                pair.a.acknowledge_received(event.stream_id, len(event.data))
    return 0


def test_resume_after_cut_delivers_every_byte_once_both_ways() -> None:
    rng = random.Random(7)
    up = rng.randbytes(3_000_000)
    down = rng.randbytes(1_500_000)
    first = make_pair()
    sid_a = first.a.open_stream("files", TrafficClass.BULK)
    first.pump()
    sid_b = next(e.stream_id for e in first.take("b") if isinstance(e, ev.StreamOpened))
    up_chunks = [up[i : i + 65536] for i in range(0, len(up), 65536)]
    down_chunks = [down[i : i + 65536] for i in range(0, len(down), 65536)]
    got = {"a": bytearray(), "b": bytearray()}
    while len(got["b"]) < 1_200_000:
        _feed(first.a, up_chunks, up, sid_a)
        _feed(first.b, down_chunks, down, sid_b)
        if _deliver(first, got, 1, cut_after=1_200_000):
            break
    # The carrier dies: bytes in flight are lost; each side keeps its stream state.
    snap_a: StreamSnapshot = first.a.export_stream(sid_a)
    snap_b: StreamSnapshot = first.b.export_stream(sid_b)
    assert snap_a.send_acked < len(got["b"])  # b has bytes a does not know were acknowledged
    assert snap_a.resume_token == snap_b.resume_token

    second = make_pair()
    resumed = second.a.resume_stream(snap_a)
    second.pump()
    opened = [e for e in second.take("b") if isinstance(e, ev.StreamOpened)]
    assert len(opened) == 1 and opened[0].resume
    assert opened[0].resume_token == snap_a.resume_token
    second.b.adopt_stream(opened[0].stream_id, snap_b, opened[0].start_offset)
    sid_b2 = opened[0].stream_id
    for _ in range(10_000):
        _feed(second.a, up_chunks, up, resumed)
        _feed(second.b, down_chunks, down, sid_b2)
        idle = not _deliver(second, got, 1, None) and not up_chunks and not down_chunks
        if idle and len(got["b"]) == len(up) and len(got["a"]) == len(down):
            break
    assert hashlib.sha256(got["b"]).hexdigest() == hashlib.sha256(up).hexdigest()
    assert hashlib.sha256(got["a"]).hexdigest() == hashlib.sha256(down).hexdigest()


def test_resumed_stream_without_adoption_can_be_refused() -> None:
    pair = make_pair()
    sid = pair.a.open_stream("files", TrafficClass.BULK)
    pair.a.send_data(sid, b"x" * 1000)
    snap = pair.a.export_stream(sid)
    other = make_pair()
    resumed = other.a.resume_stream(snap)
    other.pump()
    opened = next(e for e in other.take("b") if isinstance(e, ev.StreamOpened))
    # The peer does not know the token: it resets, and nothing was sent without credit.
    other.b.reset_stream(opened.stream_id)
    other.pump()
    resets = [e for e in other.take("a") if isinstance(e, ev.StreamReset)]
    assert [r.stream_id for r in resets] == [resumed]
    assert other.b.metrics().bytes_in_by_class["bulk"] == 0


def test_empty_chunks_in_a_snapshot_never_end_the_stream() -> None:
    """An empty view in a resumed send buffer once went out as CLOSE_STREAM mid-stream."""
    pair = make_pair()
    sid = pair.a.open_stream("echo", TrafficClass.INTERACTIVE)
    pair.pump()
    snapshot = pair.a.export_stream(sid)
    padded = StreamSnapshot(
        resume_token=snapshot.resume_token,
        service=snapshot.service,
        traffic_class=snapshot.traffic_class,
        send_acked=0,
        send_buffer=(memoryview(b""), memoryview(b"ping"), memoryview(b"")),
        send_end=False,
        recv_offset=0,
        recv_consumed=0,
        recv_ended=False,
    )
    other = make_pair()
    resumed = other.a.resume_stream(padded)
    other.pump()
    opened = next(e for e in other.take("b") if isinstance(e, ev.StreamOpened))
    other.b.adopt_stream(opened.stream_id, pair.b.export_stream(opened.stream_id), 0)
    other.pump()
    other.a.send_data(resumed, b"pong")
    other.pump()
    events = other.take("b")
    assert not any(isinstance(e, ev.StreamEnded | ev.StreamReset) for e in events), events
    got = b"".join(bytes(e.data) for e in events if isinstance(e, ev.DataReceived))
    assert got == b"pingpong"


def test_data_skipped_by_the_peers_ack_does_not_end_the_stream() -> None:
    """The peer already had the resent bytes: the stream must go on, not send CLOSE_STREAM."""
    first = make_pair()
    sid = first.a.open_stream("echo", TrafficClass.INTERACTIVE)
    first.a.send_data(sid, b"ping")
    first.pump()  # b received "ping"; cut before a learns of the ACK
    snapshot = first.a.export_stream(sid)
    stale = StreamSnapshot(
        resume_token=snapshot.resume_token,
        service=snapshot.service,
        traffic_class=snapshot.traffic_class,
        send_acked=0,  # a did not see the ACK before the carrier died
        send_buffer=(memoryview(b"ping"),),
        send_end=False,
        recv_offset=0,
        recv_consumed=0,
        recv_ended=False,
    )
    second = make_pair()
    resumed = second.a.resume_stream(stale)
    second.pump()
    opened = next(e for e in second.take("b") if isinstance(e, ev.StreamOpened))
    second.b.adopt_stream(opened.stream_id, first.b.export_stream(sid), opened.start_offset)
    second.pump()  # b's ACK(4) makes a skip the resent "ping"
    second.a.send_data(resumed, b"pong")
    second.pump()
    events = second.take("b")
    assert not any(isinstance(e, ev.StreamEnded | ev.StreamReset) for e in events), events
    assert [bytes(e.data) for e in events if isinstance(e, ev.DataReceived)] == [b"pong"]
    assert second.a.stream_state(resumed) is StreamState.OPEN
