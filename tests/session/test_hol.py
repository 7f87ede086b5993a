"""Head-of-line proofs: bulk never stalls control, DNS or interactive streams."""

from __future__ import annotations

import hashlib

from accessfabric.session import SessionConfig
from accessfabric.session import events as ev
from accessfabric.wire import Data, FrameDecoder, TrafficClass
from tests.session.pair import make_pair, received_bytes

MAX_FRAME = 16 * 1024


def test_blocked_bulk_does_not_delay_urgent_streams() -> None:
    pair = make_pair()
    bulk = pair.a.open_stream("download", TrafficClass.BULK)
    for _ in range(4):
        pair.a.send_data(bulk, b"B" * (1 << 20))
    pair.pump()
    # The bulk reader consumes nothing: the stream sits at zero credit.
    assert pair.a.stream_metrics(bulk).credit == 0
    assert pair.a.stream_metrics(bulk).queued_bytes > 0
    pair.take("b")

    urgent = {
        cls: pair.a.open_stream(f"svc-{cls.name.lower()}", cls)
        for cls in (TrafficClass.CONTROL, TrafficClass.DNS, TrafficClass.INTERACTIVE)
    }
    for cls, stream_id in urgent.items():
        pair.a.send_data(stream_id, f"{cls.name} message".encode())
    # One exchange, no time passes: every urgent message arrives at once.
    out = pair.a.data_to_send(now=0.0)
    events = pair.b.receive_data(out, pair.now)
    for cls, stream_id in urgent.items():
        assert received_bytes(events, stream_id) == f"{cls.name} message".encode()
    assert received_bytes(events, bulk) == b""
    assert pair.a.stream_metrics(bulk).credit_stalls >= 1


def test_interactive_waits_behind_at_most_one_bulk_frame() -> None:
    config = SessionConfig(max_frame_size=MAX_FRAME, pacing_target_delay=None)
    pair = make_pair(config, config)
    bulk = pair.a.open_stream("download", TrafficClass.BULK)
    interactive = pair.a.open_stream("rdp", TrafficClass.INTERACTIVE)
    pair.pump()
    wire = bytearray()
    written_at: list[int] = []
    chunk = b"x" * (1 << 20)
    for step in range(400):
        if pair.a.send_buffer_available(bulk) >= len(chunk):
            pair.a.send_data(bulk, chunk)
        if step % 7 == 3:
            written_at.append(len(wire))
            pair.a.send_data(interactive, b"k")
        # The carrier takes about one frame's worth each time the socket drains.
        out = pair.a.data_to_send(max_bytes=MAX_FRAME + 17, now=pair.now)
        wire += out
        for event in pair.b.receive_data(out, pair.now):
            if isinstance(event, ev.DataReceived):
                pair.b.acknowledge_received(event.stream_id, len(event.data))
        pair.a.receive_data(pair.b.data_to_send(now=pair.now), pair.now)

    positions = []
    offset = 0
    decoder = FrameDecoder(MAX_FRAME)
    for frame in decoder.feed(bytes(wire)):
        size = len(frame.to_bytes())
        if isinstance(frame, Data) and frame.stream_id == interactive:
            positions.append(offset)
        offset += size
    assert len(positions) == len(written_at) > 50
    bulk_bytes = pair.a.metrics().bytes_out_by_class["bulk"]
    assert bulk_bytes > 100 * MAX_FRAME  # bulk really was saturating
    for wrote, sent in zip(written_at, positions, strict=True):
        assert sent - wrote <= MAX_FRAME + 17


def test_droppable_overflow_drops_only_droppable_data() -> None:
    config = SessionConfig(droppable_queue_limit=64 * 1024)
    pair = make_pair(config, config)
    telemetry = pair.a.open_stream("telemetry", TrafficClass.DROPPABLE)
    reliable = pair.a.open_stream("api", TrafficClass.RELIABLE)
    bulk = pair.a.open_stream("sync", TrafficClass.BULK)
    sent = {reliable: bytearray(), bulk: bytearray()}
    for i in range(40):
        pair.a.send_data(telemetry, bytes([i]) * 8192)  # 320 KiB offered, 64 KiB fit
        for stream_id in sent:
            piece = bytes([i]) * 20_000
            pair.a.send_data(stream_id, piece)
            sent[stream_id] += piece
    dropped = pair.a.stream_metrics(telemetry).dropped_bytes
    assert dropped == 40 * 8192 - 64 * 1024
    got: dict[int, bytearray] = {telemetry: bytearray(), reliable: bytearray(), bulk: bytearray()}
    for _ in range(200):
        pair.pump()
        events = pair.take("b")
        if not events:
            break
        for event in events:
            if isinstance(event, ev.DataReceived):
                got[event.stream_id] += event.data
                pair.b.acknowledge_received(event.stream_id, len(event.data))
    for stream_id, data in sent.items():
        assert hashlib.sha256(got[stream_id]).digest() == hashlib.sha256(data).digest()
    assert len(got[telemetry]) == 64 * 1024
    assert pair.a.metrics().dropped_bytes == dropped


def test_queue_pressure_is_signalled_to_the_peer() -> None:
    config = SessionConfig(pressure_queue_bytes=1 << 20, max_stream_send_buffer=4 << 20)
    pair = make_pair(config, config)
    bulk = pair.a.open_stream("sync", TrafficClass.BULK)
    pair.a.send_data(bulk, b"x" * (3 << 20))  # 300 % of the pressure mark, window is 256 KiB
    for _ in range(40):
        pair.pump()
    pressure = [e for e in pair.take("b") if isinstance(e, ev.PeerPressure)]
    assert pressure and pressure[0].queue >= 50


def test_queue_pressure_frames_keep_the_host_levels_last_sent() -> None:
    """A queue-only NODE_PRESSURE repeats the node's cpu / memory / network levels."""
    config = SessionConfig(pressure_queue_bytes=1 << 20, max_stream_send_buffer=4 << 20)
    pair = make_pair(config, config)
    pair.a.send_pressure(0, cpu=80, memory=30, network=40)
    pair.pump()
    pair.take("b")
    bulk = pair.a.open_stream("sync", TrafficClass.BULK)
    pair.a.send_data(bulk, b"x" * (3 << 20))
    for _ in range(40):
        pair.pump()
    pressure = [e for e in pair.take("b") if isinstance(e, ev.PeerPressure)]
    assert pressure and pressure[0].queue >= 50
    assert (pressure[0].cpu, pressure[0].memory, pressure[0].network) == (80, 30, 40)
    assert pair.b.peer_pressure is not None and pair.b.peer_pressure[1:] == (80, 30, 40)
