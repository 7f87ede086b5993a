"""The session state machine, as a table.

``TRANSITIONS[(state, input)]`` is the next state; a pair that is not in the
table is a bug in the session (every received frame is dispatched by state
first, so a peer cannot drive the session through a missing pair).  The
session's state changes only by :meth:`SessionCore._enter`, which looks the pair
up here; ``tests/session/test_session_state.py`` checks that nothing else in
session/ assigns a state.  ``python -m accessfabric.session.session_state``
prints the table as a diagram (docs/protocol.md).
"""

from __future__ import annotations

from enum import Enum

from accessfabric.session import transitions


class SessionState(Enum):
    AWAIT_HELLO = "await-hello"
    AWAIT_AUTH = "await-auth"
    AWAIT_READY = "await-session-ready"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


class SessionInput(Enum):
    RECV_HELLO = "recv HELLO"
    RECV_AUTH = "recv AUTH"
    RECV_READY = "recv SESSION_READY"
    SEND_GOAWAY = "send GOAWAY NO_ERROR"
    RECV_GOAWAY = "recv GOAWAY NO_ERROR"
    END = "end: error, timeout, idle, drained"


S = SessionState
I = SessionInput  # noqa: E741

TRANSITIONS: dict[tuple[SessionState, SessionInput], SessionState] = {
    (S.AWAIT_HELLO, I.RECV_HELLO): S.AWAIT_AUTH,
    (S.AWAIT_AUTH, I.RECV_AUTH): S.AWAIT_READY,
    (S.AWAIT_READY, I.RECV_READY): S.READY,
    # A GOAWAY with NO_ERROR once streaming drains: no new streams, open ones finish.
    (S.READY, I.SEND_GOAWAY): S.DRAINING,
    (S.READY, I.RECV_GOAWAY): S.DRAINING,
    (S.DRAINING, I.SEND_GOAWAY): S.DRAINING,
    (S.DRAINING, I.RECV_GOAWAY): S.DRAINING,
    # Anything else ends the session: a violation (ours is a GOAWAY with its code), a
    # GOAWAY with an error or during the handshake, a timeout, idleness, the last stream
    # of a draining session ending.
    (S.AWAIT_HELLO, I.END): S.CLOSED,
    (S.AWAIT_AUTH, I.END): S.CLOSED,
    (S.AWAIT_READY, I.END): S.CLOSED,
    (S.READY, I.END): S.CLOSED,
    (S.DRAINING, I.END): S.CLOSED,
}

STREAMING_STATES = frozenset({S.READY, S.DRAINING})
"""States in which stream frames flow."""


def diagram() -> str:
    """The transition table as a Mermaid state diagram."""
    return transitions.diagram(TRANSITIONS)


if __name__ == "__main__":
    print(diagram())
