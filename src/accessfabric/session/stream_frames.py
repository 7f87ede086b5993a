"""The peer's stream frames: DATA, OPEN_STREAM, ACK, STREAM_CREDIT, CLOSE_STREAM, RESET_STREAM.

DATA is checked against the session's and the stream's credit; in-order bytes
on an open stream take a fast path, everything else (gaps, duplicates resent
after a resume, data on a closed stream) the general one.  A violation on one
stream resets that stream only (``_stream_error``); a frame that breaks the
session (a stream id never opened or reused, session credit overrun, more
answers than the control queue holds) raises, and ``receive_data`` ends it.
"""

from __future__ import annotations

from accessfabric.errors import (
    ErrorCode,
    FlowControlError,
    InvalidStreamIdError,
    RemoteProtocolError,
    StreamClosedError,
)
from accessfabric.session import events as ev
from accessfabric.session.core import SessionCore
from accessfabric.session.flow import ReceiveWindow
from accessfabric.session.scheduler import SHARED_CLASSES
from accessfabric.session.stream import Stream
from accessfabric.session.stream_state import ACTIVE_STATES, StreamInput, StreamState
from accessfabric.wire import frames as fr
from accessfabric.wire.registry import TrafficClass

_SHARED = frozenset(SHARED_CLASSES)
_INTERACTIVE = TrafficClass.INTERACTIVE
_OPEN = StreamState.OPEN
_HALF_CLOSED_LOCAL = StreamState.HALF_CLOSED_LOCAL


