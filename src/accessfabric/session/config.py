"""Session configuration: one frozen dataclass whose defaults work."""

from __future__ import annotations

from dataclasses import dataclass

from accessfabric.wire.limits import DEFAULT_MAX_FRAME_SIZE
from accessfabric.wire.registry import PROTOCOL_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Limits and timers of one fabric session.

    Windows are in bytes; times in seconds.  ``None`` disables a timer.
    """

    versions: tuple[int, ...] = (PROTOCOL_VERSION,)
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    """Largest DATA payload we accept (announced in SESSION_READY)."""
    initial_stream_window: int = 256 * 1024
    max_stream_window: int = 16 * 1024 * 1024
    initial_session_window: int = 1024 * 1024
    """Session credit (stream 0) granted at first; it is returned as DATA *arrives*, so it
    bounds bytes in flight, not unread bytes (ADR 0014)."""
    max_session_window: int = 64 * 1024 * 1024
    stream_window_budget: int = 48 * 1024 * 1024
    """Bytes by which this session's stream receive windows may grow, in total, beyond
    ``initial_stream_window``.  Unread bytes per session are at most open streams x
    ``initial_stream_window`` + this (each stream's unread bytes stay within its window)."""
    urgent_session_reserve: int = 64 * 1024
    """Session credit reliable/bulk/droppable leave unused for control/dns/interactive
    (at most a quarter of the peer's initial session window)."""
    max_concurrent_streams: int = 256
    max_stream_send_buffer: int = 4 * 1024 * 1024
    """Bytes a stream may queue before ``send_data`` refuses more (droppable drops instead)."""
    droppable_queue_limit: int = 256 * 1024
    max_control_queue: int = 4096
    """Queued control frames (PONGs, ACKs...) beyond which a peer is told to calm down."""
    handshake_timeout: float | None = 10.0
    keepalive_interval: float | None = 15.0
    """Send a PING after this long without receiving anything."""
    ping_timeout: float | None = 10.0
    """The peer is dead when a PING stays unanswered this long."""
    idle_timeout: float | None = None
    """End the session after this long with no open stream (None: persistent)."""
    pacing_target_delay: float | None = 0.00025
    """Queueing delay (RTT above the minimum) the pacer aims for; None disables pacing.

    The pacer raises it to twice the RTT samples' variation on a noisy path.  0.25 ms
    (was 0.5 ms): in ``bench hol`` on a quiet machine interactive p50 0.85 vs 1.12 ms
    and p99 1.85 vs 2.84 ms (medians of 7 alternating runs), bulk 95 % of the link
    either way; docs/benchmarks.md, hol."""
    interactive_in_flight: int | None = 256 * 1024
    """Bytes of reliable/bulk/droppable allowed in flight (sent, not yet acknowledged)
    while the session carries interactive data (either direction, within the last
    second), or two bandwidth-delay products where that is more, whatever the pacer's
    delay says; None: no such bound (ADR 0072).  Needs pacing (``pacing_target_delay``).
    Through the VPN under iperf3 TCP: ping p99 6-8 -> ~2 ms at the same throughput
    (128 KiB cost 22 % of it; 384 and 512 KiB left the p99 at 5-8 ms)."""
    pacing_min_window: int = 64 * 1024
    """Bytes of reliable/bulk/droppable always allowed in flight, whatever the delay says."""
    pressure_queue_bytes: int = 64 * 1024 * 1024
    """Queued send bytes that count as 100 % queue pressure (NODE_PRESSURE at >= 50 %)."""
    pressure_bulk_weight: int = 1
    """Bulk's DRR weight while the peer reports pressure (normally 2)."""
    pressure_min_rate: int | None = 512 * 1024
    """Bytes/s the rate cap on reliable/bulk/droppable goes down to while the peer reports
    cpu or memory pressure and the session carries interactive data (``PressureRateCap``,
    AIMD); None: no cap, the weight only.  On by default since ADR 0045's amendment: under
    a CPU hog in the peer's cgroup interactive p50 stays a few ms where it is ~100 ms
    without the cap; it engages only while interactive data flows (a bulk-only session
    keeps its full rate on a busy shared host) and gives way when the floor neither
    relieves the peer nor lowers interactive's RTT (docs/benchmarks.md, "pressure"; ADR
    0045's last amendment)."""
    pressure_cap_always: bool = False
    """Cap bulk toward a pressured peer even when the session carries no interactive data."""
    route_epoch: int = 0
    peer_epoch: int = 0
    capabilities: bytes = b""
