"""Drive one sans-IO :class:`Session` over a carrier, with asyncio streams on top.

The loop is the one STYLE.md describes for carriers: feed bytes in, handle
events, write what the session has (only as much as the carrier can absorb),
re-arm one timer.  Writes from the application are coalesced: one flush per
loop iteration, however many streams wrote — except that the first write of a
latency class (control, DNS, interactive) in an iteration flushes at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierStatsProbe
from accessfabric.errors import (
    AuthenticationError,
    ErrorCode,
    IdentityMismatchError,
    LocalProtocolError,
    ProtocolError,
    UnsupportedVersionError,
)
from accessfabric.session import Session
from accessfabric.session import events as ev
from accessfabric.session.scheduler import URGENT_CLASSES
from accessfabric.wire.registry import TrafficClass

log = logging.getLogger(__name__)

COALESCE_BELOW = 16 * 1024
"""Writes smaller than this are coalesced with the stream's other small writes until the
next flush (the same loop iteration), so 1400-byte writes do not each cost a frame."""
COALESCE_PIECE = 64 * 1024
"""A coalesced piece is handed to the session once it reaches this size."""

session_clock = time.monotonic
"""The clock sessions run on: nanosecond resolution (uvloop's ``loop.time()`` ticks in
whole milliseconds, which rounds loopback RTTs to 0 and starves the delay-based pacer)."""


class SessionClosed(ConnectionError):
    """The session ended; ``code`` says how (``NO_ERROR`` for a clean close)."""

    def __init__(self, message: str, code: ErrorCode | int = ErrorCode.NO_ERROR) -> None:
        super().__init__(message)
        self.code = code


class StreamResetError(ConnectionError):
    """The stream was reset; ``code`` is the RESET_STREAM error code."""

    def __init__(self, stream_id: int, code: ErrorCode | int, remote: bool) -> None:
        who = "peer" if remote else "this side"
        super().__init__(f"stream {stream_id} reset by {who}: {_code_name(code)}")
        self.code = code
        self.remote = remote


def _code_name(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else f"code {code}"


def termination_error(event: ev.SessionTerminated) -> Exception:
    """The typed exception for how a session ended before or after it was ready."""
    message = event.reason or _code_name(event.error_code)
    if event.remote:
        message = f"peer closed the session: {message}"
    code = event.error_code
    if code == ErrorCode.AUTHENTICATION_FAILED:
        return AuthenticationError(message)
    if code == ErrorCode.IDENTITY_MISMATCH:
        return IdentityMismatchError(message)
    if code == ErrorCode.UNSUPPORTED_VERSION:
        return UnsupportedVersionError(message)
    if code == ErrorCode.NO_ERROR:
        return SessionClosed(message, code)
    if isinstance(code, ErrorCode):
        return ProtocolError(message, code)
    return SessionClosed(message, code)


class FabricStream(Protocol):
    """What a service sees of a fabric stream: ``read``, ``write`` + ``drain``, ``close``.

    Implemented by :class:`HopStream` (one stream of one session), and by the stream ends
    the node layers on top of it: ``ResumableStream`` (survives the death of its path) and
    ``SealedStream`` (plaintext over a sealed stream).
    """

    stream_id: int
    service: str
    traffic_class: TrafficClass

    async def read(self, max_bytes: int = -1) -> bytes: ...

    async def readexactly(self, size: int) -> bytes: ...

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    def reset(self, code: ErrorCode = ErrorCode.CANCEL) -> None: ...

    @property
    def connection(self) -> SessionConnection: ...

    @property
    def at_eof(self) -> bool: ...


async def read_exactly(stream: FabricStream, size: int) -> bytes:
    """``size`` bytes from ``stream``; ``IncompleteReadError`` when it ends first."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        chunk = await stream.read(remaining)
        if not chunk:
            raise asyncio.IncompleteReadError(b"".join(parts), size)
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


class Outbox:
    """A hop stream's written bytes the session has not taken yet (its connection owns it)."""

    __slots__ = ("close_after_pending", "pending", "tail", "writable")

    def __init__(self) -> None:
        self.pending: deque[bytes | memoryview] = deque()
        """Written, not yet taken by the session: ``bytes`` whole, a view once split."""
        self.tail: bytearray | None = None
        """Small writes coalesced until the next flush."""
        self.close_after_pending = False
        self.writable = asyncio.Event()
        """Set while the stream may take more (``drain`` waits on it)."""
        self.writable.set()


