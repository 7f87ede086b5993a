"""TCP forwarding: a local listener whose connections become fabric streams, and the
service host that connects an incoming stream to its target.

``accessfabric forward --listen 127.0.0.1:13389 --service rdp`` (or ``[[forwards]]``
in the node config) runs a :class:`TcpForwarder`: every accepted connection asks the
:class:`~accessfabric.services.fabric.StreamOpener` for a stream to the service in
its traffic class and is spliced onto it (:func:`~accessfabric.services.splice.splice`:
FIN <-> stream close, RST <-> ``RESET_STREAM``).  On the node that hosts the service,
:func:`service_host` is the handler for its incoming streams: connect to the target
(``127.0.0.1:3389``), splice; a target that refuses resets the stream with
``SERVICE_UNAVAILABLE`` (the client sees an RST).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from accessfabric.errors import ErrorCode, ProtocolError
from accessfabric.node.config.node_config import default_class
from accessfabric.node.serving.services import TargetUnreachable
from accessfabric.node.streams.connection import FabricStream
from accessfabric.observe.log_format import log_event
from accessfabric.services.fabric import StreamOpener
from accessfabric.services.splice import SpliceStats, abort_with_rst, splice, stop_listener
from accessfabric.wire.registry import TrafficClass

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0


@dataclass(slots=True)
class ForwardCounters:
    """What ``status`` shows for one forward or one hosted service."""

    connections: int = 0
    active: int = 0
    failed: int = 0
    """Connections that got no stream (forward) or no target connection (service host)."""
    resets: int = 0
    denied: int = 0
    """Streams the service's node refused with ``ACCESS_DENIED`` (a forward's)."""
    bytes_up: int = 0
    bytes_down: int = 0
    extra: dict[str, str] = field(default_factory=dict)


async def _run_splice(
    stream: FabricStream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    counters: ForwardCounters,
) -> SpliceStats:
    counters.active += 1
    try:
        stats = await splice(stream, reader, writer)
    finally:
        counters.active -= 1
    counters.bytes_up += stats.up
    counters.bytes_down += stats.down
    if stats.reset:
        counters.resets += 1
    return stats


FAR_RESET_HINTS = {
    ErrorCode.SERVICE_UNAVAILABLE: "the node that got the stream does not serve {service!r}, "
    "or its target refused the connection (that node's log says which)",
    ErrorCode.ACCESS_DENIED: "the service's node does not admit this node to {service!r}: "
    "an allow list or a grant must name it (docs/config.md, Access)",
    ErrorCode.REFUSED_STREAM: "the far node refused the stream (policy, limits or route lease; "
    "its log and accessfabric_streams_refused_total say why)",
}
RESET_LOG_INTERVAL = 10.0
"""At most one ``forward: stream reset by the far end`` line per code per interval."""


class TcpForwarder:
    """Listen on ``host:port``; each connection becomes a stream to ``service``."""

    def __init__(
        self,
        opener: StreamOpener,
        host: str,
        port: int,
        service: str,
        traffic_class: TrafficClass | None = None,
    ) -> None:
        self.opener = opener
        self.host = host
        self.port = port
        self.service = service
        self.traffic_class = default_class(service) if traffic_class is None else traffic_class
        self.counters = ForwardCounters()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reset_logged: dict[str, float] = {}  # code name -> when last logged
        self._resets_unlogged: dict[str, int] = {}

    async def start(self) -> None:
        """Bind the listener (port 0: the kernel picks; :attr:`port` is then the real one)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        for sock in self._server.sockets:
            self.port = sock.getsockname()[1]
            break
        log_event(
            log, "forward listening", address=f"{self.host}:{self.port}",
            service=self.service, traffic_class=self.traffic_class.name.lower(),
        )  # fmt: skip

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        try:
            stream = await self.opener.open_stream(self.service, self.traffic_class)
        except (ConnectionError, ProtocolError, OSError, TimeoutError, LookupError) as error:
            self.counters.failed += 1
            log_event(
                log, "forward: no stream", logging.WARNING,
                service=self.service, error=str(error) or type(error).__name__,
            )  # fmt: skip
            abort_with_rst(writer)
            return
        stats = await _run_splice(stream, reader, writer, self.counters)
        if stats.fabric_code == ErrorCode.ACCESS_DENIED:
            self.counters.denied += 1
        if stats.fabric_code is not None and stats.fabric_code != ErrorCode.CANCEL:
            self._log_far_reset(stats.fabric_code)

    def _log_far_reset(self, code: int) -> None:
        """Say on this node why the far end reset the stream (the client only saw an RST)."""
        try:
            known: ErrorCode | None = ErrorCode(code)
        except ValueError:
            known = None
        key = known.name if known is not None else "other"
        now = time.monotonic()
        if now - self._reset_logged.get(key, -RESET_LOG_INTERVAL) < RESET_LOG_INTERVAL:
            self._resets_unlogged[key] = self._resets_unlogged.get(key, 0) + 1
            return
        self._reset_logged[key] = now
        hint = FAR_RESET_HINTS.get(known) if known is not None else None
        log_event(
            log, "forward: stream reset by the far end", logging.WARNING,
            service=self.service, code=known.name if known is not None else str(code),
            why=hint.format(service=self.service) if hint else "-",
            suppressed=self._resets_unlogged.pop(key, 0),
        )  # fmt: skip

    async def close(self) -> None:
        await stop_listener(self._server, self._tasks)


def service_host(
    host: str, port: int, counters: ForwardCounters | None = None
) -> Callable[[FabricStream], Awaitable[None]]:
    """The stream handler of a hosted service: connect to ``host:port`` and splice."""
    tally = counters if counters is not None else ForwardCounters()

    async def handle(stream: FabricStream) -> None:
        tally.connections += 1
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as error:
            tally.failed += 1  # the dispatcher resets SERVICE_UNAVAILABLE, logs (bounded)
            raise TargetUnreachable(f"target {host}:{port}: {str(error) or 'timed out'}") from None
        await _run_splice(stream, reader, writer, tally)

    return handle
