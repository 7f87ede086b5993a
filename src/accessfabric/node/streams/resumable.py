"""``ResumableStream``: a stream end that survives the death of the path under it.

A routed stream's two ends (the source that opened it, the destination that serves it)
hold their side as a :class:`ResumableStream`: a :class:`FabricStream` (the protocol) over
the current hop stream (the *inner* stream).  When the inner stream breaks — its
session died, or a relay reset it with ``ROUTE_REJECTED`` — the wrapper does not fail:
reads return what already arrived, writes are kept, and the stream waits (at most
``resume_window`` seconds) to be *rebound* to a stream on another path.

Resume is from the last end-to-end ACK: the wrapper keeps a reference to every byte
written from the last ACK on (the same ``bytes`` objects the session retains: no
copy), so :meth:`ResumableStream.snapshot` can describe the stream even when the
session already freed its state (a RESET releases it).  The peer skips what it
already had, so no byte is lost and none is delivered twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from accessfabric.errors import ErrorCode, ProtocolError
from accessfabric.node.streams.connection import (
    HopStream,
    SessionClosed,
    SessionConnection,
    StreamResetError,
    read_exactly,
)
from accessfabric.session.snapshot import StreamSnapshot
from accessfabric.session.stream import Stream
from accessfabric.wire.registry import TrafficClass

DEFAULT_RESUME_WINDOW = 30.0
"""Seconds a broken stream end waits for a new path before it fails."""
HOLD_LIMIT = 8 * 1024 * 1024
"""Unacknowledged bytes a broken stream still accepts before ``drain`` waits for a path."""


class StreamNotResumed(SessionClosed):
    """The stream's path broke and no new one took it within the resume window: the
    stream ended under whoever reads it (a peer that went away), not a target failure."""


StreamErrors = (ConnectionError, ProtocolError)


def new_fabric_stream(
    connection: SessionConnection, stream_id: int, service: str, traffic_class: TrafficClass
) -> HopStream:
    """The asyncio face of a stream opened on ``connection.session`` directly."""
    return connection.wrap_stream(stream_id, service, traffic_class)


def session_stream(connection: SessionConnection, stream_id: int) -> Stream:
    """The session's record of a stream (kept after the session forgets it)."""
    stream = connection.session.stream_progress(stream_id)
    if stream is None:
        raise SessionClosed(f"stream {stream_id} is gone from its session")
    return stream


def retire(inner: HopStream, reason: str) -> None:
    """Detach an inner stream for good: its reader sees the end after the buffered bytes."""
    inner.connection.detach(inner, reason)


