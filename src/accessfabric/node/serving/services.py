"""Where a stream a peer opens goes: the service dispatcher and the built-in ``echo`` service.

``echo`` writes back every byte it reads and closes its side when the peer
closes its own: the diagnostic ``accessfabric smoke`` uses.  A stream to any
service the node does not serve is reset with ``SERVICE_UNAVAILABLE``.

A handler that fails resets its stream with a code that says why
(:func:`expected_reset`): its target could not be reached (``SERVICE_UNAVAILABLE``)
or reset the connection under it (``CANCEL``); anything else is a bug
(``INTERNAL_ERROR``, logged with its traceback).  Both are logged at a bounded rate
per (service, kind): a peer can make them happen as often as it opens streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

from accessfabric.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from accessfabric.node.streams.connection import FabricStream, SessionClosed, StreamResetError
from accessfabric.node.streams.sealed_stream import SealedStream, SealedStreamError
from accessfabric.node.streams.stream_sealing import SealingKeyUnknown
from accessfabric.observe.log_format import log_event
from accessfabric.observe.log_rate import RateLimitedLog

log = logging.getLogger(__name__)

ServiceHandler = Callable[[FabricStream], Awaitable[None]]

ECHO_SERVICE = "echo"
ECHO_CHUNK = 256 * 1024
BUILT_IN_SERVICES = frozenset({ECHO_SERVICE})
"""Served by every node for diagnostics; never registered with a control plane."""
FAILURE_LOG_INTERVAL = 10.0
"""Seconds between two log lines of one (service, kind of failure)."""

_STREAM_ENDED = (SessionClosed, StreamResetError, SealedStreamError, SealingKeyUnknown)
"""The stream or its session ended under the handler: nothing left to reset."""
_TARGET_RESET = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
     errno.ETIMEDOUT, errno.EADDRNOTAVAIL}
)  # fmt: skip


class TargetUnreachable(ConnectionError):
    """Raised by a handler that could not reach what it serves (e.g. a TCP service host's
    target refused): the dispatcher resets the stream ``SERVICE_UNAVAILABLE`` and logs it
    at a bounded rate."""


def expected_reset(error: Exception) -> ErrorCode | None:
    """The RESET_STREAM code for a handler failure that is no bug, else None.

    The connection to the handler's target was reset or broken under it: ``CANCEL`` (as
    ``services/splice.py`` resets on a target's RST).  The target could not be reached
    (refused, unreachable, timed out, a name that does not resolve, or another connection
    error, e.g. no route to a fabric service): ``SERVICE_UNAVAILABLE``.
    """
    if isinstance(error, _TARGET_RESET):
        return ErrorCode.CANCEL
    if isinstance(error, ConnectionError | TimeoutError | socket.gaierror):
        return ErrorCode.SERVICE_UNAVAILABLE
    if isinstance(error, OSError) and error.errno in _UNREACHABLE_ERRNOS:
        return ErrorCode.SERVICE_UNAVAILABLE
    return None


async def echo(stream: FabricStream) -> None:
    """Echo bytes back until the peer ends its side, then end ours."""
    while True:
        data = await stream.read(ECHO_CHUNK)
        if not data:
            break
        stream.write(data)
        await stream.drain()
    stream.close()


class ServiceDispatcher:
    """Runs one task per accepted stream with the handler registered for its service."""

    def __init__(self) -> None:
        self._handlers: dict[str, ServiceHandler] = {ECHO_SERVICE: echo}
        self._aliases: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        self.on_refused: Callable[[FabricStream, str], None] | None = None
        """Told of each refused stream instead of an unlimited log line (the node's
        admission logs at a bounded rate and limits the peer)."""
        self.target_failures = 0
        """Streams reset because the handler's target failed (:func:`expected_reset`)."""
        self.handler_errors = 0
        """Streams reset ``INTERNAL_ERROR`` because a handler failed otherwise (a bug)."""
        self._failure_log = RateLimitedLog(log, interval=FAILURE_LOG_INTERVAL)

    def register(self, service: str, handler: ServiceHandler) -> None:
        self._handlers[service] = handler

    def alias(self, name: str, service: str) -> None:
        """Serve streams to ``name`` with ``service``'s handler; ``name`` is neither listed
        nor advertised (``echo:<node id>``, the echo a route lease can name)."""
        self._aliases[name] = service

    @property
    def services(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def hosted(self) -> list[str]:
        """The services this node serves besides the built-in ones: what it advertises."""
        return sorted(name for name in self._handlers if name not in BUILT_IN_SERVICES)

    @property
    def active(self) -> int:
        return len(self._tasks)

    def dispatch(self, stream: FabricStream, peer: str) -> None:
        handler = self._handlers.get(self._aliases.get(stream.service, stream.service))
        if handler is None:
            self.refused += 1
            stream.reset(ErrorCode.SERVICE_UNAVAILABLE)
            if self.on_refused is not None:
                self.on_refused(stream, "unknown service")
                return
            log_event(
                log, "stream refused", logging.INFO,
                peer=peer, stream=stream.stream_id, service=stream.service,
                code="SERVICE_UNAVAILABLE",
            )  # fmt: skip
            return
        task = asyncio.create_task(self._run(handler, stream, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, handler: ServiceHandler, stream: FabricStream, peer: str) -> None:
        try:
            if isinstance(stream, SealedStream):
                await stream.establish()  # refused (reset, logged, counted) when it cannot
            await handler(stream)
        except (*_STREAM_ENDED, RemoteProtocolError) as error:
            # The stream or session ended under the handler (a peer's violation ended the
            # session: its streams fail with the typed error) -- not a service failure.
            self._ended_early(stream, peer, error)
        except ProtocolError as error:
            if isinstance(error, LocalProtocolError) or stream.connection.ended is None:
                self._failed(stream, peer, error)
            else:  # the session ended with this error (e.g. the peer's PROTOCOL_ERROR)
                self._ended_early(stream, peer, error)
        except Exception as error:
            self._failed(stream, peer, error)

    def _ended_early(self, stream: FabricStream, peer: str, error: Exception) -> None:
        log_event(
            log, "stream ended early", logging.DEBUG,
            peer=peer, stream=stream.stream_id, service=stream.service, error=str(error),
        )  # fmt: skip

    def _failed(self, stream: FabricStream, peer: str, error: Exception) -> None:
        """Reset ``stream`` with the code for ``error``; log it at a bounded rate."""
        code = expected_reset(error)
        now = asyncio.get_running_loop().time()
        if code is not None:
            self.target_failures += 1
            suppressed = self._failure_log.admit((stream.service, "target"), now)
            if suppressed is not None:
                log_event(
                    log, "service target failed", logging.WARNING,
                    peer=peer, stream=stream.stream_id, service=stream.service,
                    code=code.name, error=str(error) or type(error).__name__,
                    suppressed=suppressed,
                )  # fmt: skip
        else:
            code = ErrorCode.INTERNAL_ERROR
            self.handler_errors += 1
            suppressed = self._failure_log.admit((stream.service, type(error).__name__), now)
            if suppressed is not None:
                log.error(
                    "service %r failed on stream %d (+%d suppressed)",
                    stream.service, stream.stream_id, suppressed, exc_info=error,
                )  # fmt: skip
        with contextlib.suppress(ConnectionError, ProtocolError):
            stream.reset(code)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler runs (True) or ``timeout`` passes (False)."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
