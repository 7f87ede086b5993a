"""Two clocks for the control API's HTTP connections (issue 17, ADR 0037).

aiohttp has one: its keep-alive timer closes a connection still waiting for a request
head ``keepalive_timeout`` seconds after accept or after its last response.  That single
clock was both the slow-request defence (slowloris: a head dribbled a byte at a time)
and the idle close of a kept-alive connection, so a fleet heartbeating every 10 s
against a 10 s idle close opened a new TLS connection on nearly every heartbeat.

:class:`HeadTimedRunner` separates them:

* ``header_timeout`` -- a connection must bring a complete request head within this
  many seconds of accept, and of the first byte of every later request sent while it
  waits for one (an idle connection that starts a head starts this clock);
* ``idle_timeout`` -- a connection with no request under way is closed after this many
  seconds (aiohttp's keep-alive timer), longer than the heartbeat interval so a
  node's heartbeats reuse one connection.

A body is not on either clock: a slow body is the handlers' read timeout (408).
Bytes of a pipelined next head that arrive while a request is handled are on the idle
clock only (the head clock starts when the connection waits for a head).

One clock at a time (ADR 0042): the first byte of a head on an idle connection moves the
idle close to no earlier than that head's deadline, so a request that begins just before
the idle close is not cut by it -- it is answered, or closed at its own head deadline.
Only bytes start the head clock: aiohttp re-feeds its parser with ``data_received(b"")``
when it resumes reading, which is not a head begun.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


class HeadTimedHandler(RequestHandler):
    """aiohttp's request handler with a request-head deadline (``header_timeout``)
    apart from its keep-alive (idle) timer; reaches into ``_waiter``, ``_messages``,
    ``_request_count``, ``_next_keepalive_close_time`` (aiohttp 3.14: see
    tests/control/test_api_tls_limits.py for what breaks if those change)."""

    __slots__ = ("_head_count", "_head_handle", "_head_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = header_timeout
        self._head_handle: asyncio.TimerHandle | None = None
        self._head_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head()  # a fresh connection owes a head within the header timeout

    def data_received(self, data: bytes) -> None:
        if data and self._head_handle is None and self._waiting_for_head():
            self._arm_head()
            # the idle close waits for this head's deadline (aiohttp's keep-alive timer
            # re-arms itself at _next_keepalive_close_time when it fires earlier)
            deadline = self._loop.time() + self._head_timeout
            if self._next_keepalive_close_time < deadline:
                self._next_keepalive_close_time = deadline
        super().data_received(data)
        if self._head_handle is not None and self._request_count != self._head_count:
            self._head_handle.cancel()  # the head is complete
            self._head_handle = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_handle is not None:
            self._head_handle.cancel()
            self._head_handle = None
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _arm_head(self) -> None:
        self._head_count = self._request_count
        self._head_handle = self._loop.call_later(self._head_timeout, self._head_due)

    def _head_due(self) -> None:
        self._head_handle = None
        if self._request_count == self._head_count:
            self.force_close()  # no complete head in time


class _HeadTimedServer(web.Server):
    """A :class:`web.Server` whose connections are :class:`HeadTimedHandler`."""

    header_timeout: float

    def __call__(self) -> RequestHandler:
        return HeadTimedHandler(
            self, header_timeout=self.header_timeout, loop=self._loop, **self._kwargs
        )


class HeadTimedRunner(web.AppRunner):
    """An :class:`web.AppRunner` whose connections get ``header_timeout`` for each
    request head and ``keepalive_timeout`` (the idle close) between requests."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server inside Application._make_handler; the subclass only
        # overrides __call__ (the protocol factory), so its layout is the same
        server.__class__ = _HeadTimedServer
        assert isinstance(server, _HeadTimedServer)
        server.header_timeout = self._header_timeout
        return server