class StreamFrames(SessionCore):
    """The handlers of the frames that act on one stream."""

    __slots__ = ()

    def _peer_stream(self, stream_id: int, events: list[ev.Event]) -> Stream | None:
        """The stream a received frame names, or None when it is gone (closed or reset)."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        peer_parity = 0 if self.dialer else 1
        if stream_id % 2 == peer_parity:
            if stream_id > self._highest_peer_id:
                raise InvalidStreamIdError(f"frame on stream {stream_id}, which was never opened")
        elif stream_id >= self._next_local_id:
            raise InvalidStreamIdError(f"frame on our stream {stream_id}, which we never opened")
        return None

    def _on_data(self, frame: fr.Data, events: list[ev.Event]) -> None:
        payload = frame.payload
        size = len(payload)
        # Session-wide credit counts every DATA byte on the wire, duplicates included, and
        # is returned as the bytes arrive: what a stream holds unread is bounded by that
        # stream's own window, so no stream can keep the session's credit (ADR 0014).
        session_recv = self._session_recv
        session_recv.received += size
        if session_recv.received > session_recv.limit:
            raise FlowControlError(
                f"peer sent {session_recv.received} DATA bytes, beyond the session credit "
                f"of {session_recv.limit}"
            )
        if size:
            self._return_session_credit(size)
        stream = self._streams.get(frame.stream_id)
        if stream is not None and size:
            # Fast path: new in-order bytes within credit on a stream that may receive.
            # (TRANSITIONS maps RECV_DATA in both of these states to the same state.)
            recv = stream.recv
            end = frame.offset + size
            state = stream.state
            if (
                frame.offset == recv.received
                and end <= recv.limit
                and (state is _OPEN or state is _HALF_CLOSED_LOCAL)
            ):
                recv.received = end
                stream.frames_in += 1
                stream.bytes_in += size
                if stream.traffic_class is _INTERACTIVE:
                    if self._pressure_cap is not None:
                        self._pressure_cap.on_interactive(self._now)
                    if self._pacer is not None:
                        self._pacer.on_interactive(self._now)
                events.append(ev.DataReceived(frame.stream_id, payload, frame.offset))
                if not stream.relayed:
                    self._ack_pending[stream] = None
                if frame.end_stream:
                    self._end_received(stream, end, events)
                return
        self._on_data_general(frame, stream, events)

    def _on_data_general(
        self, frame: fr.Data, stream: Stream | None, events: list[ev.Event]
    ) -> None:
        payload = frame.payload
        size = len(payload)
        if stream is None:
            stream = self._peer_stream(frame.stream_id, events)
        offset = frame.offset
        end = offset + size
        if (
            stream is None
            or stream.state is StreamState.RESET
            or (stream.recv_end is not None and end <= stream.recv_end)  # resent after resume
        ):
            return
        recv = stream.recv
        delivered = recv.received
        if offset > delivered:
            self._stream_error(
                stream,
                RemoteProtocolError(f"DATA at {offset} leaves a gap after {delivered}"),
                events,
            )
            return
        # The state check comes before the window takes the bytes: a stream reset for
        # DATA after its end must not count that DATA as unread.
        if not stream.transition(StreamInput.RECV_DATA):
            self._stream_error(
                stream,
                StreamClosedError(
                    f"DATA on stream {stream.stream_id} after its end "
                    f"(state {stream.state.value}, end at {stream.recv_end}, "
                    f"data at {offset}..{end}, resumed={stream.resumed})"
                ),
                events,
            )
            return
        try:
            recv.on_data(end)
        except FlowControlError as error:
            self._stream_error(stream, error, events)
            return
        duplicate = min(end, delivered) - offset
        if duplicate:
            payload = payload[duplicate:]
            offset += duplicate
        stream.frames_in += 1
        if payload:
            stream.bytes_in += len(payload)
            events.append(ev.DataReceived(frame.stream_id, payload, offset))
            self._ack_pending[stream] = None
        if frame.end_stream:
            self._end_received(stream, end, events)

    def _end_received(self, stream: Stream, final_offset: int, events: list[ev.Event]) -> None:
        if not stream.transition(StreamInput.RECV_END):
            self._stream_error(
                stream, StreamClosedError(f"stream {stream.stream_id} ended twice"), events
            )
            return
        stream.recv_end = final_offset
        self._ack_pending[stream] = None
        events.append(ev.StreamEnded(stream_id=stream.stream_id, final_offset=final_offset))
        self._maybe_forget(stream)

    def _on_open_stream(self, frame: fr.OpenStream, events: list[ev.Event]) -> None:
        stream_id = frame.stream_id
        peer_parity = 0 if self.dialer else 1
        if stream_id % 2 != peer_parity:
            raise InvalidStreamIdError(f"peer opened stream {stream_id} with our parity")
        if stream_id <= self._highest_peer_id:
            raise InvalidStreamIdError(
                f"peer reused stream id {stream_id} (highest so far {self._highest_peer_id})"
            )
        self._highest_peer_id = stream_id
        if self._goaway_sent:
            self._check_control_room("refused-stream flood")
            self._queue_reset(stream_id, ErrorCode.REFUSED_STREAM)
            return
        active = sum(1 for s in self._streams.values() if not s.local and s.state in ACTIVE_STATES)
        if active >= self.config.max_concurrent_streams:
            self._check_control_room("refused-stream flood")
            self._queue_reset(stream_id, ErrorCode.REFUSED_STREAM)
            return
        cfg = self.config
        # A resumed stream gets no credit until the adopting side grants it from its state.
        stream = Stream(
            stream_id,
            frame.service,
            frame.traffic_class,
            frame.resume_token,
            False,
            ReceiveWindow(cfg.initial_stream_window, cfg.max_stream_window),
            0 if frame.resume else self._peer_stream_window,
        )
        stream.transition(StreamInput.RECV_OPEN)
        self._streams[stream_id] = stream
        self._idle_since = None
        events.append(
            ev.StreamOpened(
                stream_id=stream_id,
                service=frame.service,
                traffic_class=frame.traffic_class,
                route_id=frame.route_id,
                resume=frame.resume,
                resume_token=frame.resume_token,
                start_offset=frame.start_offset,
                key_exchange=frame.key_exchange,
                route_lease=frame.route_lease,
            )
        )

    def _on_ack(self, frame: fr.Ack, events: list[ev.Event]) -> None:
        stream = self._peer_stream(frame.stream_id, events)
        if stream is None:
            return
        stream.ack_seen_at = self._now
        if frame.offset > stream.send_offset:
            if stream.resumed and frame.offset <= stream.send_offset + stream.queued:
                stream.skip_to(frame.offset)  # the peer had more than our last ACK said
                return
            if stream.resumed and stream.relayed and not stream.queued and not stream.bytes_out:
                # A relay resuming a spliced stream holds none of its bytes: the far end's
                # first ACK says where the stream stands, and the relay passes it upstream.
                stream.skip_to(frame.offset)
                events.append(
                    ev.StreamAcknowledged(stream_id=stream.stream_id, offset=frame.offset)
                )
                return
            self._stream_error(
                stream,
                RemoteProtocolError(
                    f"ACK of byte {frame.offset}, but only {stream.send_offset} were sent"
                ),
                events,
            )
            return
        paced = stream.paced_in_flight
        newly = stream.on_ack(frame.offset)
        if newly and stream.relayed:
            events.append(ev.StreamAcknowledged(stream_id=stream.stream_id, offset=frame.offset))
        if newly:
            now = self._now
            timing = stream.timing
            sent_at = -1.0
            while timing and timing[0][0] <= frame.offset:
                sent_at = timing.popleft()[1]
            if sent_at >= 0:
                sample = now - sent_at
                self._rtt.update(sample)
                if stream.traffic_class is _INTERACTIVE and self._pressure_cap is not None:
                    self._pressure_cap.on_interactive_rtt(sample, now)
                if self._pacer is not None:
                    self._pacer.on_rtt_sample(sample, now)
            if self._pacer is not None and stream.traffic_class in _SHARED:
                self._pacer.on_delivered(paced - stream.paced_in_flight, now)
        self._maybe_forget(stream)

    def _on_credit(self, frame: fr.StreamCredit, events: list[ev.Event]) -> None:
        if frame.stream_id == 0:
            if frame.max_offset > self._session_credit_limit:
                self._session_credit_limit = frame.max_offset
                self._session_credit_arrived()
                events.append(ev.CreditGranted(stream_id=0, max_offset=frame.max_offset))
            return
        stream = self._peer_stream(frame.stream_id, events)
        if stream is None or frame.max_offset <= stream.credit_limit:
            return
        stream.credit_limit = frame.max_offset
        if stream.stall_since is not None:
            stream.stall_time += self._now - stream.stall_since
            stream.stall_since = None
        if stream.wants_to_send and stream.state is not StreamState.RESET:
            self._scheduler.mark_ready(stream.stream_id, stream.traffic_class)
        events.append(ev.CreditGranted(stream_id=stream.stream_id, max_offset=frame.max_offset))

    def _on_close_stream(self, frame: fr.CloseStream, events: list[ev.Event]) -> None:
        stream = self._peer_stream(frame.stream_id, events)
        if stream is None or stream.state is StreamState.RESET:
            return
        if frame.final_offset != stream.recv.received:
            self._stream_error(
                stream,
                RemoteProtocolError(
                    f"CLOSE_STREAM at {frame.final_offset}, but {stream.recv.received} arrived"
                ),
                events,
            )
            return
        self._end_received(stream, frame.final_offset, events)

    def _on_reset_stream(self, frame: fr.ResetStream, events: list[ev.Event]) -> None:
        stream = self._peer_stream(frame.stream_id, events)
        if stream is None or stream.state is StreamState.RESET:
            return
        stream.transition(StreamInput.RECV_RESET)
        self._release(stream)
        self._count_reset(int(frame.error_code))
        events.append(
            ev.StreamReset(stream_id=stream.stream_id, error_code=frame.error_code, remote=True)
        )
