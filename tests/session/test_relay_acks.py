"""A relay forwards ACKs end to end, so a sender never drops bytes only the relay held."""

from __future__ import annotations

import hashlib
import random

import pytest

from accessfabric.errors import LocalProtocolError
from accessfabric.session import Session, SessionConfig
from accessfabric.session import events as ev
from accessfabric.wire import TrafficClass
from tests.session.pair import Pair, make_pair


class Relay:
    """Splices one stream from the upstream pair (source, relay) to the downstream one."""

    def __init__(self, up: Pair, down: Pair) -> None:
        self.up, self.down = up, down
        self.up_stream = 0
        self.down_stream = 0

    @property
    def relay_up(self) -> Session:
        return self.up.b

    @property
    def relay_down(self) -> Session:
        return self.down.a

    def pump_up(self) -> None:
        """Move bytes on the upstream hop, letting the relay act before it answers."""
        for _ in range(100):
            to_relay = self.up.a.data_to_send(now=0.0)
            if to_relay:
                self.up.events_b += self.relay_up.receive_data(to_relay, 0.0)
            self.handle()
            to_source = self.relay_up.data_to_send(now=0.0)
            if to_source:
                self.up.events_a += self.up.a.receive_data(to_source, 0.0)
            if not to_relay and not to_source:
                return

    def handle(self) -> None:
        for event in self.up.take("b"):
            if isinstance(event, ev.StreamOpened):
                self.up_stream = event.stream_id
                self.relay_up.relay_stream(event.stream_id)
                self.down_stream = self.relay_down.open_stream(
                    event.service, event.traffic_class, resume_token=event.resume_token
                )
                self.relay_down.relay_stream(self.down_stream)
            elif isinstance(event, ev.DataReceived):
                self.relay_down.send_data(self.down_stream, bytes(event.data))
                self.relay_up.acknowledge_received(event.stream_id, len(event.data))
        for event in self.down.take("a"):
            if isinstance(event, ev.StreamAcknowledged):
                self.relay_up.send_ack(self.up_stream, event.offset)


def test_relay_failure_loses_nothing_because_acks_are_end_to_end() -> None:
    config = SessionConfig(keepalive_interval=None)
    up, down = make_pair(config, config), make_pair(config, config)
    relay = Relay(up, down)
    source, dest = up.a, down.b
    payload = random.Random(5).randbytes(2_000_000)
    stream = source.open_stream("files", TrafficClass.BULK)
    chunks = [payload[i : i + 100_000] for i in range(0, len(payload), 100_000)]
    got = bytearray()
    dest_stream = 0
    for _ in range(200):
        while chunks and source.send_buffer_available(stream) >= len(chunks[0]):
            source.send_data(stream, chunks.pop(0))
        relay.pump_up()
        # The downstream hop is slow: it moves at most 64 KiB per round.
        down.events_b += down.b.receive_data(down.a.data_to_send(max_bytes=65536, now=0.0), 0.0)
        for event in down.take("b"):
            if isinstance(event, ev.StreamOpened):
                dest_stream = event.stream_id
            elif isinstance(event, ev.DataReceived):
                got += event.data
                dest.acknowledge_received(event.stream_id, len(event.data))
        down.events_a += down.a.receive_data(down.b.data_to_send(now=0.0), 0.0)
        relay.handle()
        relay.pump_up()
        if len(got) > 600_000:
            break
    forwarded = relay.relay_down.stream_metrics(relay.down_stream).bytes_out
    # The relay has taken far more than the destination has: hop ACKs would have lied.
    assert relay.relay_up.stream_metrics(relay.up_stream).bytes_in > len(got) + 100_000
    snapshot = source.export_stream(stream)
    assert snapshot.send_acked <= len(got) <= forwarded
    # The relay dies. The source resumes straight to the destination from the last
    # end-to-end ACK; the destination adopts its side of the stream.
    direct = make_pair(config, config)
    resumed = direct.a.resume_stream(snapshot)
    direct.pump()
    opened = next(e for e in direct.take("b") if isinstance(e, ev.StreamOpened))
    direct.b.adopt_stream(opened.stream_id, dest.export_stream(dest_stream), opened.start_offset)
    for _ in range(500):
        while chunks and direct.a.send_buffer_available(resumed) >= len(chunks[0]):
            direct.a.send_data(resumed, chunks.pop(0), end_stream=not chunks)
        direct.pump()
        events = direct.take("b")
        for event in events:
            if isinstance(event, ev.DataReceived):
                got += event.data
                direct.b.acknowledge_received(event.stream_id, len(event.data))
        if not events and not chunks:
            break
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_send_ack_is_only_for_relayed_streams_and_received_bytes() -> None:
    pair = make_pair()
    stream = pair.a.open_stream("x", TrafficClass.RELIABLE)
    pair.a.send_data(stream, b"abc")
    pair.pump()
    remote = next(e.stream_id for e in pair.take("b") if isinstance(e, ev.StreamOpened))
    with pytest.raises(LocalProtocolError):
        pair.b.send_ack(remote, 3)
    pair.b.relay_stream(remote)
    with pytest.raises(LocalProtocolError):
        pair.b.send_ack(remote, 4)
    pair.b.send_ack(remote, 3)
    pair.pump()
    assert pair.a.stream_metrics(stream).unacked_bytes == 0


def test_a_relayed_stream_waits_for_its_last_ack_after_both_ends_closed() -> None:
    """Both ends may close before the far end's ACK of the last bytes reaches the relay:
    the relay's hop stream must stay until that ACK is passed on, or the source never
    sees its last bytes acknowledged (it would take the path for stalled)."""
    pair = make_pair()
    source = pair.a.open_stream("x", TrafficClass.RELIABLE)
    pair.a.send_data(source, b"request", end_stream=True)
    events = pair.b.receive_data(pair.a.data_to_send(now=0.0), 0.0)
    relayed = next(e.stream_id for e in events if isinstance(e, ev.StreamOpened))
    pair.b.relay_stream(relayed)  # as a relay does, before anything is acknowledged
    pair.b.send_data(relayed, b"reply", end_stream=True)  # the far end's answer and end
    pair.pump()
    pair.take("a")
    assert relayed in pair.b.stream_ids()  # closed both ways, yet kept for the ACK
    assert pair.a.stream_metrics(source).unacked_bytes == len(b"request")
    pair.b.send_ack(relayed, len(b"request"))  # the far end's ACK arrives late
    pair.pump()
    assert source not in pair.a.stream_ids()  # all acknowledged: the source lets it go
    assert relayed not in pair.b.stream_ids()  # and so does the relay
