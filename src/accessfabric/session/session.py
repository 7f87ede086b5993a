"""The sans-IO Fabric Data Session V1.

One way in, one way out: ``receive_data(bytes, now) -> events``; user actions
only queue output; ``data_to_send(max_bytes, now=now) -> bytes`` drains it, control
frames first, then stream data in the order the :class:`ClassScheduler`
picks.  Time only comes in as ``now``; ``get_timer()`` says when the session
next wants ``handle_timer(now)``.  Nothing here does I/O or reads a clock.

Peer misbehaviour never raises: a stream-level violation resets that stream
(RESET_STREAM + :class:`StreamReset`), a session-level one queues GOAWAY with
the error code and returns :class:`SessionTerminated` as the last event.
Misuse of the API raises :class:`LocalProtocolError`.

:class:`Session` is one class assembled from parts, a module each:
``core`` (the state, and how streams and the session end), ``handshake``,
``stream_frames`` (the peer's stream frames), ``resume`` (snapshots out,
adopted streams in), ``output`` (``data_to_send``) and ``timers``.  This module
dispatches received frames, handles the session-level ones and holds the user
actions and introspection.
"""

from __future__ import annotations

from accessfabric.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from accessfabric.session import events as ev
from accessfabric.session.core import (
    FOLDED_BYTES_IN,
    FOLDED_BYTES_OUT,
    FOLDED_FRAMES_IN,
    FOLDED_FRAMES_OUT,
    Dispatch,
    FrameHandler,
)
from accessfabric.session.flow import ReceiveWindow
from accessfabric.session.handshake import Handshake
from accessfabric.session.metrics import SessionMetrics, StreamMetrics
from accessfabric.session.output import Output
from accessfabric.session.pacing import DelayPacer
from accessfabric.session.resume import Resume
from accessfabric.session.rtt import RttEstimator
from accessfabric.session.scheduler import SHARED_CLASSES
from accessfabric.session.session_state import STREAMING_STATES, SessionInput, SessionState
from accessfabric.session.snapshot import StreamSnapshot
from accessfabric.session.stream import Stream
from accessfabric.session.stream_frames import StreamFrames
from accessfabric.session.stream_state import ACTIVE_STATES, StreamInput, StreamState
from accessfabric.session.timers import Timers
from accessfabric.wire import frames as fr
from accessfabric.wire.limits import MAX_U32
from accessfabric.wire.registry import TrafficClass

RESUME_TOKEN_SIZE = 16


class SendBufferFull(LocalProtocolError):
    """``send_data`` would queue more than ``max_stream_send_buffer`` bytes on the stream."""


class TooManyStreams(LocalProtocolError):
    """Opening a stream would exceed the peer's ``max_concurrent_streams``."""