class HopStream:
    """One stream of one session as asyncio sees it (a :class:`FabricStream`)."""

    __slots__ = (
        "__weakref__",  # the stream router's decisions (a WeakKeyDictionary)
        "_chunks",
        "_connection",
        "_eof",
        "_error",
        "_readable",
        "outbox",
        "service",
        "stream_id",
        "traffic_class",
    )

    def __init__(
        self,
        connection: SessionConnection,
        stream_id: int,
        service: str,
        traffic_class: TrafficClass,
    ) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.service = service
        self.traffic_class = traffic_class
        self._chunks: deque[memoryview | bytes] = deque()
        self.outbox = Outbox()
        """What was written and not yet handed to the session (the connection drains it)."""
        self._eof = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()

    # Fed by the connection.
    def _feed(self, data: memoryview | bytes) -> None:
        self._chunks.append(data)
        self._readable.set()

    def _feed_quietly(self, data: memoryview | bytes) -> bool:
        """Buffer ``data`` without waking the reader yet; whether it needs a wake
        (:meth:`_wake`) once the batch's latency-class readers have been woken."""
        self._chunks.append(data)
        return not self._readable.is_set()

    def _wake(self) -> None:
        self._readable.set()

    def _feed_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def fail(self, error: BaseException) -> None:
        """End the stream with ``error``: readers and writers raise it (after buffered bytes)."""
        self._error = error
        self._readable.set()
        self.outbox.writable.set()

    @property
    def error(self) -> BaseException | None:
        """What ended the stream (reset, session closed), ``None`` while it lives."""
        return self._error

    # Application side.
    async def read(self, max_bytes: int = -1) -> bytes:
        """Up to ``max_bytes`` (all buffered when -1); ``b""`` at the end of the stream."""
        while not self._chunks:
            if self._eof:  # the peer ended the stream: a later session close loses nothing
                return b""
            if self._error is not None:
                raise self._error
            self._readable.clear()
            await self._readable.wait()
        chunks = self._chunks
        if max_bytes < 0:
            data = b"".join(chunks)
            chunks.clear()
        else:
            # As many received frames as fit, in one copy: a reader asking for 256 KiB
            # wakes once per 256 KiB, not once per 64 KiB frame.
            parts: list[memoryview | bytes] = []
            room = max_bytes
            while chunks and room:
                head = chunks[0]
                if len(head) <= room:
                    parts.append(chunks.popleft())
                    room -= len(head)
                else:
                    view = memoryview(head)  # no copy per partial read of a large chunk
                    parts.append(view[:room])
                    chunks[0] = view[room:]
                    room = 0
            data = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)  # b"": read(0)
        self._connection._consumed(self.stream_id, len(data))
        return data

    async def readexactly(self, size: int) -> bytes:
        return await read_exactly(self, size)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes; call :meth:`drain` to wait until the stream can take more."""
        if self._error is not None:
            raise self._error
        self._connection._write(self, data)

    async def drain(self) -> None:
        writable = self.outbox.writable
        while not writable.is_set():
            await writable.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """End our side of the stream (the peer reads EOF after the queued bytes)."""
        if self._error is None:
            self._connection._close_stream(self)

    def reset(self, code: ErrorCode = ErrorCode.CANCEL) -> None:
        self._connection._reset_stream(self.stream_id, code)
        self.fail(StreamResetError(self.stream_id, code, remote=False))

    @property
    def connection(self) -> SessionConnection:
        """The session this stream belongs to."""
        return self._connection

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks


class SessionConnection:
    """Binds a :class:`Session` to a carrier and exposes it to the node."""

    high_water = 4 * 1024 * 1024
    """Bytes a stream may queue in the session before ``drain`` waits."""

    def __init__(
        self,
        session: Session,
        info: CarrierInfo,
        *,
        verify_peer: Callable[[ev.SessionReady], None] | None = None,
    ) -> None:
        self.session = session
        self.info = info
        self._verify_peer = verify_peer
        self._loop = asyncio.get_running_loop()
        self._transport: ByteTransport | None = None
        self._streams: dict[int, HopStream] = {}
        self._handling = False
        self._deferred_wakes: list[HopStream] = []
        """Readers of reliable/bulk/droppable streams fed in this batch of events, woken
        after the latency classes' readers (:meth:`_handle`)."""
        self._moved: dict[int, HopStream] = {}
        """Streams detached while this batch of events is handled (see :meth:`detach`)."""
        self._ended: list[int] | None = None
        """Streams the peer ended, until the session forgets them (then they leave
        ``_streams``: kept, every stream a session ever carried stayed, ADR 0050)."""
        # Streams the peer opened, not yet accepted: made at the first one.  Not an
        # asyncio.Queue: its four deques cost ~3 KiB per idle session (issue 17, ADR 0037).
        self._incoming: deque[HopStream] | None = None
        self._incoming_ended = False
        self._accepting: list[asyncio.Future[None]] = []
        self._ready: asyncio.Future[ev.SessionReady] = self._loop.create_future()
        self._closed: asyncio.Future[ev.SessionTerminated] = self._loop.create_future()
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        self._early_flush_allowed = True
        self._blocked: set[HopStream] = set()
        self._coalescing: list[HopStream] = []
        self.on_event: list[Callable[[ev.Event], None]] = []
        self.stats_probe: CarrierStatsProbe | None = None
        """The carrier's loss/RTT probe (TCP_INFO, QUIC recovery), when it has one."""
        self.bytes_sent = 0
        self.bytes_received = 0
        """Carrier bytes written and read (what a throughput meter samples)."""

    # ------------------------------------------------------------ carrier side

    def attach(self, transport: ByteTransport) -> None:
        self._transport = transport
        self.stats_probe = getattr(transport, "stats_probe", None)
        self._flush()

    def data_received(self, data: bytes | bytearray | memoryview) -> None:
        self.bytes_received += len(data)
        events = self.session.receive_data(data, session_clock())
        if events:
            # Writes from event callbacks go out with the flush scheduled below.
            allowed, self._early_flush_allowed = self._early_flush_allowed, False
            try:
                self._handle(events)
            finally:
                self._early_flush_allowed = allowed
        # Flush later in this loop iteration: the ACK for these bytes then leaves in the
        # same write as the credit the reader grants when it consumes them.
        self.schedule_flush()

    def writable(self) -> None:
        self._flush()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        terminated = self.session.terminated
        if terminated is None:
            reason = f"carrier lost: {exc}" if exc else "carrier closed"
            terminated = ev.SessionTerminated(
                error_code=ErrorCode.INTERNAL_ERROR if exc else ErrorCode.NO_ERROR,
                reason=reason,
                remote=True,
            )
        self._terminated(terminated)
        self._transport = None

    # ------------------------------------------------------------ event handling

    def _handle(self, events: list[ev.Event]) -> None:
        if self._handling:  # not reentered today; the moved streams belong to the outer batch
            self._dispatch(events)
            return
        self._handling = True
        try:
            self._dispatch(events)
        finally:
            self._handling = False
            if self._deferred_wakes:
                # A batch often holds bulk frames and, behind them, an interactive one:
                # its reader was woken as it was fed, these only now, so its task runs
                # first in the next loop turn, not after the bulk readers have written
                # everything they were given (an exit's VPN pump: up to ~1 MB into its
                # TUN; docs/benchmarks.md, ADR 0066).
                deferred, self._deferred_wakes = self._deferred_wakes, []
                for stream in deferred:
                    stream._wake()
            self._moved.clear()
            if self._ended:
                self._drop_forgotten()

    def _drop_forgotten(self) -> None:
        """Let go of the ended streams the session has forgotten (both ends closed, all
        acknowledged): their readers hold them for what is still buffered."""
        ended, self._ended = self._ended, None
        assert ended is not None
        state = self.session.stream_state
        kept = [stream_id for stream_id in ended if state(stream_id) is not None]
        for stream_id in ended:
            if state(stream_id) is None:
                self._streams.pop(stream_id, None)
        if kept:
            self._ended = kept

    def _dispatch(self, events: list[ev.Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is ev.DataReceived:
                assert isinstance(event, ev.DataReceived)
                stream = self._streams.get(event.stream_id) or self._moved.get(event.stream_id)
                if stream is not None:
                    if stream.traffic_class in URGENT_CLASSES:
                        stream._feed(event.data)
                    elif stream._feed_quietly(event.data):
                        self._deferred_wakes.append(stream)
                else:  # nobody reads it: free the credit
                    self.session.acknowledge_received(event.stream_id, len(event.data))
            elif kind is ev.StreamOpened:
                assert isinstance(event, ev.StreamOpened)
                if self._closed.done():  # refused (``refuse``) earlier in this batch
                    continue
                stream = HopStream(self, event.stream_id, event.service, event.traffic_class)
                self._streams[event.stream_id] = stream
                if self._incoming is None:
                    self._incoming = deque()
                self._incoming.append(stream)
                self._wake_accepting()
            elif kind is ev.StreamEnded:
                assert isinstance(event, ev.StreamEnded)
                stream = self._streams.get(event.stream_id) or self._moved.get(event.stream_id)
                if stream is not None:
                    stream._feed_eof()
                    if self._ended is None:
                        self._ended = []
                    self._ended.append(event.stream_id)
            elif kind is ev.StreamReset:
                assert isinstance(event, ev.StreamReset)
                stream = self._streams.pop(event.stream_id, None)
                if not event.remote:  # counted and rate-limit logged by the node's admission
                    log.debug(
                        "stream reset for a protocol violation: stream=%d code=%s peer=%s: %s",
                        event.stream_id, _code_name(event.error_code),
                        self.session.peer_node_id, event.reason,
                    )  # fmt: skip
                if stream is not None:
                    stream.fail(StreamResetError(event.stream_id, event.error_code, event.remote))
            elif kind is ev.PingAcknowledged:
                assert isinstance(event, ev.PingAcknowledged)
                waiter = self._pings.pop(event.opaque, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event.rtt)
            elif kind is ev.SessionReady:
                assert isinstance(event, ev.SessionReady)
                if not self._peer_verified(event):
                    return
                if not self._ready.done():
                    self._ready.set_result(event)
            elif kind is ev.SessionTerminated:
                assert isinstance(event, ev.SessionTerminated)
                self._terminated(event)
            elif kind is ev.CreditGranted:
                self._wake_writers()
            for callback in self.on_event:
                callback(event)

    def _peer_verified(self, event: ev.SessionReady) -> bool:
        """Carrier-level identity checks once AUTH proved who the peer is."""
        if self._verify_peer is None:
            return True
        try:
            self._verify_peer(event)
        except ProtocolError as error:
            self.session.goaway(error.error_code, str(error))
            self._terminated(
                ev.SessionTerminated(error_code=error.error_code, reason=str(error), remote=False)
            )
            return False
        return True

    def _terminated(self, event: ev.SessionTerminated) -> None:
        if self._closed.done():
            return
        error = termination_error(event)
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # mark retrieved: the closed future reports it too
        self._closed.set_result(event)
        for stream in self._streams.values():
            stream.fail(error if event.error_code != ErrorCode.NO_ERROR else SessionClosed(
                "session closed", ErrorCode.NO_ERROR
            ))  # fmt: skip
        self._streams.clear()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pings.clear()
        self._incoming_ended = True
        self._wake_accepting()
        if self.stats_probe is not None:
            self.stats_probe.sample()  # the last figures, while the socket is still open
        if self._transport is not None:
            self._flush()
            self._transport.close()
        log.debug("session terminated: %s", event)

    # ------------------------------------------------------------ output

    def schedule_flush(self) -> None:
        """Write what the session has later in this loop iteration (once, however many ask).

        Call it after driving :attr:`session` directly (``adopt_stream``, ``send_ack``,
        ``reset_stream``): the session only queues output.
        """
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._coalescing:
            self._seal_all()
        transport = self._transport
        if transport is not None:
            now = session_clock()
            while True:
                capacity = transport.write_capacity()
                if capacity <= 0:
                    break
                data = self.session.data_to_send(capacity, now=now)
                if not data:
                    break
                self.bytes_sent += len(data)
                transport.write(data)
        if self._blocked:
            self._wake_writers()
        if self._ended and not self._handling:
            # what we sent (a last ACK, our close) may have let the session forget a stream
            self._drop_forgotten()
        self._arm_timer()
        if self.session.terminated is not None and not self._closed.done():
            self._terminated(self.session.terminated)

    def _arm_timer(self) -> None:
        when = self.session.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self._loop.call_later(max(0.0, when - session_clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        events = self.session.handle_timer(session_clock())
        if events:
            self._handle(events)
        self._flush()

    def _wake_writers(self) -> None:
        moved = False
        for stream in list(self._blocked):
            outbox = stream.outbox
            try:
                moved |= self._move_pending(stream)
            except LocalProtocolError:  # the stream is gone; its writers learn from fail()
                self._blocked.discard(stream)
                outbox.writable.set()
                continue
            if not outbox.pending:
                self._blocked.discard(stream)
                outbox.writable.set()
                if outbox.close_after_pending:
                    outbox.close_after_pending = False
                    self._close_stream(stream)
        if moved:
            self.schedule_flush()

    def _move_pending(self, stream: HopStream) -> bool:
        """Hand the session as much of the stream's pending bytes as it has room for."""
        session = self.session
        pending = stream.outbox.pending
        moved = False
        while pending:
            room = session.send_buffer_available(stream.stream_id)
            if room <= 0:
                break
            head = pending[0]
            if len(head) <= room:
                pending.popleft()
                session.send_data(stream.stream_id, head)
            else:
                view = memoryview(head)
                session.send_data(stream.stream_id, view[:room])
                pending[0] = view[room:]
            moved = True
        return moved

    # ------------------------------------------------------------ stream operations

    def _seal_all(self) -> None:
        coalescing, self._coalescing = self._coalescing, []
        for stream in coalescing:
            outbox = stream.outbox
            if outbox.tail is not None and stream.stream_id in self._streams:
                try:
                    self._seal(stream)
                except LocalProtocolError as error:  # e.g. written after close()
                    stream.fail(error)
            outbox.tail = None

    def _seal(self, stream: HopStream) -> None:
        """Hand the stream's coalesced small writes over as one piece."""
        outbox = stream.outbox
        tail = outbox.tail
        if not tail:
            return
        outbox.tail = bytearray()
        self._queue(stream, bytes(tail))

    def _write(self, stream: HopStream, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        if not size:
            return
        outbox = stream.outbox
        if size < COALESCE_BELOW:
            # Many small writes in one loop iteration become one piece (and so a few large
            # frames) at the flush that follows; nothing waits longer than it did.
            tail = outbox.tail
            if tail is None:
                tail = outbox.tail = bytearray()
                self._coalescing.append(stream)
            tail += data
            if len(tail) >= COALESCE_PIECE:
                self._seal(stream)
            else:
                self.schedule_flush()
        else:
            if outbox.tail:
                self._seal(stream)
            self._queue(stream, data)
        if stream.traffic_class in URGENT_CLASSES and self._early_flush_allowed:
            # Latency first: out now rather than at the scheduled flush, which a busy loop
            # may run only after its next poll (measured in bench hol: the interactive
            # write's wait p90 1.3 -> 0.15 ms beside bulk).  Once per loop iteration: the
            # rest of a burst is coalesced into the scheduled flush as before.
            self._early_flush_allowed = False
            self._loop.call_soon(self._allow_early_flush)
            self._flush()

    def _allow_early_flush(self) -> None:
        self._early_flush_allowed = True

    def _queue(self, stream: HopStream, data: bytes | bytearray | memoryview) -> None:
        # The session keeps what it is given until ACKed and copies anything but ``bytes``:
        # hand it ``bytes`` untouched (no copy) and copy mutable buffers once, here.
        outbox = stream.outbox
        outbox.pending.append(data if type(data) is bytes else bytes(data))
        self._move_pending(stream)
        if outbox.pending or self.session.send_buffer_available(stream.stream_id) <= 0:
            outbox.writable.clear()
            self._blocked.add(stream)
        self.schedule_flush()

    def _close_stream(self, stream: HopStream) -> None:
        outbox = stream.outbox
        if outbox.tail:
            self._seal(stream)
        if outbox.pending:
            outbox.close_after_pending = True
            return
        try:
            self.session.close_stream(stream.stream_id)
        except LocalProtocolError:
            return
        self.schedule_flush()

    def _reset_stream(self, stream_id: int, code: ErrorCode) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.outbox.tail = None
        self.session.reset_stream(stream_id, code)
        self.schedule_flush()

    def _consumed(self, stream_id: int, nbytes: int) -> None:
        if nbytes:
            self.session.acknowledge_received(stream_id, nbytes)
            self.schedule_flush()

    # ------------------------------------------------------------ node API

    async def ready(self) -> ev.SessionReady:
        """Wait for the handshake; raise the typed error if it failed."""
        return await asyncio.shield(self._ready)

    @property
    def is_ready(self) -> bool:
        return self._ready.done() and not self._ready.cancelled() and not self._closed.done()

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    @property
    def ended(self) -> ev.SessionTerminated | None:
        """How the session ended (``None`` while it lives)."""
        return self._closed.result() if self._closed.done() else None

    async def wait_closed(self) -> ev.SessionTerminated:
        return await asyncio.shield(self._closed)

    def when_closed(self, callback: Callable[[ev.SessionTerminated], None]) -> None:
        """Call ``callback`` with the session's end when it ends (soon, if it has): what a
        task awaiting :meth:`wait_closed` would do, without a task per session and
        watcher (ADR 0050)."""
        self._closed.add_done_callback(lambda closed: callback(closed.result()))

    async def open_stream(
        self,
        service: str,
        traffic_class: TrafficClass = TrafficClass.RELIABLE,
        route_id: int = 0,
        *,
        key_exchange: bytes = b"",
        route_lease: bytes = b"",
        resume_token: bytes = b"",
    ) -> HopStream:
        await self.ready()
        if self._closed.done():
            raise termination_error(self._closed.result())
        stream_id = self.session.open_stream(
            service,
            traffic_class,
            route_id,
            key_exchange=key_exchange,
            route_lease=route_lease,
            resume_token=resume_token,
        )
        return self.wrap_stream(stream_id, service, traffic_class)

    def wrap_stream(self, stream_id: int, service: str, traffic_class: TrafficClass) -> HopStream:
        """The asyncio face of stream ``stream_id``, opened or resumed on :attr:`session`."""
        stream = HopStream(self, stream_id, service, traffic_class)
        self._streams[stream_id] = stream
        self.schedule_flush()
        return stream

    def detach(self, stream: HopStream, reason: str) -> None:
        """Let go of ``stream`` for good (it moved to another path): nothing more is sent on
        it, its reader sees the end after the bytes already buffered.

        Detached while a batch of this session's events is handled (a takeover decided
        on an OPEN_STREAM of this session), the stream still gets the batch's later DATA
        and end: the session counted them before it handed over the batch, so the
        snapshot taken for the move says they arrived and the peer will not resend them."""
        self._blocked.discard(stream)
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
            if self._handling:
                self._moved[stream.stream_id] = stream
        outbox = stream.outbox
        outbox.pending.clear()
        outbox.tail = None
        if stream.error is None:
            stream.fail(SessionClosed(reason))

    def stream(self, stream_id: int) -> HopStream | None:
        """The live stream ``stream_id`` of this session, if it has one."""
        return self._streams.get(stream_id)

    async def accept_stream(self) -> HopStream | None:
        """The next stream the peer opens; None once the session is over."""
        while not self._incoming:
            if self._incoming_ended:
                return None
            waiter = self._loop.create_future()
            self._accepting.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._accepting:
                    self._accepting.remove(waiter)
        return self._incoming.popleft()

    def _wake_accepting(self) -> None:
        accepting, self._accepting = self._accepting, []
        for waiter in accepting:
            if not waiter.done():
                waiter.set_result(None)

    async def ping(self) -> float:
        """One PING/PONG round trip; returns the RTT in seconds."""
        await self.ready()
        opaque = self.session.ping(session_clock())
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._pings[opaque] = waiter
        self.schedule_flush()
        return await waiter

    def send_pressure(self, queue: int, cpu: int, memory: int, network: int) -> bool:
        """Send NODE_PRESSURE (percent levels); False when the session cannot send now."""
        try:
            self.session.send_pressure(queue, cpu, memory, network)
        except LocalProtocolError:
            return False
        self.schedule_flush()
        return True

    async def goaway(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Drain: no new streams; open streams finish; then the session ends."""
        self.session.goaway(code, reason)
        self._flush()

    def refuse(self, code: ErrorCode, reason: str) -> None:
        """GOAWAY ``code`` now and close the carrier: the peer gets no further service."""
        if self.session.terminated is None:
            self.session.goaway(code, reason)
        self._terminated(ev.SessionTerminated(error_code=code, reason=reason, remote=False))

    async def migrate(self) -> bool:
        """Move the carrier onto the machine's current network path where the carrier can
        (QUIC connection migration); False where it cannot (TCP: a new session is needed)."""
        migrate = getattr(self._transport, "migrate", None)
        if migrate is None:
            return False
        return bool(await migrate())

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
