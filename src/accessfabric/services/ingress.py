"""HTTP ingress by host name: ``Host`` (HTTP) or SNI (HTTPS, passed through) -> a fabric service.

Each ``[[ingress]]`` entry runs one :class:`HostIngress`.  A connection's first bytes are read
(bounded by ``max_header_bytes`` and ``header_timeout``), the name they ask for is looked up
in ``hosts``, a stream to that service is opened through the node's opener (its route
execution: leases, failover, sealing, classes — like any forward), the bytes read are written
to it unchanged and the rest is spliced.  TLS is not terminated here: an HTTPS connection's
ClientHello goes to the service host, which holds the certificate.

Refusals, each one line in the log and a clear answer:

| case | HTTP | HTTPS |
| --- | --- | --- |
| name not in ``hosts`` | 421 Misdirected Request | alert ``unrecognized_name`` |
| no stream (no replica, no route) | 503 Service Unavailable | alert ``internal_error`` |
| head over ``max_header_bytes`` | 431 | alert ``decode_error`` |
| head not complete in ``header_timeout`` | 408 | connection closed |
| malformed request / ClientHello | 400 | alert ``decode_error`` |
| over ``max_connections`` | 503 | connection closed |
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from accessfabric.errors import ProtocolError
from accessfabric.node.config.ingress_config import IngressConfig
from accessfabric.observe.log_format import log_event
from accessfabric.observe.log_rate import RateLimitedLog
from accessfabric.services.fabric import StreamOpener
from accessfabric.services.ingress_parse import (
    ALERT_INTERNAL_ERROR,
    ALERT_UNRECOGNIZED_NAME,
    IngressRefusal,
    read_client_hello,
    read_http_head,
)
from accessfabric.services.splice import splice, stop_listener
from accessfabric.timeouts import wait_within

log = logging.getLogger(__name__)

REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def http_refusal(status: int, message: str) -> bytes:
    body = (message + "\n").encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def tls_alert(description: int) -> bytes:
    """A fatal TLS alert record (level 2), as a server may send before its ServerHello."""
    return bytes((21, 3, 3, 0, 2, 2, description))


@dataclass(slots=True)
class IngressCounters:
    connections: int = 0
    active: int = 0
    routed: int = 0
    refused: int = 0
    no_stream: int = 0


class HostIngress:
    def __init__(self, opener: StreamOpener, config: IngressConfig) -> None:
        self.opener = opener
        self.config = config
        self.host = config.listen.host
        self.port = config.listen.port
        self.counters = IngressCounters()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = RateLimitedLog(log, interval=10.0)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        for sock in self._server.sockets:
            self.port = sock.getsockname()[1]
            break
        log_event(
            log, "ingress listening", address=f"{self.host}:{self.port}",
            protocol=self.config.protocol, hosts=",".join(sorted(self.config.hosts)),
        )  # fmt: skip

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= self.config.max_connections:
            self.counters.refused += 1
            if self.config.protocol == "http":
                with contextlib.suppress(OSError):
                    writer.write(http_refusal(503, "too many connections"))
            writer.close()
            return
        task = asyncio.create_task(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _first_bytes(self, reader: asyncio.StreamReader) -> tuple[bytes, str]:
        limit = self.config.max_header_bytes
        read = read_http_head if self.config.protocol == "http" else read_client_hello
        return await wait_within(read(reader, limit), self.config.header_timeout)

    def _refuse(self, writer: asyncio.StreamWriter, status: int, alert: int, why: str) -> None:
        self.counters.refused += 1
        self._log.log(
            ("refused", status, alert), logging.WARNING, "ingress refused %s (%s): %s",
            self.config.protocol, status if self.config.protocol == "http" else alert, why,
            now=time.monotonic(),
        )  # fmt: skip
        with contextlib.suppress(OSError, RuntimeError):
            if self.config.protocol == "http":
                writer.write(http_refusal(status, why))
            elif alert:
                writer.write(tls_alert(alert))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        self.counters.active += 1
        try:
            await self._serve(reader, writer)
        finally:
            self.counters.active -= 1
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first, name = await self._first_bytes(reader)
        except TimeoutError:
            self._refuse(writer, 408, 0, "the request head did not arrive in time")
            return
        except asyncio.IncompleteReadError:
            self.counters.refused += 1
            return
        except IngressRefusal as refusal:
            self._refuse(writer, refusal.status, refusal.alert, refusal.reason)
            return
        except OSError:
            return
        service = self.config.hosts.get(name)
        if service is None:
            self._refuse(writer, 421, ALERT_UNRECOGNIZED_NAME, f"no service for host {name!r}")
            return
        try:
            traffic_class = self.config.classes.get(name, self.config.traffic_class)
            stream = await self.opener.open_stream(service, traffic_class)
        except (ConnectionError, ProtocolError, OSError, TimeoutError, LookupError) as error:
            self.counters.no_stream += 1
            why = str(error) or type(error).__name__
            self._refuse(
                writer, 503, ALERT_INTERNAL_ERROR, f"service {service!r} unavailable: {why}"
            )
            return
        self.counters.routed += 1
        try:
            stream.write(first)
        except (ConnectionError, ProtocolError):
            return
        await splice(stream, reader, writer)

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {
            "listen": f"{self.host}:{self.port}",
            "protocol": self.config.protocol,
            "hosts": dict(sorted(self.config.hosts.items())),
            "connections": c.connections,
            "active": c.active,
            "routed": c.routed,
            "refused": c.refused,
            "no_stream": c.no_stream,
        }

    async def close(self) -> None:
        await stop_listener(self._server, self._tasks)