class Session(Handshake, StreamFrames, Resume, Output, Timers):
    """One fabric session between this node and a peer, over any carrier.

    ``Session(dialer=..., authenticator=..., random_bytes=secrets.token_bytes, config=...,
    channel_binding=..., now=...)``;
    the state and the constructor are :class:`SessionCore`'s.
    """

    __slots__ = ()

    # ------------------------------------------------------------------ dispatch

    def _build_dispatch(self) -> Dispatch:
        cls = type(self)
        streaming: dict[type[fr.Frame], FrameHandler] = {
            fr.Data: cls._on_data,
            fr.OpenStream: cls._on_open_stream,
            fr.Ack: cls._on_ack,
            fr.StreamCredit: cls._on_credit,
            fr.CloseStream: cls._on_close_stream,
            fr.ResetStream: cls._on_reset_stream,
            fr.Ping: cls._on_ping,
            fr.Pong: cls._on_pong,
            fr.RouteUpdate: cls._on_route_update,
            fr.NodePressure: cls._on_node_pressure,
            fr.Goaway: cls._on_goaway,
            fr.UnknownFrame: cls._on_unknown,
        }
        before_ready: dict[type[fr.Frame], FrameHandler] = {
            fr.Goaway: cls._on_goaway,
            fr.UnknownFrame: cls._on_unknown,
        }
        return {
            SessionState.AWAIT_HELLO: {fr.Hello: cls._on_hello, **before_ready},
            SessionState.AWAIT_AUTH: {fr.Auth: cls._on_auth, **before_ready},
            SessionState.AWAIT_READY: {fr.SessionReady: cls._on_session_ready, **before_ready},
            SessionState.READY: streaming,
            SessionState.DRAINING: streaming,
            SessionState.CLOSED: {},
        }

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> list[ev.Event]:
        """Feed bytes from the carrier; return what the peer did."""
        self._now = now
        self._last_receive = now
        events: list[ev.Event] = []
        if self.state is SessionState.CLOSED:
            return events
        try:
            frames = self._decoder.feed(data)
        except RemoteProtocolError as error:
            self._fail(error, events)
            return events
        try:
            for frame in frames:
                handler = self._handlers[self.state].get(type(frame))
                if handler is None:
                    if self._terminated is not None:
                        break
                    name = type(frame).__name__
                    raise RemoteProtocolError(f"unexpected {name} in state {self.state.value}")
                handler(self, frame, events)
        except RemoteProtocolError as error:
            self._fail(error, events)
            return events
        self._check_drained(events)
        return events

    # ------------------------------------------------------------------ session frames

    def _on_ping(self, frame: fr.Ping, events: list[ev.Event]) -> None:
        self._check_control_room("PING flood")
        self._control.append(fr.Pong(frame.opaque).to_bytes())

    def _on_pong(self, frame: fr.Pong, events: list[ev.Event]) -> None:
        sent = self._pings.pop(frame.opaque, None)
        if sent is None:
            return  # a PONG we did not ask for: harmless
        rtt = self._now - sent
        self._rtt.update(rtt)
        if frame.opaque == self._keepalive_ping:
            self._keepalive_ping = None
            return
        if frame.opaque == self._rtt_probe:
            self._rtt_probe = None
            return
        events.append(ev.PingAcknowledged(opaque=frame.opaque, rtt=rtt))

    def _on_route_update(self, frame: fr.RouteUpdate, events: list[ev.Event]) -> None:
        events.append(ev.RouteUpdated(lease=frame.lease))

    def assume_peer_pressure(
        self, queue: int, cpu: int, memory: int, network: int, *, lapse_after: float
    ) -> None:
        """Act as if the peer had just reported these levels (its last report on an
        earlier session, node/streams/peer_pressure_memory.py); no event: nothing new
        was said.  The peer's next NODE_PRESSURE replaces them; if none comes within
        ``lapse_after`` seconds they are dropped (a peer still pressured resends every few
        seconds; one that recovered while no session was up told no one)."""
        if self.peer_pressure is None:
            self._take_peer_pressure((queue, cpu, memory, network))
            self._assumed_until = self._now + lapse_after

    def _on_node_pressure(self, frame: fr.NodePressure, events: list[ev.Event]) -> None:
        self._take_peer_pressure((frame.queue, frame.cpu, frame.memory, frame.network))
        events.append(
            ev.PeerPressure(
                queue=frame.queue, cpu=frame.cpu, memory=frame.memory, network=frame.network
            )
        )

    def _on_goaway(self, frame: fr.Goaway, events: list[ev.Event]) -> None:
        self._goaway_received = True
        events.append(
            ev.GoawayReceived(
                last_stream_id=frame.last_stream_id,
                error_code=frame.error_code,
                reason=frame.reason,
            )
        )
        if frame.error_code != ErrorCode.NO_ERROR or self.state not in STREAMING_STATES:
            self._terminate(frame.error_code, frame.reason, remote=True, events=events)
            return
        self._enter(SessionInput.RECV_GOAWAY)
        for stream in list(self._streams.values()):
            refused = stream.local and stream.stream_id > frame.last_stream_id
            # (only an active stream is refused: the table has REFUSED for those alone)
            if refused and stream.transition(StreamInput.REFUSED):
                self._release(stream)
                events.append(
                    ev.StreamReset(
                        stream_id=stream.stream_id,
                        error_code=ErrorCode.REFUSED_STREAM,
                        remote=True,
                    )
                )

    def _on_unknown(self, frame: fr.UnknownFrame, events: list[ev.Event]) -> None:
        self.ignored_frames += 1

    # ------------------------------------------------------------------ user actions

    def _require_ready(self) -> None:
        if self.state is not SessionState.READY:
            raise LocalProtocolError(f"session is {self.state.value}, not ready")

    def open_stream(
        self,
        service: str,
        traffic_class: TrafficClass = TrafficClass.RELIABLE,
        route_id: int = 0,
        *,
        key_exchange: bytes = b"",
        route_lease: bytes = b"",
        resume_token: bytes = b"",
    ) -> int:
        """Open a stream to a logical service; return its id.

        ``resume_token`` names the end-to-end stream (random when empty); a relay
        passes on the token of the stream it splices.
        """
        self._require_ready()
        return self._open(
            service,
            traffic_class,
            route_id,
            key_exchange,
            route_lease,
            None,
            resume_token=resume_token,
        )

    def resume_stream(
        self,
        snapshot: StreamSnapshot,
        route_id: int = 0,
        *,
        route_lease: bytes = b"",
        key_exchange: bytes = b"",
    ) -> int:
        """Reopen an exported stream on this session (OPEN_STREAM with RESUME).

        ``key_exchange`` carries a sealed stream's resume proof (docs/sealing.md).
        """
        self._require_ready()
        return self._open(
            snapshot.service,
            snapshot.traffic_class,
            route_id,
            key_exchange,
            route_lease,
            snapshot,
            resume_token=snapshot.resume_token,
        )

    def _open(
        self,
        service: str,
        traffic_class: TrafficClass,
        route_id: int,
        key_exchange: bytes,
        route_lease: bytes,
        snapshot: StreamSnapshot | None,
        *,
        resume_token: bytes,
    ) -> int:
        mine = sum(1 for s in self._streams.values() if s.local and s.state in ACTIVE_STATES)
        if mine >= self.peer_max_concurrent_streams:
            raise TooManyStreams(
                f"peer allows {self.peer_max_concurrent_streams} concurrent streams"
            )
        stream_id = self._next_local_id
        cfg = self.config
        token = resume_token or self._random(RESUME_TOKEN_SIZE)
        frame = fr.OpenStream(
            stream_id,
            service,
            TrafficClass(traffic_class),
            route_id,
            snapshot.recv_offset if snapshot else 0,
            snapshot is not None,
            token,
            key_exchange,
            route_lease,
        )
        encoded = frame.to_bytes()  # validates service, blobs, ids before any state changes
        self._next_local_id += 2
        if snapshot is None:
            window = ReceiveWindow(cfg.initial_stream_window, cfg.max_stream_window)
            stream = Stream(
                stream_id, service, frame.traffic_class, token, True, window,
                self._peer_stream_window,
            )  # fmt: skip
        else:
            stream = self._stream_from_snapshot(stream_id, snapshot, local=True)
        stream.transition(StreamInput.SEND_OPEN)
        self._streams[stream_id] = stream
        self._idle_since = None
        self._control.append(encoded)
        if snapshot is not None:
            self._announce_resumed(stream, snapshot, ack=False)
        return stream_id

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, end_stream: bool = False
    ) -> None:
        """Queue bytes on a stream (``end_stream``: they are the last).

        The session keeps a view of ``data`` until the peer acknowledges it, so
        a mutable buffer is copied once here.
        """
        stream = self._local_stream(stream_id)
        if stream.end_queued or stream.state not in (
            StreamState.OPEN,
            StreamState.HALF_CLOSED_REMOTE,
        ):
            raise LocalProtocolError(
                f"stream {stream_id} is {stream.state.value}; it cannot send"
                + (" (its end is already queued)" if stream.end_queued else "")
            )
        if type(data) is not bytes:
            data = bytes(data)
        size = len(data)
        if stream.traffic_class is TrafficClass.DROPPABLE:
            if stream.queued + size > self.config.droppable_queue_limit:
                stream.dropped_bytes += size
                self.dropped_bytes += size
                size = 0
        elif stream.queued + size > self.config.max_stream_send_buffer:
            raise SendBufferFull(
                f"stream {stream_id} has {stream.queued} bytes queued; "
                f"{size} more exceed {self.config.max_stream_send_buffer}"
            )
        if size:
            stream.send_queue.append(memoryview(data))
            stream.queued += size
        if end_stream:
            stream.end_queued = True
        self._after_queue(stream)

    def relay_stream(self, stream_id: int, group: str | None = None) -> None:
        """Hand this stream's ACKs to the application (a relay splicing it to another hop).

        The session stops acknowledging the bytes it receives on the stream — the
        relay forwards the far end's ACKs with :meth:`send_ack` instead, so ACKs stay
        end to end and a sender never drops bytes only a relay holds — and reports
        every ACK it receives as :class:`StreamAcknowledged`.  ``group``: as
        :meth:`set_stream_group` (a relay groups a splice's hops by tenant).
        """
        stream = self._local_stream(stream_id)
        stream.relayed = True
        if group is not None:
            self._scheduler.set_group(stream_id, stream.traffic_class, group)

    def set_stream_group(self, stream_id: int, group: str) -> None:
        """Let this stream share its send turns with the other streams of ``group``.

        The streams of one group take one turn of their class between them, where a
        stream of no group takes one of its own: a node puts a tenant's streams in the
        tenant's group, so a tenant with ten bulk streams gets the share of one on a
        session it shares with other tenants (issue 17, ADR 0051).  A stream that has
        already ended is left alone (it has no turns left to share).
        """
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._scheduler.set_group(stream_id, stream.traffic_class, group)

    def send_ack(self, stream_id: int, offset: int) -> None:
        """Acknowledge every byte of a relayed stream before ``offset`` (end to end)."""
        stream = self._local_stream(stream_id)
        recv = stream.recv
        if not stream.relayed:
            raise LocalProtocolError(f"stream {stream_id} acknowledges itself; it is not relayed")
        if not 0 <= offset <= recv.received:
            raise LocalProtocolError(
                f"stream {stream_id}: cannot acknowledge {offset}, only {recv.received} arrived"
            )
        window = min(MAX_U32, max(0, recv.limit - recv.received))
        self._control.append(fr.Ack(stream_id, offset, window).to_bytes())
        if offset > stream.relayed_acked:
            stream.relayed_acked = offset
            self._maybe_forget(stream)  # its last ACK may be the one it was kept for

    def send_buffer_available(self, stream_id: int) -> int:
        """How many more bytes ``send_data`` accepts on this stream now."""
        stream = self._local_stream(stream_id)
        return max(0, self.config.max_stream_send_buffer - stream.queued)

    def close_stream(self, stream_id: int) -> None:
        """End our side of the stream once everything queued is sent."""
        stream = self._local_stream(stream_id)
        if stream.end_queued:
            return
        if stream.state not in (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE):
            raise LocalProtocolError(f"stream {stream_id} is {stream.state.value}")
        stream.end_queued = True
        self._after_queue(stream)

    def reset_stream(self, stream_id: int, code: ErrorCode = ErrorCode.CANCEL) -> None:
        """Abort a stream; the peer gets RESET_STREAM with ``code``."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is StreamState.RESET:
            return
        stream.local_transition(StreamInput.SEND_RESET)
        self._queue_reset(stream_id, code)
        self._release(stream)

    def acknowledge_received(self, stream_id: int, nbytes: int) -> None:
        """The application consumed ``nbytes`` of a stream: this is what grants stream credit.

        Session credit is not waited for here: it came back when the bytes arrived.
        """
        if nbytes <= 0:
            return
        stream = self._streams.get(stream_id)
        if stream is None or stream.released:
            return  # a reset already freed what it held
        recv = stream.recv
        if recv.consumed + nbytes > recv.received:
            raise LocalProtocolError(
                f"stream {stream_id}: consumed {recv.consumed + nbytes} bytes, "
                f"only {recv.received} arrived"
            )
        grant = recv.consume(nbytes, self._now, self._rtt.srtt, self._stream_window_room)
        if grant is not None and stream.recv_end is None:
            self._control.append(fr.StreamCredit(stream_id, grant).to_bytes())

    def ping(self, now: float) -> int:
        """Send a PING at ``now``; the answer comes back as :class:`PingAcknowledged`."""
        self._require_ready()
        self._now = now
        opaque = self._random_u64()
        self._pings[opaque] = self._now
        self._control.append(fr.Ping(opaque).to_bytes())
        return opaque

    def send_pressure(self, queue: int, cpu: int = 0, memory: int = 0, network: int = 0) -> None:
        """Tell the peer how loaded this node is (percent).

        cpu / memory / network are kept: the session's own queue-pressure frames repeat
        them (a frame carries all four levels and the peer keeps only the last)."""
        self._require_ready()
        self.host_levels = (cpu, memory, network)
        self._control.append(fr.NodePressure(queue, cpu, memory, network).to_bytes())

    def send_route_update(self, lease: bytes) -> None:
        self._require_ready()
        self._control.append(fr.RouteUpdate(lease).to_bytes())

    def goaway(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Start draining: no new streams; with NO_ERROR open streams finish first."""
        if self.state is SessionState.CLOSED:
            return
        if not self._goaway_sent or code != ErrorCode.NO_ERROR:  # an error is always told
            self._send_goaway(code, reason)
        if code != ErrorCode.NO_ERROR or self.state not in STREAMING_STATES:
            self._enter(SessionInput.END)
            self._terminated = ev.SessionTerminated(error_code=code, reason=reason, remote=False)
            return
        self._enter(SessionInput.SEND_GOAWAY)

    # ------------------------------------------------------------------ introspection

    @property
    def rtt(self) -> RttEstimator:
        return self._rtt

    @property
    def last_receive(self) -> float:
        """When bytes from the peer last arrived (the ``now`` of ``receive_data``)."""
        return self._last_receive

    @property
    def pacer(self) -> DelayPacer | None:
        return self._pacer

    def stream_ids(self) -> list[int]:
        return list(self._streams)

    def stream_state(self, stream_id: int) -> StreamState | None:
        stream = self._streams.get(stream_id)
        return None if stream is None else stream.state

    def stream_progress(self, stream_id: int) -> Stream | None:
        """Stream ``stream_id``'s live record (offsets, ACKs, state), ``None`` once forgotten.

        Read it, never change it: the session changes it.  A holder may keep it after the
        session forgets the stream (a RESET frees it), to describe the stream later.
        """
        return self._streams.get(stream_id)

    def stream_metrics(self, stream_id: int) -> StreamMetrics:
        stream = self._local_stream(stream_id)
        return StreamMetrics.of(stream, self._now)

    def metrics(self) -> SessionMetrics:
        return SessionMetrics(
            state=self.state.value,
            bytes_out_by_class=self.bytes_out_by_class,
            bytes_in_by_class=self.bytes_in_by_class,
            frames_out_by_class=self._by_class(FOLDED_FRAMES_OUT, "frames_out"),
            frames_in_by_class=self._by_class(FOLDED_FRAMES_IN, "frames_in"),
            queued_bytes=self.queued_bytes(),
            control_queue=len(self._control),
            credit_stalls=self.credit_stalls,
            session_credit_stalls=self.session_credit_stalls,
            session_credit_stall_seconds=self.session_stall_seconds(),
            session_credit=self._session_credit_limit - self._session_sent,
            unread_bytes=sum(s.recv.received - s.recv.consumed for s in self._streams.values()),
            resets_by_code=dict(self.resets_by_code),
            dropped_bytes=self.dropped_bytes,
            srtt=self._rtt.srtt,
            rttvar=self._rtt.rttvar if self._rtt.srtt is not None else None,
            min_rtt=self._rtt.min_rtt,
            peer_pressure=self.peer_pressure,
            pacing_slowdowns=0 if self._pacer is None else self._pacer.slowdowns,
            pacing_window=None if self._pacer is None else self._pacer.window,
            pacer=None if self._pacer is None else self._pacer.metrics(),
            pressure_rate_cap=None if self._pressure_cap is None else self._pressure_cap.rate,
            pressure_cap_give_ups=None
            if self._pressure_cap is None
            else self._pressure_cap.give_ups,
            pressure_cap_reengages=None
            if self._pressure_cap is None
            else self._pressure_cap.reengages,
            bulk_weight=self._scheduler.weights[TrafficClass.BULK],
            streams=[StreamMetrics.of(s, self._now) for s in self._streams.values()],
        )

    def _by_class(self, index: int, attribute: str) -> dict[str, int]:
        """Per-class totals: forgotten streams (``_folded[cls][index]``) plus the live ones."""
        folded = self._folded
        result = {
            cls.name.lower(): folded[cls][index] if cls in folded else 0 for cls in TrafficClass
        }
        for stream in self._streams.values():
            result[stream.traffic_class.name.lower()] += getattr(stream, attribute)
        return result

    @property
    def bytes_out_by_class(self) -> dict[str, int]:
        return self._by_class(FOLDED_BYTES_OUT, "bytes_out")

    @property
    def bytes_in_by_class(self) -> dict[str, int]:
        return self._by_class(FOLDED_BYTES_IN, "bytes_in")


__all__ = ["SHARED_CLASSES", "SendBufferFull", "Session", "SessionState", "TooManyStreams"]
