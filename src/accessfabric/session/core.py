"""The state every part of a session shares, and how streams and the session end.

:class:`~accessfabric.session.session.Session` is one class assembled from
mixins that each own one concern (handshake, stream frames, resume, output,
timers).  All of them inherit :class:`SessionCore`: the session's state and the
bookkeeping every part uses — finding, resetting and forgetting streams,
GOAWAY, and the end of the session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from accessfabric.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from accessfabric.session import events as ev
from accessfabric.session.auth import Authenticator
from accessfabric.session.config import SessionConfig
from accessfabric.session.flow import SessionReceiveWindow
from accessfabric.session.pacing import DelayPacer
from accessfabric.session.pressure_cap import PressureRateCap
from accessfabric.session.rtt import RttEstimator
from accessfabric.session.scheduler import SHARED_CLASSES, ClassScheduler
from accessfabric.session.session_state import TRANSITIONS, SessionInput, SessionState
from accessfabric.session.stream import Stream
from accessfabric.session.stream_state import ACTIVE_STATES, StreamInput, StreamState
from accessfabric.session.transitions import apply
from accessfabric.wire import frames as fr
from accessfabric.wire.decoder import FrameDecoder
from accessfabric.wire.limits import DEFAULT_MAX_FRAME_SIZE, NONCE_SIZE
from accessfabric.wire.registry import TrafficClass

PRESSURE_HIGH = 50
"""A peer pressure level (percent) at or above which bulk's share is lowered."""
_SHARED = frozenset(SHARED_CLASSES)


FrameHandler = Callable[[Any, Any, list[ev.Event]], None]
"""``handler(session, frame, events)``: handles one received frame, appending what the
peer did to the events (a function of the class, not a bound method: one table per class,
not per session)."""
Dispatch = dict[SessionState, dict[type[fr.Frame], FrameHandler]]

_DISPATCH: dict[type, Dispatch] = {}
"""Each session class's dispatch table, built at its first session."""

FOLDED_BYTES_IN, FOLDED_BYTES_OUT, FOLDED_FRAMES_IN, FOLDED_FRAMES_OUT = range(4)
"""Positions in a class's list of ``SessionCore._folded`` totals."""


def _dispatch_of(session: SessionCore) -> Dispatch:
    table = _DISPATCH.get(type(session))
    if table is None:
        table = _DISPATCH[type(session)] = session._build_dispatch()
    return table


RandomSource = Callable[[int], bytes]
"""``n`` -> ``n`` random bytes: where a session draws its nonce, resume tokens and PING
opaques.  The caller passes ``secrets.token_bytes``; a test passes a seeded source so a
run replays byte for byte."""


