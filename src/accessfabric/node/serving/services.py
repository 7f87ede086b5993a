"""Where a stream a peer opens goes: the service dispatcher and the built-in ``echo`` service.

``echo`` writes back every byte it reads and closes its side when the peer
closes its own: the diagnostic ``accessfabric smoke`` uses.  A stream to any
service the node does not serve is reset with ``SERVICE_UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from accessfabric.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from accessfabric.node.streams.connection import FabricStream
from accessfabric.node.streams.sealed_stream import SealedStream
from accessfabric.observe.log_format import log_event

log = logging.getLogger(__name__)

ServiceHandler = Callable[[FabricStream], Awaitable[None]]

ECHO_SERVICE = "echo"
ECHO_CHUNK = 256 * 1024
BUILT_IN_SERVICES = frozenset({ECHO_SERVICE})
"""Served by every node for diagnostics; never registered with a control plane."""


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
        except (ConnectionError, RemoteProtocolError) as error:
            # The stream or session ended under the handler (a peer's violation ended the
            # session: its streams fail with the typed error) -- not a service failure.
            log_event(
                log, "stream ended early", logging.DEBUG,
                peer=peer, stream=stream.stream_id, service=stream.service, error=str(error),
            )  # fmt: skip
        except ProtocolError as error:
            if isinstance(error, LocalProtocolError) or stream.connection.ended is None:
                log.exception("service %r failed on stream %d", stream.service, stream.stream_id)
                stream.reset(ErrorCode.INTERNAL_ERROR)
            else:  # the session ended with this error (e.g. the peer's PROTOCOL_ERROR)
                log_event(
                    log, "stream ended early", logging.DEBUG,
                    peer=peer, stream=stream.stream_id, service=stream.service, error=str(error),
                )  # fmt: skip
        except Exception:
            log.exception("service %r failed on stream %d", stream.service, stream.stream_id)
            stream.reset(ErrorCode.INTERNAL_ERROR)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler runs (True) or ``timeout`` passes (False)."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
