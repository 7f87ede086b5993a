"""The stream state machine, as a table.

``TRANSITIONS[(state, input)]`` is the next state; a pair that is not in the
table is illegal.  For a received input that resets the stream with
STREAM_CLOSED; for a local one it raises ``LocalProtocolError``.  The diagram in
docs/protocol.md is generated from this table (``python -m
accessfabric.session.stream_state``).
"""

from __future__ import annotations

from enum import Enum

from accessfabric.session import transitions


class StreamState(Enum):
    IDLE = "idle"
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed-local"
    HALF_CLOSED_REMOTE = "half-closed-remote"
    CLOSED = "closed"
    RESET = "reset"


class StreamInput(Enum):
    SEND_OPEN = "send OPEN_STREAM"
    RECV_OPEN = "recv OPEN_STREAM"
    SEND_DATA = "send DATA"
    RECV_DATA = "recv DATA"
    SEND_END = "send END_STREAM"
    RECV_END = "recv END_STREAM"
    SEND_RESET = "send RESET_STREAM"
    RECV_RESET = "recv RESET_STREAM"
    STREAM_ERROR = "peer broke a stream rule: send RESET_STREAM"
    REFUSED = "refused by the peer's GOAWAY"


S = StreamState
I = StreamInput  # noqa: E741

TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    (S.IDLE, I.SEND_OPEN): S.OPEN,
    (S.IDLE, I.RECV_OPEN): S.OPEN,
    (S.OPEN, I.SEND_DATA): S.OPEN,
    (S.OPEN, I.RECV_DATA): S.OPEN,
    (S.OPEN, I.SEND_END): S.HALF_CLOSED_LOCAL,
    (S.OPEN, I.RECV_END): S.HALF_CLOSED_REMOTE,
    (S.OPEN, I.SEND_RESET): S.RESET,
    (S.OPEN, I.RECV_RESET): S.RESET,
    (S.HALF_CLOSED_LOCAL, I.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_END): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, I.SEND_RESET): S.RESET,
    (S.HALF_CLOSED_LOCAL, I.RECV_RESET): S.RESET,
    (S.HALF_CLOSED_REMOTE, I.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.SEND_END): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, I.SEND_RESET): S.RESET,
    (S.HALF_CLOSED_REMOTE, I.RECV_RESET): S.RESET,
    # A violation on the stream resets it (the peer gets RESET_STREAM with the error's
    # code), whatever state it was in; frames it sends later are ignored.
    (S.OPEN, I.STREAM_ERROR): S.RESET,
    (S.HALF_CLOSED_LOCAL, I.STREAM_ERROR): S.RESET,
    (S.HALF_CLOSED_REMOTE, I.STREAM_ERROR): S.RESET,
    (S.CLOSED, I.STREAM_ERROR): S.RESET,
    # A GOAWAY's last stream id refuses our active streams above it.
    (S.OPEN, I.REFUSED): S.RESET,
    (S.HALF_CLOSED_LOCAL, I.REFUSED): S.RESET,
    (S.HALF_CLOSED_REMOTE, I.REFUSED): S.RESET,
    # Late frames after the stream ended on our side are harmless and ignored.
    (S.CLOSED, I.RECV_RESET): S.CLOSED,
    (S.RESET, I.RECV_DATA): S.RESET,
    (S.RESET, I.RECV_END): S.RESET,
    (S.RESET, I.RECV_RESET): S.RESET,
    (S.RESET, I.SEND_RESET): S.RESET,
}

ACTIVE_STATES = frozenset({S.OPEN, S.HALF_CLOSED_LOCAL, S.HALF_CLOSED_REMOTE})


def diagram() -> str:
    """The transition table as a Mermaid state diagram."""
    return transitions.diagram(TRANSITIONS)


if __name__ == "__main__":
    print(diagram())
