"""Hand-encoded frames fed to one session, and its output decoded back into frames."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from accessfabric.errors import ErrorCode
from accessfabric.session import Event, Session
from accessfabric.session import events as ev
from accessfabric.wire import MAX_FRAME_SIZE_CAP, Frame, FrameDecoder, Goaway, ResetStream, encode

T = TypeVar("T")


def feed(session: Session, *frames: Frame, now: float = 0.0) -> list[Event]:
    """Encode ``frames`` with the wire codec and hand them to ``session`` in one chunk."""
    return session.receive_data(b"".join(encode(frame) for frame in frames), now)


def sent_frames(session: Session, max_bytes: int | None = None, *, now: float = 0.0) -> list[Frame]:
    """Drain ``session`` at ``now`` and decode what it would put on the wire."""
    return FrameDecoder(MAX_FRAME_SIZE_CAP).feed(session.data_to_send(max_bytes, now=now))


def of_type(items: Iterable[object], cls: type[T]) -> list[T]:
    return [item for item in items if isinstance(item, cls)]


def goaway_code(frames: list[Frame]) -> ErrorCode | int:
    """The code of the one GOAWAY among ``frames``."""
    goaways = of_type(frames, Goaway)
    assert len(goaways) == 1, frames
    return goaways[0].error_code


def reset_codes(frames: list[Frame]) -> dict[int, ErrorCode | int]:
    """RESET_STREAM frames by stream id."""
    return {frame.stream_id: frame.error_code for frame in of_type(frames, ResetStream)}


def terminated(events: list[Event]) -> ev.SessionTerminated:
    """The SessionTerminated event, which must be the last one."""
    assert events and isinstance(events[-1], ev.SessionTerminated), events
    return events[-1]
