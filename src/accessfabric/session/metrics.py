"""Point-in-time metrics of a session and its streams (plain data for status and Prometheus)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accessfabric.session.stream import Stream


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamMetrics:
    stream_id: int
    service: str
    traffic_class: str
    state: str
    bytes_in: int
    bytes_out: int
    frames_in: int
    frames_out: int
    queued_bytes: int
    unacked_bytes: int
    credit: int
    credit_stalls: int
    """Times the stream waited for credit, its own or the session's."""
    session_credit_stalls: int
    """Of those, times it had stream credit but waited for the session's."""
    stall_seconds: float
    unread_bytes: int
    """Received bytes the application has not consumed yet (at most ``recv_window``)."""
    recv_window: int
    dropped_bytes: int

    @classmethod
    def of(cls, stream: Stream, now: float) -> StreamMetrics:
        stall = stream.stall_time
        if stream.stall_since is not None:
            stall += now - stream.stall_since
        return cls(
            stream_id=stream.stream_id,
            service=stream.service,
            traffic_class=stream.traffic_class.name.lower(),
            state=stream.state.value,
            bytes_in=stream.bytes_in,
            bytes_out=stream.bytes_out,
            frames_in=stream.frames_in,
            frames_out=stream.frames_out,
            queued_bytes=stream.queued,
            unacked_bytes=stream.send_offset - stream.acked,
            credit=stream.credit,
            credit_stalls=stream.credit_stalls,
            session_credit_stalls=stream.session_credit_stalls,
            stall_seconds=stall,
            unread_bytes=stream.recv.received - stream.recv.consumed,
            recv_window=stream.recv.window,
            dropped_bytes=stream.dropped_bytes,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PacerMetrics:
    """The delay-based pacer of one session (``session/pacing.py``): state and counters."""

    limiting: bool
    """The pacer limits the shared classes' bytes in flight (it saw a queue)."""
    window: float | None
    """Bytes in flight allowed; None while not limiting."""
    in_flight: int
    delivery_rate: float | None
    """Bytes/s the peer acknowledged in the last measured period; None before the first."""
    min_rtt: float | None
    """The base: lowest filtered data-path RTT (ACK timing) of the last 10 s, seconds."""
    queueing_delay: float | None
    """Latest filtered RTT above the base, seconds."""
    floor: float
    """Queueing delay tolerated because a productive probe showed the window does not cause it."""
    probes: int
    """Times the pacer raised its window for one period to see whether the rate follows."""
    productive_probes: int
    """Probes after which the delivery rate rose (the delay was not a queue of ours)."""
    unproductive_probes: int
    """Probes after which it did not (a full pipe: the window went back)."""
    backoffs: int
    """RTT samples on which the queueing delay was above target and the window shrank."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionMetrics:
    state: str
    bytes_out_by_class: dict[str, int]
    bytes_in_by_class: dict[str, int]
    frames_out_by_class: dict[str, int]
    frames_in_by_class: dict[str, int]
    queued_bytes: int
    control_queue: int
    credit_stalls: int
    session_credit_stalls: int
    """Times a stream with bytes and stream credit waited for session credit."""
    session_credit_stall_seconds: float
    """Time stream data waited for session credit (the current wait included)."""
    session_credit: int
    """Session credit the peer has left us (bytes we may still send)."""
    unread_bytes: int
    """Received bytes of all streams the application has not consumed yet."""
    resets_by_code: dict[int, int]
    dropped_bytes: int
    srtt: float | None
    rttvar: float | None
    """RTT variation (RFC 6298), i.e. the jitter the session measures."""
    min_rtt: float | None
    peer_pressure: tuple[int, int, int, int] | None
    """The peer's last NODE_PRESSURE: queue, cpu, memory, network (percent)."""
    pacing_slowdowns: int
    """Times the delay-based pacer shrank its window (a scheduler decision)."""
    pacing_window: float | None
    pacer: PacerMetrics | None = None
    """The delay-based pacer's state and counters; None when pacing is off."""
    pressure_rate_cap: float | None
    """Bytes/s reliable/bulk/droppable may send while the peer is under cpu/memory pressure
    (``PressureRateCap``); None: not capping."""
    pressure_cap_give_ups: int | None
    """Times the pressure rate cap gave way (held at its floor for ``GIVE_UP_AFTER`` with
    the peer still pressured, ADR 0045); None when the cap is off (``pressure_min_rate``)."""
    pressure_cap_reengages: int | None
    """Times lifting the cap after a give-way cost interactive its latency (lifted median RTT
    above twice the floor's + 5 ms), so it re-engaged at once and backs off its next
    give-way (ADR 0045); None when the cap is off."""
    bulk_weight: int
    """Bulk's DRR weight now: 2, or ``pressure_bulk_weight`` while the peer reports pressure."""
    streams: list[StreamMetrics]
