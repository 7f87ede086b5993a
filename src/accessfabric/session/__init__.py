"""Sans-IO Fabric Data Session V1: handshake, streams, credit, ACK/resume, class scheduling."""

from accessfabric.session.auth import Authenticator
from accessfabric.session.config import SessionConfig
from accessfabric.session.events import (
    CreditGranted,
    DataReceived,
    Event,
    GoawayReceived,
    PeerPressure,
    PingAcknowledged,
    RouteUpdated,
    SessionReady,
    SessionTerminated,
    StreamAcknowledged,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from accessfabric.session.metrics import PacerMetrics, SessionMetrics, StreamMetrics
from accessfabric.session.session import SendBufferFull, Session, SessionState, TooManyStreams
from accessfabric.session.snapshot import StreamSnapshot
from accessfabric.session.stream_state import StreamState

__all__ = [
    "Authenticator",
    "CreditGranted",
    "DataReceived",
    "Event",
    "GoawayReceived",
    "PacerMetrics",
    "PeerPressure",
    "PingAcknowledged",
    "RouteUpdated",
    "SendBufferFull",
    "Session",
    "SessionConfig",
    "SessionMetrics",
    "SessionReady",
    "SessionState",
    "SessionTerminated",
    "StreamAcknowledged",
    "StreamEnded",
    "StreamMetrics",
    "StreamOpened",
    "StreamReset",
    "StreamSnapshot",
    "StreamState",
    "TooManyStreams",
]