class ResumableStream:
    """One end of a routed stream (a :class:`HopStream`); see the module docstring."""

    def __init__(
        self,
        inner: HopStream,
        state: Stream,
        resume_token: bytes,
        *,
        resume_window: float = DEFAULT_RESUME_WINDOW,
        resumable_reset: Callable[[StreamResetError], bool] | None = None,
        on_broken: Callable[[ResumableStream, BaseException], None] | None = None,
    ) -> None:
        self.stream_id = inner.stream_id
        self.service = inner.service
        self.traffic_class = inner.traffic_class
        self.resume_token = resume_token
        self.key_exchange = b""
        """The OPEN_STREAM key-exchange blob (a destination end builds its sealing from it)."""
        self.resume_key = b""
        """A sealed stream's resume key (docs/sealing.md); empty: resumes are token-only."""
        self.resume_counter = 0
        """Source: the last resume proof's counter; destination: the last one accepted."""
        self.resume_window = resume_window
        self._resumable_reset = resumable_reset or (lambda error: False)
        self._on_broken = on_broken
        self._inners: deque[HopStream] = deque([inner])
        self._state = state
        self._copy: deque[bytes] = deque()
        self._copy_start = state.acked
        self._written = state.send_offset + state.queued
        self._closed_local = False
        self._final: BaseException | None = None
        self.broken_since: float | None = None
        self.broken_reason = ""
        self._changed = asyncio.Event()
        self.resumes = 0

    # ------------------------------------------------------------ state

    @property
    def inner(self) -> HopStream:
        return self._inners[-1]

    @property
    def connection(self) -> SessionConnection:
        return self._inners[-1].connection

    @property
    def broken(self) -> bool:
        return self.broken_since is not None

    @property
    def finished(self) -> bool:
        return self._final is not None

    @property
    def done(self) -> bool:
        """Both directions ended and everything we sent is acknowledged: nothing to resume."""
        return self._closed_local and self._state.recv_end is not None and self.unacked <= 0

    @property
    def acked(self) -> int:
        return self._state.acked

    @property
    def ack_seen_at(self) -> float | None:
        """When the current hop stream last received an ACK frame (``session_clock``)."""
        return self._state.ack_seen_at

    @property
    def unacked(self) -> int:
        return self._written - self._state.acked

    def _trim(self) -> None:
        acked = self._state.acked
        copy = self._copy
        while copy and self._copy_start + len(copy[0]) <= acked:
            self._copy_start += len(copy.popleft())

    def mark_broken(self, error: BaseException) -> None:
        """The inner stream's path failed; wait for :meth:`rebind` (or give up)."""
        if self._final is not None or self.broken_since is not None or self.done:
            return
        if isinstance(error, StreamResetError) and not self._resumable_reset(error):
            self.fail(error)
            return
        self.broken_since = time.monotonic()
        self.broken_reason = str(error) or type(error).__name__
        self._changed.clear()
        if self._on_broken is not None:
            self._on_broken(self, error)

    def fail(self, error: BaseException) -> None:
        """No resume: the stream is over with ``error``."""
        if self._final is None:
            self._final = error
            self._changed.set()

    def snapshot(self) -> StreamSnapshot:
        """The stream from the last end-to-end ACK on, for ``resume_stream``/``adopt_stream``.

        Bytes the application has not read yet stay in the old inner stream (read before
        the new one), so they count as consumed here.
        """
        self._trim()
        acked = self._state.acked
        skip = acked - self._copy_start
        views: list[memoryview] = []
        for chunk in self._copy:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            views.append(memoryview(chunk)[skip:])
            skip = 0
        recv = self._state.recv
        return StreamSnapshot(
            resume_token=self.resume_token,
            service=self.service,
            traffic_class=self.traffic_class,
            send_acked=acked,
            send_buffer=tuple(views),
            send_end=self._closed_local,
            recv_offset=recv.received,
            recv_consumed=recv.received,
            recv_ended=self._state.recv_end is not None,
        )

    def rebind(self, inner: HopStream, state: Stream) -> None:
        """Continue on ``inner`` (a stream resumed or adopted from :meth:`snapshot`)."""
        old = self._inners[-1]
        retire(old, "stream moved to another path")
        self._inners.append(inner)
        self._state = state
        self.stream_id = inner.stream_id
        self.broken_since = None
        self.broken_reason = ""
        self.resumes += 1
        self._changed.set()

    async def _wait_rebound(self, error: BaseException) -> None:
        self.mark_broken(error)
        while self.broken_since is not None and self._final is None:
            left = self.broken_since + self.resume_window - time.monotonic()
            if left <= 0:
                self.fail(error)
                break
            self._changed.clear()
            try:  # asyncio.timeout: on 3.11 wait_for can lose a cancel that lands as it wakes
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                continue
        if self._final is not None:
            raise self._final

    # ------------------------------------------------------------ application side

    async def read(self, max_bytes: int = -1) -> bytes:
        while True:
            inner = self._inners[0]
            try:
                data = await inner.read(max_bytes)
            except StreamErrors as error:
                if len(self._inners) > 1:
                    self._inners.popleft()
                    continue
                if self._final is not None:
                    raise self._final from None
                await self._wait_rebound(error)
                continue
            return data

    async def readexactly(self, size: int) -> bytes:
        return await read_exactly(self, size)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._final is not None:
            raise self._final
        if type(data) is not bytes:
            data = bytes(data)
        if not data:
            return
        self._copy.append(data)
        self._written += len(data)
        self._trim()
        if self.broken_since is None:
            try:
                self._inners[-1].write(data)
            except StreamErrors as error:
                self.mark_broken(error)

    async def drain(self) -> None:
        while True:
            if self._final is not None:
                raise self._final
            if self.broken_since is not None:
                if self.unacked <= HOLD_LIMIT:
                    return
                await self._wait_rebound(ConnectionError(self.broken_reason))
                continue
            inner = self._inners[-1]
            try:
                await inner.drain()
                return
            except StreamErrors as error:
                # A drain that waited on a path the stream has since left (``rebind``
                # retires it) fails with that path: drain again on the current one.
                # Marking the rebound stream broken here stopped its writes for good at a
                # destination, where nothing resumes it (a hung transfer after a resume).
                if inner is self._inners[-1]:
                    self.mark_broken(error)

    def close(self) -> None:
        if self._closed_local or self._final is not None:
            return
        self._closed_local = True
        if self.broken_since is None:
            self._inners[-1].close()

    def reset(self, code: ErrorCode = ErrorCode.CANCEL) -> None:
        for inner in self._inners:
            if inner.error is None:
                inner.reset(code)
        self.fail(StreamResetError(self.stream_id, code, remote=False))

    @property
    def at_eof(self) -> bool:
        return len(self._inners) == 1 and self._inners[0].at_eof
