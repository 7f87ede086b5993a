"""The state of one stream, exported from a session so another session can resume it."""

from __future__ import annotations

from dataclasses import dataclass

from accessfabric.wire.registry import TrafficClass


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSnapshot:
    """Everything needed to continue a stream on another session from its last ACK.

    ``send_buffer`` holds the bytes from ``send_acked`` on — sent but not
    acknowledged, then not yet sent — as views of the application's buffers
    (no copy).  ``recv_offset`` is how far the bytes arrived in order.
    """

    resume_token: bytes
    service: str
    traffic_class: TrafficClass
    send_acked: int
    send_buffer: tuple[memoryview, ...]
    send_end: bool
    recv_offset: int
    recv_consumed: int
    recv_ended: bool

    @property
    def send_pending(self) -> int:
        return sum(len(chunk) for chunk in self.send_buffer)
