"""The stream state machine against its table: Hypothesis over (stream state x input).

One stream of an established session is driven by random local actions and
hand-encoded peer frames.  A model that knows nothing but
``stream_state.TRANSITIONS`` predicts every state; the session must agree,
reset the stream with STREAM_CLOSED for a received pair the table lacks (and
leave a second stream flowing), and raise ``LocalProtocolError`` without
changing anything for an illegal local action.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.session import Session, SessionState
from accessfabric.session import events as ev
from accessfabric.session.stream_state import TRANSITIONS, StreamInput, StreamState
from accessfabric.wire import (
    Ack,
    CloseStream,
    Data,
    Frame,
    Goaway,
    OpenStream,
    ResetStream,
    TrafficClass,
)
from tests.session.pair import make_pair, received_bytes
from tests.session.peer_frames import feed, of_type, reset_codes, sent_frames

S = StreamState
I = StreamInput  # noqa: E741

WITNESS = 1  # a peer stream that must keep flowing whatever happens to the other one


@dataclass
class Model:
    state: StreamState = S.IDLE
    end_queued: bool = False
    sent: int = 0  # our bytes on the wire
    acked: int = 0
    peer_offset: int = 0  # the peer's bytes so far (whether we accepted them or not)

    @property
    def forgotten(self) -> bool:
        """The session drops a stream once it is reset, or closed and fully acknowledged."""
        return self.state is S.RESET or (self.state is S.CLOSED and self.acked >= self.sent)

    def apply(self, event: StreamInput) -> None:
        self.state = TRANSITIONS[(self.state, event)]


class Driver:
    def __init__(self) -> None:
        pair = make_pair()
        self.session: Session = pair.b  # the acceptor: peer streams are odd, ours even
        self.model = Model()
        self.stream_id = 0
        self.illegal_received = 0
        self.witness_offset = 0
        opened = feed(self.session, OpenStream(WITNESS, "witness", TrafficClass.RELIABLE))
        assert of_type(opened, ev.StreamOpened)
        self.session.data_to_send(now=0.0)

    # -- opening ------------------------------------------------------------------------

    def open(self, local: bool) -> None:
        if local:
            self.stream_id = self.session.open_stream("under-test")
            assert self.stream_id % 2 == 0
            self.model.apply(I.SEND_OPEN)
            assert of_type(sent_frames(self.session), OpenStream)[0].stream_id == self.stream_id
        else:
            self.stream_id = 3
            events = feed(self.session, OpenStream(3, "under-test", TrafficClass.BULK))
            assert [type(e) for e in events] == [ev.StreamOpened]
            self.model.apply(I.RECV_OPEN)
        self.check_state()

    # -- checks ---------------------------------------------------------------------------

    def check_state(self) -> None:
        expected = None if self.model.forgotten else self.model.state
        assert self.session.stream_state(self.stream_id) is expected, self.model
        assert self.session.state is SessionState.READY

    def check_no_session_error(self, frames: list[Frame]) -> None:
        assert not of_type(frames, Goaway)

    # -- local actions --------------------------------------------------------------------

    def local(self, action: str, size: int) -> None:
        model, session, sid = self.model, self.session, self.stream_id
        if action in ("send", "send_end"):
            legal = (
                not model.forgotten
                and not model.end_queued
                and (model.state, I.SEND_DATA) in TRANSITIONS
            )
            call = lambda: session.send_data(sid, b"L" * size, end_stream=action == "send_end")  # noqa: E731
        elif action == "close":
            legal = not model.forgotten and (
                model.end_queued or (model.state, I.SEND_END) in TRANSITIONS
            )
            call = lambda: session.close_stream(sid)  # noqa: E731
        else:  # reset
            legal = model.forgotten or (model.state, I.SEND_RESET) in TRANSITIONS
            call = lambda: session.reset_stream(sid, ErrorCode.CANCEL)  # noqa: E731
        if not legal:
            before = session.metrics()
            with pytest.raises(LocalProtocolError):
                call()
            assert session.metrics() == before
            assert session.data_to_send(now=0.0) == b""
            self.check_state()
            return
        if (action == "close" and model.end_queued) or (action == "reset" and model.forgotten):
            before = session.metrics()
            call()  # a harmless repeat: nothing changes
            assert session.metrics() == before
            assert session.data_to_send(now=0.0) == b""
            self.check_state()
            return
        call()
        frames = sent_frames(session)
        self.check_no_session_error(frames)
        mine = [f for f in frames if getattr(f, "stream_id", None) == sid]
        if action in ("send", "send_end"):
            model.apply(I.SEND_DATA)
            data = [f for f in mine if isinstance(f, Data)]
            assert b"".join(bytes(f.payload) for f in data) == b"L" * size
            assert data[0].offset == model.sent
            model.sent += size
        if action in ("send_end", "close"):
            model.end_queued = True
            model.apply(I.SEND_END)
            last = mine[-1]
            assert (isinstance(last, Data) and last.end_stream) or (
                isinstance(last, CloseStream) and last.final_offset == model.sent
            )
        if action == "reset":
            model.apply(I.SEND_RESET)
            assert reset_codes(frames) == {sid: ErrorCode.CANCEL}
        self.check_state()

    # -- peer frames ----------------------------------------------------------------------

    def peer(self, action: str, size: int) -> None:
        model, session, sid = self.model, self.session, self.stream_id
        if action == "ack":
            events = feed(session, Ack(sid, model.sent, 1 << 20))
            assert events == []
            model.acked = model.sent
            self.check_no_session_error(sent_frames(session))
            self.check_state()
            return
        if action == "reset":
            frame: Frame = ResetStream(sid, ErrorCode.CANCEL)
            inputs = [I.RECV_RESET]
        elif action == "close":
            frame = CloseStream(sid, model.peer_offset)
            inputs = [I.RECV_END]
        else:
            end = action == "data_end"
            frame = Data(sid, model.peer_offset, b"P" * size, end)
            inputs = [I.RECV_DATA, I.RECV_END] if end else [I.RECV_DATA]
            model.peer_offset += size
        events = feed(session, frame)
        frames = sent_frames(session)
        self.check_no_session_error(frames)
        if model.forgotten:
            # A stream that is gone ignores late frames: no event, no reset.
            assert events == []
            assert reset_codes(frames) == {}
            self.check_state()
            return
        state = model.state
        legal = True
        for received in inputs:
            if (state, received) not in TRANSITIONS:
                legal = False
                break
            state = TRANSITIONS[(state, received)]
        if not legal:
            self.illegal_received += 1
            (reset,) = of_type(events, ev.StreamReset)
            assert (reset.stream_id, reset.error_code, reset.remote) == (
                sid,
                ErrorCode.STREAM_CLOSED,
                False,
            )
            assert reset_codes(frames) == {sid: ErrorCode.STREAM_CLOSED}
            assert received_bytes(events, sid) == b""
            model.apply(I.STREAM_ERROR)
        else:
            for received in inputs:
                model.apply(received)
            assert reset_codes(frames) == {}
            if action == "reset":
                (reset,) = of_type(events, ev.StreamReset)
                assert (reset.error_code, reset.remote) == (ErrorCode.CANCEL, True)
            if action.startswith("data"):
                assert received_bytes(events, sid) == b"P" * size
            if action != "data" and action != "reset":
                (ended,) = of_type(events, ev.StreamEnded)
                assert ended.final_offset == model.peer_offset
        self.check_state()

    # -- the witness ----------------------------------------------------------------------

    def check_witness(self) -> None:
        """The other stream still delivers in both directions."""
        payload = b"witness-%d" % self.witness_offset
        events = feed(self.session, Data(WITNESS, self.witness_offset, payload))
        self.witness_offset += len(payload)
        assert received_bytes(events, WITNESS) == payload
        self.session.send_data(WITNESS, b"reply")
        frames = sent_frames(self.session)
        assert [bytes(f.payload) for f in of_type(frames, Data) if f.stream_id == WITNESS] == [
            b"reply"
        ]
        self.check_no_session_error(frames)
        assert reset_codes(frames) == {}


LOCAL_ACTIONS = ["send", "send_end", "close", "reset"]
# Resets end the interesting part of a script, so they are drawn less often than the rest.
MOVES = [
    *(("local", a) for a in ["send", "send", "send_end", "close", "reset"]),
    *(("peer", a) for a in ["data", "data", "data_end", "close", "close", "ack", "reset"]),
]
steps = st.lists(
    st.tuples(st.sampled_from(MOVES), st.integers(1, 300)).map(lambda m: (*m[0], m[1])),
    max_size=14,
)


def run(local_open: bool, script: list[tuple[str, str, int]]) -> Driver:
    driver = Driver()
    driver.open(local_open)
    for side, action, size in script:
        if side == "local":
            driver.local(action, size)
        else:
            driver.peer(action, size)
        driver.check_witness()
    return driver


@settings(max_examples=300, deadline=None)
@given(local_open=st.booleans(), script=steps)
def test_stream_follows_the_transition_table(
    local_open: bool, script: list[tuple[str, str, int]]
) -> None:
    run(local_open, script)


# ---------------------------------------------------------------- every (state, input) pair

PATHS: dict[StreamState, list[tuple[str, str, int]]] = {
    S.OPEN: [("local", "send", 5)],
    S.HALF_CLOSED_LOCAL: [("local", "send_end", 5)],
    S.HALF_CLOSED_REMOTE: [("local", "send", 5), ("peer", "data_end", 4)],
    S.CLOSED: [("local", "send_end", 5), ("peer", "data_end", 4)],  # unacked: still known
}


@pytest.mark.parametrize("local_open", [True, False], ids=["ours", "theirs"])
@pytest.mark.parametrize("state", list(PATHS), ids=lambda s: s.value)
@pytest.mark.parametrize("action", ["data", "data_end", "close", "reset"])
def test_every_received_input_in_every_state(
    local_open: bool, state: StreamState, action: str
) -> None:
    driver = run(local_open, PATHS[state])
    assert driver.model.state is state
    assert driver.session.stream_state(driver.stream_id) is state
    driver.peer(action, 3)
    expected_legal = (state, I.RECV_DATA if action.startswith("data") else I.RECV_END) in (
        TRANSITIONS
    ) or (action == "reset")
    if action == "data_end" and expected_legal:
        after_data = TRANSITIONS[(state, I.RECV_DATA)]
        expected_legal = (after_data, I.RECV_END) in TRANSITIONS
    assert (driver.illegal_received == 0) is expected_legal
    driver.check_witness()


@pytest.mark.parametrize("state", list(PATHS), ids=lambda s: s.value)
@pytest.mark.parametrize("action", LOCAL_ACTIONS)
def test_every_local_action_in_every_state(state: StreamState, action: str) -> None:
    driver = run(True, PATHS[state])
    driver.local(action, 3)  # raises, no-ops or transitions exactly as the table says
    driver.check_witness()


def test_closed_stream_cannot_be_reset_locally() -> None:
    driver = run(True, PATHS[S.CLOSED])
    with pytest.raises(LocalProtocolError):
        driver.session.reset_stream(driver.stream_id)
    assert driver.session.stream_state(driver.stream_id) is S.CLOSED


def test_send_after_end_raises_and_queues_nothing() -> None:
    driver = run(True, [("local", "send_end", 5)])
    before = driver.session.metrics()
    with pytest.raises(LocalProtocolError):
        driver.session.send_data(driver.stream_id, b"too late")
    assert driver.session.metrics() == before
    assert driver.session.queued_bytes() == 0
    assert driver.session.data_to_send(now=0.0) == b""
