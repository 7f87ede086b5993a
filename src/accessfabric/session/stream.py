"""One stream's two directions: what is queued, sent, acknowledged, received and consumed."""

from __future__ import annotations

from collections import deque

from accessfabric.errors import LocalProtocolError
from accessfabric.session.flow import ReceiveWindow
from accessfabric.session.stream_state import TRANSITIONS, StreamInput, StreamState
from accessfabric.session.transitions import apply
from accessfabric.wire.registry import TrafficClass


class Stream:
    """Per-stream state the session keeps.  Offsets are absolute stream byte offsets."""

    __slots__ = (
        "ack_seen_at",
        "acked",
        "bytes_in",
        "bytes_out",
        "credit_limit",
        "credit_stalls",
        "dropped_bytes",
        "end_queued",
        "end_sent",
        "frames_in",
        "frames_out",
        "local",
        "paced_from",
        "queued",
        "recv",
        "recv_end",
        "relayed",
        "relayed_acked",
        "released",
        "resume_token",
        "resumed",
        "retained",
        "send_offset",
        "send_queue",
        "service",
        "session_credit_stalls",
        "stall_since",
        "stall_time",
        "state",
        "stream_id",
        "timing",
        "traffic_class",
    )

    def __init__(
        self,
        stream_id: int,
        service: str,
        traffic_class: TrafficClass,
        resume_token: bytes,
        local: bool,
        recv_window: ReceiveWindow,
        credit_limit: int,
        send_offset: int = 0,
    ) -> None:
        self.stream_id = stream_id
        self.service = service
        self.traffic_class = traffic_class
        self.resume_token = resume_token
        self.local = local
        self.resumed = False
        self.relayed = False
        self.relayed_acked = recv_window.received  # relayed: received bytes acked onward
        self.state = StreamState.IDLE
        # Send side.
        self.send_queue: deque[memoryview] = deque()
        self.queued = 0
        self.send_offset = send_offset
        self.acked = send_offset
        self.ack_seen_at: float | None = None  # session time of the last ACK frame
        self.retained: deque[tuple[int, memoryview]] = deque()
        self.credit_limit = credit_limit
        self.end_queued = False
        self.end_sent = False
        self.timing: deque[tuple[int, float]] = deque()  # (end offset, sent at): RTT marks
        # Sent bytes from here on count in the pacer's bytes in flight (see Output._park).
        self.paced_from = send_offset
        # Receive side.
        self.recv = recv_window
        self.recv_end: int | None = None
        self.released = False  # a reset freed what it held: the app's late ACKs are moot
        # Metrics.
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0
        self.frames_out = 0
        self.credit_stalls = 0
        """Waits for credit: the stream's own, or the session's (also counted below)."""
        self.session_credit_stalls = 0
        self.stall_since: float | None = None
        self.stall_time = 0.0
        self.dropped_bytes = 0

    def transition(self, event: StreamInput) -> bool:
        """Apply ``event``; return False when the table has no such transition."""
        target = apply(TRANSITIONS, self.state, event)
        if target is None:
            return False
        self.state = target
        return True

    def local_transition(self, event: StreamInput) -> None:
        if not self.transition(event):
            raise LocalProtocolError(
                f"stream {self.stream_id}: cannot {event.value} in state {self.state.value}"
            )

    @property
    def credit(self) -> int:
        return self.credit_limit - self.send_offset

    @property
    def paced_in_flight(self) -> int:
        """Bytes of this stream the pacer counts as in flight."""
        return max(0, self.send_offset - max(self.acked, self.paced_from))

    @property
    def wants_to_send(self) -> bool:
        """Has bytes it may send now, or only its end left to announce."""
        if self.queued:
            return self.credit_limit > self.send_offset
        return self.end_queued and not self.end_sent

    def on_ack(self, offset: int) -> int:
        """Drop retained bytes below ``offset``; return how many bytes were newly acknowledged."""
        if offset <= self.acked:
            return 0
        newly = offset - self.acked
        self.acked = offset
        retained = self.retained
        while retained:
            start, chunk = retained[0]
            end = start + len(chunk)
            if end <= offset:
                retained.popleft()
            else:
                if start < offset:
                    retained[0] = (offset, chunk[offset - start :])
                break
        return newly

    def skip_to(self, offset: int) -> None:
        """Resume: the peer already has everything below ``offset``; drop it unsent."""
        skip = offset - self.send_offset
        queue = self.send_queue
        while skip > 0 and queue:
            head = queue[0]
            if len(head) <= skip:
                queue.popleft()
                skip -= len(head)
                self.queued -= len(head)
            else:
                queue[0] = head[skip:]
                self.queued -= skip
                skip = 0
        self.send_offset = self.acked = offset
        self.credit_limit = max(self.credit_limit, offset)

    def pending_from_ack(self) -> tuple[memoryview, ...]:
        """The bytes from the last ACK on: retained, then queued."""
        return tuple(chunk for _, chunk in self.retained) + tuple(self.send_queue)