class SessionCore:
    """The state of one session, and the bookkeeping all its parts share.

    Slotted (the mixins and :class:`Session` add none): an idle session's attributes
    cost one pointer each instead of a ~1.6 KiB instance ``__dict__`` (issue 17, ADR 0044).
    ``__init__`` still creates every one of them; ``tests/session/test_mixins.py`` checks
    the two lists agree.
    """

    __slots__ = (
        "_ack_pending", "_assumed_until", "_auth", "_channel_binding", "_control", "_decoder",
        "_folded", "_goaway_received", "_goaway_sent", "_handlers", "_highest_peer_id",
        "_idle_since", "_keepalive_ping", "_last_park_check", "_last_receive", "_local_hello",
        "_next_local_id", "_nonce", "_now", "_paced_wake", "_pacer", "_peer_node_record",
        "_peer_stream_window", "_pings", "_pressure_cap", "_pressure_checks", "_pressure_high",
        "_random", "_rtt", "_rtt_probe", "_scheduler", "_session_credit_limit", "_session_recv",
        "_session_sent", "_session_stall_since", "_session_stalled", "_started", "_streams",
        "_terminated", "_transcript", "_urgent_reserve", "config", "credit_stalls", "dialer",
        "dropped_bytes", "host_levels", "ignored_frames", "pacer_parked_bytes",
        "peer_max_concurrent_streams", "peer_max_frame_size", "peer_node_id", "peer_pressure",
        "peer_public_key", "resets_by_code", "session_credit_stalls", "session_stall_time", "state",
        "version",
    )  # fmt: skip

    def __init__(
        self,
        *,
        dialer: bool,
        authenticator: Authenticator,
        config: SessionConfig | None = None,
        random_bytes: RandomSource,
        channel_binding: bytes = b"",
        now: float,
    ) -> None:
        self.config = config = config or SessionConfig()
        self._random = random_bytes
        self.dialer = dialer
        self._auth = authenticator
        self._channel_binding = channel_binding
        self.state = SessionState.AWAIT_HELLO
        self._decoder = FrameDecoder(max(config.max_frame_size, DEFAULT_MAX_FRAME_SIZE))
        self._now = now
        self._started = now
        self._last_receive = now
        self._control: list[bytes] = []  # a deque's first block costs ~640 B per session
        self._streams: dict[int, Stream] = {}
        self._next_local_id = 1 if dialer else 2
        self._highest_peer_id = 0
        self._scheduler = ClassScheduler(quantum=DEFAULT_MAX_FRAME_SIZE)
        self._rtt = RttEstimator()
        self._pacer = (
            DelayPacer(
                config.pacing_target_delay,
                config.pacing_min_window,
                interactive_in_flight=config.interactive_in_flight,
            )
            if config.pacing_target_delay is not None
            else None
        )
        self._pressure_cap = (
            PressureRateCap(
                config.pressure_min_rate, PRESSURE_HIGH, always=config.pressure_cap_always
            )
            if config.pressure_min_rate is not None
            else None
        )
        # Ordered sets as dicts (an empty dict is 64 B, an empty set 216 B; issue 17).
        self._ack_pending: dict[Stream, None] = {}
        self._last_park_check = now
        self._paced_wake: float | None = None  # the pacer held data back: look again then
        self.pacer_parked_bytes = 0
        """Unacknowledged bytes the pacer stopped counting as in flight (Output._park...)."""
        self._pings: dict[int, float] = {}
        self._keepalive_ping: int | None = None
        self._rtt_probe: int | None = None
        self._terminated: ev.SessionTerminated | None = None
        self._goaway_sent = False
        self._goaway_received = False
        self._idle_since: float | None = now
        self._pressure_high = False
        self.peer_pressure: tuple[int, int, int, int] | None = None
        self._assumed_until: float | None = None
        """When levels taken from an earlier session lapse unless the peer reports first."""
        """The peer's last NODE_PRESSURE levels: queue, cpu, memory, network (percent)."""
        self._pressure_checks = 0
        self.host_levels: tuple[int, int, int] = (0, 0, 0)
        """Our own last cpu / memory / network levels (``send_pressure``): the session's
        queue-only NODE_PRESSURE frames carry them, so they never reset the peer's view."""
        # Handshake.
        self._nonce = random_bytes(NONCE_SIZE)
        self._local_hello = fr.Hello(
            tuple(config.versions),
            authenticator.node_id,
            authenticator.public_key,
            self._nonce,
            config.capabilities,
            authenticator.node_record,
        ).to_bytes()
        self.peer_node_id: str | None = None
        self.peer_public_key: bytes | None = None
        self._peer_node_record = b""
        self._transcript = b""
        self.version = 0
        # Limits the peer announced (until SESSION_READY: protocol defaults).
        self.peer_max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self.peer_max_concurrent_streams = 0
        self._peer_stream_window = 0
        # Session-wide credit, both directions.  Ours is returned as DATA arrives (ADR 0014).
        self._session_sent = 0
        self._session_credit_limit = 0
        self._session_recv = SessionReceiveWindow(
            config.initial_session_window, config.max_session_window
        )
        self._urgent_reserve = 0  # session credit the shared classes leave (set on READY)
        # Streams waiting for session credit, and since when the session has been short of it.
        self._session_stalled: dict[Stream, None] = {}
        self._session_stall_since: float | None = None
        self.session_stall_time = 0.0
        self.session_credit_stalls = 0
        """Times a stream with bytes and stream credit waited for session credit."""
        # Counters.
        # Per-class totals of streams already forgotten (live ones are summed on demand):
        # [bytes in, bytes out, frames in, frames out], a class's list made when its first
        # stream is forgotten (an idle session has none: issue 17).
        self._folded: dict[TrafficClass, list[int]] = {}
        self.resets_by_code: dict[int, int] = {}
        self.credit_stalls = 0
        self.dropped_bytes = 0
        self.ignored_frames = 0
        self._control.append(self._local_hello)
        self._handlers = _dispatch_of(self)

    def _build_dispatch(self) -> Dispatch:
        """The frame handlers of each state (:class:`Session` assembles them from its parts):
        functions of the class, called as ``handler(session, frame, events)``.  Built once
        per class (:func:`_dispatch_of`), shared by its sessions."""
        raise NotImplementedError

    def _enter(self, event: SessionInput) -> None:
        """Move the session along ``session_state.TRANSITIONS``: the one place its state
        changes.  Frames are dispatched by state, so a missing pair is a bug here."""
        target = apply(TRANSITIONS, self.state, event)
        if target is None:
            raise LocalProtocolError(f"session cannot {event.value} in state {self.state.value}")
        self.state = target

    def _random_u64(self) -> int:
        """A random 64-bit PING opaque from the session's random source."""
        return int.from_bytes(self._random(8), "big")

    # ------------------------------------------------------------------ streams

    def _local_stream(self, stream_id: int) -> Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"no open stream {stream_id}")
        return stream

    def _after_queue(self, stream: Stream) -> None:
        if stream.wants_to_send:
            self._scheduler.mark_ready(stream.stream_id, stream.traffic_class)
        elif stream.queued and stream.stall_since is None:
            stream.credit_stalls += 1
            self.credit_stalls += 1
            stream.stall_since = self._now

    def _check_control_room(self, what: str) -> None:
        """A peer whose frames would queue more answers than we keep is told to calm down."""
        if len(self._control) >= self.config.max_control_queue:
            raise RemoteProtocolError(what, ErrorCode.ENHANCE_YOUR_CALM)

    def _return_session_credit(self, nbytes: int) -> None:
        """DATA bytes arrived: session credit comes back at once, whatever the stream does
        with them (each stream's unread bytes are bounded by its own window).

        The window grows on the path's minimum RTT, not the smoothed one (ADR 0070): it
        bounds the bytes between the peer's session and ours, i.e. what stands in the
        carrier's FIFOs ahead of an urgent frame, and a smoothed RTT inflated by those
        very bytes (a CPU-bound reader) would grow it further."""
        grant = self._session_recv.consume(nbytes, self._now, self._rtt.min_rtt)
        if grant is not None:
            self._control.append(fr.StreamCredit(0, grant).to_bytes())

    def _stream_window_room(self) -> int:
        """How far one more stream receive window may grow within ``stream_window_budget``."""
        initial = self.config.initial_stream_window
        grown = sum(max(0, s.recv.window - initial) for s in self._streams.values())
        return self.config.stream_window_budget - grown

    # ------------------------------------------------------------------ session-credit stalls

    def _session_credit_stall(self, stream: Stream, ready: list[Stream]) -> None:
        """``stream`` (and the ready streams behind it) has bytes and stream credit but no
        session credit: count one stall per stream, time the session's."""
        now = self._now
        if self._session_stall_since is None:
            self._session_stall_since = now
        for waiting in (stream, *ready):
            if waiting in self._session_stalled or not waiting.queued:
                continue
            self._session_stalled[waiting] = None
            waiting.credit_stalls += 1
            waiting.session_credit_stalls += 1
            self.credit_stalls += 1
            self.session_credit_stalls += 1
            if waiting.stall_since is None:
                waiting.stall_since = now

    def _session_credit_arrived(self) -> None:
        now = self._now
        if self._session_stall_since is not None:
            self.session_stall_time += now - self._session_stall_since
            self._session_stall_since = None
        for stream in self._session_stalled:
            if stream.stall_since is not None:
                stream.stall_time += now - stream.stall_since
                stream.stall_since = None
        self._session_stalled.clear()

    def session_stall_seconds(self) -> float:
        """Time stream data waited for session credit, the current wait included."""
        since = self._session_stall_since
        return self.session_stall_time + (0.0 if since is None else self._now - since)

    # ------------------------------------------------------------------ errors and ending

    def _stream_error(self, stream: Stream, error: ProtocolError, events: list[ev.Event]) -> None:
        """Reset one stream for a violation on it; all other streams keep flowing."""
        if stream.state is StreamState.RESET:
            return
        self._check_control_room("stream-error flood")
        stream.local_transition(StreamInput.STREAM_ERROR)
        self._release(stream)
        self._queue_reset(stream.stream_id, error.error_code)
        events.append(
            ev.StreamReset(
                stream_id=stream.stream_id,
                error_code=error.error_code,
                remote=False,
                reason=str(error),
            )
        )

    def _queue_reset(self, stream_id: int, code: ErrorCode) -> None:
        self._count_reset(int(code))
        self._control.append(fr.ResetStream(stream_id, code).to_bytes())

    def _count_reset(self, code: int) -> None:
        self.resets_by_code[code] = self.resets_by_code.get(code, 0) + 1

    def _release(self, stream: Stream) -> None:
        """Free what a reset stream holds."""
        self._scheduler.discard(stream.stream_id, stream.traffic_class)
        stream.send_queue.clear()
        stream.queued = 0
        if self._pacer is not None and stream.traffic_class in _SHARED:
            self._pacer.forget(stream.paced_in_flight)
        stream.retained.clear()
        stream.timing.clear()
        self._ack_pending.pop(stream, None)
        self._session_stalled.pop(stream, None)
        stream.recv.consumed = stream.recv.received  # its unread bytes are freed
        stream.released = True
        self._maybe_forget(stream)

    def _maybe_forget(self, stream: Stream) -> None:
        done = stream.state is StreamState.RESET or (
            stream.state is StreamState.CLOSED
            and stream.acked >= stream.send_offset
            # a relayed stream stays until the far end's ACK of all it received has been
            # passed on: a relay forwards that ACK after both ends may have closed
            and (not stream.relayed or stream.relayed_acked >= stream.recv.received)
        )
        if done and self.state is not SessionState.CLOSED:
            if self._streams.pop(stream.stream_id, None) is not None:
                self._scheduler.forget(stream.stream_id, stream.traffic_class)
                self._fold_counters(stream)
                self._session_stalled.pop(stream, None)
            if not any(s.state in ACTIVE_STATES for s in self._streams.values()):
                self._idle_since = self._now

    def _take_peer_pressure(self, levels: tuple[int, int, int, int]) -> None:
        """The peer's pressure levels are ``levels`` now: bulk's weight and the cap follow."""
        self.peer_pressure = levels
        self._assumed_until = None
        high = max(levels) >= PRESSURE_HIGH
        weight = self.config.pressure_bulk_weight if high else 2
        self._scheduler.set_weight(TrafficClass.BULK, weight)
        if self._pressure_cap is not None:
            self._pressure_cap.on_peer_pressure(levels[1], levels[2], self._now)

    def _lapse_assumed_pressure(self, now: float) -> None:
        """Levels assumed from an earlier session whose time is up with no report from
        the peer on this one: forget them (bulk's weight and the cap back to normal)."""
        if self._assumed_until is not None and now >= self._assumed_until:
            self._take_peer_pressure((0, 0, 0, 0))
            self.peer_pressure = None

    def _fold_counters(self, stream: Stream) -> None:
        totals = self._folded.get(stream.traffic_class)
        if totals is None:
            totals = self._folded[stream.traffic_class] = [0, 0, 0, 0]
        totals[FOLDED_BYTES_IN] += stream.bytes_in
        totals[FOLDED_BYTES_OUT] += stream.bytes_out
        totals[FOLDED_FRAMES_IN] += stream.frames_in
        totals[FOLDED_FRAMES_OUT] += stream.frames_out

    def _fail(self, error: RemoteProtocolError, events: list[ev.Event]) -> None:
        """A session-level violation: GOAWAY with its code, then the session is over."""
        self._send_goaway(error.error_code, str(error))
        self._terminate(error.error_code, str(error), remote=False, events=events)

    def _send_goaway(self, code: ErrorCode, reason: str) -> None:
        self._goaway_sent = True
        reason_bytes = reason.encode("utf-8")[:1000].decode("utf-8", "ignore")
        self._control.append(fr.Goaway(self._highest_peer_id, code, reason_bytes).to_bytes())

    def _terminate(
        self, code: ErrorCode | int, reason: str, *, remote: bool, events: list[ev.Event]
    ) -> None:
        if self.state is SessionState.CLOSED:
            return
        self._enter(SessionInput.END)
        self._terminated = ev.SessionTerminated(error_code=code, reason=reason, remote=remote)
        events.append(self._terminated)

    def _check_drained(self, events: list[ev.Event]) -> None:
        if self.state is SessionState.DRAINING and not any(
            s.state in ACTIVE_STATES for s in self._streams.values()
        ):
            self._terminate(
                ErrorCode.NO_ERROR, "drained", remote=self._goaway_received, events=events
            )

    @property
    def terminated(self) -> ev.SessionTerminated | None:
        """How the session ended, once it has."""
        return self._terminated
