"""What the peer did, as the session reports it from ``receive_data`` and ``handle_timer``.

Events are frozen, keyword-only dataclasses named for what happened — except
:class:`DataReceived`, the one on the hot path, which is a slotted positional
dataclass because a frozen one costs about four times as much to build (see
docs/adr/0003-session-events.md).  Treat it as read-only all the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from accessfabric.errors import ErrorCode
from accessfabric.wire.registry import TrafficClass


class Event:
    """Base class of session events."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReady(Event):
    """The handshake finished: the peer proved its identity and both sides agreed on limits."""

    peer_node_id: str
    peer_public_key: bytes
    peer_node_record: bytes
    version: int
    peer_max_frame_size: int
    peer_max_concurrent_streams: int
    route_epoch: int
    peer_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOpened(Event):
    """The peer opened a stream to ``service``.

    With ``resume`` set the stream continues the end-to-end stream named by
    ``resume_token``: adopt its saved state with :meth:`Session.adopt_stream`.
    """

    stream_id: int
    service: str
    traffic_class: TrafficClass
    route_id: int
    resume: bool
    resume_token: bytes
    start_offset: int
    key_exchange: bytes
    route_lease: bytes


@dataclass(slots=True)
class DataReceived(Event):
    """New, in-order stream bytes starting at stream byte ``offset``.

    Call :meth:`Session.acknowledge_received` once they are consumed: that is
    what grants the peer more credit.
    """

    stream_id: int
    data: memoryview | bytes
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamAcknowledged(Event):
    """The peer acknowledged a relayed stream's bytes up to ``offset`` (see ``relay_stream``)."""

    stream_id: int
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded(Event):
    """The peer finished its side of the stream; ``final_offset`` bytes were sent in all."""

    stream_id: int
    final_offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReset(Event):
    """The stream failed (by the peer, or locally for a protocol violation on it)."""

    stream_id: int
    error_code: ErrorCode | int
    remote: bool
    reason: str = ""
    """Why this side reset it (the protocol violation), when ``remote`` is false."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditGranted(Event):
    """The peer raised a credit limit (``stream_id`` 0: the session-wide one)."""

    stream_id: int
    max_offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PingAcknowledged(Event):
    """A PONG answered one of our PINGs after ``rtt`` seconds."""

    opaque: int
    rtt: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerPressure(Event):
    """The peer reported its queue / cpu / memory / network pressure (percent)."""

    queue: int
    cpu: int
    memory: int
    network: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteUpdated(Event):
    """The peer sent a route lease or an alternate route set (opaque to the session)."""

    lease: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GoawayReceived(Event):
    """The peer is draining: no new streams; ours above ``last_stream_id`` were refused."""

    last_stream_id: int
    error_code: ErrorCode | int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTerminated(Event):
    """The session is over; nothing more will be sent or received.

    ``remote`` tells whether the peer ended it (GOAWAY) or this side did.
    """

    error_code: ErrorCode | int
    reason: str
    remote: bool
